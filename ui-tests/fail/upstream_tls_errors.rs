use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream secure {
            peers ["127.0.0.1:8443"];
            tls sni "not a name" ca "origin-ca.pem" insecure;
            tls sni "api.example.com";
        }
    }
}

fn main() {}

use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen tls "127.0.0.1:6189" cert "server.crt" key "" client_ca "a.pem" client_ca "b.pem";
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

fn main() {}

use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen tls "127.0.0.1:6189" {
            cert "a.crt";
            cert "b.crt" pem "b.key";
        }
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

fn main() {}

use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen tls "127.0.0.1:6189" {
            cert "server.crt" key "server.key";
            ciphers "HIGH";
        }
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

fn main() {}

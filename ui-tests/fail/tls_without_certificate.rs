use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen tls "127.0.0.1:6189";
        listen tls "127.0.0.1:6190" { client_ca "clients.pem"; }
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

fn main() {}

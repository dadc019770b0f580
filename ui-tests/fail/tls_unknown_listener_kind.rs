use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen ssl "127.0.0.1:6189" cert "server.crt" key "server.key";
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

fn main() {}

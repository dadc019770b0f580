use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        upstream web { peers ["127.0.0.1:8001"]; }
    }
}

fn main() {}

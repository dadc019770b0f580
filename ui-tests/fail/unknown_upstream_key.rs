use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web {
            peer ["127.0.0.1:8001"];
        }
    }
}

fn main() {}

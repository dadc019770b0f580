use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web {
            discover consul "web" every 5s;
        }
    }
}

fn main() {}

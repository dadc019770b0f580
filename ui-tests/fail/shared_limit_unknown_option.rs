use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web {
            peers ["127.0.0.1:8001"];
        }
        rate_limit 10 per 1s shared "redis://cache:6379" retries 2;
    }
}

fn main() {}

use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
            http2;
            health http "/health" status 100..=199;
        }
        upstream upgraded {
            peers ["127.0.0.1:8003"];
            health http "/ws" status 101;
        }
        route path "/ws" => upstream upgraded;
        route => upstream web;
    }
}

fn main() {}

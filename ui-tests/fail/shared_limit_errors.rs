use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web {
            peers ["127.0.0.1:8001"];
        }
        rate_limit 10 per 1s shared "rediss://cache:6380";
        rate_limit 10 per 1s by client_ip shared "http://cache:6379";
        rate_limit 10 per 1s shared "redis://cache:6379" timeout 5s;
        rate_limit 10 per 1s shared "redis://cache:6379" fallback maybe;
        route path "/api" => upstream web {
            rate_limit 5 per 1s by route shared "redis://" timeout 0ms;
        }
        route => upstream web;
    }
}

fn main() {}

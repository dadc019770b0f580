use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        rate_limit 0 per 1s;
        rate_limit 10 per 0s by client_ip;
        rate_limit 10 per 1s by cookie;
        rate_limit 10 per 1s by header "bad header";
        rate_limit 10 every 1s;
    }
}

fn main() {}

use pingora_dsl::prelude::*;

// Every problem is reported, each at its token, not only the first.
proxy! {
    pub Edge {
        listen "127.0.0.1:99999";
        upstream web {
            peers ["127.0.0.1:8001" weight 0];
            select fastest;
            timeout connect 1y;
        }
        route path "/x" => upstream nowhere;
        set_request_header "bad header" "v";
        logging(a, b) {}
    }
}

fn main() {}

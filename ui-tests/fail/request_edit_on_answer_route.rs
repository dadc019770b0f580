use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        route path "/ping" => respond 200 "pong" {
            set_request_header "x-a" "1";
        }
        route => upstream web;
    }
}

fn main() {}

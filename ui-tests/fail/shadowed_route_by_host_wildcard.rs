use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        route host "*.example.com" => upstream web;
        route host "api.example.com" path "/v1" => respond 403;
    }
}

fn main() {}

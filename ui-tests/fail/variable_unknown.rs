use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route path "/old" => redirect 301 "https://${hots}${request_uri}";
        route => upstream app;
    }
}

fn main() {}

use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route path "/api" => upstream app { timeout connect 1s, idel 5s; }
        route => upstream app;
    }
}

fn main() {}

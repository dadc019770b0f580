use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route path "/api" => upstream app {
            retry 1;
            max_body 1MiB;
            retry 2;
            max_body 2MiB;
        }
        route => upstream app;
    }
}

fn main() {}

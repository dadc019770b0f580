use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route path "/a" => upstream app { max_body 0; }
        route path "/b" => upstream app { max_body 10TB; }
        route => upstream app;
    }
}

fn main() {}

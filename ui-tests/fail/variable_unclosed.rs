use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route path "/a" => respond 200 "hello ${client_ip";
        route => upstream app;
    }
}

fn main() {}

use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route path "/u" => upstream app { set_request_header "x-id" "${id}"; }
        route => upstream app;
    }
}

fn main() {}

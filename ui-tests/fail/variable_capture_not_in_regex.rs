use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route path regex "^/u/(?P<id>[0-9]+)$" => upstream app { set_request_header "x-id" "${uid}"; }
        route => upstream app;
    }
}

fn main() {}

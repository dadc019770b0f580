use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        set_response_header "x-user" "${header.x-user}";
        route => upstream app;
    }
}

fn main() {}

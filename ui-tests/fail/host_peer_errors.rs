use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream api {
            peers ["api.internal:8080", "api_v2.internal:8080"];
            discover dns "api.internal:8080";
        }
    }
}

fn main() {}

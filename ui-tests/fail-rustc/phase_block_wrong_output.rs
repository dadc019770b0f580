use pingora_dsl::prelude::*;

// An inline block must end in (), the phase's value, or a Result of it.
proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        request_filter(_session, _ctx) {
            42
        }
    }
}

fn main() {}

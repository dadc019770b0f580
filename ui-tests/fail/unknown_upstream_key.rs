use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web {
            peer ["127.0.0.1:8001"];
        }
    }

    /// What HAProxy calls `balance` and nginx `server` are named for what they are here.
    pub FromHaproxy {
        listen "127.0.0.1:6189";
        upstream web {
            server ["127.0.0.1:8001"];
            balance round_robin;
        }
    }
}

fn main() {}

use pingora_dsl::prelude::*;

// An inline `upstream_peer` block chooses a peer: `()` (going on) is not a choice here.
proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        upstream_peer(_session, _ctx) {
            let _ = Self::POOL_WEB;
        }
    }
}

fn main() {}

use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        route => upstream web;
        upstream_peer(_s, _c) {
            HttpPeer::new(([127, 0, 0, 1], 8001).into())
        }
    }
}

fn main() {}

//! A proxy that picks its peers in code, with answer routes and a fallthrough.
use pingora_dsl::prelude::*;

proxy! {
    pub Picker {
        listen "127.0.0.1:6188";
        route path "/ping" => respond 200 "pong";
        upstream_peer(session, _ctx) {
            let port = if session.path().starts_with("/b") { 8002 } else { 8001 };
            HttpPeer::new(([127, 0, 0, 1], port).into())
        }
    }
}

fn main() {
    let proxy = Picker::new();
    assert_eq!(proxy.router().routes().len(), 1);
    assert!(proxy.router().groups().is_empty());
}

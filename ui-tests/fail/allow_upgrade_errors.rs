use pingora_dsl::prelude::*;

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        allow_upgrade ["websocket", "h2c", "web socket", "WebSocket"];
    }
}

proxy! {
    pub Bare {
        listen "127.0.0.1:6189";
        upstream web { peers ["127.0.0.1:8001"]; }
        allow_upgrade websocket;
    }
}

fn main() {}

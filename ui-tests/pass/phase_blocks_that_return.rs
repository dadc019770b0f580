use pingora_dsl::prelude::*;

// Inline phase blocks may end in `return ...;` (or a panic-like macro): the phase's value
// is whatever the `return` gives.
proxy! {
    pub Early {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        request_filter(session, _ctx) {
            if session.path() == "/a" {
                return Ok(Flow::respond_with(StatusCode::FORBIDDEN, "no\n"));
            }
            return Ok(Flow::Continue);
        }
        upstream_peer(_session, _ctx) {
            let _declared = Self::POOL_WEB;
            return Ok(HttpPeer::new(([127, 0, 0, 1], 8002).into()));
        }
        response_filter(_session, response, _ctx) {
            response.insert_header("x-a", "1")?;
            return Ok(());
        }
    }
}

fn main() {
    let _ = Early::new();
}

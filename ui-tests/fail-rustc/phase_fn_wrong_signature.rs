use pingora_dsl::prelude::*;

// A phase given as a function must have the phase's signature.
async fn check(session: &Session) -> Result<Flow> {
    let _ = session;
    Ok(Flow::Continue)
}

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        request_filter = check;
    }
}

fn main() {}

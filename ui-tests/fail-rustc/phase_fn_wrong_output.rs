use pingora_dsl::prelude::*;

// A `request_filter` function answers whether the request goes on: `Result<Flow>`.
async fn check(_session: &mut Session, _ctx: &mut ()) -> Result<()> {
    Ok(())
}

// `upstream_response_filter` runs without awaiting: a plain `fn`.
async fn headers(_session: &mut Session, _response: &mut ResponseHeader, _ctx: &mut ()) -> Result<()> {
    Ok(())
}

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        request_filter = check;
        upstream_response_filter = headers;
    }
}

fn main() {}

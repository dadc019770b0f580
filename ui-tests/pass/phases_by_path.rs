//! Every phase given as a path to a function with the phase's signature.
use pingora_dsl::prelude::*;

#[derive(Default)]
pub struct Ctx;

mod phases {
    use super::Ctx;
    use pingora_dsl::prelude::*;

    pub async fn early(_s: &mut Session, _c: &mut Ctx) -> Result<()> {
        Ok(())
    }
    pub async fn request(_s: &mut Session, _c: &mut Ctx) -> Result<Flow> {
        Ok(Flow::Continue)
    }
    pub async fn upstream_request(
        _s: &mut Session,
        _r: &mut RequestHeader,
        _c: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    pub fn fail(_s: &mut Session, _p: &HttpPeer, _c: &mut Ctx, e: Error) -> Error {
        e
    }
    pub fn upstream_response(
        _s: &mut Session,
        _r: &mut ResponseHeader,
        _c: &mut Ctx,
    ) -> Result<()> {
        Ok(())
    }
    pub async fn response(_s: &mut Session, _r: &mut ResponseHeader, _c: &mut Ctx) -> Result<()> {
        Ok(())
    }
    pub fn log(_s: &Session, _e: Option<&Error>, _c: &mut Ctx) {}
    pub async fn peer(_s: &mut Session, _c: &mut Ctx) -> Result<HttpPeer> {
        Ok(HttpPeer::new(([127, 0, 0, 1], 8001).into()))
    }
}

proxy! {
    pub ByPath {
        listen "127.0.0.1:6188";
        ctx Ctx;
        upstream web { peers ["127.0.0.1:8001"]; }
        early_request_filter = phases::early;
        request_filter = phases::request;
        upstream_request_filter = phases::upstream_request;
        fail_to_connect = phases::fail;
        upstream_response_filter = phases::upstream_response;
        response_filter = phases::response;
        logging = phases::log;
    }

    /// A second proxy in the same invocation, private, choosing peers by path.
    PeerByPath {
        listen "127.0.0.1:6189";
        ctx Ctx;
        upstream_peer = phases::peer;
    }
}

fn main() {
    let _ = ByPath::new().service();
    let _ = PeerByPath::new().pipeline();
}

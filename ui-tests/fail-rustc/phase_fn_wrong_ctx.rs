use pingora_dsl::prelude::*;

#[derive(Default)]
pub struct Ctx {
    user: Option<String>,
}

// The function's ctx must be the proxy's `ctx` type.
async fn check(_session: &mut Session, ctx: &mut String) -> Result<Flow> {
    ctx.clear();
    Ok(Flow::Continue)
}

fn log(_session: &Session, _error: Option<&Error>, ctx: &mut Ctx) {
    let _ = &ctx.user;
}

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        ctx Ctx;
        upstream web { peers ["127.0.0.1:8001"]; }
        request_filter = check;
        logging = log;
    }
}

fn main() {}

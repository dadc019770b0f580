//! One mistake gives one error: the proxy's type is still declared, so its uses below
//! (constructor, router, service, `run`) report nothing more, and the imports only its
//! phase uses (`Flow`, `StatusCode`) are not reported unused.
#![deny(unused_imports)]

use std::process::ExitCode;

use pingora_dsl::prelude::{proxy, Flow, StatusCode};

#[derive(Default)]
pub struct Ctx {
    seen: u32,
}

proxy! {
    pub Edge {
        listen "127.0.0.1:6188";
        ctx Ctx;
        upstream web { peers ["127.0.0.1:8001" weight 0]; }
        request_filter(session, ctx) {
            ctx.seen += 1;
            if session.path() == "/admin" {
                return Ok(Flow::respond_with(StatusCode::FORBIDDEN, "no\n"));
            }
        }
    }
}

fn main() -> ExitCode {
    let proxy = Edge::new();
    let _ = proxy.router().groups().len();
    let _service = Edge::default().service();
    let _ = Edge::LISTEN;
    Edge::run()
}

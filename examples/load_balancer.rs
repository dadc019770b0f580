//! The load balancer from Cloudflare's "Open sourcing Pingora" post, declared with
//! `proxy!`: round robin over two peers, with the `Host` sent upstream set to the blog's
//! `one.one.one.one`. `examples/load_balancer_manual.rs` is the same proxy written by hand;
//! `tests/zero_cost.rs` and `benches/dsl.rs` compare the two (this file is compiled into
//! them as a module).
//!
//! Run it, then try it:
//!
//! ```text
//! cargo run --release --example load_balancer
//! curl -i http://127.0.0.1:6188/      # repeat: the x-origin header alternates
//! ```
//!
//! Unless `--upstream` or the `-c` file (`[proxy.BlogLoadBalancer.upstream.origins] peers`)
//! gives peers, two demo origins start in-process on loopback (no network needed; none
//! under `-t` or `--print-config`). Flags (from the declared proxy's `run`): `--listen ADDR`
//! (repeatable, replaces the declared 127.0.0.1:6188), `--upstream HOST:PORT`
//! (repeatable), `-c FILE`, `--threads N` (default: one per core), `--work-stealing`,
//! `--help`.
//! Set `RUST_LOG=debug` to see a line per request.

use std::process::ExitCode;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::demo_upstreams;

proxy! {
    /// Round robin over two origins, as in the Pingora blog post.
    pub BlogLoadBalancer {
        listen "127.0.0.1:6188";

        upstream origins {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
            select round_robin;
        }

        set_request_header "host" "one.one.one.one";

        logging(session, error, _ctx) {
            tracing::debug!(
                method = %session.method(),
                path = session.path(),
                status = session.response_status().map(|s| s.as_u16()),
                upstream = ?session.upstream_addr(),
                bytes = session.body_bytes_sent(),
                error = error.map(tracing::field::display),
                "request"
            );
        }
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env();
    if let Err(code) = demo_upstreams(&mut cli, "BlogLoadBalancer", &["origin-1", "origin-2"]) {
        return code;
    }
    BlogLoadBalancer::run_with(cli)
}

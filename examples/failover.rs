//! Failover, declared: three peers with least-connections balancing, active HTTP health
//! checks, passive ejection and retries. Stop a peer under load: no request fails (a
//! refused connect or a broken connection is retried on another peer), the log says the
//! peer was marked down, and later that it came back.
//!
//! ```text
//! cargo run --release --example failover      # three demo origins in-process
//! curl -i http://127.0.0.1:6191/
//! ```
//!
//! To try a real failure, run your own peers (any HTTP server answering `GET /`), e.g.
//! `python3 -m http.server 8001` (and 8002, 8003), then
//! `cargo run --release --example failover -- --upstream 127.0.0.1:8001 --upstream
//! 127.0.0.1:8002 --upstream 127.0.0.1:8003`, put it under load
//! (`wrk -c 16 -d 30s http://127.0.0.1:6191/`), and stop one server: wrk reports no errors,
//! the proxy logs `peer failed its health checks: marked down`, and after a restart
//! `peer passed its health checks: back in service`.
//!
//! Flags: `--listen ADDR`, `--upstream HOST:PORT` (repeatable), `-c FILE`, `--threads N`,
//! `--work-stealing`, `--help`. Peers from `--upstream` or the `-c` file replace the demo
//! origins (none start under `-t` or `--print-config`).

use std::process::ExitCode;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::demo_upstreams;

proxy! {
    /// Three peers that may fail.
    pub Failover {
        listen "127.0.0.1:6191";

        upstream pool {
            peers ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];
            select least_conn;
            timeout connect 500ms, read 10s;
            // A refused connect, or a connection that breaks before the answer, goes to
            // another peer (GET and other idempotent requests; bodies up to 64 KiB kept).
            retry 2 backoff 10ms;
            health http "/" every 1s timeout 500ms rise 2 fall 2;
            passive failures 3 eject 10s;
        }

        logging(session, error, _ctx) {
            match error {
                Some(e) => tracing::warn!(path = session.path(), error = %e, "request failed"),
                None if session.retries() > 0 => tracing::info!(
                    path = session.path(),
                    retries = session.retries(),
                    upstream = ?session.upstream_addr(),
                    "request served after a retry"
                ),
                None => {}
            }
        }
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env();
    if let Err(code) = demo_upstreams(&mut cli, "Failover", &["origin-1", "origin-2", "origin-3"]) {
        return code;
    }
    Failover::run_with(cli)
}

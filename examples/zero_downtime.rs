//! A zero-downtime binary upgrade, by hand: a declared proxy that names the process that
//! answered in `x-served-by-pid`, so you can watch the listening socket move from one
//! process to the next while requests keep flowing.
//!
//! ```text
//! cargo build --release --example zero_downtime
//! target/release/examples/zero_downtime &           # the old process
//! while sleep 0.2; do curl -s -D - -o /dev/null http://127.0.0.1:6191/ | grep pid; done &
//! target/release/examples/zero_downtime -u &        # the new one waits for the sockets
//! kill -QUIT %1                                     # the old one hands them over, drains
//! ```
//!
//! The new process takes the old one's listening socket over the upgrade socket
//! (`[server] upgrade_socket` in a `-c` file; default `pingora-dsl-ZeroDowntime.upgrade.sock`
//! in the temporary directory), serves on it, and only then lets the old one drain and
//! exit: no connection is refused, none is reset. Unless `--upstream` or the `-c` file
//! gives peers, each process starts its own demo origins. The flags are those of every
//! declared proxy (`--help`).

use std::process::ExitCode;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::demo_upstreams;

proxy! {
    /// Round robin, answering which process served.
    pub ZeroDowntime {
        listen "127.0.0.1:6191";

        upstream origins {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
        }

        response_filter(_session, response, _ctx) {
            response.insert_header("x-served-by-pid", std::process::id().to_string())?;
        }
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env();
    if let Err(code) = demo_upstreams(&mut cli, "ZeroDowntime", &["origin-1", "origin-2"]) {
        return code;
    }
    ZeroDowntime::run_with(cli)
}

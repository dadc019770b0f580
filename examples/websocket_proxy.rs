//! A WebSocket proxy, declared with `proxy!`: upgrades are tunnelled to the origin once it
//! answers `101 Switching Protocols`, then bytes flow both ways until either side closes
//! (or nothing moves for the tunnel idle timeout, an hour by default).
//!
//! ```text
//! cargo run --release --example websocket_proxy
//! websocat ws://127.0.0.1:6190/chat      # or, in a browser console:
//!                                        # new WebSocket("ws://127.0.0.1:6190/chat")
//! ```
//!
//! Unless `--upstream` or the `-c` file gives peers (and not under `-t` or
//! `--print-config`), a WebSocket echo origin starts in-process (no network needed).
//! Flags: `--listen ADDR` (repeatable, default 127.0.0.1:6190), `--upstream HOST:PORT`
//! (repeatable), `--threads N`, and the other flags of every declared proxy (`--help`).

use std::process::ExitCode;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::{run_in_background, start_ws_echo, GivenPeers};

proxy! {
    /// WebSocket (and plain HTTP) to the chat origins.
    pub WebSocketProxy {
        listen "127.0.0.1:6190";

        upstream chat {
            peers ["127.0.0.1:8001"];
            select least_conn;
        }
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env();
    if GivenPeers::of(&cli, "WebSocketProxy").wants_demo(None) {
        match run_in_background(|| async { start_ws_echo().await }) {
            Ok(addr) => {
                println!("demo WebSocket echo origin on {addr}");
                cli.upstream = vec![addr.to_string()];
            }
            Err(e) => {
                eprintln!("error: cannot start the demo origin: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    WebSocketProxy::run_with(cli)
}

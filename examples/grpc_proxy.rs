//! A gRPC proxy, declared with `proxy!`: HTTP/2 from clients (cleartext prior knowledge
//! here; add `listen tls ...` for TLS with ALPN) and HTTP/2 to the origins over one
//! multiplexed connection per peer, streaming both ways, `grpc-status` trailers kept.
//!
//! ```text
//! cargo run --release --example grpc_proxy
//! grpcurl -plaintext 127.0.0.1:6192 ...        # any gRPC client; or with curl, one
//! printf '\0\0\0\0\5hello' | curl -sv --http2-prior-knowledge \
//!     -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- \
//!     http://127.0.0.1:6192/grpc.Echo/Chat | od -c   # the echo; -v shows grpc-status
//! ```
//!
//! Unless `--upstream` or the `-c` file gives peers (and not under `-t` or
//! `--print-config`), an HTTP/2 origin starts in-process whose `/grpc.*` paths echo
//! each gRPC message and end with `grpc-status: 0` (no network needed). Flags:
//! `--listen ADDR` (repeatable, default 127.0.0.1:6192), `--upstream HOST:PORT`
//! (repeatable; h2c origins), `--threads N`, and the others of every declared proxy.

use std::process::ExitCode;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::{run_in_background, GivenPeers, Origin};

proxy! {
    /// gRPC to HTTP/2 (h2c) origins.
    pub GrpcProxy {
        listen "127.0.0.1:6192";

        upstream services {
            peers ["127.0.0.1:50051"];
            http2;
            timeout read 5m;
        }
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env();
    if GivenPeers::of(&cli, "GrpcProxy").wants_demo(None) {
        let started = run_in_background(|| async {
            let origin = Origin::start_h2("grpc-demo").await?;
            let addr = origin.addr();
            // The origin serves as long as the process runs.
            std::mem::forget(origin);
            Ok(addr)
        });
        match started {
            Ok(addr) => {
                println!("demo gRPC (h2c) origin on {addr}");
                cli.upstream = vec![addr.to_string()];
            }
            Err(e) => {
                eprintln!("error: cannot start the demo origin: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    GrpcProxy::run_with(cli)
}

//! A TCP (layer 4) proxy written with the runtime: round robin over the peers, the next
//! peer tried when one refuses, half-closes passed on, idle connections closed.
//!
//! ```text
//! cargo run --release --example tcp_proxy
//! nc 127.0.0.1 6193          # the first line names the echo origin; type to see echoes
//! ```
//!
//! Without `--upstream`, two TCP echo origins start in-process (no network needed).
//! Flags: `--listen ADDR` (repeatable, default 127.0.0.1:6193), `--upstream HOST:PORT`
//! (repeatable), `--threads N`, `--idle SECONDS` (default 600).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pingora_dsl::lb::{Backend, Strategy};
use pingora_dsl::listen::resolve;
use pingora_dsl::server::{Server, ServerConf};
use pingora_dsl::tcp_proxy::TcpProxyService;
use pingora_dsl::upstream::UpstreamGroup;
use pingora_dsl_suite::origin::{run_in_background, start_tcp_echo};

/// A TCP proxy over a round-robin pool.
#[derive(Parser)]
struct Args {
    /// Address to listen on (repeatable).
    #[arg(long, default_value = "127.0.0.1:6193")]
    listen: Vec<String>,
    /// A peer (repeatable); without one, demo echo origins start.
    #[arg(long)]
    upstream: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds a connection may carry nothing before it is closed.
    #[arg(long, default_value_t = 600)]
    idle: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = Args::parse();
    if args.upstream.is_empty() {
        let started = run_in_background(|| async {
            Ok(vec![
                start_tcp_echo("echo-1").await?,
                start_tcp_echo("echo-2").await?,
            ])
        });
        match started {
            Ok(addrs) => args.upstream = addrs.iter().map(|a| a.to_string()).collect(),
            Err(e) => {
                eprintln!("error: cannot start the demo origins: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut backends = Vec::new();
    for peer in &args.upstream {
        match resolve(peer) {
            Ok(addrs) => backends.extend(addrs.into_iter().map(Backend::new)),
            Err(e) => {
                eprintln!("error: --upstream {peer}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let group = UpstreamGroup::new("peers", backends, Strategy::RoundRobin);
    // A refused connect goes to the next peer.
    group.set_retries(args.upstream.len().saturating_sub(1) as u32);
    let mut service = TcpProxyService::new("tcp-proxy", group);
    service.set_idle_timeout(Duration::from_secs(args.idle));
    for addr in &args.listen {
        service.add_tcp(addr);
    }
    if let Err(e) = service.bind() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    for addr in service.local_addrs() {
        println!(
            "tcp-proxy listening on {addr} (try: nc {} {})",
            addr.ip(),
            addr.port()
        );
    }
    let mut conf = ServerConf::default();
    if let Some(threads) = args.threads {
        conf.threads = threads.max(1);
    }
    let mut server = Server::new(conf);
    server.add_service(service);
    match server.run_until_signal() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! A TCP (layer 4) proxy declared with `tcp_proxy!`: round robin over two peers, the next
//! peer tried when one refuses, half-closes passed on, idle connections closed.
//!
//! ```text
//! cargo run --release --example tcp_proxy
//! nc 127.0.0.1 6193          # the first line names the echo origin; type to see echoes
//! # 6194 is for a load balancer in front: each connection starts with its PROXY header
//! (printf 'PROXY TCP4 192.0.2.7 127.0.0.1 5555 6194\r\n'; cat) | nc 127.0.0.1 6194
//! ```
//!
//! It takes the command line of every declared proxy (`--help`): `--listen`, `--upstream`,
//! `-c FILE`, `-t`, `--print-config`, `--admin`, `--access-log stdout` (a line per
//! connection), `--tls-listen ADDR --cert FILE --key FILE` (TLS terminated here), `-d`,
//! `-u`. When neither `--upstream` nor the `-c` file names peers, two TCP echo origins
//! start in-process (no network needed); under `-t` and `--print-config` none starts.

use std::process::ExitCode;

use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl::server::layer4::Transport;
use pingora_dsl::tcp_proxy;
use pingora_dsl_suite::origin::{run_in_background, start_tcp_echo, GivenPeers};

tcp_proxy! {
    /// Round robin over TCP echo servers.
    pub TcpEcho {
        listen "127.0.0.1:6193";
        // Behind a balancer that sends HAProxy's PROXY header: the access log (and
        // `select hash(client_ip)`) see the client it names.
        listen "127.0.0.1:6194" proxy_protocol required;
        upstream echo {
            peers ["127.0.0.1:7001", "127.0.0.1:7002"];
            select round_robin;
            retry 1;
            timeout connect 1s;
        }
        idle 10m;
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env_layer4(Transport::Tcp);
    if GivenPeers::of(&cli, "TcpEcho").wants_demo(None) {
        let started = run_in_background(|| async {
            Ok(vec![
                start_tcp_echo("echo-1").await?,
                start_tcp_echo("echo-2").await?,
            ])
        });
        match started {
            Ok(addrs) => cli.upstream = addrs.iter().map(|a| a.to_string()).collect(),
            Err(e) => {
                eprintln!("error: cannot start the demo origins: {e}");
                return ExitCode::FAILURE;
            }
        }
        println!("demo origins on {}", cli.upstream.join(", "));
    }
    TcpEcho::run_with(cli)
}

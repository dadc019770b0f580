//! A UDP (layer 4) proxy declared with `udp_proxy!`: each client address gets its own
//! upstream socket to a peer picked by consistent hashing of the client's address;
//! replies come back to that client, and a mapping unused for the idle timeout is dropped.
//!
//! ```text
//! cargo run --release --example udp_proxy
//! nc -u 127.0.0.1 6194       # each line comes back prefixed with the echo origin's name
//! ```
//!
//! It takes the command line of every declared proxy (`--help`) but the TLS flags:
//! `--listen`, `--upstream`, `-c FILE`, `-t`, `--print-config`, `--admin`,
//! `--access-log stdout` (a line per client mapping), `-d`, `-u` (the UDP sockets are
//! handed over). When neither `--upstream` nor the `-c` file names peers, two UDP echo
//! origins start in-process; under `-t` and `--print-config` none starts.

use std::process::ExitCode;

use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl::server::layer4::Transport;
use pingora_dsl::udp_proxy;
use pingora_dsl_suite::origin::{run_in_background, start_udp_echo, GivenPeers};

udp_proxy! {
    /// Consistent hashing of clients over UDP echo servers.
    pub UdpEcho {
        listen "127.0.0.1:6194";
        upstream echo {
            peers ["127.0.0.1:7101", "127.0.0.1:7102"];
            select consistent_hash(client_ip);
        }
        idle 30s;
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env_layer4(Transport::Udp);
    if GivenPeers::of(&cli, "UdpEcho").wants_demo(None) {
        let started = run_in_background(|| async {
            Ok(vec![
                start_udp_echo("echo-1").await?,
                start_udp_echo("echo-2").await?,
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
    UdpEcho::run_with(cli)
}

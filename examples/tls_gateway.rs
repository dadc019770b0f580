//! An HTTPS gateway: TLS termination with HTTP/1.1 and HTTP/2 (chosen by ALPN), and
//! HTTP/3 over QUIC on the same port number (UDP), in front of plain HTTP/1.1 origins,
//! declared with `proxy!`.
//!
//! ```text
//! cargo run --release --example tls_gateway
//! curl -k --http2 -i https://127.0.0.1:6189/     # HTTP/2 over TLS (-k: self-signed)
//! curl -k --http1.1 -i https://127.0.0.1:6189/   # HTTP/1.1 over TLS; Alt-Svc: h3=":6189"
//! curl -k --http3-only -i https://127.0.0.1:6189/ # HTTP/3, with a curl built with it
//! ```
//!
//! Without `--cert`/`--key`, a self-signed certificate for `localhost` and 127.0.0.1 is made
//! on the first run into `pingora-dsl-tls-gateway/` in the temporary directory and reused
//! after; its path is printed, so `curl --cacert PATH` works instead of `-k`.
//! Flags: `--listen ADDR` (repeatable, the HTTPS addresses, and the HTTP/3 ones unless
//! `--quic-listen` gives others; default 127.0.0.1:6189),
//! `--upstream HOST:PORT` (repeatable), `--threads N`, `--cert FILE --key FILE`,
//! `--client-ca FILE` (require client certificates), `-c FILE`, and the other flags of
//! every declared proxy (`--help`). Unless `--upstream` or the `-c` file gives peers, two
//! demo origins start (none under `-t` or `--print-config`). `--print-config` prints a
//! config file with the TLS listener and its certificate files (`tls_listen`,
//! `[[proxy.TlsGateway.certificate]]`): `-c` that file and the same proxy starts.

use std::process::ExitCode;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl::server::config::Config;
use pingora_dsl_suite::certs::self_signed;
use pingora_dsl_suite::origin::demo_upstreams;

proxy! {
    /// HTTPS (HTTP/1.1 and HTTP/2) to two origins, round robin.
    pub TlsGateway {
        // The certificate files here are replaced at start (see `main`).
        listen tls "127.0.0.1:6189" cert "tls-gateway.crt" key "tls-gateway.key";
        // HTTP/3: the TLS listener's certificates, over UDP.
        listen quic "127.0.0.1:6189";

        upstream origins {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
        }

        set_response_header "strict-transport-security" "max-age=31536000";
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env();
    // This example's --listen addresses are its HTTPS ones, and its HTTP/3 ones.
    if cli.quic_listen.is_empty() {
        cli.quic_listen = cli.listen.clone();
    }
    cli.tls_listen.append(&mut cli.listen);
    // Without a certificate from --cert or the config file, a self-signed one.
    if cli.cert.is_none() && !file_has_certificate(&cli) {
        let dir = std::env::temp_dir().join("pingora-dsl-tls-gateway");
        let files = if dir.join("localhost.crt").exists() && dir.join("localhost.key").exists() {
            Ok(pingora_dsl_suite::certs::CertFiles {
                cert: dir.join("localhost.crt"),
                key: dir.join("localhost.key"),
            })
        } else {
            self_signed(&dir, &["localhost", "127.0.0.1"])
        };
        match files {
            Ok(files) => {
                // On stderr: stdout is the configuration's under --print-config.
                eprintln!(
                    "self-signed certificate {} (try: curl --cacert {} https://localhost:6189/)",
                    files.cert.display(),
                    files.cert.display()
                );
                cli.cert = Some(files.cert);
                cli.key = Some(files.key);
            }
            Err(e) => {
                eprintln!("error: cannot make a self-signed certificate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(code) = demo_upstreams(&mut cli, "TlsGateway", &["origin-1", "origin-2"]) {
        return code;
    }
    TlsGateway::run_with(cli)
}

/// Whether the `-c` file gives this proxy's TLS listeners their certificates
/// (`[[proxy.TlsGateway.certificate]]`). A file that does not load counts as none: `run`
/// reports its error.
fn file_has_certificate(cli: &ProxyCli) -> bool {
    cli.conf
        .as_deref()
        .and_then(|path| Config::load(path).ok())
        .and_then(|config| config.proxy.get("TlsGateway").cloned())
        .is_some_and(|section| section.certificate.is_some())
}

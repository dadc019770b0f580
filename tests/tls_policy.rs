//! The process's TLS policy over real sockets: the key-exchange group a client's handshake
//! agreed on, in the access log and in `tls_handshakes_total`; a client offering only the
//! post-quantum X25519MLKEM768 (served by a build whose library has it, refused with a log
//! line naming the groups by one without); and the settings' startup errors (an unknown
//! or unavailable group, FIPS mode without the FIPS module) from the `-c` file.
//!
//! `./test.sh` runs this file three times: with the system's OpenSSL (3.0: no
//! post-quantum group), with `--features vendored-openssl` (OpenSSL 3.5 or later:
//! X25519MLKEM768 first) and with `--features boringssl` (BoringSSL serving; the clients
//! here stay on OpenSSL, an independent implementation).

mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod};
use pingora_dsl::downstream::RunningService;
use pingora_dsl::listen::tls::TlsSettings;
use pingora_dsl::observe::access_log::{AccessLog, AccessLogFormat, AccessLogTarget};
use pingora_dsl::observe::admin::Admin;
use pingora_dsl::prelude::*;
use pingora_dsl::service::Observable;
use pingora_dsl::tls;
use pingora_dsl_suite::certs::TestCa;
use pingora_dsl_suite::origin::Origin;
use support::{example_binary, wait_until_blocking, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pdsl-tls-policy-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// A TLS proxy to a fresh origin, logging to `dir/access.log`, with an admin listener.
struct TlsProxy {
    _origin: Origin,
    proxy: RunningService,
    admin: Admin,
    log: PathBuf,
    ca: PathBuf,
}

impl TlsProxy {
    async fn start(dir: &Path) -> TlsProxy {
        let ca = TestCa::new(dir).expect("ca");
        let server = ca.server("localhost", &["localhost"]).expect("cert");
        let origin = Origin::start("pq-origin").await.expect("origin");
        let log = dir.join("access.log");
        let options = ProxyOptions {
            access_log: Some(AccessLog::new(
                AccessLogTarget::File(log.clone()),
                AccessLogFormat::Combined,
            )),
            ..ProxyOptions::default()
        };
        let mut service = http_proxy_service_with(
            "tls-policy",
            TestProxy::new(&[origin.addr()]),
            options,
            tower::layer::util::Identity::new(),
        );
        service.add_tls("127.0.0.1:0", TlsSettings::new(&server.cert, &server.key));
        let admin = Admin::new();
        admin.watch(service.observer());
        TlsProxy {
            _origin: origin,
            proxy: service.spawn().expect("proxy starts"),
            admin,
            log,
            ca: ca.cert_path(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addrs()[0]
    }

    /// `GET path` over a TLS connection whose client offers only `groups`: the status.
    async fn get(&self, groups: &str, path: &str) -> u16 {
        let mut b = SslConnector::builder(SslMethod::tls_client()).expect("client context");
        b.set_groups_list(groups)
            .expect("the client library has the groups");
        b.set_ca_file(&self.ca).expect("CA");
        let ssl = b
            .build()
            .configure()
            .and_then(|c| c.into_ssl("localhost"))
            .expect("ssl");
        let tcp = TcpStream::connect(self.addr()).await.expect("connect");
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).expect("stream");
        tokio::time::timeout(Duration::from_secs(10), Pin::new(&mut stream).connect())
            .await
            .expect("the handshake ends within 10 s")
            .expect("the handshake completes");
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .expect("the answer within 10 s")
            .expect("read");
        let text = String::from_utf8_lossy(&response);
        text.get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("an HTTP answer: {text}"))
    }

    /// The access log line of `path`, once written.
    fn log_line(&self, path: &str) -> String {
        let mut line = String::new();
        wait_until_blocking(Duration::from_secs(10), "the access log line", || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            match text.lines().find(|l| l.contains(&format!("GET {path} "))) {
                Some(found) => {
                    line = found.to_owned();
                    true
                }
                None => false,
            }
        });
        line
    }

    /// `tls_handshakes_total` for `group`.
    fn handshakes(&self, group: &str) -> Option<u64> {
        let wanted =
            format!("pingora_dsl_tls_handshakes_total{{proxy=\"tls-policy\",group=\"{group}\"}} ");
        self.admin
            .metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(&wanted).and_then(|v| v.parse().ok()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agreed_group_is_in_the_access_log_and_counted_by_group() {
    let dir = scratch("agreed");
    let proxy = TlsProxy::start(&dir).await;
    assert_eq!(proxy.get("P-256", "/over-p256").await, 200);
    assert_eq!(proxy.get("X25519", "/over-x25519").await, 200);
    assert_eq!(proxy.get("X25519", "/again-x25519").await, 200);
    assert!(
        proxy.log_line("/over-p256").ends_with(" tls_group=P-256"),
        "{}",
        proxy.log_line("/over-p256")
    );
    assert!(proxy.log_line("/over-x25519").contains(" tls_group=X25519"));
    assert_eq!(
        proxy.handshakes("P-256"),
        Some(1),
        "{}",
        proxy.admin.metrics_text()
    );
    assert_eq!(proxy.handshakes("X25519"), Some(2));
    assert_eq!(
        proxy.handshakes("P-384"),
        None,
        "groups never agreed on are not listed"
    );
    proxy.proxy.shutdown().await;
}

/// The log lines of this test binary, for the refusal's line.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("pingora_dsl_runtime=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    })
    .clone()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_only_x25519mlkem768() {
    let log = captured_log();
    let dir = scratch("pq");
    let proxy = TlsProxy::start(&dir).await;
    if tls::post_quantum_available() {
        // OpenSSL 3.5 here, in the proxy and in this client alike.
        assert_eq!(
            tls::groups()[0],
            "X25519MLKEM768",
            "offered first by default"
        );
        assert_eq!(proxy.get("X25519MLKEM768", "/post-quantum").await, 200);
        let line = proxy.log_line("/post-quantum");
        assert!(line.ends_with(" tls_group=X25519MLKEM768"), "{line}");
        assert_eq!(proxy.handshakes("X25519MLKEM768"), Some(1));
        return proxy.proxy.shutdown().await;
    }
    // OpenSSL 3.0: this client's library cannot offer the group either, so a hand-made
    // TLS 1.3 ClientHello offers it alone.
    assert_eq!(
        tls::groups(),
        ["X25519", "P-256", "P-384"],
        "the classical default"
    );
    let mut tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    tcp.write_all(&client_hello_offering(0x11ec, 1216))
        .await
        .expect("write");
    let mut answer = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    assert_eq!(
        answer,
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
        "a fatal handshake_failure alert"
    );
    wait_until_blocking(Duration::from_secs(10), "the refusal's log line", || {
        let text = String::from_utf8_lossy(&log.lock().expect("log")).into_owned();
        text.lines().any(|l| {
            l.contains(" INFO ")
                && l.contains("TLS handshake failed")
                && l.contains("no key-exchange group this server accepts (X25519, P-256, P-384)")
        })
    });
    assert_eq!(proxy.proxy.accept_stats().accepted(), 1);
    proxy.proxy.shutdown().await;
}

/// A TLS 1.3 ClientHello whose only group (in `supported_groups` and `key_share`) is
/// `group`, with a key share of `share_len` bytes, for `localhost`.
fn client_hello_offering(group: u16, share_len: usize) -> Vec<u8> {
    fn with_len16(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }
    fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend(with_len16(body));
        v
    }
    let mut exts = Vec::new();
    let mut name = vec![0u8];
    name.extend(with_len16(b"localhost"));
    exts.extend(extension(0x0000, &with_len16(&name)));
    exts.extend(extension(0x002b, &[0x02, 0x03, 0x04]));
    exts.extend(extension(0x000a, &with_len16(&group.to_be_bytes())));
    // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    exts.extend(extension(
        0x000d,
        &with_len16(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01]),
    ));
    let mut share = group.to_be_bytes().to_vec();
    share.extend(with_len16(&vec![0x42; share_len]));
    exts.extend(extension(0x0033, &with_len16(&share)));
    let mut hello = vec![0x03, 0x03];
    hello.extend((0..32u8).collect::<Vec<_>>());
    hello.push(32);
    hello.extend([0x5a; 32]);
    hello.extend(with_len16(&[0x13, 0x01, 0x13, 0x02, 0x13, 0x03]));
    hello.extend([0x01, 0x00]);
    hello.extend(with_len16(&exts));
    let mut handshake = vec![0x01];
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(with_len16(&handshake));
    record
}

/// Runs the `load_balancer` example with `-t -c FILE` holding `server` as its `[server]`
/// section, with `env` set.
fn check_config(dir: &Path, server: &str, env: &[(&str, &str)]) -> (bool, String) {
    let conf = dir.join("proxy.toml");
    let mut file = std::fs::File::create(&conf).expect("config file");
    writeln!(file, "[server]\n{server}").expect("write");
    let out: Output = Command::new(example_binary("load_balancer"))
        .args(["-t", "-c"])
        .arg(&conf)
        .envs(env.iter().copied())
        .output()
        .expect("the example runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn groups_and_fips_from_the_config_file_are_checked_at_start() {
    let dir = scratch("config");
    let (ok, text) = check_config(&dir, r#"tls_groups = ["X25519", "P-256"]"#, &[]);
    assert!(ok && text.contains("configuration OK"), "{text}");

    let (ok, text) = check_config(&dir, r#"tls_groups = ["X25519", "P-999"]"#, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("unknown TLS key-exchange group `P-999`"),
        "{text}"
    );

    let (ok, text) = check_config(&dir, r#"tls_groups = ["X25519MLKEM768", "X25519"]"#, &[]);
    if tls::post_quantum_available() {
        assert!(ok, "{text}");
    } else {
        assert!(!ok, "{text}");
        assert!(
            text.contains("`X25519MLKEM768` is not available in OpenSSL")
                && text.contains("vendored-openssl"),
            "{text}"
        );
    }

    // FIPS mode without a FIPS module: no start, and the message says why.
    let empty = dir.join("no-modules");
    std::fs::create_dir_all(&empty).expect("dir");
    let modules = empty.display().to_string();
    let (ok, text) = check_config(&dir, "fips = true", &[("OPENSSL_MODULES", &modules)]);
    assert!(!ok, "{text}");
    if tls::library_version().starts_with("BoringSSL") {
        assert!(
            text.contains("FIPS mode: this BoringSSL is not a FIPS build"),
            "{text}"
        );
    } else {
        assert!(
            text.contains("FIPS mode: the OpenSSL FIPS provider could not be loaded from")
                && text.contains(&modules),
            "{text}"
        );
    }
    let (ok, text) = check_config(&dir, "fips = true\ntls_groups = [\"X25519\"]", &[]);
    assert!(!ok, "{text}");
}

#[test]
fn print_config_shows_the_groups_in_effect() {
    let out = Command::new(example_binary("load_balancer"))
        .arg("--print-config")
        .output()
        .expect("the example runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = if tls::post_quantum_available() {
        r#"tls_groups = ["X25519MLKEM768", "X25519", "P-256", "P-384"]"#
    } else {
        r#"tls_groups = ["X25519", "P-256", "P-384"]"#
    };
    assert!(text.contains(expected), "{text}");
    assert!(!text.contains("fips"), "{text}");
}

pingora_dsl::proxy! {
    /// Declares the process's TLS policy and Sentry reporting.
    pub Declaring {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        tls_groups ["P-384", "P-256"];
        fips on;
        sentry "http://key@127.0.0.1:9/42" sample 0.5;
    }
}

#[test]
fn what_a_proxy_declares_reaches_the_command_line_and_the_file_wins() {
    use pingora_dsl::server::cli::ProxyCli;
    use pingora_dsl::server::config::Config;
    use pingora_dsl::server::declared::Declared;
    let mut cli = ProxyCli::default();
    Declaring::declare_process(&mut cli);
    let policy = cli.tls_policy();
    assert_eq!(
        policy.groups,
        Some(vec!["P-384".to_owned(), "P-256".to_owned()])
    );
    assert!(policy.fips);
    let sentry = cli.sentry_settings().expect("declared");
    assert_eq!(sentry.dsn, "http://key@127.0.0.1:9/42");
    assert_eq!(sentry.sample_rate, Some(0.5));

    cli.config = Some(
        Config::parse(
            "[server]\ntls_groups = [\"P-256\"]\nfips = false\n[server.sentry]\ndsn = \"http://other@127.0.0.1:9/7\"\n",
        )
        .expect("a config"),
    );
    let policy = cli.tls_policy();
    assert_eq!(policy.groups, Some(vec!["P-256".to_owned()]));
    assert!(!policy.fips);
    assert_eq!(
        cli.sentry_settings().expect("from the file").dsn,
        "http://other@127.0.0.1:9/7"
    );
}

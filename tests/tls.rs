//! TLS termination and HTTP/2 downstream, with real clients: curl (HTTP/1.1 and HTTP/2
//! over TLS by ALPN, h2c with prior knowledge on the cleartext port) and OpenSSL's client
//! (which certificate SNI picked, mTLS). Certificates are made at test time.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::time::Duration;

use openssl::nid::Nid;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use pingora_dsl::downstream::RunningService;
use pingora_dsl::lb::Strategy;
use pingora_dsl::lb::UpstreamGroup;
use pingora_dsl::listen::tls::TlsSettings;
use pingora_dsl::prelude::*;
use pingora_dsl::upstream::UpstreamTls;
use pingora_dsl_suite::certs::{CertFiles, TestCa};
use pingora_dsl_suite::origin::{start_tls_origin, Origin};
use support::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pdsl-tls-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// A proxy to `origin` listening on a cleartext port and a TLS port.
fn start(origin: SocketAddr, tls: TlsSettings) -> RunningService {
    let mut service = http_proxy_service("tls-proxy", TestProxy::new(&[origin]));
    service.add_tcp("127.0.0.1:0");
    service.add_tls("127.0.0.1:0", tls);
    service.spawn().expect("proxy starts")
}

/// Runs curl with `args`, returning (stdout, success). Prints what the response was.
async fn curl(args: Vec<String>) -> (String, bool) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl runs (install curl)")
    })
    .await
    .expect("curl task");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_http1_and_http2_over_tls_and_h2c_in_the_clear() {
    let dir = scratch("curl");
    let ca = TestCa::new(&dir).expect("ca");
    let server = ca.server("localhost", &["localhost"]).expect("cert");
    let origin = Origin::start("tls-origin").await.expect("origin");
    let proxy = start(origin.addr(), TlsSettings::new(&server.cert, &server.key));
    let (plain, tls) = (proxy.addrs()[0], proxy.addrs()[1]);
    let url = format!("https://localhost:{}/via-tls", tls.port());
    let resolve = format!("localhost:{}:127.0.0.1", tls.port());
    let ca_path = ca.cert_path().display().to_string();
    let fmt = "%{http_code} %{http_version}\n".to_owned();

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (out, ok) = curl(vec![
            flag.into(),
            "--cacert".into(),
            ca_path.clone(),
            "--resolve".into(),
            resolve.clone(),
            "-D".into(),
            "-".into(),
            "-w".into(),
            fmt.clone(),
            url.clone(),
        ])
        .await;
        assert!(ok, "curl {flag}: {out}");
        assert!(out.contains("x-origin: tls-origin"), "{out}");
        assert!(out.contains("origin tls-origin"), "{out}");
        assert!(
            out.trim_end().ends_with(&format!("200 {version}")),
            "{flag}: {out}"
        );
    }

    // Cleartext: HTTP/2 with prior knowledge and HTTP/1.1 on the same port.
    for (flag, version) in [("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")] {
        let (out, ok) = curl(vec![
            flag.into(),
            "-w".into(),
            fmt.clone(),
            format!("http://{plain}/h2c"),
        ])
        .await;
        assert!(ok, "curl {flag}: {out}");
        assert!(
            out.trim_end().ends_with(&format!("200 {version}")),
            "{flag}: {out}"
        );
    }

    // An unknown CA is refused by the client (certificate verification is real).
    let (_, ok) = curl(vec!["--resolve".into(), resolve.clone(), url.clone()]).await;
    assert!(!ok, "curl must refuse a certificate from an unknown CA");
    proxy.shutdown().await;
}

/// `openssl s_client` against `addr` offering only `groups` (TLS 1.3, or 1.2 with
/// `tls12`): whether the handshake completed, and what the client printed.
async fn s_client(addr: SocketAddr, groups: &str, tls12: bool) -> (bool, String) {
    let groups = groups.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .args(["-servername", "localhost", "-groups", &groups])
            .arg(if tls12 { "-tls1_2" } else { "-tls1_3" })
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs (./test.sh installs it)")
    })
    .await
    .expect("s_client task");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let done = text.contains("Verify return code") && !text.contains("handshake failure");
    (out.status.success() && done, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_intermediate_profiles_key_exchange_groups_are_accepted() {
    let dir = scratch("groups");
    let ca = TestCa::new(&dir).expect("ca");
    let server = ca.server("localhost", &["localhost"]).expect("cert");
    let origin = Origin::start("groups-origin").await.expect("origin");
    let proxy = start(origin.addr(), TlsSettings::new(&server.cert, &server.key));
    let tls = proxy.addrs()[1];
    for (group, shown) in [
        ("X25519", "X25519"),
        ("P-256", "prime256v1"),
        ("P-384", "secp384r1"),
    ] {
        let (ok, text) = s_client(tls, group, false).await;
        assert!(ok, "{group} is accepted:\n{text}");
        assert!(text.contains(shown), "{group} was used:\n{text}");
    }
    // TLS 1.2 too (its client must also name the certificate's curve, P-256).
    let (ok, text) = s_client(tls, "X25519:P-256", true).await;
    assert!(ok && text.contains("Server Temp Key: X25519"), "{text}");
    for group in ["X448", "P-521", "ffdhe2048"] {
        let (ok, text) = s_client(tls, group, false).await;
        assert!(!ok, "{group} is not accepted:\n{text}");
    }
    // Offered the others first, the server settles on one of its own (by a retry).
    let (ok, text) = s_client(tls, "X448:P-521:P-384:X25519", false).await;
    assert!(ok, "{text}");
    let key = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Server Temp Key: "))
        .unwrap_or_default();
    assert!(
        key.starts_with("ECDH, secp384r1") || key.starts_with("X25519"),
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_http2_streams_share_one_connection() {
    let dir = scratch("streams");
    let ca = TestCa::new(&dir).expect("ca");
    let server = ca.server("localhost", &["localhost"]).expect("cert");
    let origin = Origin::start("h2-origin").await.expect("origin");
    let proxy = start(origin.addr(), TlsSettings::new(&server.cert, &server.key));
    let port = proxy.addrs()[1].port();
    let mut args: Vec<String> = vec![
        "--http2".into(),
        "--parallel".into(),
        "--cacert".into(),
        ca.cert_path().display().to_string(),
        "--resolve".into(),
        format!("localhost:{port}:127.0.0.1"),
        "-w".into(),
        "%{http_version}\n".into(),
        "-o".into(),
        "/dev/null".into(),
    ];
    for i in 0..20 {
        args.push(format!("https://localhost:{port}/bytes/{}", 1000 + i));
        if i + 1 < 20 {
            args.push("-o".into());
            args.push("/dev/null".into());
        }
    }
    let (out, ok) = curl(args).await;
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 20, "{out}");
    assert!(lines.iter().all(|l| *l == "2"), "{out}");
    assert_eq!(
        proxy.accept_stats().accepted(),
        1,
        "20 streams over one TLS connection"
    );
    assert_eq!(origin.requests(), 20);
    proxy.shutdown().await;
}

/// The common name of the certificate the server presents for SNI `name`, with or
/// without a client certificate.
async fn served_cn(
    addr: SocketAddr,
    ca: &Path,
    name: &str,
    client: Option<&CertFiles>,
) -> Result<(String, String), String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_ca_file(ca).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::PEER);
    if let Some(c) = client {
        b.set_certificate_file(&c.cert, SslFiletype::PEM)
            .map_err(|e| e.to_string())?;
        b.set_private_key_file(&c.key, SslFiletype::PEM)
            .map_err(|e| e.to_string())?;
    }
    let ssl = b
        .build()
        .configure()
        .map_err(|e| e.to_string())?
        .into_ssl(name)
        .map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), Pin::new(&mut stream).connect())
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let cn = stream
        .ssl()
        .peer_certificate()
        .and_then(|c| {
            c.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .next()
                .and_then(|e| e.data().to_string().ok())
        })
        .unwrap_or_default();
    // A request through, to see the session is usable (TLS 1.3 reports a refused client
    // certificate only at the first read).
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .map_err(|_| "response timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    Ok((cn, status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_by_exact_or_wildcard_name() {
    let dir = scratch("sni");
    let ca = TestCa::new(&dir).expect("ca");
    let default = ca.server("default.test", &["default.test"]).expect("cert");
    let api = ca.server("api.test", &["api.test"]).expect("cert");
    let wild = ca.server("wildcard.test", &["*.apps.test"]).expect("cert");
    let origin = Origin::start("sni-origin").await.expect("origin");
    let tls = TlsSettings::new(&default.cert, &default.key)
        .with_cert(&api.cert, &api.key)
        .with_cert(&wild.cert, &wild.key);
    let proxy = start(origin.addr(), tls);
    let addr = proxy.addrs()[1];
    for (sni, cn) in [
        ("api.test", "api.test"),
        ("one.apps.test", "wildcard.test"),
        ("default.test", "default.test"),
    ] {
        let (served, status) = served_cn(addr, &ca.cert_path(), sni, None)
            .await
            .expect("handshake");
        assert_eq!(served, cn, "SNI {sni}");
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    // An unknown name gets the default certificate (which then fails verification for
    // that name, as it should).
    let e = served_cn(addr, &ca.cert_path(), "unknown.test", None)
        .await
        .expect_err("hostname mismatch");
    assert!(e.contains("certificate verify failed"), "{e}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_clients_with_a_certificate_from_the_ca_only() {
    let dir = scratch("mtls");
    let ca = TestCa::new(&dir).expect("ca");
    let other = TestCa::new(&dir.join("other")).expect("other ca");
    let server = ca.server("localhost", &["localhost"]).expect("cert");
    let good = ca.client("good-client").expect("client cert");
    let stranger = other.client("stranger").expect("client cert");
    let origin = Origin::start("mtls-origin").await.expect("origin");
    let proxy = start(
        origin.addr(),
        TlsSettings::new(&server.cert, &server.key).with_client_ca(ca.cert_path()),
    );
    let addr = proxy.addrs()[1];
    let (_, status) = served_cn(addr, &ca.cert_path(), "localhost", Some(&good))
        .await
        .expect("a client of the CA is admitted");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for client in [None, Some(&stranger)] {
        let refused = served_cn(addr, &ca.cert_path(), "localhost", client).await;
        assert!(
            !matches!(&refused, Ok((_, s)) if s.contains("200")),
            "refused: {refused:?}"
        );
    }
    assert_eq!(
        origin.requests(),
        1,
        "only the admitted client reached the origin"
    );
    proxy.shutdown().await;
}

proxy! {
    /// A declared TLS listener whose certificate files the command line replaces.
    pub DeclaredTls {
        listen tls "127.0.0.1:6189" cert "declared.crt" key "declared.key";
        upstream web { peers ["127.0.0.1:9"]; }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_tls_listener_takes_its_certificate_from_the_command_line() {
    let dir = scratch("declared");
    let ca = TestCa::new(&dir).expect("ca");
    let server = ca.server("localhost", &["localhost"]).expect("cert");
    let origin = Origin::start("declared-origin").await.expect("origin");

    // As declared, the files do not exist: a startup error naming them.
    let e = DeclaredTls::new()
        .service()
        .bind()
        .expect_err("declared files are missing");
    assert!(e.to_string().contains("declared.crt"), "{e}");

    let cli = pingora_dsl::server::cli::ProxyCli {
        tls_listen: vec!["127.0.0.1:0".into()],
        cert: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        upstream: vec![origin.addr().to_string()],
        ..Default::default()
    };
    let mut proxy = DeclaredTls::new();
    cli.configure("DeclaredTls", proxy.router_mut())
        .expect("peers");
    let mut service = proxy.service();
    cli.apply_tls(&mut service).expect("certificate replaced");
    let running = service.spawn().expect("starts");
    let (cn, status) = served_cn(running.addr(), &ca.cert_path(), "localhost", None)
        .await
        .expect("handshake");
    assert_eq!(
        (cn.as_str(), status.as_str()),
        ("localhost", "HTTP/1.1 200 OK")
    );
    assert_eq!(origin.requests(), 1);

    // --tls-listen without a certificate on a proxy with no TLS listener says what to add.
    let cli = pingora_dsl::server::cli::ProxyCli {
        tls_listen: vec!["127.0.0.1:0".into()],
        ..Default::default()
    };
    let mut plain = http_proxy_service("plain", TestProxy::new(&[origin.addr()]));
    let e = cli.apply_tls(&mut plain).expect_err("no certificate");
    assert!(e.to_string().contains("--cert FILE --key FILE"), "{e}");
    running.shutdown().await;
}

#[test]
fn bad_certificate_files_are_startup_errors_naming_the_file() {
    let dir = scratch("bad");
    let ca = TestCa::new(&dir).expect("ca");
    let a = ca.server("a.test", &["a.test"]).expect("cert");
    let b = ca.server("b.test", &["b.test"]).expect("cert");
    let cases = [
        (TlsSettings::new(&a.cert, &b.key), "does not match"),
        (
            TlsSettings::new(dir.join("missing.crt"), &a.key),
            "missing.crt",
        ),
        (
            TlsSettings::new(&a.cert, dir.join("missing.key")),
            "missing.key",
        ),
        (TlsSettings::new(&a.key, &a.key), "a_test.key"),
        (
            TlsSettings::new(&a.cert, &a.key).with_client_ca(dir.join("no-ca.pem")),
            "no-ca.pem",
        ),
    ];
    for (tls, why) in cases {
        let mut service = http_proxy_service(
            "bad-tls",
            TestProxy::new(&["127.0.0.1:9".parse().expect("addr")]),
        );
        service.add_tls("127.0.0.1:0", tls);
        let e = service.bind().expect_err(why);
        assert!(e.to_string().contains(why), "{why}: {e}");
        assert!(e.to_string().contains("listen 127.0.0.1:0"), "{e}");
    }
}

/// A hand-written proxy forwarding everything to one peer (with its TLS connector).
struct ToPeer(HttpPeer);

impl ProxyHttp for ToPeer {
    type Ctx = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        Ok(self.0.clone())
    }
}

/// Status, body and the origin's `x-sni`/`x-client-cn` for a GET through a proxy to `peer`.
async fn through(peer: HttpPeer) -> (u16, String, Option<String>, Option<String>) {
    let mut service = http_proxy_service("to-tls", ToPeer(peer));
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn().expect("proxy starts");
    let c = support::client();
    let (resp, body) = support::send(&c, support::get(running.addr(), "/", None)).await;
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let out = (
        resp.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
        header("x-sni"),
        header("x-client-cn"),
    );
    running.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_origins_verifies_the_certificate_and_name_unless_told_not_to() {
    let dir = scratch("upstream");
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server("origin.test", &["origin.test"]).expect("cert");
    let (origin, seen) = start_tls_origin(TlsSettings::new(&cert.cert, &cert.key))
        .await
        .expect("tls origin");
    let build = |tls: UpstreamTls| HttpPeer::new(origin).with_tls(tls.build().expect("builds"));

    // Trusted CA and the right name: served, and the origin saw the SNI.
    let trusted = UpstreamTls {
        ca_file: Some(ca.cert_path()),
        ..UpstreamTls::with_sni("origin.test")
    };
    let (status, body, sni, _) = through(build(trusted.clone())).await;
    assert_eq!((status, body.as_str()), (200, "tls origin"));
    assert_eq!(sni.as_deref(), Some("origin.test"));

    // The system's CAs do not know this one; a wrong name fails even with the CA.
    let (status, ..) = through(build(UpstreamTls::with_sni("origin.test"))).await;
    assert_eq!(
        status, 502,
        "a self-signed origin is refused without its CA"
    );
    let wrong_name = UpstreamTls {
        ca_file: Some(ca.cert_path()),
        ..UpstreamTls::with_sni("other.test")
    };
    let (status, ..) = through(build(wrong_name)).await;
    assert_eq!(status, 502, "a certificate for another name is refused");

    // The explicit opt-out accepts anything.
    let insecure = UpstreamTls {
        insecure: true,
        ..UpstreamTls::with_sni("whatever.test")
    };
    let (status, ..) = through(build(insecure)).await;
    assert_eq!(status, 200);

    // Pooled: sequential requests reuse one TLS connection.
    let before = seen.connections.load(std::sync::atomic::Ordering::SeqCst);
    let mut service = http_proxy_service("pooled", ToPeer(build(trusted)));
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn().expect("proxy starts");
    let c = support::client();
    for _ in 0..5 {
        let (resp, _) = support::send(&c, support::get(running.addr(), "/", None)).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        seen.connections.load(std::sync::atomic::Ordering::SeqCst) - before,
        1,
        "five requests, one TLS connection"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_to_an_origin_that_requires_client_certificates() {
    let dir = scratch("upstream-mtls");
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server("origin.test", &["origin.test"]).expect("cert");
    let client = ca.client("proxy-client").expect("client cert");
    let (origin, _) =
        start_tls_origin(TlsSettings::new(&cert.cert, &cert.key).with_client_ca(ca.cert_path()))
            .await
            .expect("tls origin");
    let base = UpstreamTls {
        ca_file: Some(ca.cert_path()),
        ..UpstreamTls::with_sni("origin.test")
    };
    let with_cert = UpstreamTls {
        client_cert: Some(pingora_dsl::listen::tls::CertKey {
            cert: client.cert.clone(),
            key: client.key.clone(),
        }),
        ..base.clone()
    };
    let peer = |tls: UpstreamTls| HttpPeer::new(origin).with_tls(tls.build().expect("builds"));
    let (status, _, _, cn) = through(peer(with_cert)).await;
    assert_eq!((status, cn.as_deref()), (200, Some("proxy-client")));
    let (status, ..) = through(peer(base)).await;
    assert_eq!(
        status, 502,
        "without a client certificate the origin refuses"
    );
}

#[test]
fn bad_upstream_tls_files_are_errors_naming_the_file() {
    let dir = scratch("upstream-bad");
    let e = UpstreamTls {
        ca_file: Some(dir.join("nope.pem")),
        ..UpstreamTls::with_sni("a.test")
    }
    .build()
    .expect_err("missing CA");
    assert!(e.to_string().contains("nope.pem"), "{e}");
    let group =
        UpstreamGroup::new("secure", Vec::new(), Strategy::RoundRobin).with_tls(&UpstreamTls {
            ca_file: Some(dir.join("nope.pem")),
            ..UpstreamTls::default()
        });
    let e = group.check().expect_err("reported");
    assert!(e.to_string().contains("upstream secure"), "{e}");
}

/// A certificate about to be renewed: the live files (`cert`, `key`) hold the one for CN
/// `first`; `second` is its renewal, both for `localhost`, signed by `ca`.
struct Renewal {
    dir: PathBuf,
    ca: TestCa,
    second: CertFiles,
    cert: PathBuf,
    key: PathBuf,
}

impl Renewal {
    fn new(test: &str) -> Self {
        let dir = scratch(test);
        let ca = TestCa::new(&dir).expect("ca");
        let first = ca.server("first", &["localhost"]).expect("cert");
        let second = ca.server("second", &["localhost"]).expect("cert");
        let (cert, key) = (dir.join("live.crt"), dir.join("live.key"));
        std::fs::copy(&first.cert, &cert).expect("copy");
        std::fs::copy(&first.key, &key).expect("copy");
        Renewal {
            dir,
            ca,
            second,
            cert,
            key,
        }
    }

    /// The renewal written over the live files.
    fn renew(&self) {
        std::fs::copy(&self.second.cert, &self.cert).expect("copy");
        std::fs::copy(&self.second.key, &self.key).expect("copy");
    }

    /// The `tls_gateway` example on a port of its own, serving the live files in front of
    /// `origin`.
    fn gateway(&self, origin: SocketAddr) -> Command {
        let mut command = Command::new(support::example_binary("tls_gateway"));
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &origin.to_string(),
            "--cert",
            self.cert.to_str().expect("utf-8"),
            "--key",
            self.key.to_str().expect("utf-8"),
        ]);
        command
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_keeping_open_connections_and_a_bad_file_changes_nothing() {
    use support::{read_until, spawn_with_lines_and, wait_until, KillOnDrop};
    let renewal = Renewal::new("reload");
    let (ca, cert) = (&renewal.ca, &renewal.cert);
    let origin = Origin::start("reload-origin").await.expect("origin");
    let log = renewal.dir.join("stderr.log");
    let (child, lines) = spawn_with_lines_and(
        &mut renewal.gateway(origin.addr()),
        std::fs::File::create(&log).expect("log file"),
    );
    let running = KillOnDrop(child);
    let addr = support::addr_after(
        &read_until(&lines, &mut Vec::new(), |l| l.contains("https://")),
        "https://",
    );
    let served = |expected: &'static str| {
        let ca = ca.cert_path();
        async move {
            let (cn, status) = served_cn(addr, &ca, "localhost", None).await.expect("TLS");
            assert_eq!(
                (cn.as_str(), status.as_str()),
                (expected, "HTTP/1.1 200 OK")
            );
        }
    };
    served("first").await;

    // A connection opened before the reload, used before and after it.
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("client");
    b.set_ca_file(ca.cert_path()).expect("ca");
    let ssl = b
        .build()
        .configure()
        .and_then(|c| c.into_ssl("localhost"))
        .expect("ssl");
    let mut kept = tokio_openssl::SslStream::new(ssl, TcpStream::connect(addr).await.expect("tcp"))
        .expect("stream");
    Pin::new(&mut kept).connect().await.expect("handshake");
    assert_eq!(
        support::exchange(&mut kept, "/", None).await.0,
        "HTTP/1.1 200 OK"
    );

    let hangup = |times: usize, needle: &'static str| {
        let pid = nix::unistd::Pid::from_raw(running.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
        let log = log.clone();
        async move {
            wait_until(Duration::from_secs(10), needle, || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .matches(needle)
                    .count()
                    >= times
            })
            .await
        }
    };
    renewal.renew();
    hangup(1, "TLS certificates reloaded").await;
    served("second").await;
    assert_eq!(
        support::exchange(&mut kept, "/", None).await.0,
        "HTTP/1.1 200 OK",
        "the open connection goes on"
    );

    // A broken file: the error names it, and the certificate in use stays.
    std::fs::write(cert, "not a certificate").expect("write");
    hangup(1, "TLS certificate NOT reloaded").await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("live.crt"), "{text}");
    served("second").await;
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_certificate_files_are_loaded_when_they_change() {
    use support::{read_until, spawn_with_lines_and, wait_until, KillOnDrop};
    let renewal = Renewal::new("watch");
    let origin = Origin::start("watch-origin").await.expect("origin");
    let conf = renewal.dir.join("gateway.toml");
    let args = |conf: &Path| {
        let mut command = renewal.gateway(origin.addr());
        command.arg("-c").arg(conf);
        command
    };
    // A value that is not a duration stops `-t`, naming the key.
    std::fs::write(&conf, "[server]\ntls_watch = \"often\"\n").expect("config");
    let checked = args(&conf).arg("-t").output().expect("runs");
    let said = String::from_utf8_lossy(&checked.stderr).into_owned();
    assert!(
        !checked.status.success() && said.contains("server.tls_watch"),
        "{said}"
    );

    std::fs::write(&conf, "[server]\ntls_watch = \"100ms\"\n").expect("config");
    let log = renewal.dir.join("stderr.log");
    let (child, lines) = spawn_with_lines_and(
        &mut args(&conf),
        std::fs::File::create(&log).expect("log file"),
    );
    let _running = KillOnDrop(child);
    let addr = support::addr_after(
        &read_until(&lines, &mut Vec::new(), |l| l.contains("https://")),
        "https://",
    );
    let served = |ca: PathBuf| async move {
        let (cn, status) = served_cn(addr, &ca, "localhost", None).await.expect("TLS");
        assert_eq!(status, "HTTP/1.1 200 OK");
        cn
    };
    assert_eq!(served(renewal.ca.cert_path()).await, "first");
    // Renewed on disk, no signal: the next check loads it.
    renewal.renew();
    wait_until(Duration::from_secs(10), "the watch reloads", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("TLS certificates reloaded")
    })
    .await;
    // A check that caught the certificate before its key failed and waited for the next
    // change; a successful one loaded both.
    assert_eq!(served(renewal.ca.cert_path()).await, "second");
}

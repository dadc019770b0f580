//! Two declared proxies in one process (the `https_edge` example): a port-80 redirector and
//! an HTTPS edge routing gRPC, WebSocket and web traffic, configured by one file, watched
//! by one admin listener, stopped by one signal — over real sockets, TLS, curl and origins.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl_suite::certs::TestCa;
use pingora_dsl_suite::origin::{grpc_message, start_ws_echo, Origin};
use support::{addr_after, client, example_binary, read_until, send, spawn_with_lines};

/// Runs curl with `args` (bounded by 10 s); its stdout.
async fn curl(args: Vec<String>) -> String {
    curl_both(args).await.0
}

/// Runs curl with `args` (bounded by 10 s); its stdout and stderr (`-v` says there which
/// certificate the server presented).
async fn curl_both(args: Vec<String>) -> (String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl runs (the test command installs it)")
    })
    .await
    .expect("curl task");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirector_and_an_https_edge_run_as_one_process() {
    let dir = std::env::temp_dir().join(format!("pdsl-proxy-set-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server("localhost", &["localhost"]).expect("cert");
    let api_cert = ca
        .server("api.localhost", &["api.localhost"])
        .expect("cert");
    let web = Origin::start("web").await.expect("origin");
    let grpc = Origin::start_h2("grpc").await.expect("origin");
    let ws = start_ws_echo().await.expect("origin");
    let conf = dir.join("edge.toml");
    std::fs::write(
        &conf,
        format!(
            r#"[proxy.Redirect]
listen = ["127.0.0.1:0"]

[proxy.Edge]
tls_listen = ["127.0.0.1:0"]
certificate = [{{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }}]
upstream.web.peers = ["{}"]
upstream.grpc.peers = ["{}"]
upstream.ws.peers = ["{}"]
"#,
            cert.cert.display(),
            cert.key.display(),
            api_cert.cert.display(),
            api_cert.key.display(),
            web.addr(),
            grpc.addr(),
            ws
        ),
    )
    .expect("config file");

    let (child, lines) = spawn_with_lines(Command::new(example_binary("https_edge")).args([
        "-c",
        conf.to_str().expect("utf-8 path"),
        "--admin",
        "127.0.0.1:0",
    ]));
    let _running = support::KillOnDrop(child);
    let mut seen = Vec::new();
    let redirect = addr_after(
        &read_until(&lines, &mut seen, |l| {
            l.starts_with("Redirect listening on http://")
        }),
        "http://",
    );
    let edge = addr_after(
        &read_until(&lines, &mut seen, |l| {
            l.starts_with("Edge listening on https://")
        }),
        "https://",
    );
    let admin = addr_after(
        &read_until(&lines, &mut seen, |l| l.starts_with("admin on http://")),
        "http://",
    );

    // Cleartext: to the same URL over HTTPS, the port dropped from the host.
    let req = Request::get(format!("http://{redirect}/shop/cart?id=7"))
        .header("host", format!("localhost:{}", redirect.port()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (resp, _) = send(&client(), req).await;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        "https://localhost/shop/cart?id=7"
    );

    let base = tls_args(&ca.cert_path(), edge);
    let page = curl([base.clone(), vec![url(edge, "/")]].concat()).await;
    assert!(
        page.starts_with("HTTP/1.1 200") || page.starts_with("HTTP/2 200"),
        "{page}"
    );
    assert!(page.contains("x-origin: web"), "{page}");
    assert!(
        page.contains("strict-transport-security: max-age=31536000"),
        "{page}"
    );

    // SNI picks the certificate: the other name gets its own.
    let (page, verbose) = curl_both(vec![
        "-v".into(),
        "--cacert".into(),
        ca.cert_path().display().to_string(),
        "--resolve".into(),
        format!("api.localhost:{}:127.0.0.1", edge.port()),
        format!("https://api.localhost:{}/", edge.port()),
    ])
    .await;
    assert!(page.contains("x-origin: web"), "{page}");
    assert!(verbose.contains("CN=api.localhost"), "{verbose}");
    assert!(!verbose.contains("CN=localhost"), "{verbose}");

    let frame = dir.join("frame.bin");
    std::fs::write(&frame, grpc_message(b"ping")).expect("frame");
    let call = curl(
        [
            base.clone(),
            vec![
                "--http2".into(),
                "-H".into(),
                "content-type: application/grpc".into(),
                "-H".into(),
                "te: trailers".into(),
                "--data-binary".into(),
                format!("@{}", frame.display()),
                url(edge, "/grpc.test.Echo/Say"),
            ],
        ]
        .concat(),
    )
    .await;
    assert!(call.starts_with("HTTP/2 200"), "{call}");
    assert!(call.contains("x-origin: grpc"), "{call}");
    assert_eq!(grpc.requests(), 1);

    let upgrade = curl(
        [
            base,
            vec![
                "--http1.1".into(),
                "--max-time".into(),
                "3".into(),
                "-H".into(),
                "connection: upgrade".into(),
                "-H".into(),
                "upgrade: websocket".into(),
                "-H".into(),
                "sec-websocket-version: 13".into(),
                "-H".into(),
                "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==".into(),
                url(edge, "/chat"),
            ],
        ]
        .concat(),
    )
    .await;
    assert!(upgrade.starts_with("HTTP/1.1 101"), "{upgrade}");
    assert_eq!(
        web.requests(),
        2,
        "neither gRPC nor the upgrade went to the web pool"
    );

    // One admin listener shows both proxies.
    let (resp, metrics) = send(
        &client(),
        Request::get(format!("http://{admin}/metrics"))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("proxy=\"Redirect\""), "{metrics}");
    assert!(metrics.contains("proxy=\"Edge\""), "{metrics}");
}

/// curl's TLS arguments: the test CA, and `localhost` resolved to the edge.
fn tls_args(ca: &std::path::Path, edge: SocketAddr) -> Vec<String> {
    vec![
        "--cacert".into(),
        ca.display().to_string(),
        "--resolve".into(),
        format!("localhost:{}:127.0.0.1", edge.port()),
    ]
}

fn url(edge: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", edge.port())
}

#[test]
fn flags_for_one_proxy_are_refused_in_a_set() {
    let out = Command::new(example_binary("https_edge"))
        .args(["--listen", "127.0.0.1:0", "-t"])
        .output()
        .expect("the example runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("would apply to every proxy of Redirect, Edge"),
        "{stderr}"
    );
}

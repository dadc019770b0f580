//! HTTP/3 downstream: a QUIC listener beside the TLS one, serving the same proxy. An
//! independent client (the `h3` crate's, over quinn) makes GETs and POSTs with bodies to
//! real origins, many streams at once, a large download through flow control, a request
//! over the header limit, and leaves mid-download; the HTTP/1 answer names the QUIC port in
//! `Alt-Svc`. Certificates are made at test time.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use pingora_dsl::downstream::RunningService;
use pingora_dsl::listen::tls::TlsSettings;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::certs::{self_signed, CertFiles};
use pingora_dsl_suite::origin::Origin;
use support::h3_client::{client_endpoint, connect, connect_with, exchange, over};
use support::TestProxy;

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pdsl-h3-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// A proxy to `origin` on a cleartext port, a TLS port and a QUIC port.
fn start(origin: SocketAddr, cert: &CertFiles) -> RunningService {
    let mut service = http_proxy_service("h3-proxy", TestProxy::new(&[origin]));
    service.add_tcp("127.0.0.1:0");
    service.add_tls("127.0.0.1:0", TlsSettings::new(&cert.cert, &cert.key));
    service.add_quic("127.0.0.1:0");
    service.spawn().expect("proxy starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_over_http3_reach_the_origin_through_the_same_proxy() {
    let dir = scratch("basic");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    let proxy = start(origin.addr(), &cert);
    let quic = proxy.quic_addrs()[0];
    let (mut send, _endpoint) = connect(quic, &cert.cert).await;

    let get = exchange(&mut send, http::Method::GET, "/hello", Bytes::new()).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.body, b"origin a");
    assert_eq!(get.headers["x-origin"], "a");
    assert_eq!(
        get.headers["x-seen-host"], "localhost",
        "the authority became Host upstream"
    );
    assert!(
        get.headers.get("alt-svc").is_none(),
        "no Alt-Svc over HTTP/3 itself"
    );

    let payload = Bytes::from(vec![b'x'; 300_000]);
    let post = exchange(&mut send, http::Method::POST, "/echo", payload.clone()).await;
    assert_eq!(post.status, 200);
    assert_eq!(
        post.body.len(),
        payload.len(),
        "the origin echoed every byte"
    );
    let consumed = exchange(&mut send, http::Method::PUT, "/consume", payload).await;
    assert_eq!(consumed.body, b"300000");
    assert_eq!(origin.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_at_once_and_a_large_download_through_flow_control() {
    let dir = scratch("streams");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    let proxy = start(origin.addr(), &cert);
    let (send, _endpoint) = connect(proxy.quic_addrs()[0], &cert.cert).await;

    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/bytes/{}", 1000 + i);
            let answer = exchange(&mut send, http::Method::GET, &path, Bytes::new()).await;
            (answer.status, answer.body.len())
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.expect("task"), (200, 1000 + i), "stream {i}");
    }
    // 64 MiB: far past the per-stream (1 MiB) and per-connection (8 MiB) windows.
    let mut send = send;
    let big = exchange(
        &mut send,
        http::Method::GET,
        "/bytes/67108864",
        Bytes::new(),
    )
    .await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 64 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_section_over_the_limit_is_answered_431_and_http1_names_the_quic_port() {
    let dir = scratch("limits");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    let proxy = start(origin.addr(), &cert);
    let quic = proxy.quic_addrs()[0];

    // Alt-Svc on the HTTP/1 answer, naming the QUIC port.
    let (response, _) =
        support::send(&support::client(), support::get(proxy.addr(), "/", None)).await;
    assert_eq!(
        response.headers()["alt-svc"],
        format!("h3=\":{}\"; ma=86400", quic.port()).as_str()
    );

    // 101 header fields: over the 100 that HTTP/1 allows.
    let (mut send, _endpoint) = connect(quic, &cert.cert).await;
    let mut request = http::Request::builder().uri("https://localhost/many");
    for i in 0..101 {
        request = request.header(format!("x-field-{i}"), "v");
    }
    let mut stream = send
        .send_request(request.body(()).expect("request"))
        .await
        .expect("sent");
    stream.finish().await.expect("ended");
    let response = stream.recv_response().await.expect("an answer");
    assert_eq!(response.status(), 431);
    assert_eq!(
        origin.requests(),
        1,
        "only the HTTP/1 request reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_download_leaves_the_proxy_serving() {
    let dir = scratch("vanish");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    let proxy = start(origin.addr(), &cert);
    let quic = proxy.quic_addrs()[0];
    {
        let (mut send, endpoint) = connect(quic, &cert.cert).await;
        let request = http::Request::get("https://localhost/drip/1000/10")
            .body(())
            .expect("request");
        let mut stream = send.send_request(request).await.expect("sent");
        stream.finish().await.expect("ended");
        let response = stream.recv_response().await.expect("an answer");
        assert_eq!(response.status(), 200);
        let first = stream.recv_data().await.expect("data");
        assert!(first.is_some(), "the download started");
        // Gone mid-body: the client's endpoint closes under the stream.
        endpoint.close(0u32.into(), b"");
    }
    // The proxy stopped reading the origin's drip for it and serves the next client.
    let (mut send, _endpoint) = connect(quic, &cert.cert).await;
    let again = exchange(&mut send, http::Method::GET, "/after", Bytes::new()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, b"origin a");
}

/// A proxy like [`start`]'s with its QUIC limits changed by `limits`, and an admin
/// listener watching it: (proxy, admin).
fn start_with(
    origin: SocketAddr,
    cert: &CertFiles,
    limits: impl FnOnce(&mut pingora_dsl::listen::quic::QuicOptions),
) -> (RunningService, RunningService) {
    let mut service = http_proxy_service("h3-proxy", TestProxy::new(&[origin]));
    service.add_tls("127.0.0.1:0", TlsSettings::new(&cert.cert, &cert.key));
    service.add_quic("127.0.0.1:0");
    limits(&mut service.options_mut().quic);
    support::start_with_admin(service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_validated_with_a_retry_and_connections_past_the_cap_refused() {
    let dir = scratch("retry");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    // Every client proves its address first (as under load), and one connection at most.
    let (proxy, admin) = start_with(origin.addr(), &cert, |q| {
        q.validate_over = 0;
        q.max_connections = 1;
    });
    let quic = proxy.quic_addrs()[0];
    let (mut send, _first) = connect(quic, &cert.cert).await;
    let answer = exchange(&mut send, http::Method::GET, "/", Bytes::new()).await;
    assert_eq!(answer.status, 200, "served after the Retry round trip");

    // A second connection while the first is open: refused at once (CONNECTION_REFUSED),
    // so the client can fall back to TCP.
    let endpoint = client_endpoint(&cert.cert);
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(quic, "localhost").expect("connect"),
    )
    .await
    .expect("an answer within 10 s");
    let error = refused.expect_err("refused");
    assert!(
        matches!(error, quinn::ConnectionError::ConnectionClosed(ref c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
        "{error:?}"
    );
    let metrics = support::fetch(admin.addr(), "/metrics").await;
    let proxy_label = [("proxy", "h3-proxy")];
    let count = |name| support::count(&metrics, name, &proxy_label);
    assert_eq!(count("pingora_dsl_http3_connections_total"), 1);
    assert_eq!(count("pingora_dsl_http3_requests_total"), 1);
    assert!(
        count("pingora_dsl_quic_retries_total") >= 1,
        "a Retry came first"
    );
    assert_eq!(count("pingora_dsl_quic_refused_total"), 1);
    assert_eq!(count("pingora_dsl_quic_handshake_failures_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_lets_the_requests_in_flight_finish() {
    let dir = scratch("drain");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    let proxy = start(origin.addr(), &cert);
    let quic = proxy.quic_addrs()[0];
    let (mut send, _endpoint) = connect(quic, &cert.cert).await;
    // 10 chunks, one every 50 ms: in flight when the shutdown starts.
    let slow = tokio::spawn({
        let mut send = send.clone();
        async move { exchange(&mut send, http::Method::GET, "/drip/10/50", Bytes::new()).await }
    });
    support::wait_until(
        Duration::from_secs(10),
        "the slow request reached the origin",
        || origin.requests() == 1,
    )
    .await;
    let stopped = tokio::spawn(proxy.shutdown());
    let answer = slow.await.expect("the slow request");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), 10 * 1024, "every chunk arrived");
    stopped.await.expect("stopped");
    // After the GOAWAY this connection takes no new request.
    let request = http::Request::get("https://localhost/late")
        .body(())
        .expect("request");
    let late = tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = send.send_request(request).await?;
        stream.finish().await?;
        stream.recv_response().await
    })
    .await
    .expect("an answer within 10 s");
    assert!(late.is_err(), "no request after the GOAWAY: {late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_aioquic_gets_and_posts_bodies_and_meets_the_header_limit_over_http3() {
    let dir = scratch("aioquic");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    let proxy = start(origin.addr(), &cert);
    let port = proxy.quic_addrs()[0].port().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http3/aioquic_client.py");
    // (The script bounds itself at 30 s.)
    let ca = cert.cert.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .arg(&port)
            .arg(&ca)
            .output()
    })
    .await
    .expect("the client's thread")
    .expect("python3 runs (./test.sh installs aioquic)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aioquic client: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(answers.len(), 4, "{stdout}");
    assert_eq!(answers[0]["status"], 200);
    assert_eq!(answers[0]["origin"], "a");
    assert_eq!(answers[0]["body"], "origin a");
    assert_eq!(answers[1]["status"], 200);
    assert_eq!(answers[1]["length"], 100_000, "the echo of the POST body");
    assert_eq!(
        answers[2]["body"],
        (16 * 65536).to_string(),
        "the origin read 1 MiB"
    );
    assert_eq!(answers[3]["status"], 431, "a header section over 64 KiB");
    assert_eq!(
        origin.requests(),
        3,
        "the oversized request never reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_requiring_client_certificates_requires_them_over_http3_too() {
    use pingora_dsl::listen::tls::CertKey;
    use pingora_dsl_suite::certs::TestCa;
    use support::h3_client::client_endpoint_with;

    let dir = scratch("mtls");
    let ca = TestCa::new(&dir).expect("CA");
    let server = ca
        .server("localhost", &["localhost"])
        .expect("server certificate");
    let partner = ca.client("partner").expect("client certificate");
    let origin = Origin::start("a").await.expect("origin");
    let mut service = http_proxy_service("h3-mtls", TestProxy::new(&[origin.addr()]));
    service.add_tcp("127.0.0.1:0");
    service.add_tls(
        "127.0.0.1:0",
        TlsSettings {
            certs: vec![CertKey {
                cert: server.cert.clone(),
                key: server.key.clone(),
            }],
            client_ca: Some(ca.cert_path()),
            handshake_timeout: None,
        },
    );
    service.add_quic("127.0.0.1:0");
    let proxy = service.spawn().expect("proxy starts");
    let quic = proxy.quic_addrs()[0];

    // Without a certificate: no request gets through.
    let anonymous = client_endpoint_with(&ca.cert_path(), None);
    let attempt = tokio::time::timeout(Duration::from_secs(10), async {
        let mut send = connect_with(&anonymous, quic, Duration::from_secs(10)).await?;
        let request = http::Request::get("https://localhost/")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut stream = send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        stream.finish().await.map_err(|e| e.to_string())?;
        stream.recv_response().await.map_err(|e| e.to_string())
    })
    .await
    .expect("an outcome within 10 s");
    assert!(
        attempt.is_err(),
        "refused without a client certificate: {attempt:?}"
    );
    assert_eq!(origin.requests(), 0);

    // With one the CA signed: served.
    let partner_endpoint =
        client_endpoint_with(&ca.cert_path(), Some((&partner.cert, &partner.key)));
    let mut send = connect_with(&partner_endpoint, quic, Duration::from_secs(10))
        .await
        .expect("served with a client certificate");
    let answer = exchange(&mut send, http::Method::GET, "/", Bytes::new()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_reach_new_http3_connections_on_a_reload() {
    let dir = scratch("reload");
    let first = self_signed(&dir.join("first"), &["localhost"]).expect("certificate");
    let live = dir.join("live");
    std::fs::create_dir_all(&live).expect("dir");
    let (cert, key) = (live.join("site.crt"), live.join("site.key"));
    std::fs::copy(&first.cert, &cert).expect("copy");
    std::fs::copy(&first.key, &key).expect("copy");
    let origin = Origin::start("a").await.expect("origin");
    let served = CertFiles {
        cert: cert.clone(),
        key: key.clone(),
    };
    let proxy = start(origin.addr(), &served);
    let quic = proxy.quic_addrs()[0];
    let (mut send, _endpoint) = connect(quic, &first.cert).await;
    assert_eq!(
        exchange(&mut send, http::Method::GET, "/", Bytes::new())
            .await
            .status,
        200
    );

    // Renewed: a new key and certificate in the same files, then a reload (as SIGHUP does).
    let renewed = self_signed(&dir.join("renewed"), &["localhost"]).expect("certificate");
    std::fs::copy(&renewed.cert, &cert).expect("copy");
    std::fs::copy(&renewed.key, &key).expect("copy");
    let outcome = pingora_dsl::listen::reload::reload_certificates();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);

    let (mut send, _endpoint) = connect(quic, &renewed.cert).await;
    assert_eq!(
        exchange(&mut send, http::Method::GET, "/", Bytes::new())
            .await
            .status,
        200
    );
    let stale =
        support::h3_client::connect_within(quic, &first.cert, Duration::from_secs(10)).await;
    assert!(stale.is_err(), "the old certificate is no longer served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_requests_are_access_logged_as_http3() {
    use pingora_dsl::observe::access_log::{AccessLog, AccessLogFormat, AccessLogTarget};
    let dir = scratch("log");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    let log = dir.join("access.log");
    let options = ProxyOptions {
        access_log: Some(AccessLog::new(
            AccessLogTarget::File(log.clone()),
            AccessLogFormat::Combined,
        )),
        ..ProxyOptions::default()
    };
    let mut service = pingora_dsl::proxy::http_proxy_service_with(
        "h3-log",
        TestProxy::new(&[origin.addr()]),
        options,
        tower::layer::util::Identity::new(),
    );
    service.add_tls("127.0.0.1:0", TlsSettings::new(&cert.cert, &cert.key));
    service.add_quic("127.0.0.1:0");
    let proxy = service.spawn().expect("proxy starts");
    let (mut send, _endpoint) = connect(proxy.quic_addrs()[0], &cert.cert).await;
    let answer = exchange(&mut send, http::Method::GET, "/logged?q=1", Bytes::new()).await;
    assert_eq!(answer.status, 200);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    support::wait_until(Duration::from_secs(10), "the access log line", || {
        read().contains("/logged")
    })
    .await;
    let line = read();
    assert!(
        line.contains("\"GET /logged?q=1 HTTP/3.0\" 200 8"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_is_refused_by_default() {
    let dir = scratch("0rtt");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let origin = Origin::start("a").await.expect("origin");
    let proxy = start(origin.addr(), &cert);
    let quic = proxy.quic_addrs()[0];
    // One connection, so that the client has what a resumption needs, then closed.
    let endpoint = client_endpoint(&cert.cert);
    let first = endpoint
        .connect(quic, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let mut send = over(first.clone()).await.expect("HTTP/3");
    assert_eq!(
        exchange(&mut send, http::Method::GET, "/", Bytes::new())
            .await
            .status,
        200
    );
    first.close(0u32.into(), b"");
    // The next one may not send early data: the server never offered it.
    let second = endpoint.connect(quic, "localhost").expect("connect");
    let early = second.into_0rtt();
    assert!(
        early.is_err(),
        "0-RTT is off: a replayable request is never accepted early"
    );
    let full = early.err().expect("a full handshake instead");
    tokio::time::timeout(Duration::from_secs(10), full)
        .await
        .expect("within 10 s")
        .expect("the full handshake succeeds");
}

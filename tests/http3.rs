//! HTTP/3 downstream: a QUIC listener beside the TLS one, serving the same proxy. An
//! independent client (the `h3` crate's, over quinn) makes GETs and POSTs with bodies to
//! real origins, many streams at once, a large download through flow control, a request
//! over the header limit, and leaves mid-download; the HTTP/1 answer names the QUIC port in
//! `Alt-Svc`. Certificates are made at test time.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use pingora_dsl::downstream::RunningService;
use pingora_dsl::listen::tls::TlsSettings;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::certs::{self_signed, CertFiles};
use pingora_dsl_suite::origin::Origin;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
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

/// An HTTP/3 connection to `addr` trusting `ca` (the server's self-signed certificate),
/// asking for `localhost`; the driver runs on its own task.
async fn connect(
    addr: SocketAddr,
    ca: &Path,
) -> (
    h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    quinn::Endpoint,
) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots.add(cert.expect("a certificate")).expect("a root");
    }
    #[allow(deprecated)] // ring: the provider the proxy's QUIC listener uses too
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(addr, "localhost").expect("connect"),
    )
    .await
    .expect("handshake within 10 s")
    .expect("handshake");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .expect("HTTP/3 connection");
    tokio::spawn(async move {
        let _ = driver.wait_idle().await;
    });
    (send, endpoint)
}

/// What an HTTP/3 exchange returned.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// Sends `method path` with `body` on `send`, reads the whole answer (within 30 s).
async fn exchange(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Answer {
    let talk = async {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(())
            .expect("request");
        let mut stream = send.send_request(request).await.expect("request sent");
        if !body.is_empty() {
            stream.send_data(body).await.expect("body sent");
        }
        stream.finish().await.expect("request ended");
        let response = stream.recv_response().await.expect("a response");
        let mut received = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.expect("body") {
            received.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: received,
        }
    };
    tokio::time::timeout(Duration::from_secs(30), talk)
        .await
        .expect("an answer within 30 s")
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

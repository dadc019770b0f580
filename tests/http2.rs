//! HTTP/2 to origins: multiplexed over one pooled connection (h2c prior knowledge and
//! h2 by ALPN over TLS), and gRPC's wire format end to end — HTTP/2 on both sides,
//! bidirectional streaming message by message, and the `grpc-status` trailers kept.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora_dsl::downstream::RunningService;
use pingora_dsl::listen::tls::TlsSettings;
use pingora_dsl::prelude::*;
use pingora_dsl::upstream::{UpstreamHttp, UpstreamTls};
use pingora_dsl_suite::certs::TestCa;
use pingora_dsl_suite::origin::{grpc_message, grpc_messages, Origin};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// Forwards everything to one peer.
struct ToPeer(HttpPeer);

impl ProxyHttp for ToPeer {
    type Ctx = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        Ok(self.0.clone())
    }
}

fn proxy(peer: HttpPeer) -> RunningService {
    let mut service = http_proxy_service("h2-proxy", ToPeer(peer));
    service.add_tcp("127.0.0.1:0");
    service.spawn().expect("proxy starts")
}

/// 20 concurrent GETs through the proxy (each on its own client connection).
async fn twenty_concurrent(proxy: SocketAddr) -> Vec<(StatusCode, Bytes)> {
    let client = support::client();
    let mut calls = Vec::new();
    for i in 0..20 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            support::send(&c, support::get(proxy, &format!("/item/{i}"), None)).await
        }));
    }
    let mut out = Vec::new();
    for call in calls {
        let (resp, body) = call.await.expect("call");
        out.push((resp.status(), body));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_origin_gets_every_request_over_one_multiplexed_connection() {
    let origin = Origin::start_h2("h2c-origin").await.expect("origin");
    origin.set_delay(Duration::from_millis(50));
    let proxy = proxy(HttpPeer::new(origin.addr()).with_http(UpstreamHttp::Http2));
    for (status, body) in twenty_concurrent(proxy.addr()).await {
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"origin h2c-origin");
    }
    assert_eq!(origin.requests(), 20);
    assert_eq!(
        origin.connections(),
        1,
        "20 concurrent requests, one HTTP/2 connection"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_origin_offering_h2_by_alpn_gets_http2() {
    let dir = std::env::temp_dir().join(format!("pdsl-h2-alpn-{}", std::process::id()));
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server("origin.test", &["origin.test"]).expect("cert");
    let origin = Origin::start("plain").await.expect("origin");
    // The framework itself as the TLS + HTTP/2 origin: a proxy terminating TLS in front
    // of a plain origin.
    let mut front = http_proxy_service("tls-h2-origin", ToPeer(HttpPeer::new(origin.addr())));
    front.add_tls("127.0.0.1:0", TlsSettings::new(&cert.cert, &cert.key));
    let front = front.spawn().expect("tls origin");
    let tls = UpstreamTls {
        ca_file: Some(ca.cert_path()),
        ..UpstreamTls::with_sni("origin.test")
    }
    .build()
    .expect("connector");
    let proxy = proxy(
        HttpPeer::new(front.addr())
            .with_tls(tls)
            .with_http(UpstreamHttp::Negotiate),
    );
    for (status, body) in twenty_concurrent(proxy.addr()).await {
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"origin plain");
    }
    assert_eq!(
        front.accept_stats().accepted(),
        1,
        "ALPN chose h2: one multiplexed TLS connection"
    );
    proxy.shutdown().await;
    front.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_both_ways_and_its_trailers_arrive() {
    let origin = Origin::start_h2("grpc-origin").await.expect("origin");
    let proxy = proxy(HttpPeer::new(origin.addr()).with_http(UpstreamHttp::Http2));

    // An HTTP/2 client with prior knowledge, as gRPC clients are.
    let tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);

    // Bidirectional streaming: each message is echoed before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        },
    )))
    .boxed_unsync();
    let request = Request::post("http://grpc.test/grpc.Echo/Chat")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("request");
    let response = tokio::time::timeout(WAIT, async {
        tx.send(grpc_message(b"hello 0")).await.expect("send first");
        sender.send_request(request).await
    })
    .await
    .expect("head in time")
    .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let mut body = response.into_body();
    for i in 0..10 {
        if i > 0 {
            tx.send(grpc_message(format!("hello {i}").as_bytes()))
                .await
                .expect("send");
        }
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("echo in time")
            .expect("a frame")
            .expect("no error");
        let data = frame.into_data().expect("a message");
        assert_eq!(grpc_messages(&data), 1);
        assert_eq!(&data[5..], format!("hello {i}").as_bytes(), "message {i}");
    }
    drop(tx);
    let trailers = tokio::time::timeout(WAIT, async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) if frame.is_trailers() => {
                    return frame.into_trailers().ok();
                }
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("trailers in time")
    .expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "echoed 10");

    // Unary: one message in, one out, then the trailers.
    let request = Request::post("http://grpc.test/grpc.Echo/Once")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(grpc_message(b"just once")).boxed_unsync())
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("in time")
        .expect("response");
    let collected = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("in time")
        .expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "echoed 1");
    assert_eq!(&collected.to_bytes()[5..], b"just once");
    assert_eq!(
        origin.connections(),
        1,
        "both calls over one upstream connection"
    );
    proxy.shutdown().await;
}

proxy! {
    /// A declared pool of cleartext HTTP/2 (h2c) origins.
    pub DeclaredH2 {
        listen "127.0.0.1:6188";
        upstream api {
            peers ["127.0.0.1:9"];
            http2;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_http2_upstream_multiplexes_too() {
    let origin = Origin::start_h2("declared-h2").await.expect("origin");
    origin.set_delay(Duration::from_millis(50));
    let cli = pingora_dsl::server::cli::ProxyCli {
        upstream: vec![origin.addr().to_string()],
        ..Default::default()
    };
    let mut declared = DeclaredH2::new();
    cli.configure("DeclaredH2", declared.router_mut())
        .expect("peers");
    let mut service = declared.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("starts");
    for (status, body) in twenty_concurrent(proxy.addr()).await {
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"origin declared-h2");
    }
    assert_eq!(origin.connections(), 1);
    proxy.shutdown().await;
}

/// A proxy to a plain origin whose client connections idle out after `idle`.
fn proxy_with_idle(origin: SocketAddr, idle: Duration) -> RunningService {
    let mut service = http_proxy_service("h2-downstream", ToPeer(HttpPeer::new(origin)));
    service.add_tcp("127.0.0.1:0");
    service.options_mut().header_read_timeout = idle;
    service.spawn().expect("proxy starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_meet_the_header_count_limit_of_http1() {
    let origin = Origin::start("h2-fields").await.expect("origin");
    let proxy = proxy_with_idle(origin.addr(), Duration::from_secs(60));
    let tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let request = |fields: usize| {
        let mut b = Request::get(format!("http://{}/fields", proxy.addr()));
        for i in 0..fields {
            b = b.header(format!("x-field-{i}"), "v");
        }
        b.body(http_body_util::Empty::<Bytes>::new())
            .expect("request")
    };
    for (fields, status) in [(300, 431), (50, 200), (101, 431), (95, 200)] {
        let response = tokio::time::timeout(WAIT, send.send_request(request(fields)))
            .await
            .expect("answered in time")
            .expect("a response");
        assert_eq!(response.status(), status, "{fields} fields");
    }
    assert_eq!(
        origin.requests(),
        2,
        "the refused ones never reached the origin"
    );
}

/// Reads one HTTP/2 frame: (type, flags, payload); `None` at the end of the connection.
async fn read_frame(tcp: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_a_goaway_before_it_is_closed() {
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start("h2-idle").await.expect("origin");
    let proxy = proxy_with_idle(origin.addr(), Duration::from_millis(300));
    let mut tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    // The preface and an empty SETTINGS frame, then nothing but acknowledgements.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut goaway = None;
    let ended = tokio::time::timeout(WAIT, async {
        while let Some((kind, flags, payload)) = read_frame(&mut tcp).await {
            match (kind, flags & 1) {
                // SETTINGS: acknowledge.
                (0x4, 0) => tcp
                    .write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
                    .await
                    .expect("settings ack"),
                // PING: answer with the same payload.
                (0x6, 0) => {
                    let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&payload);
                    let _ = tcp.write_all(&ack).await;
                }
                (0x7, _) => {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    goaway.get_or_insert(code);
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the idle connection is closed within 10 s");
    assert_eq!(
        goaway,
        Some(0),
        "a GOAWAY with NO_ERROR came before the close"
    );
}

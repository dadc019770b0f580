//! WebSocket through the proxy with a real client and server (tokio-tungstenite): the
//! upgrade is tunnelled only after the origin's 101, messages flow both ways, an idle
//! tunnel outlives the proxy's short HTTP timeouts, and the tunnel's own idle timeout
//! closes it.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use pingora_dsl::downstream::HttpOptions;
use pingora_dsl::prelude::*;
use pingora_dsl::upstream::PeerTimeouts;
use pingora_dsl_suite::origin::{start_ws_echo, Origin};
use support::{start_proxy_with, TestProxy};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

async fn echo_origin() -> SocketAddr {
    start_ws_echo().await.expect("ws echo origin")
}

/// A proxy with short HTTP timeouts (300 ms header read, 300 ms upstream read) and the
/// given tunnel idle timeout.
fn proxy_to(origin: SocketAddr, tunnel_idle: Duration) -> pingora_dsl::downstream::RunningService {
    let mut proxy = TestProxy::new(&[origin]);
    proxy.timeouts = PeerTimeouts {
        read: Duration::from_millis(300),
        ..PeerTimeouts::default()
    };
    let options = HttpOptions {
        header_read_timeout: Duration::from_millis(300),
        ..HttpOptions::default()
    };
    let proxy_options = ProxyOptions {
        tunnel_idle_timeout: tunnel_idle,
        ..ProxyOptions::default()
    };
    start_proxy_with(proxy, options, proxy_options)
}

async fn connect(proxy: SocketAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let (ws, response) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{proxy}/chat"), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_echo_through_the_tunnel() {
    let origin = echo_origin().await;
    let proxy = proxy_to(origin, Duration::from_secs(3600));
    let mut ws = connect(proxy.addr()).await;
    for i in 0..1000u32 {
        let msg = if i % 2 == 0 {
            Message::text(format!("message {i}"))
        } else {
            Message::binary(i.to_be_bytes().repeat(64))
        };
        ws.send(msg.clone()).await.expect("send");
        let back = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("no error");
        assert_eq!(back, msg, "message {i}");
    }
    ws.close(None).await.expect("close");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_outlives_the_http_timeouts_and_closes_at_its_own() {
    let origin = echo_origin().await;
    // Idle 1.5 s (the idling is the input): five times the header-read and upstream read
    // timeouts; the tunnel's own idle timeout is an hour. Nothing arrives meanwhile, not
    // even a close.
    let proxy = proxy_to(origin, Duration::from_secs(3600));
    let mut ws = connect(proxy.addr()).await;
    let idle = tokio::time::timeout(Duration::from_millis(1500), ws.next()).await;
    assert!(
        idle.is_err(),
        "the idle tunnel stays open and quiet: {idle:?}"
    );
    ws.send(Message::text("still there?")).await.expect("send");
    let back = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("no error");
    assert_eq!(back, Message::text("still there?"));
    proxy.shutdown().await;

    // With a 400 ms tunnel idle timeout, the proxy ends the quiet tunnel, not before.
    let proxy = proxy_to(origin, Duration::from_millis(400));
    // The tunnel's idle clock starts after this instant (once the origin's 101 is in).
    let quiet_since = Instant::now();
    let mut ws = connect(proxy.addr()).await;
    let next = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the tunnel ends in time");
    let idled = quiet_since.elapsed();
    assert!(
        matches!(next, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "the idle tunnel was closed: {next:?}"
    );
    assert!(
        idled >= Duration::from_millis(400),
        "closed after {idled:?}, before the tunnel idle timeout"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_origin_does_not_accept_is_not_tunnelled() {
    // A plain HTTP origin answers 200 to the upgrade request.
    let origin = Origin::start("no-ws").await.expect("origin");
    let proxy = proxy_to(origin.addr(), Duration::from_secs(3600));
    let tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    let refused = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{}/chat", proxy.addr()), tcp),
    )
    .await
    .expect("in time");
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-origin"], "no-ws");
        }
        other => panic!("expected the origin's 200, got {other:?}"),
    }
    // The origin saw the upgrade request with its fields.
    let seen = origin.last_headers().expect("a request");
    assert_eq!(seen["upgrade"], "websocket");
    assert!(seen["connection"]
        .to_str()
        .expect("ascii")
        .eq_ignore_ascii_case("upgrade"));
    proxy.shutdown().await;
}

//! The upstream HTTP client and its pool, used on their own against real origins.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use pingora_dsl::upstream::{ClientOptions, HttpClient, HttpPeer};
use pingora_dsl::ErrorKind;
use pingora_dsl_suite::origin::{read_request_head, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::{refused_port, wait_until};

/// Bound on every wait for a condition.
const WAIT: Duration = Duration::from_secs(10);

type Client = HttpClient<Full<Bytes>>;

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "origin.test")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

async fn fetch(client: &Client, peer: &HttpPeer, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let resp = tokio::time::timeout(Duration::from_secs(10), client.send(peer, req))
        .await
        .expect("in time")
        .expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let origin = Origin::start("o").await.expect("origin");
    let client = Client::default();
    let peer = HttpPeer::new(origin.addr());
    for _ in 0..20 {
        let (status, body) = fetch(&client, &peer, get("/")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "origin o");
    }
    assert_eq!(origin.connections(), 1);
    assert_eq!(client.idle_connections(&peer), 1);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let origin = Origin::start("o").await.expect("origin");
    let client = Client::default();
    let peer = HttpPeer::new(origin.addr()).idle_timeout(Duration::from_millis(200));
    // The connection is pooled after this instant, so it may not go before 200 ms from it.
    let before = Instant::now();
    fetch(&client, &peer, get("/")).await;
    assert_eq!(client.idle_connections(&peer), 1);
    wait_until(WAIT, "the idle connection is swept", || {
        client.idle_connections(&peer) == 0
    })
    .await;
    let kept = before.elapsed();
    assert!(
        kept >= Duration::from_millis(200),
        "swept after {kept:?}, before its idle timeout"
    );
    fetch(&client, &peer, get("/")).await;
    assert_eq!(origin.connections(), 2, "a new connection after expiry");
}

#[tokio::test]
async fn idle_connections_per_peer_are_capped() {
    let origin = Origin::start("o").await.expect("origin");
    let client = Client::new(ClientOptions {
        max_idle_per_peer: 2,
        ..ClientOptions::default()
    });
    let peer = HttpPeer::new(origin.addr());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let client = client.clone();
        let peer = peer.clone();
        tasks.spawn(async move { fetch(&client, &peer, get("/bytes/100000")).await });
    }
    while let Some(r) = tasks.join_next().await {
        let (status, body) = r.expect("task");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 100_000);
    }
    assert_eq!(
        origin.connections(),
        6,
        "six concurrent requests, six connections"
    );
    assert_eq!(client.idle_connections(&peer), 2);
}

/// An origin that answers one request per connection, without `Connection: close`, and
/// then closes the connection when told: it hands the test the connection's client address
/// and a sender that closes it.
async fn closing_origin() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, tokio::sync::oneshot::Sender<()>)>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (answered_tx, answered) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, client)) = listener.accept().await else {
                continue;
            };
            let answered_tx = answered_tx.clone();
            tokio::spawn(async move {
                if read_request_head(&mut s).await.is_none() {
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let (close_tx, close) = tokio::sync::oneshot::channel();
                if answered_tx.send((client, close_tx)).is_ok() {
                    let _ = close.await;
                }
                // Close without a word.
                drop(s);
            });
        }
    });
    (addr, answered, task)
}

/// The state of the TCP connection from `local` to `remote` as `/proc/net/tcp` numbers it
/// (1 established, 8 close-wait: the peer's FIN arrived), or `None` once it is gone.
fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => unreachable!("the test connects over IPv4"),
    };
    let (local, remote) = (hex(local), hex(remote));
    std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()) {
                u8::from_str_radix(fields.get(3)?, 16).ok()
            } else {
                None
            }
        })
}

#[tokio::test]
async fn connections_closed_by_the_origin_are_never_used() {
    let (addr, mut answered, task) = closing_origin().await;
    let client = Client::default();
    let stats = std::sync::Arc::new(pingora_dsl::metrics::PeerStats::default());
    let peer = HttpPeer::new(addr).with_stats(stats.clone());
    for i in 0..30 {
        let resp = client.send(&peer, get("/")).await;
        let resp = resp.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, "ok");
        assert_eq!(client.idle_connections(&peer), 1, "pooled after use");
        // The origin closes the pooled connection; its FIN reaches the client's socket...
        let (local, close) = tokio::time::timeout(WAIT, answered.recv())
            .await
            .expect("the origin answered")
            .expect("the origin runs");
        close.send(()).expect("the origin waits to close");
        wait_until(WAIT, "the client's side saw the origin's FIN", || {
            tcp_state(local, addr) != Some(1)
        })
        .await;
        // ...and the runtime has polled its sockets since.
        tokio::task::yield_now().await;
    }
    // Not used, not even tried (a request resent after meeting a dead connection would
    // pass unseen otherwise): every request went out on a new connection.
    assert_eq!(
        stats.connections_reused.get(),
        0,
        "a closed connection was used"
    );
    assert_eq!(stats.connections_new.get(), 30);
    task.abort();
}

#[tokio::test]
async fn refused_connect_is_reported_as_such() {
    let refused = refused_port();
    let client = Client::default();
    let err = client
        .send(&HttpPeer::new(refused.addr()), get("/"))
        .await
        .err()
        .expect("connect must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectRefused);
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn an_upstream_that_does_not_read_hits_the_write_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        // Accept and hold the connection without ever reading from it.
        let (s, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let client = Client::default();
    let peer = HttpPeer::new(addr).write_timeout(Duration::from_millis(300));
    let body = Bytes::from(vec![b'z'; 64 * 1024 * 1024]);
    let req = Request::post("/upload")
        .header("host", "origin.test")
        .body(Full::new(body))
        .expect("request");
    let err = tokio::time::timeout(Duration::from_secs(10), client.send(&peer, req))
        .await
        .expect("fails in time")
        .err()
        .expect("write must time out");
    assert_eq!(err.kind(), ErrorKind::WriteTimeout, "{err}");
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    holder.abort();
}

#[tokio::test]
async fn a_stalled_response_body_hits_the_read_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let origin = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        // Promise 100 bytes, send 5, then stall.
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let client = Client::default();
    let peer = HttpPeer::new(addr).read_timeout(Duration::from_millis(300));
    let resp = client.send(&peer, get("/")).await.expect("head arrives");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("in time")
        {
            Some(Ok(f)) => got.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
            Some(Err(e)) => break e,
            None => panic!("body must not end normally"),
        }
    };
    assert_eq!(got, b"hello");
    assert_eq!(err.kind(), ErrorKind::ReadTimeout);
    origin.abort();
}

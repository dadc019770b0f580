//! The upstream HTTP client and its pool, used on their own against real origins.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use pingora_dsl::upstream::{ClientOptions, HttpClient, HttpPeer};
use pingora_dsl::ErrorKind;
use pingora_dsl_suite::origin::{read_request_head, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
    fetch(&client, &peer, get("/")).await;
    assert_eq!(client.idle_connections(&peer), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        client.idle_connections(&peer),
        0,
        "swept after the idle timeout"
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

/// An origin that answers one request per connection and then closes it, without saying
/// `Connection: close`: every pooled connection to it dies right after use.
async fn closing_origin() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if read_request_head(&mut s).await.is_none() {
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                // Close without a word.
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn connections_closed_by_the_origin_are_never_used() {
    let (addr, task) = closing_origin().await;
    let client = Client::default();
    let peer = HttpPeer::new(addr);
    for i in 0..30 {
        let resp = client.send(&peer, get("/")).await;
        let resp = resp.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, "ok");
        // Let the origin's FIN arrive, as it does between real requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

#[tokio::test]
async fn refused_connect_is_reported_as_such() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let client = Client::default();
    let err = client
        .send(&HttpPeer::new(addr), get("/"))
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

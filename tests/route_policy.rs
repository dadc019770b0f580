//! Per-route policy declared in `proxy!`, over real sockets against real origins: a route's
//! own read timeout, rate limit, resend count and body limit apply to its requests only,
//! and the pool's settings to every other route's.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::{start_faulty_origin, Origin};
use support::{client, point, raw_exchange, send, TestClient};
use tokio::io::AsyncWriteExt;

proxy! {
    /// One pool, routes that narrow its settings.
    pub Policies {
        listen "127.0.0.1:6188";
        upstream app {
            peers ["127.0.0.1:8001"];
            timeout read 5s;
        }
        upstream pair {
            peers ["127.0.0.1:8002", "127.0.0.1:8003"];
            retry 1;
        }
        route path "/quick" => upstream app {
            timeout read 300ms;
            strip_prefix "/quick";
        }
        route path "/limited" => upstream app { rate_limit 3 per 1m by route; }
        route path "/upload" => upstream app {
            max_body 1KiB;
            replace_prefix "/upload" "/consume";
        }
        route path "/once" => upstream pair { retry 0; }
        route path "/pair" => upstream pair;
        route => upstream app;
    }
}

struct Setup {
    app: Origin,
    good: Origin,
    proxy: pingora_dsl::downstream::RunningService,
    client: TestClient,
}

/// The app origin, a pair of one good origin and one that drops every connection after
/// reading its request, and the proxy in front.
async fn setup() -> Setup {
    let app = Origin::start("app").await.expect("origin");
    let good = Origin::start("good").await.expect("origin");
    let dropping = start_faulty_origin(|stream| async move { drop(stream) }).await;
    let mut proxy = Policies::new();
    let router = proxy.router_mut();
    point(router, "app", &[app.addr()]);
    point(router, "pair", &[dropping, good.addr()]);
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    Setup {
        app,
        good,
        proxy: service.spawn().expect("proxy starts"),
        client: client(),
    }
}

impl Setup {
    /// `METHOD path` with `body`: the status and the body of the answer.
    async fn request(&self, method: &str, path: &str, body: &'static [u8]) -> (u16, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy.addr()))
            .body(Full::new(Bytes::from_static(body)))
            .expect("request");
        let (resp, body) = send(&self.client, req).await;
        (resp.status().as_u16(), body)
    }
}

#[tokio::test]
async fn a_route_timeout_overrides_its_pools_for_its_requests_only() {
    let s = setup().await;
    s.app.set_delay(Duration::from_millis(900));
    let (status, _) = s.request("GET", "/quick/x", b"").await;
    assert_eq!(status, 504, "the route's 300ms read timeout");
    let (status, body) = s.request("GET", "/other", b"").await;
    assert_eq!(
        (status, &body[..]),
        (200, &b"origin app"[..]),
        "the pool's 5s"
    );
}

#[tokio::test]
async fn a_route_rate_limit_counts_and_refuses_only_its_requests() {
    let s = setup().await;
    for _ in 0..3 {
        assert_eq!(s.request("GET", "/limited", b"").await.0, 200);
    }
    assert_eq!(s.request("GET", "/limited", b"").await.0, 429);
    assert_eq!(s.request("GET", "/limited/deeper", b"").await.0, 429);
    assert_eq!(s.request("GET", "/elsewhere", b"").await.0, 200);
    assert_eq!(s.app.requests(), 4, "3 limited requests and 1 elsewhere");
}

#[tokio::test]
async fn a_route_body_limit_refuses_a_declared_length_before_anything_goes_upstream() {
    let s = setup().await;
    let (status, body) = s.request("POST", "/upload", &[b'a'; 1000]).await;
    assert_eq!((status, &body[..]), (200, &b"1000"[..]), "under the limit");
    let (status, body) = s.request("POST", "/upload", &[b'a'; 2000]).await;
    assert_eq!((status, &body[..]), (413, &b"413 Content Too Large\n"[..]));
    assert_eq!(
        s.app.requests(),
        1,
        "the refused request never reached the origin"
    );
    let (status, _) = s.request("POST", "/other", &[b'a'; 2000]).await;
    assert_eq!(status, 200, "other routes take larger bodies");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_with_413() {
    let s = setup().await;
    let mut raw =
        b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'a'; 512]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(s.proxy.addr(), &raw, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // A chunked body within the limit goes through.
    let mut stream = tokio::net::TcpStream::connect(s.proxy.addr())
        .await
        .expect("connect");
    let small = b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n10\r\naaaaaaaaaaaaaaaa\r\n0\r\n\r\n";
    stream.write_all(small).await.expect("write");
    let answer = support::read_until_quiet(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("16"), "{answer}");
}

#[tokio::test]
async fn a_route_retry_count_overrides_its_pools() {
    let s = setup().await;
    // Round robin over [dropping, good]: of two requests, one meets the dropping peer.
    let once: Vec<u16> = [
        s.request("GET", "/once", b"").await.0,
        s.request("GET", "/once", b"").await.0,
    ]
    .into();
    assert!(once.contains(&502), "no resend on /once: {once:?}");
    assert!(once.contains(&200), "{once:?}");
    let before = s.good.requests();
    for _ in 0..4 {
        let (status, body) = s.request("GET", "/pair", b"").await;
        assert_eq!(
            (status, &body[..]),
            (200, &b"origin good"[..]),
            "the pool's retry 1"
        );
    }
    assert_eq!(s.good.requests() - before, 4);
}

//! The proxy's behaviour over real sockets: real origins (hyper servers), a real client.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use pingora_dsl::upstream::PeerTimeouts;
use pingora_dsl_suite::origin::{start_faulty_origin, Origin};
use support::*;

#[tokio::test]
async fn round_robin_alternates_between_two_origins() {
    let a = Origin::start("a").await.expect("origin a");
    let b = Origin::start("b").await.expect("origin b");
    let proxy = start_proxy(TestProxy::new(&[a.addr(), b.addr()]));
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (resp, body) = send(&client, get(proxy.addr(), "/", None)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let origin = resp.headers()["x-origin"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(body, format!("origin {origin}"));
        assert_eq!(resp.headers()["x-proxied"], "1", "response_filter ran");
        seen.push(origin);
    }
    assert_eq!(seen, ["a", "b", "a", "b", "a", "b"]);
    assert_eq!(a.requests(), 3);
    assert_eq!(b.requests(), 3);
}

#[tokio::test]
async fn upstream_request_filter_rewrites_host_and_xff_is_appended() {
    let origin = Origin::start("o").await.expect("origin");
    let mut p = TestProxy::new(&[origin.addr()]);
    p.host = Some("backend.internal");
    let proxy = start_proxy(p);
    let req = Request::get(format!("http://{}/", proxy.addr()))
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (resp, _) = send(&client(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-seen-host"], "backend.internal");
    assert_eq!(resp.headers()["x-seen-xff"], "203.0.113.7, 127.0.0.1");
}

#[tokio::test]
async fn request_filter_answers_403_and_the_origin_sees_nothing() {
    let origin = Origin::start("o").await.expect("origin");
    let proxy = start_proxy(TestProxy::new(&[origin.addr()]));
    let client = client();
    let (resp, body) = send(&client, get(proxy.addr(), "/admin", None)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(body, "forbidden\n");
    let (resp, _) = send(&client, get(proxy.addr(), "/old", None)).await;
    assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(resp.headers()["location"], "/new");
    assert_eq!(origin.requests(), 0);
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn a_failing_filter_answers_500() {
    let origin = Origin::start("o").await.expect("origin");
    let proxy = start_proxy(TestProxy::new(&[origin.addr()]));
    let (resp, _) = send(&client(), get(proxy.addr(), "/fail-filter", None)).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(origin.requests(), 0);
}

/// Deterministic, non-repeating-looking bytes, so a misplaced chunk cannot go unnoticed.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn ten_mib_post_is_echoed_byte_exact() {
    let origin = Origin::start("o").await.expect("origin");
    let proxy = start_proxy(TestProxy::new(&[origin.addr()]));
    let data = Bytes::from(pattern(10 * 1024 * 1024));
    let req = Request::post(format!("http://{}/echo", proxy.addr()))
        .body(Full::new(data.clone()))
        .expect("request");
    let (resp, body) = send(&client(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body.len(), data.len());
    assert!(body == data, "echoed body differs");
}

/// An origin that answers each request as soon as its head is read, then reads its body
/// (framed by `content-length`) and keeps the connection. Returns its address, its
/// accepted connections and the body sizes it received, in order.
async fn answer_first_origin() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<usize>>>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let received: Arc<Mutex<Vec<usize>>> = Arc::default();
    let (counted, bodies) = (connections.clone(), Arc::clone(&received));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut s = tokio::io::BufReader::new(s);
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    while line != "\r\n" {
                        line.clear();
                        if !matches!(s.read_line(&mut line).await, Ok(n) if n > 0) {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly";
                    if s.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; length];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    bodies.lock().expect("lock").push(body.len());
                }
            });
        }
    });
    (addr, connections, received)
}

/// An origin may answer before it took the request body. The answer reaches the client at
/// once, the rest of the body still goes to the origin (counted), and both connections then
/// carry the next request.
#[tokio::test]
async fn an_answer_before_the_body_arrived_and_then_the_rest_keep_both_connections() {
    use tokio::io::AsyncWriteExt;
    let (origin, connections, received) = answer_first_origin().await;
    let proxy = start_proxy(TestProxy::new(&[origin]));
    let mut stream = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    // A body copied (10,000 bytes), then one spliced (1 MiB), each answered early.
    for len in [10_000, 1 << 20] {
        let head =
            format!("POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: {len}\r\n\r\n");
        let mut first = head.into_bytes();
        first.extend_from_slice(&[b'x'; 100]);
        stream.write_all(&first).await.expect("write");
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(body, b"early", "the answer came before the body was sent");
        stream
            .write_all(&vec![b'y'; len - 100])
            .await
            .expect("write");
    }
    let (status, body) = exchange(&mut stream, "/after", None).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, b"early");
    assert_eq!(*received.lock().expect("lock"), [10_000, 1 << 20, 0]);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the upstream connection was kept"
    );
}

#[tokio::test]
async fn thousand_keepalive_requests_use_at_most_two_upstream_connections() {
    let origin = Origin::start("o").await.expect("origin");
    let proxy = start_proxy(TestProxy::new(&[origin.addr()]));
    let client = client();
    for _ in 0..1000 {
        let (resp, _) = send(&client, get(proxy.addr(), "/", None)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(origin.requests(), 1000);
    assert!(
        origin.connections() <= 2,
        "origin accepted {} connections for 1000 sequential requests",
        origin.connections()
    );
}

#[tokio::test]
async fn refused_upstream_gives_502() {
    let refused = refused_port();
    let proxy = start_proxy(TestProxy::new(&[refused.addr()]));
    let (resp, body) = send(&client(), get(proxy.addr(), "/", None)).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(body, "502 Bad Gateway\n");
}

#[tokio::test]
async fn origin_that_never_answers_gives_504_after_the_read_timeout() {
    let origin = Origin::start("o").await.expect("origin");
    let mut p = TestProxy::new(&[origin.addr()]);
    p.timeouts = PeerTimeouts {
        read: Duration::from_millis(300),
        ..PeerTimeouts::default()
    };
    let log = p.log.clone();
    let proxy = start_proxy(p);
    let (resp, _) = send(&client(), get(proxy.addr(), "/stall", Some("stall"))).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.requests(), 1);
    let logged = wait_for_log(&log, 1).await;
    assert_eq!(
        logged["stall"][0].error,
        Some(pingora_dsl::ErrorKind::ReadTimeout)
    );
}

#[tokio::test]
async fn malformed_request_line_gets_400() {
    let origin = Origin::start("o").await.expect("origin");
    let proxy = start_proxy(TestProxy::new(&[origin.addr()]));
    let out = raw_exchange(proxy.addr(), b"GARBAGE\r\n\r\n", Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "got {out:?}");
    let out = raw_exchange(
        proxy.addr(),
        b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "got {out:?}");
    assert_eq!(origin.requests(), 0);
}

#[tokio::test]
async fn two_hundred_concurrent_clients_are_all_served() {
    let a = Origin::start("a").await.expect("origin a");
    let b = Origin::start("b").await.expect("origin b");
    let proxy = start_proxy(TestProxy::new(&[a.addr(), b.addr()]));
    let addr = proxy.addr();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        // A client of its own per task: 200 separate downstream connections.
        tasks.spawn(async move {
            let (resp, body) = send(&client(), get(addr, "/", None)).await;
            (resp.status(), body)
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let (status, body) = r.expect("task");
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(b"origin "));
        ok += 1;
    }
    assert_eq!(ok, 200);
    assert_eq!(a.requests() + b.requests(), 200);
}

#[tokio::test]
async fn logging_runs_exactly_once_per_request_including_early_answers_and_errors() {
    let origin = Origin::start("o").await.expect("origin");
    let p = TestProxy::new(&[origin.addr()]);
    let log = p.log.clone();
    let ok_proxy = start_proxy(p);
    let refused = refused_port();
    let p = TestProxy::new(&[refused.addr()]);
    let bad_log = p.log.clone();
    let bad_proxy = start_proxy(p);
    let client = client();

    let (r, _) = send(&client, get(ok_proxy.addr(), "/", Some("ok"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (r, _) = send(&client, get(ok_proxy.addr(), "/bytes/100000", Some("big"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (r, _) = send(&client, get(ok_proxy.addr(), "/admin", Some("early"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (r, _) = send(
        &client,
        get(ok_proxy.addr(), "/fail-filter", Some("filter")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let (r, _) = send(&client, get(bad_proxy.addr(), "/", Some("refused"))).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);

    // The client's pooled connections closed, the proxies' connections end at once.
    drop(client);
    let logged = settled_log(ok_proxy, &log, 4).await;
    assert_eq!(logged.len(), 4, "{logged:?}");
    for id in ["ok", "big", "early", "filter"] {
        assert_eq!(
            logged[id].len(),
            1,
            "request {id} logged {} times",
            logged[id].len()
        );
    }
    assert_eq!(logged["ok"][0].status, Some(200));
    assert_eq!(logged["ok"][0].error, None);
    assert_eq!(logged["ok"][0].upstream, Some(origin.addr()));
    assert_eq!(
        logged["big"][0].bytes, 100_000,
        "logged after the whole body"
    );
    assert_eq!(logged["early"][0].status, Some(403));
    assert_eq!(logged["early"][0].upstream, None);
    assert_eq!(
        logged["filter"][0].error,
        Some(pingora_dsl::ErrorKind::Filter)
    );
    let bad = settled_log(bad_proxy, &bad_log, 1).await;
    assert_eq!(bad["refused"].len(), 1);
    assert_eq!(bad["refused"][0].status, Some(502));
    assert_eq!(
        bad["refused"][0].error,
        Some(pingora_dsl::ErrorKind::ConnectRefused)
    );
}

#[tokio::test]
async fn logging_runs_once_when_the_client_leaves_mid_body() {
    let origin = Origin::start("o").await.expect("origin");
    let p = TestProxy::new(&[origin.addr()]);
    let log = p.log.clone();
    let proxy = start_proxy(p);
    {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr())
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /bytes/1000000000 HTTP/1.1\r\nHost: x\r\nx-test-id: gone\r\n\r\n",
        )
        .await
        .expect("write");
        let mut buf = [0u8; 65536];
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
            .await
            .expect("read");
        assert!(n > 0);
        // Drop the connection with most of the gigabyte unsent.
    }
    let logged = settled_log(proxy, &log, 1).await;
    assert_eq!(logged["gone"].len(), 1);
    let entry = &logged["gone"][0];
    assert_eq!(entry.status, Some(200));
    assert!(
        entry.error.is_some(),
        "an aborted response is logged with an error"
    );
    assert!(entry.bytes < 1_000_000_000);
}

#[tokio::test]
async fn logging_runs_once_when_the_client_leaves_before_the_response_head() {
    let origin = Origin::start("o").await.expect("origin");
    let p = TestProxy::new(&[origin.addr()]);
    let log = p.log.clone();
    let proxy = start_proxy(p);
    {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr())
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /stall HTTP/1.1\r\nHost: x\r\nx-test-id: left\r\n\r\n",
        )
        .await
        .expect("write");
        // The origin never answers; wait until it has the request, then hang up.
        wait_until(Duration::from_secs(5), "the origin has the request", || {
            origin.requests() > 0
        })
        .await;
    }
    let logged = settled_log(proxy, &log, 1).await;
    assert_eq!(logged["left"].len(), 1, "logging ran exactly once");
    let entry = &logged["left"][0];
    assert_eq!(entry.status, None, "no response head was ever made");
    assert_eq!(entry.error, Some(pingora_dsl::ErrorKind::DownstreamClosed));
    assert_eq!(entry.upstream, Some(origin.addr()));
}

#[tokio::test]
async fn tower_layers_wrap_the_pipeline_and_via_is_appended_when_configured() {
    use pingora_dsl::downstream::HttpOptions;
    use pingora_dsl::prelude::ProxyOptions;

    let origin = Origin::start("o").await.expect("origin");
    // Any tower layer: here one that stamps every response, early answers included.
    let layer = tower::util::MapResponseLayer::new(|mut r: http::Response<_>| {
        r.headers_mut()
            .insert("x-layer", http::HeaderValue::from_static("outer"));
        r
    });
    let options = ProxyOptions {
        via: Some(http::HeaderValue::from_static("1.1 edge")),
        ..ProxyOptions::default()
    };
    let mut service = pingora_dsl::proxy::http_proxy_service_with(
        "layered",
        TestProxy::new(&[origin.addr()]),
        options,
        layer,
    );
    service.add_tcp("127.0.0.1:0");
    *service.options_mut() = HttpOptions::default();
    let proxy = service.spawn().expect("proxy starts");
    let client = client();
    let (resp, _) = send(&client, get(proxy.addr(), "/", None)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-layer"], "outer");
    assert_eq!(resp.headers()["via"], "1.1 edge");
    assert_eq!(origin.last_headers().expect("seen")["via"], "1.1 edge");
    let (resp, _) = send(&client, get(proxy.addr(), "/admin", None)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["x-layer"], "outer");
}

/// An origin that reads each request head, then does `act` to the connection.

#[tokio::test]
async fn an_origin_answering_garbage_gives_502() {
    let addr = start_faulty_origin(|mut s| async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"SMTP ready, not HTTP\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let p = TestProxy::new(&[addr]);
    let log = p.log.clone();
    let proxy = start_proxy(p);
    let (resp, body) = send(&client(), get(proxy.addr(), "/", Some("garbage"))).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(body, "502 Bad Gateway\n");
    let logged = wait_for_log(&log, 1).await;
    assert_eq!(
        logged["garbage"][0].error,
        Some(pingora_dsl::ErrorKind::InvalidResponse)
    );
}

#[tokio::test]
async fn an_origin_resetting_the_connection_gives_502() {
    let addr = start_faulty_origin(|s| async move {
        // Linger 0: close sends RST instead of FIN.
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await;
    let p = TestProxy::new(&[addr]);
    let log = p.log.clone();
    let proxy = start_proxy(p);
    let (resp, _) = send(&client(), get(proxy.addr(), "/", Some("reset"))).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let logged = wait_for_log(&log, 1).await;
    assert_eq!(
        logged["reset"][0].error,
        Some(pingora_dsl::ErrorKind::UpstreamClosed)
    );
}

#[tokio::test]
async fn an_origin_closing_mid_body_breaks_the_response_and_is_logged() {
    let addr = start_faulty_origin(|mut s| async move {
        let _ = tokio::io::AsyncWriteExt::write_all(
            &mut s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this much",
        )
        .await;
    })
    .await;
    let p = TestProxy::new(&[addr]);
    let log = p.log.clone();
    let proxy = start_proxy(p);
    let out = raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nx-test-id: cut\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    // The head was already sent as 200; the client sees the body end early.
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("only this much"), "{out}");
    let logged = settled_log(proxy, &log, 1).await;
    assert_eq!(logged["cut"].len(), 1);
    assert_eq!(
        logged["cut"][0].error,
        Some(pingora_dsl::ErrorKind::UpstreamClosed)
    );
}

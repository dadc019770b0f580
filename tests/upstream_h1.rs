//! The direct HTTP/1.1 path of the upstream client (bodiless requests and bodies framed by
//! `Content-Length`): response framing per RFC 9112 §6.3, interim responses, trailers,
//! connection reuse, malformed responses, early answers and failing request bodies, against
//! raw origins that answer exactly the bytes each test scripts and a real HTTP origin.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use pingora_dsl::upstream::{ClientOptions, HttpClient, HttpPeer};
use pingora_dsl::ErrorKind;
use pingora_dsl_suite::origin::read_request_head;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

type Client = HttpClient<Empty<Bytes>>;

/// What a scripted origin writes for a request head, and whether it closes afterwards.
type Answer = fn(&str) -> (&'static [u8], bool);

/// Starts an origin that answers every request head with `answer`; returns its address and
/// the number of connections it accepted.
async fn scripted_origin(answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while let Some(head) = read_request_head(&mut s).await {
                    let (bytes, close) = answer(&String::from_utf8_lossy(&head));
                    if s.write_all(bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

fn request(method: Method) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/")
        .header("host", "origin.test")
        .body(Empty::new())
        .expect("request")
}

/// Sends a GET and reads the whole response: status, body and trailers.
async fn fetch(
    client: &Client,
    peer: &HttpPeer,
    method: Method,
) -> Result<(StatusCode, http::HeaderMap, Bytes, Option<http::HeaderMap>), pingora_dsl::Error> {
    let response =
        tokio::time::timeout(Duration::from_secs(10), client.send(peer, request(method)))
            .await
            .expect("a response in time")?;
    let (head, body) = response.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("a body in time")?;
    let trailers = collected.trailers().cloned();
    Ok((head.status, head.headers, collected.to_bytes(), trailers))
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_are_read_and_the_connection_reused() {
    let (addr, connections) = scripted_origin(|_| {
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: abc\r\n\r\n",
            false,
        )
    })
    .await;
    let client = Client::default();
    let peer = HttpPeer::new(addr);
    for _ in 0..3 {
        let (status, _, body, trailers) = fetch(&client, &peer, Method::GET).await.expect("ok");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello, world");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-checksum"], "abc");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(client.idle_connections(&peer), 1);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let (addr, _) = scripted_origin(|_| {
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        )
    })
    .await;
    let client = Client::default();
    let (status, headers, body, _) = fetch(&client, &HttpPeer::new(addr), Method::GET)
        .await
        .expect("ok");
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get("link").is_none(),
        "interim fields are not merged"
    );
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let (addr, connections) = scripted_origin(|head| {
        if head.starts_with("HEAD ") {
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false)
        } else {
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
        }
    })
    .await;
    let client = Client::default();
    let peer = HttpPeer::new(addr);
    for method in [Method::HEAD, Method::GET, Method::HEAD, Method::GET] {
        let (status, headers, body, _) = fetch(&client, &peer, method.clone()).await.expect("ok");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-length"], "5");
        let expected = if method == Method::HEAD { "" } else { "hello" };
        assert_eq!(body, expected, "{method}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_delimited_by_the_close_is_read_to_the_end() {
    let (addr, connections) =
        scripted_origin(|_| (b"HTTP/1.1 200 OK\r\n\r\nuntil the very end", true)).await;
    let client = Client::default();
    let peer = HttpPeer::new(addr);
    for _ in 0..2 {
        let (_, _, body, _) = fetch(&client, &peer, Method::GET).await.expect("ok");
        assert_eq!(body, "until the very end");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_eq!(client.idle_connections(&peer), 0);
}

#[tokio::test]
async fn connections_the_response_ends_are_not_reused() {
    // Each origin keeps its side open: only the response says the connection is done.
    let answers: [Answer; 3] = [
        // Both framings: chunked wins, and the connection cannot be trusted afterwards.
        |_| {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
                  2\r\nok\r\n0\r\n\r\n",
                false,
            )
        },
        |_| {
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                false,
            )
        },
        // HTTP/1.0 without keep-alive.
        |_| (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    ];
    for answer in answers {
        let (addr, connections) = scripted_origin(answer).await;
        let client = Client::default();
        let peer = HttpPeer::new(addr);
        for _ in 0..2 {
            let (_, _, body, _) = fetch(&client, &peer, Method::GET).await.expect("ok");
            assert_eq!(body, "ok");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn malformed_responses_are_invalid_responses() {
    let heads: [Answer; 4] = [
        |_| {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                false,
            )
        },
        |_| (b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", false),
        |_| {
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                false,
            )
        },
        |_| (b"HTTP/1.1 2000 Nope\r\n\r\n", false),
    ];
    for answer in heads {
        let (addr, _) = scripted_origin(answer).await;
        let client = Client::default();
        let error = fetch(&client, &HttpPeer::new(addr), Method::GET)
            .await
            .expect_err("invalid response");
        assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{error}");
    }
    // A broken chunked body: the head arrives, the body fails.
    let (addr, _) = scripted_origin(|_| {
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n",
            false,
        )
    })
    .await;
    let client = Client::default();
    let error = fetch(&client, &HttpPeer::new(addr), Method::GET)
        .await
        .expect_err("invalid chunk");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{error}");
    // A head over the configured limit.
    let (addr, _) = scripted_origin(|_| {
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let mut v = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
            v.extend(std::iter::repeat_n(b'a', 4096));
            v.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            v
        });
        (big.as_slice(), false)
    })
    .await;
    let client = Client::new(ClientOptions {
        max_response_head_bytes: 1024,
        ..ClientOptions::default()
    });
    let error = fetch(&client, &HttpPeer::new(addr), Method::GET)
        .await
        .expect_err("head too large");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{error}");
}

#[tokio::test]
async fn a_body_cut_short_is_an_upstream_close() {
    let (addr, _) =
        scripted_origin(|_| (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", true)).await;
    let client = Client::default();
    let error = fetch(&client, &HttpPeer::new(addr), Method::GET)
        .await
        .expect_err("cut short");
    assert_eq!(error.kind(), ErrorKind::UpstreamClosed, "{error}");
}

#[tokio::test]
async fn requests_racing_the_origins_close_of_a_pooled_connection_all_succeed() {
    // The origin closes every connection right after its response, with no notice: the
    // next request often takes the pooled connection before its close has been seen. It
    // must go again on a fresh connection, never fail.
    let (addr, connections) =
        scripted_origin(|_| (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true)).await;
    let client = Client::default();
    let peer = HttpPeer::new(addr);
    for i in 0..50 {
        let (status, _, body, _) = fetch(&client, &peer, Method::GET)
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!((status, body.as_ref()), (StatusCode::OK, b"ok".as_ref()));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 50);
}

#[tokio::test]
async fn a_request_with_a_body_takes_over_an_idle_direct_connection() {
    use http_body_util::Full;
    let origin = pingora_dsl_suite::origin::Origin::start("o")
        .await
        .expect("origin");
    let client: HttpClient<Full<Bytes>> = HttpClient::default();
    let peer = HttpPeer::new(origin.addr());
    let get = || {
        Request::get("/")
            .header("host", "origin.test")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let post = Request::post("/upload")
        .header("host", "origin.test")
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("request");
    for request in [get(), post] {
        let response = client.send(&peer, request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.expect("body");
    }
    // The POST went over the connection the GET had opened, now driven by hyper.
    assert_eq!(origin.connections(), 1);
    assert_eq!(client.idle_connections(&peer), 1);
}

/// A POST to the suite's origin with `body` and its `Content-Length`.
fn post_with_length(path: &str, body: Bytes) -> Request<http_body_util::Full<Bytes>> {
    Request::post(path)
        .header("host", "origin.test")
        .header("content-length", body.len())
        .body(http_body_util::Full::new(body))
        .expect("request")
}

#[tokio::test]
async fn bodies_framed_by_their_length_go_direct_and_keep_the_connection() {
    use http_body_util::Full;
    let origin = pingora_dsl_suite::origin::Origin::start("o")
        .await
        .expect("origin");
    let client: HttpClient<Full<Bytes>> = HttpClient::default();
    let peer = HttpPeer::new(origin.addr());
    // Larger than the socket buffers both ways: the origin echoes as it reads, so this
    // passes only if the response is read while the body still goes out.
    let large = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    for body in [
        Bytes::from_static(b"payload"),
        large,
        Bytes::new(),
        Bytes::from_static(b"last"),
    ] {
        let response = client
            .send(&peer, post_with_length("/echo", body.clone()))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let echoed = response.into_body().collect().await.expect("body");
        assert_eq!(echoed.to_bytes(), body, "the origin got the body whole");
    }
    // A bodiless GET after them still finds the connection in the direct pool: hyper's
    // client, had it carried the POSTs, would have kept it.
    let get = Request::get("/")
        .header("host", "origin.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = client.send(&peer, get).await.expect("response");
    response.into_body().collect().await.expect("body");
    assert_eq!(origin.connections(), 1, "one connection for all five");
    assert_eq!(origin.requests(), 5);
}

#[tokio::test]
async fn an_origin_answering_before_it_took_the_body_is_relayed() {
    use http_body_util::Full;
    let (addr, connections) = scripted_origin(|_| {
        (
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!",
            true,
        )
    })
    .await;
    let client: HttpClient<Full<Bytes>> = HttpClient::default();
    let peer = HttpPeer::new(addr);
    let body = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.send(&peer, post_with_length("/upload", body)),
    )
    .await
    .expect("an answer in time")
    .expect("the origin's answer, not an error");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(text.as_ref(), b"big!");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        client.idle_connections(&peer),
        0,
        "a closed connection is not pooled"
    );
}

/// A body that says it has 10 bytes, yields 3, then fails as a client's body that timed
/// out does.
struct FailingBody(bool);

impl http_body::Body for FailingBody {
    type Data = Bytes;
    type Error = pingora_dsl::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.0 {
            return std::task::Poll::Ready(Some(Err(pingora_dsl::Error::new(
                ErrorKind::DownstreamTimeout,
                "the client stopped sending its body",
            ))));
        }
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"abc")))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(if self.0 { 7 } else { 10 })
    }
}

#[tokio::test]
async fn a_request_body_that_fails_fails_the_exchange_with_its_own_error() {
    let origin = pingora_dsl_suite::origin::Origin::start("o")
        .await
        .expect("origin");
    let client: HttpClient<FailingBody> = HttpClient::default();
    let peer = HttpPeer::new(origin.addr());
    let request = Request::post("/echo")
        .header("host", "origin.test")
        .header("content-length", "10")
        .body(FailingBody(false))
        .expect("request");
    let outcome = tokio::time::timeout(Duration::from_secs(10), client.send(&peer, request))
        .await
        .expect("an outcome in time");
    let Err(error) = outcome else {
        panic!("the body failed, but the exchange succeeded");
    };
    assert_eq!(error.kind(), ErrorKind::DownstreamTimeout, "{error}");
    assert_eq!(
        client.idle_connections(&peer),
        0,
        "a half-sent request's connection is dropped"
    );
}

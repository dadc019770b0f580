//! Response compression declared in `proxy!`, over real sockets: curl (a real client that
//! decodes gzip, brotli and zstd) gets each coding as its `Accept-Encoding` asks, identical
//! bodies after decoding; responses that must not be compressed are not; a slow upstream's
//! chunks reach the client compressed as they come, before the upstream has finished.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use pingora_dsl::prelude::*;
use support::{client, point};
use tokio::sync::Notify;

proxy! {
    /// Compression for the whole proxy (text above 1 KiB), one route without, one gzip-only
    /// route for a binary type.
    pub Squeezed {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        compress { min_size 1KiB; }
        route path "/raw" => upstream app { compress off; }
        route path "/bin" => upstream app {
            compress { encodings [gzip]; types ["application/octet-stream"]; min_size 0; }
        }
        route => upstream app;
    }
}

/// The text every compressible answer carries (about 20 KiB).
fn text() -> String {
    (0..400)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect()
}

/// An origin answering by path; `/stream` sends one chunk, waits for `go`, sends another.
async fn start_origin(go: Arc<Notify>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let go = go.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let go = go.clone();
                    async move { Ok::<_, Infallible>(answer(req.uri().path(), go)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

type Streamed = http_body_util::Either<Full<Bytes>, StreamBody<tokio_stream_shim::Receiver>>;

fn answer(path: &str, go: Arc<Notify>) -> Response<Streamed> {
    let full = |content_type: &str, body: Bytes, extra: &[(&'static str, &str)]| {
        let mut r = Response::new(http_body_util::Either::Left(Full::new(body)));
        r.headers_mut()
            .insert("content-type", content_type.parse().expect("type"));
        for (k, v) in extra {
            r.headers_mut().insert(*k, v.parse().expect("value"));
        }
        r
    };
    let text = Bytes::from(text());
    match path {
        "/small" => full(
            "text/plain",
            Bytes::from_static(b"too small to be worth it"),
            &[],
        ),
        "/image" => full("image/png", text, &[]),
        "/encoded" => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &text).expect("gzip");
            let gz = Bytes::from(gz.finish().expect("gzip"));
            full("text/plain", gz, &[("content-encoding", "gzip")])
        }
        "/no-transform" => full(
            "text/plain",
            text,
            &[("cache-control", "public, no-transform")],
        ),
        "/partial" => {
            let mut r = full("text/plain", text, &[("content-range", "bytes 0-99/1000")]);
            *r.status_mut() = http::StatusCode::PARTIAL_CONTENT;
            r
        }
        "/bin/blob" => full("application/octet-stream", text, &[]),
        "/stream" => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from(
                        "first half of a slow answer\n".repeat(20),
                    ))))
                    .await;
                go.notified().await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("second half\n".repeat(20)))))
                    .await;
            });
            let mut r = Response::new(http_body_util::Either::Right(StreamBody::new(
                tokio_stream_shim::Receiver(rx),
            )));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("type"));
            r
        }
        _ => full("text/html; charset=utf-8", text, &[("etag", "\"v1\"")]),
    }
}

/// A `Stream` over an mpsc receiver (what `tokio-stream` provides, without the dependency).
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::Frame;

    pub struct Receiver(
        pub tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>,
    );

    impl futures_util::Stream for Receiver {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

async fn start() -> (pingora_dsl::downstream::RunningService, Arc<Notify>) {
    let go = Arc::new(Notify::new());
    let origin = start_origin(go.clone()).await;
    let mut proxy = Squeezed::new();
    point(proxy.router_mut(), "app", &[origin]);
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    (service.spawn().expect("proxy starts"), go)
}

/// curl `--compressed` with `accept`: the response headers (lowercase) and the decoded body.
async fn curl(addr: SocketAddr, path: &str, accept: &str) -> (String, String) {
    let url = format!("http://{addr}{path}");
    let accept = format!("accept-encoding: {accept}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--compressed",
                "-D",
                "-",
                "-H",
                &accept,
                &url,
            ])
            .output()
    })
    .await
    .expect("waiter")
    .expect("curl runs (./test.sh installs it)");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_coding_as_the_client_asks() {
    let (proxy, _) = start().await;
    let addr = proxy.addr();
    for (accept, coding) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip;q=1, br;q=0.8", "gzip"),
        ("br", "br"),
        ("*;q=0.1, zstd;q=0", "br"),
    ] {
        let (head, body) = curl(addr, "/page", accept).await;
        assert!(
            head.contains(&format!("content-encoding: {coding}\r\n")),
            "{accept}: {head}"
        );
        assert!(head.contains("vary: accept-encoding"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(
            head.contains("etag: w/\"v1\""),
            "a strong ETag becomes weak: {head}"
        );
        assert_eq!(body, text(), "{accept}: decoded, the origin's bytes");
    }
    let (head, body) = curl(addr, "/page", "identity").await;
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(
        head.contains("vary: accept-encoding"),
        "caches must keep both: {head}"
    );
    assert_eq!(body, text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_not_be_compressed_is_not() {
    let (proxy, _) = start().await;
    for path in ["/small", "/image", "/no-transform", "/partial", "/raw/page"] {
        let (head, _) = curl(proxy.addr(), path, "gzip, br, zstd").await;
        assert!(!head.contains("content-encoding"), "{path}: {head}");
    }
    let (head, body) = curl(proxy.addr(), "/encoded", "zstd, gzip").await;
    assert!(
        head.contains("content-encoding: gzip\r\n"),
        "already encoded, left alone: {head}"
    );
    assert_eq!(body, text(), "encoded once, by the origin");
    let (head, body) = curl(proxy.addr(), "/bin/blob", "br, gzip;q=0.5").await;
    assert!(
        head.contains("content-encoding: gzip"),
        "the route's own codings: {head}"
    );
    assert_eq!(body, text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_streams_compressed() {
    let (proxy, go) = start().await;
    let req = Request::get(format!("http://{}/stream", proxy.addr()))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("a head within 10 s")
        .expect("response");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    // The first half arrives, decodable, while the origin still holds the second.
    while !String::from_utf8_lossy(decoder.get_ref()).contains("first half") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the first half within 10 s, before the origin finished")
            .expect("a frame")
            .expect("no error");
        if let Ok(data) = frame.into_data() {
            std::io::Write::write_all(&mut decoder, &data).expect("gzip");
            std::io::Write::flush(&mut decoder).expect("gzip");
        }
    }
    assert!(!String::from_utf8_lossy(decoder.get_ref()).contains("second half"));
    go.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the rest within 10 s")
        .expect("body")
        .to_bytes();
    std::io::Write::write_all(&mut decoder, &rest).expect("gzip");
    let all = decoder.finish().expect("a complete gzip stream");
    assert!(String::from_utf8_lossy(&all).ends_with("second half\n"));
}

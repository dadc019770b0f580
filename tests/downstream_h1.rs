//! The server's direct HTTP/1.1 path (bodiless requests and bodies framed by
//! `Content-Length` served without hyper's dispatcher) and its hand-over to hyper, over raw
//! sockets: pipelined requests mixing both, framing of responses of known and unknown
//! length, HEAD, `Connection: close`, heads split across writes, and a client that leaves
//! mid-request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use pingora_dsl::downstream::RunningService;
use pingora_dsl::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A body of two frames whose size is not known ahead: framed as chunked.
struct TwoFrames(u8);

impl Body for TwoFrames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0 += 1;
        Poll::Ready(match self.0 {
            1 => Some(Ok(Frame::data(Bytes::from_static(b"first,")))),
            2 => Some(Ok(Frame::data(Bytes::from_static(b"second")))),
            _ => None,
        })
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Requests to `/slow` dropped (cancelled, or finished after 10 s).
static SLOW_DROPPED: AtomicUsize = AtomicUsize::new(0);

struct NoteDrop;

impl Drop for NoteDrop {
    fn drop(&mut self) {
        SLOW_DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

type AnyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// Answers `/chunked` with a body of unknown length, `/slow` after 10 s, and anything else
/// with `METHOD PATH BODYLEN` (the request body read whole). Every answer says which engine
/// read the request in `x-engine` (`direct` or `hyper`).
fn start_server() -> RunningService {
    let handler = tower::service_fn(|req: http::Request<DownstreamBody>| async move {
        let seen = format!("{:?}", req.body());
        let engine = if seen == "DownstreamBody(empty)" || seen.starts_with("DownstreamBody(direct")
        {
            "direct"
        } else {
            "hyper"
        };
        let body: AnyBody = match req.uri().path() {
            "/chunked" => TwoFrames(0).boxed_unsync(),
            "/slow" => {
                let _noted = NoteDrop;
                tokio::time::sleep(Duration::from_secs(10)).await;
                Full::new(Bytes::from_static(b"late")).boxed_unsync()
            }
            _ => {
                let (parts, body) = req.into_parts();
                let len = body.collect().await.map_or(0, |b| b.to_bytes().len());
                let text = format!("{} {} {len}", parts.method, parts.uri.path());
                Full::new(Bytes::from(text)).boxed_unsync()
            }
        };
        let mut response = http::Response::new(body);
        response
            .headers_mut()
            .insert("x-engine", http::HeaderValue::from_static(engine));
        Ok::<_, Infallible>(response)
    });
    let mut service = serve_handler("direct", handler);
    service.add_tcp("127.0.0.1:0");
    service.spawn().expect("server starts")
}

/// One response read off a connection: status, lower-cased header fields, decoded body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `stream`, with `pending` holding bytes read past the previous
/// one. `head_only`: the response to a HEAD (no body whatever its fields say).
async fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Answer {
    let end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, pending).await;
    };
    let head = String::from_utf8(pending.drain(..end).collect()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("field");
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only {
        return answer;
    }
    if let Some(len) = answer.header("content-length") {
        let len: usize = len.parse().expect("length");
        while pending.len() < len {
            fill(stream, pending).await;
        }
        answer.body = pending.drain(..len).collect();
    } else if answer.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(stream, pending).await;
            };
            let size_text =
                String::from_utf8(pending.drain(..line_end + 2).collect()).expect("chunk line");
            let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
            while pending.len() < size + 2 {
                fill(stream, pending).await;
            }
            answer.body.extend(pending.drain(..size));
            pending.drain(..2);
            if size == 0 {
                break;
            }
        }
    }
    answer
}

async fn fill(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
        .await
        .expect("response within 10 s")
        .expect("read");
    assert!(n > 0, "connection closed mid-response: {pending:?}");
    pending.extend_from_slice(&chunk[..n]);
}

/// Whether the server closes `stream` (EOF) within 5 s.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn pipelined_requests_with_a_body_between_are_answered_in_order() {
    let server = start_server();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    // Plain, plain, a body framed by its length (still direct), plain, then a chunked body
    // (hyper takes the connection over mid-buffer), then plain.
    stream
        .write_all(
            b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
              HEAD /b HTTP/1.1\r\nHost: t\r\n\r\n\
              POST /c HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
              GET /d HTTP/1.1\r\nHost: t\r\n\r\n\
              POST /f HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /g HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await
        .expect("write");
    let mut pending = Vec::new();
    let a = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!((a.status, &a.body[..]), (200, &b"GET /a 0"[..]));
    let b = read_answer(&mut stream, &mut pending, true).await;
    assert_eq!(b.status, 200);
    assert_eq!(
        b.header("content-length"),
        Some("9"),
        "HEAD keeps the length"
    );
    let c = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!((c.status, &c.body[..]), (200, &b"POST /c 5"[..]));
    assert_eq!(c.header("x-engine"), Some("direct"));
    let d = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!((d.status, &d.body[..]), (200, &b"GET /d 0"[..]));
    assert_eq!(d.header("x-engine"), Some("direct"));
    let f = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!((f.status, &f.body[..]), (200, &b"POST /f 3"[..]));
    assert_eq!(f.header("x-engine"), Some("hyper"));
    let g = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!((g.status, &g.body[..]), (200, &b"GET /g 0"[..]));
    assert_eq!(
        g.header("x-engine"),
        Some("hyper"),
        "hyper keeps the connection"
    );
    // The connection is still good.
    stream
        .write_all(b"GET /e HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let e = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!(&e.body[..], b"GET /e 0");
    assert!(pending.is_empty(), "nothing but the responses arrived");
    server.shutdown().await;
}

#[tokio::test]
async fn responses_are_framed_by_length_or_chunked_and_dated() {
    let server = start_server();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let mut pending = Vec::new();
    stream
        .write_all(b"GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let chunked = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.header("content-length"), None);
    assert_eq!(&chunked.body[..], b"first,second");
    assert!(chunked.header("date").is_some_and(|d| d.ends_with(" GMT")));

    stream
        .write_all(b"GET /sized?x=1 HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let sized = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!(sized.header("content-length"), Some("12"));
    assert_eq!(sized.header("transfer-encoding"), None);
    assert_eq!(&sized.body[..], b"GET /sized 0");
    assert!(sized.header("date").is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn connection_close_ends_the_connection_after_its_response() {
    let server = start_server();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream
        .write_all(b"GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut pending = Vec::new();
    let answer = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!(&answer.body[..], b"GET /bye 0");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(
        closes(&mut stream).await,
        "the server closed the connection"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_head_split_across_writes_is_served_once_complete() {
    let server = start_server();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    for part in [
        &b"GET /sp"[..],
        b"lit HTTP/1.1\r\nHo",
        b"st: t\r\n",
        b"\r\n",
    ] {
        stream.write_all(part).await.expect("write");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut pending = Vec::new();
    let answer = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!(&answer.body[..], b"GET /split 0");
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_head_after_a_good_one_gets_hyper_s_400() {
    let server = start_server();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    // A good request first, so the bad one arrives on a connection the direct path holds.
    stream
        .write_all(
            b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\nGET /bad\x01path HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await
        .expect("write");
    let mut pending = Vec::new();
    let ok = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!(&ok.body[..], b"GET /ok 0");
    let bad = read_answer(&mut stream, &mut pending, false).await;
    assert_eq!(bad.status, 400);

    assert!(
        closes(&mut stream).await,
        "hyper closes after a bad request"
    );
    // (Oversized heads, handed over the same way, get 431: tests/bad_input.rs.)
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_request() {
    let server = start_server();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        SLOW_DROPPED.load(Ordering::SeqCst),
        0,
        "the request is under way"
    );
    drop(stream);
    // The handler sleeps 10 s: only a cancellation drops it this soon.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while SLOW_DROPPED.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        SLOW_DROPPED.load(Ordering::SeqCst),
        1,
        "the request was cancelled"
    );
    server.shutdown().await;
}

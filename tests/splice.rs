//! Bodies spliced between the client's socket and the origin's (`splice(2)` through a pipe,
//! never copied into the proxy's memory) on cleartext HTTP/1.1, both ways: byte-exact,
//! counted, with the bytes past a request body left for the next request, connections
//! kept, the body timeout kept, and a client leaving mid-body or mid-download ending the
//! exchange. Small bodies are copied as before.

mod support;

use std::time::Duration;

use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use support::{count, fetch, point, read_response, start_with_admin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

proxy! {
    /// Every request to one pool; `/upload` to the origin's body-counting `/consume`.
    pub Relay {
        listen "127.0.0.1:6188";
        client_timeout body_read 500ms;
        upstream app { peers ["127.0.0.1:9"]; }
        route path "/upload" => upstream app { replace_prefix "/upload" "/consume"; }
        route path "/impatient" => upstream app {
            timeout read 300ms;
            strip_prefix "/impatient";
        }
        route => upstream app;
    }
}

const SPLICED: &str = "pingora_dsl_request_body_spliced_bytes_total";
const RECEIVED: &str = "pingora_dsl_request_body_bytes_total";
const SPLICED_OUT: &str = "pingora_dsl_response_body_spliced_bytes_total";

/// The origin, the proxy in front of it and the proxy's admin listener.
fn start(origin: &Origin) -> (pingora_dsl::downstream::RunningService, RunningAdmin) {
    let mut proxy = Relay::new();
    point(proxy.router_mut(), "app", &[origin.addr()]);
    let (proxy, admin) = start_with_admin(proxy.service());
    (proxy, admin)
}

type RunningAdmin = pingora_dsl::downstream::RunningService;

/// A body of `len` bytes that shows any byte out of place.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// `(received, spliced)` request body bytes of the catch-all route.
async fn body_counts(admin: &RunningAdmin, route: &str) -> (u64, u64) {
    let m = fetch(admin.addr(), "/metrics").await;
    let labels = [("proxy", "Relay"), ("route", route)];
    (count(&m, RECEIVED, &labels), count(&m, SPLICED, &labels))
}

#[tokio::test]
async fn a_large_body_is_spliced_byte_exact_and_the_request_behind_it_is_served() {
    let origin = Origin::start("o").await.expect("origin");
    let (proxy, admin) = start(&origin);
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");

    // A small body is copied: no pipe pays for 1 KiB.
    let small = pattern(1024);
    let mut raw = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        small.len()
    )
    .into_bytes();
    raw.extend_from_slice(&small);
    stream.write_all(&raw).await.expect("write");
    let (head, echoed) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(echoed == small, "the small body came back whole");
    assert_eq!(body_counts(&admin, "*").await, (1024, 0));

    // 5 MiB with a GET pipelined right behind it, in one stream of bytes.
    let large = pattern(5 * 1024 * 1024);
    let mut raw = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        large.len()
    )
    .into_bytes();
    raw.extend_from_slice(&large);
    raw.extend_from_slice(b"GET /after HTTP/1.1\r\nhost: x\r\n\r\n");
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(&raw).await.expect("write");
        writer
    });
    let (head, echoed) = read_response(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echoed.len(), large.len());
    assert!(
        echoed == large,
        "the spliced body reached the origin byte-exact"
    );
    let (head, body) = read_response(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        body, b"origin o",
        "the pipelined GET was left for its own turn"
    );
    let _writer = writing.await.expect("writer");

    let (received, spliced) = body_counts(&admin, "*").await;
    assert_eq!(received, 1024 + 5 * 1024 * 1024);
    // Only what arrived with the head was copied.
    assert!(spliced > 4 * 1024 * 1024, "spliced {spliced} of 5 MiB");
    assert_eq!(
        origin.connections(),
        1,
        "one upstream connection for all three"
    );
}

/// Waits (at most 10 s) until the admin counts `want` finished requests of `class` on
/// `route`.
async fn wait_finished(admin: &RunningAdmin, route: &str, class: &str, want: u64) {
    let labels = [("proxy", "Relay"), ("route", route), ("class", class)];
    let what = format!("{want} {class} requests counted on {route}");
    support::wait_until_async(Duration::from_secs(10), &what, || async {
        let m = fetch(admin.addr(), "/metrics").await;
        support::sample(&m, "pingora_dsl_requests_total", &labels) == Some(want as f64)
    })
    .await;
}

/// A new connection's `GET /` is answered by the origin.
async fn served_on(proxy: &pingora_dsl::downstream::RunningService) {
    let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
    again
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut again).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"origin o");
}

/// Sends the head of a 1 MiB upload, then `sent` bytes of it after the head went out (so
/// that they are spliced, not read with the head).
async fn start_upload(proxy: &pingora_dsl::downstream::RunningService, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let head = "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&pattern(sent)).await.expect("write");
    stream
}

/// Response body bytes spliced on `route`.
async fn spliced_out(admin: &RunningAdmin, route: &str) -> u64 {
    let m = fetch(admin.addr(), "/metrics").await;
    count(&m, SPLICED_OUT, &[("proxy", "Relay"), ("route", route)])
}

/// Sends `GET path` on `stream` and reads the answer, checking it is `len` bytes of `x`.
async fn download(stream: &mut TcpStream, path: &str, len: usize) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let (head, body) = read_response(stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {len}")), "{head}");
    assert_eq!(body.len(), len);
    assert!(body.iter().all(|b| *b == b'x'), "the body arrived as sent");
}

#[tokio::test]
async fn large_downloads_are_spliced_and_both_connections_serve_on() {
    let origin = Origin::start("o").await.expect("origin");
    let (proxy, admin) = start(&origin);
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    download(&mut stream, "/bytes/1000", 1000).await;
    assert_eq!(spliced_out(&admin, "*").await, 0, "a small body is copied");
    for _ in 0..2 {
        download(&mut stream, "/bytes/3000000", 3_000_000).await;
    }
    download(&mut stream, "/bytes/10", 10).await;
    let out = spliced_out(&admin, "*").await;
    assert!(out > 5_000_000, "spliced {out} of 6,000,000");
    let m = fetch(admin.addr(), "/metrics").await;
    let sent = count(
        &m,
        "pingora_dsl_response_body_bytes_total",
        &[("proxy", "Relay"), ("route", "*")],
    );
    assert_eq!(sent, 6_001_010, "every byte counted, spliced or not");
    assert_eq!(origin.connections(), 1, "the upstream connection was kept");
}

#[tokio::test]
async fn a_client_leaving_mid_download_closes_the_origin_connection() {
    let origin = Origin::start("o").await.expect("origin");
    let (proxy, admin) = start(&origin);
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"GET /bytes/100000000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut first = vec![0u8; 1024 * 1024];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut first))
        .await
        .expect("the first MiB within 10 s")
        .expect("read");
    drop(stream);
    // Logged as a 200 the client did not take whole.
    wait_finished(&admin, "*", "2xx", 1).await;
    let out = spliced_out(&admin, "*").await;
    assert!(out > 0 && out < 100_000_000, "spliced {out}");
    served_on(&proxy).await;
    assert_eq!(
        origin.connections(),
        2,
        "the cut download's connection was closed"
    );
}

#[tokio::test]
async fn a_client_stalling_mid_splice_gets_408_and_the_origin_connection_is_not_reused() {
    let origin = Origin::start("o").await.expect("origin");
    let (proxy, admin) = start(&origin);
    let mut stream = start_upload(&proxy, 300 * 1024).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy answers and closes within 10 s");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    let (received, spliced) = body_counts(&admin, "/upload").await;
    assert_eq!(received, 300 * 1024);
    assert!(spliced > 0, "the body was being spliced");
    // The origin saw a body cut short: its connection is not used again.
    served_on(&proxy).await;
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn a_client_leaving_mid_splice_ends_the_exchange_and_the_proxy_serves_on() {
    let origin = Origin::start("o").await.expect("origin");
    let (proxy, admin) = start(&origin);
    let stream = start_upload(&proxy, 200 * 1024).await;
    drop(stream);
    // The request ends without an answer (counted in class `other`).
    wait_finished(&admin, "/upload", "other", 1).await;
    let (received, spliced) = body_counts(&admin, "/upload").await;
    assert_eq!(received, 200 * 1024);
    assert!(spliced > 0, "the body was being spliced");
    served_on(&proxy).await;
    assert_eq!(
        origin.connections(),
        2,
        "the cut exchange's connection was closed"
    );
}

#[tokio::test]
async fn a_slow_download_is_spliced_as_it_comes() {
    let origin = Origin::start("o").await.expect("origin");
    let (proxy, admin) = start(&origin);
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    // 70 chunks of 1 KiB, one every 20 ms: many fills of the pipe, each after a wait.
    download(&mut stream, "/drip/70/20", 70 * 1024).await;
    // Counted when the request ends, which may come just after the client has it all.
    wait_finished(&admin, "*", "2xx", 1).await;
    let out = spliced_out(&admin, "*").await;
    assert!(out > 60 * 1024, "spliced {out} of 71,680");
}

#[tokio::test]
async fn an_origin_stalling_mid_splice_is_cut_off_by_the_read_timeout() {
    let origin = Origin::start("o").await.expect("origin");
    let (proxy, admin) = start(&origin);
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    // 100 chunks of 1 KiB, one every 2 s; the route waits 300 ms at most for a read.
    stream
        .write_all(b"GET /impatient/drip/100/2000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy ends the response within 10 s");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-length: 102400"), "{text}");
    assert!(
        out.len() < 102_400,
        "the body was cut short: {} bytes",
        out.len()
    );
    // Logged as the origin's failure, on a 200 already sent.
    wait_finished(&admin, "/impatient", "2xx", 1).await;
    served_on(&proxy).await;
}

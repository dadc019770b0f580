//! Bodies stream through the proxy in both directions: a 1 GiB download and a 1 GiB upload
//! pass without the process's resident memory growing with the body.
//!
//! Client, proxy and origin share this process, so the RSS measured bounds all three.

mod support;

use std::time::Duration;

use pingora_dsl_suite::origin::Origin;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GIB: u64 = 1024 * 1024 * 1024;
/// Allowed RSS growth while a gigabyte passes: far below the body size, enough for buffers.
const MAX_GROWTH: u64 = 64 * 1024 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_down_and_up_with_flat_memory() {
    let origin = Origin::start("o").await.expect("origin");
    let proxy = start_proxy(TestProxy::new(&[origin.addr()]));
    let baseline = rss_bytes();
    let mut peak = baseline;

    // Download: a 200 announcing the gigabyte, then exactly the origin's bytes, then the
    // close the request asked for.
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    s.write_all(
        format!("GET /bytes/{GIB} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = vec![0u8; 256 * 1024];
    // What the origin sends (`/bytes/N`): `x` repeated.
    let expected = vec![b'x'; buf.len()];
    let mut head = Vec::new();
    let mut body = 0u64;
    let mut since_sample = 0u64;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("data keeps flowing")
            .expect("read");
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        if !head.ends_with(b"\r\n\r\n") {
            head.extend_from_slice(data);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                assert!(head.len() < 64 * 1024, "an endless response head");
                continue;
            };
            let rest = head.split_off(end + 4);
            let start = n - rest.len();
            data = &buf[start..n];
        }
        assert!(
            data == &expected[..data.len()],
            "byte {body} onwards differs from what the origin sent"
        );
        body += data.len() as u64;
        since_sample += n as u64;
        if since_sample > 32 * 1024 * 1024 {
            since_sample = 0;
            peak = peak.max(rss_bytes());
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {GIB}\r\n")),
        "the length is announced: {head}"
    );
    assert_eq!(body, GIB, "exactly the gigabyte, nothing more");
    let download_peak = peak;

    // Upload.
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    s.write_all(format!("POST /consume HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write head");
    let chunk = vec![b'u'; 256 * 1024];
    let mut sent = 0u64;
    while sent < GIB {
        tokio::time::timeout(Duration::from_secs(30), s.write_all(&chunk))
            .await
            .expect("upload keeps flowing")
            .expect("write");
        sent += chunk.len() as u64;
        if sent.is_multiple_of(32 * 1024 * 1024) {
            peak = peak.max(rss_bytes());
        }
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let (_, answer) = out.split_once("\r\n\r\n").expect("a whole response");
    assert_eq!(
        answer,
        GIB.to_string(),
        "the origin received the whole upload, no byte more or less"
    );

    eprintln!(
        "RSS baseline {} MiB, peak during download {} MiB, peak overall {} MiB",
        baseline >> 20,
        download_peak >> 20,
        peak >> 20
    );
    assert!(
        peak.saturating_sub(baseline) < MAX_GROWTH,
        "RSS grew from {} MiB to {} MiB while streaming",
        baseline >> 20,
        peak >> 20
    );
}

//! The accept loop survives running out of file descriptors (EMFILE): it backs off instead
//! of spinning, and serves the waiting connection once descriptors are free again.
//!
//! Alone in its own test binary because it lowers the process's descriptor limit (and
//! restores it, panic or not).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use pingora_dsl::downstream::serve_handler;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// The descriptor limit lowered for as long as this lives; dropped (also by a panic), it
/// restores the limit it found.
struct LoweredFdLimit {
    soft: u64,
    hard: u64,
}

impl LoweredFdLimit {
    fn to(limit: u64) -> LoweredFdLimit {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        setrlimit(Resource::RLIMIT_NOFILE, limit, hard).expect("lower the limit");
        LoweredFdLimit { soft, hard }
    }
}

impl Drop for LoweredFdLimit {
    fn drop(&mut self) {
        let restored = setrlimit(Resource::RLIMIT_NOFILE, self.soft, self.hard);
        if let Err(e) = restored {
            // Not a panic: this may run while a failed assertion unwinds.
            eprintln!("cannot restore the descriptor limit: {e}");
        }
    }
}

/// Waits (bounded by 10 s) until `cond` holds, checking every 5 ms.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn accept_survives_emfile_without_spinning() {
    let handler = tower::service_fn(|_req: http::Request<pingora_dsl::DownstreamBody>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
            b"still here",
        ))))
    });
    let mut service = serve_handler("emfile", handler);
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn().expect("start");
    let addr = running.addr();

    let limit = LoweredFdLimit::to(open_fds() + 32);

    // Use up every descriptor, then free exactly one for the client's socket.
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
        assert!(fillers.len() < 10_000, "the limit did not take effect");
    }
    fillers.pop();
    let mut client = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect (backlog)");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");

    // The server cannot accept now: it must back off, not spin. Five more failures take a
    // spinning loop microseconds; backing off from 5 ms and doubling, 150 ms at least.
    let errors = || running.accept_stats().errors();
    wait_until("accept fails with EMFILE", || errors() >= 1).await;
    let first = Instant::now();
    wait_until("accept is retried", || errors() >= 6).await;
    let five_more = first.elapsed();
    assert!(
        five_more >= Duration::from_millis(100),
        "five accept errors in {five_more:?}: the loop spins"
    );
    assert_eq!(running.accept_stats().accepted(), 0);

    drop(fillers);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
        .await
        .expect("served once descriptors are free")
        .expect("read");
    drop(limit);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("still here"), "{out}");
    assert_eq!(running.accept_stats().accepted(), 1);
    running.shutdown().await;
}

//! Per-request cost of the proxy, in-process over loopback: a keep-alive client sends
//! sequential small GETs (and 100 KiB GETs) through the proxy to a hyper origin, against the
//! same client talking to the origin directly. The difference is what the proxy adds.
//!
//! Run: `cargo bench --bench proxy` (add `-- --quick` for a short run).
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct ToOrigin(SocketAddr);

impl ProxyHttp for ToOrigin {
    type Ctx = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<HttpPeer> {
        Ok(HttpPeer::new(self.0))
    }
}

/// A minimal keep-alive client: writes a fixed request, reads one response whose body
/// length is known (`content-length`), so the client's own cost stays constant.
struct RawClient {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            request: format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes(),
            buf: vec![0u8; 256 * 1024],
        }
    }

    async fn round_trip(&mut self) {
        self.stream.write_all(&self.request).await.expect("write");
        let mut filled = 0;
        let mut expected: Option<usize> = None;
        loop {
            let n = self
                .stream
                .read(&mut self.buf[filled..])
                .await
                .expect("read");
            assert!(n > 0, "connection closed");
            filled += n;
            if expected.is_none() {
                if let Some(end) = self.buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = std::str::from_utf8(&self.buf[..end]).expect("ascii head");
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.to_owned())
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .expect("content-length");
                    expected = Some(end + 4 + len);
                }
            }
            if expected.is_some_and(|e| filled >= e) {
                return;
            }
        }
    }
}

fn bench_proxy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (origin, proxy) = rt.block_on(async {
        let origin = Origin::start("bench").await.expect("origin");
        let mut service = http_proxy_service("bench", ToOrigin(origin.addr()));
        service.add_tcp("127.0.0.1:0");
        let proxy = service.spawn().expect("proxy");
        (origin, proxy)
    });

    for (name, path, bytes) in [("small", "/", 12u64), ("100k", "/bytes/102400", 102_400)] {
        let mut group = c.benchmark_group(format!("get_{name}"));
        group.throughput(Throughput::Bytes(bytes));
        group.measurement_time(Duration::from_secs(5));
        for (target, addr) in [("direct", origin.addr()), ("proxied", proxy.addr())] {
            let mut client = rt.block_on(RawClient::connect(addr, path));
            group.bench_function(target, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            client.round_trip().await;
                        }
                        start.elapsed()
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_proxy);
criterion_main!(benches);

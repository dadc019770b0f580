//! What a shared rate limit's decision costs, against the local limiter's: the time of one
//! `RateLimit` decision (`check`, then `ask` when it must ask Redis), p50 and p99, for
//!
//! - `local`: the local sliding-window limiter alone;
//! - `shared, leased`: one key far under its limit, decided from leases (one round trip
//!   per lease of 1/16 of the room left);
//! - `shared, round trip`: a new key each decision (every decision asks Redis);
//! - `shared, 64 at once`: 64 tasks deciding new keys concurrently on the multiplexed
//!   connections (pipelined): each decision's time includes its wait behind the others on
//!   one core, and the round trips per second are printed.
//!
//! Against a real `redis-server` started here on a loopback port (installed by
//! `./test.sh`), with the declared timeout of 5 ms. Run:
//! `cargo bench --bench shared_limit`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pingora_dsl::proxy::route::rate::shared::SharedSettings;
use pingora_dsl::proxy::route::rate::{RateKey, RateLimit, Verdict};

const DECISIONS: usize = 50_000;

/// A `redis-server` on a free loopback port, stopped when dropped.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> std::io::Result<(Redis, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--port",
        ])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()?;
    let redis = Redis(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(std::io::Error::other(
                "redis-server did not start within 10 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((redis, port))
}

/// One decision: the verdict (asking Redis when needed) and its time.
async fn decide(limit: &RateLimit, key: &[u8]) -> Duration {
    let started = Instant::now();
    if limit.check(key) == Verdict::Ask {
        std::hint::black_box(limit.ask(key).await);
    }
    started.elapsed()
}

fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.50), at(0.99))
}

fn shared(url: &str, scope: &str) -> RateLimit {
    RateLimit::new(1_000_000_000, Duration::from_secs(60), RateKey::ClientIp)
        .shared(SharedSettings::new(url), scope)
}

/// Decides until Redis answers (the connections are made in the background).
async fn connected(limit: &RateLimit) {
    for i in 0u64.. {
        let key = format!("warm-{i}");
        if limit.check(key.as_bytes()) == Verdict::Ask {
            limit.ask(key.as_bytes()).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The times of `n` decisions of `limit`, the i-th for the key `key(i)`.
async fn series(limit: &RateLimit, n: usize, key: impl Fn(usize) -> [u8; 8]) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        times.push(decide(limit, &key(i)).await);
    }
    times
}

async fn run(url: &str) {
    let one_client = |_| *b"10.0.0.1";
    let local = RateLimit::new(1_000_000_000, Duration::from_secs(60), RateKey::ClientIp);
    report("local", series(&local, DECISIONS, one_client).await);

    let leased = shared(url, "bench-leased");
    connected(&leased).await;
    report(
        "shared, leased",
        series(&leased, DECISIONS, one_client).await,
    );

    let fresh = shared(url, "bench-fresh");
    connected(&fresh).await;
    let new_key = |i: usize| (i as u64).to_le_bytes();
    report(
        "shared, round trip",
        series(&fresh, DECISIONS / 5, new_key).await,
    );

    let concurrent = std::sync::Arc::new(shared(url, "bench-concurrent"));
    connected(&concurrent).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let limit = concurrent.clone();
            tokio::spawn(async move {
                let mut times = Vec::new();
                for i in 0..(DECISIONS / 5 / 64) as u64 {
                    times.push(decide(&limit, &(t << 32 | i).to_le_bytes()).await);
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.unwrap_or_default());
    }
    let rate = times.len() as f64 / started.elapsed().as_secs_f64();
    report("shared, 64 at once", times);
    println!("  (64 at once: {rate:.0} round trips per second on one core, pipelined)");
}

fn report(what: &str, times: Vec<Duration>) {
    let n = times.len();
    let (p50, p99) = percentiles(times);
    println!("{what:<20} {n:>7} decisions  p50 {p50:>10.1?}  p99 {p99:>10.1?}");
}

fn main() {
    let (_redis, port) = match start_redis() {
        Ok(started) => started,
        Err(e) => {
            eprintln!("shared_limit bench: cannot start redis-server ({e}); ./test.sh installs it");
            std::process::exit(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shared_limit bench: no runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(&format!("redis://127.0.0.1:{port}/0")));
}

//! What a TLS handshake costs the proxy, by key-exchange group: full TLS 1.3 handshakes
//! (no resumption) against the `tls_gateway` example, counted per CPU-second of the proxy
//! process (its utime + stime from `/proc`), classical X25519 against post-quantum
//! X25519MLKEM768, each in the same run.
//!
//! ```text
//! cargo build --release --features vendored-openssl --example tls_gateway
//! cargo bench --features vendored-openssl --bench tls_handshakes
//! ```
//!
//! (`--features boringssl` measures BoringSSL the same way.) The client is this process,
//! on OpenSSL, with two threads; the proxy runs as a process of its own with one worker.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

/// Handshakes per group and round.
const HANDSHAKES: usize = 2000;
/// Client threads.
const CLIENTS: usize = 2;

fn main() {
    let proxy = match Proxy::start() {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("tls_handshakes: {e}");
            std::process::exit(1);
        }
    };
    println!("TLS library of the proxy: {}", library(&proxy));
    let groups = ["X25519", "P-256", "X25519MLKEM768"];
    for round in 1..=3 {
        let mut line = format!("round {round}:");
        let mut base = None;
        for group in groups {
            match proxy.handshakes_per_cpu_second(group) {
                Ok(rate) => {
                    let base = *base.get_or_insert(rate);
                    line += &format!("  {group} {rate:.0}/CPU-s ({:.2}x)", rate / base);
                }
                Err(e) => line += &format!("  {group} failed: {e}"),
            }
        }
        println!("{line}");
    }
}

/// The `tls_gateway` example as a process, one worker thread.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    fn start() -> Result<Proxy, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin = exe
            .parent()
            .and_then(|deps| deps.parent())
            .map(|profile| profile.join("examples/tls_gateway"))
            .ok_or("no target directory")?;
        if !bin.exists() {
            return Err(format!(
                "{} is missing: build it first (cargo build --release --example tls_gateway, with the same features)",
                bin.display()
            ));
        }
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .ok_or("the proxy exited before listening")?
                .map_err(|e| e.to_string())?;
            if let Some(rest) = line.split("https://").nth(1) {
                let addr = rest.split('/').next().unwrap_or_default();
                break addr.parse().map_err(|e| format!("{addr}: {e}"))?;
            }
        };
        Ok(Proxy { child, addr })
    }

    /// The proxy's CPU time so far (user + system).
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split(' ').collect())
            .unwrap_or_default();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        // `sysconf(_SC_CLK_TCK)` is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// [`HANDSHAKES`] full handshakes offering only `group`, per proxy CPU-second.
    fn handshakes_per_cpu_second(&self, group: &str) -> Result<f64, String> {
        let before = self.cpu();
        let started = Instant::now();
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..CLIENTS)
                .map(|_| s.spawn(|| handshakes(self.addr, group, HANDSHAKES / CLIENTS)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err("a client panicked".into())))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
        let _wall = started.elapsed();
        let cpu = self.cpu().saturating_sub(before).as_secs_f64();
        if cpu == 0.0 {
            return Err("no CPU time measured".into());
        }
        Ok(HANDSHAKES as f64 / cpu)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` handshakes to `addr` offering only `group`, each on a new connection.
fn handshakes(addr: SocketAddr, group: &str, n: usize) -> Result<(), String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_groups_list(group)
        .map_err(|e| format!("this client's OpenSSL lacks {group}: {e}"))?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_session_cache_mode(openssl::ssl::SslSessionCacheMode::OFF);
    let connector = b.build();
    for _ in 0..n {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let ssl = connector
            .configure()
            .and_then(|c| c.into_ssl("localhost"))
            .map_err(|e| e.to_string())?;
        let stream = ssl
            .connect(tcp)
            .map_err(|e| format!("handshake offering {group}: {e}"))?;
        drop(stream);
    }
    Ok(())
}

/// The proxy's TLS library, as its build says (the feature this bench was built with).
fn library(_proxy: &Proxy) -> &'static str {
    pingora_dsl::tls::library_version()
}

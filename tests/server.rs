//! The `Server`: services on one shared runtime (single- and multi-threaded), background
//! tasks, several listeners (IPv4 and IPv6), startup errors, shutdown.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use pingora_dsl::listen::Sockets;
use pingora_dsl::prelude::*;
use pingora_dsl::server::RuntimeFlavor;
use pingora_dsl::service::background_service;
use support::{catches_signal, wait_until_blocking};

/// Bound on every wait for a condition.
const WAIT: Duration = Duration::from_secs(10);

/// A blocking HTTP/1.0-style exchange: one request, read to EOF.
fn blocking_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn hello_service(
    name: &'static str,
    addrs: &[&str],
) -> (impl pingora_dsl::service::Service, Vec<SocketAddr>) {
    let handler = tower::service_fn(
        move |req: http::Request<pingora_dsl::DownstreamBody>| async move {
            let body = format!("{name} {}", req.uri().path());
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
        },
    );
    let mut service = serve_handler(name, handler);
    for a in addrs {
        service.add_tcp(a);
    }
    service.bind().expect("bind");
    let bound = service.local_addrs();
    (service, bound)
}

struct ToOrigin(SocketAddr);

impl ProxyHttp for ToOrigin {
    type Ctx = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<HttpPeer> {
        Ok(HttpPeer::new(self.0))
    }
}

fn run_server_with(threads: usize, flavor: RuntimeFlavor) {
    let (origin, origin_addrs) = hello_service("app", &["127.0.0.1:0"]);
    let mut proxy = http_proxy_service("proxy", ToOrigin(origin_addrs[0]));
    proxy.add_tcp("127.0.0.1:0");
    proxy.add_tcp("127.0.0.1:0");
    proxy.bind().expect("bind proxy");
    let proxy_addrs = proxy.local_addrs();
    assert_eq!(proxy_addrs.len(), 2);

    let ticks = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let (t, s) = (ticks.clone(), stopped.clone());
    let ticker = background_service("ticker", move |mut shutdown| async move {
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(10)) => { t.fetch_add(1, Ordering::SeqCst); }
            }
        }
        s.fetch_add(1, Ordering::SeqCst);
    });

    let mut server = Server::new(ServerConf {
        threads,
        flavor,
        grace_period: Duration::from_secs(2),
        ..ServerConf::default()
    });
    server.add_service(origin);
    server.add_service(proxy);
    server.add_service(ticker);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        server.run_until(async move {
            let _ = stop_rx.await;
        })
    });

    for (i, addr) in proxy_addrs.iter().cycle().take(10).enumerate() {
        let out = blocking_get(*addr, &format!("/r{i}"));
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with(&format!("app /r{i}")), "{out}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ticks.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ticks.load(Ordering::SeqCst) >= 3, "background service runs");

    stop_tx.send(()).expect("server still running");
    handle.join().expect("server thread").expect("server ran");
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        1,
        "background service saw shutdown"
    );
    // After shutdown nothing listens any more: every worker closed its copy of the sockets.
    assert!(TcpStream::connect(proxy_addrs[0]).is_err());
}

#[test]
fn serves_on_a_single_threaded_runtime() {
    run_server_with(1, RuntimeFlavor::PerCore);
}

#[test]
fn serves_on_a_work_stealing_runtime() {
    run_server_with(4, RuntimeFlavor::WorkStealing);
}

#[test]
fn serves_on_per_core_workers() {
    run_server_with(3, RuntimeFlavor::PerCore);
}

#[test]
fn listens_on_ipv6_when_the_host_has_it() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; nothing to test");
        return;
    }
    let (service, addrs) = hello_service("v6", &["[::1]:0", "127.0.0.1:0"]);
    assert!(addrs[0].is_ipv6() && addrs[1].is_ipv4());
    let mut server = Server::new(ServerConf {
        threads: 1,
        grace_period: Duration::from_secs(1),
        ..ServerConf::default()
    });
    server.add_service(service);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        server.run_until(async move {
            let _ = stop_rx.await;
        })
    });
    for addr in &addrs {
        let out = blocking_get(*addr, "/x");
        assert!(out.ends_with("v6 /x"), "{out}");
    }
    stop_tx.send(()).expect("running");
    handle.join().expect("thread").expect("server ran");
}

#[test]
fn a_bad_listening_address_fails_at_startup_with_a_clear_error() {
    let (service, _) = hello_service("ok", &["127.0.0.1:0"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut busy = http_proxy_service("busy", ToOrigin(taken.local_addr().expect("addr")));
    busy.add_tcp(&taken.local_addr().expect("addr").to_string());
    let mut server = Server::new(ServerConf::default());
    server.add_service(service);
    server.add_service(busy);
    let err = server.run_until(async {}).expect_err("port in use");
    let text = err.to_string();
    assert!(text.contains("service busy"), "{text}");
    assert!(text.contains("cannot bind"), "{text}");

    let mut none = http_proxy_service("none", ToOrigin(taken.local_addr().expect("addr")));
    let err = pingora_dsl::service::Service::bind(&mut none, &mut Sockets::new())
        .expect_err("no address");
    assert!(err.to_string().contains("add_tcp"), "{err}");
    let mut bad = http_proxy_service("bad", ToOrigin(taken.local_addr().expect("addr")));
    bad.add_tcp("not-an-address");
    assert!(bad.bind().is_err());
}

/// A blocking exchange like [`blocking_get`] that also says how the read ended (`Ok`: the
/// server closed the connection; `Err`: the 10 s read timeout or an error) and when.
fn timed_get(addr: SocketAddr, path: &str) -> (String, std::io::Result<usize>, Instant) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = Vec::new();
    let ended = s.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        ended,
        Instant::now(),
    )
}

/// An origin that answers `body` only once its gate opens, and a proxy to it.
struct GatedOrigin {
    server: Server,
    /// The proxy's address.
    addr: SocketAddr,
    /// Requests that reached the origin.
    arrived: Arc<AtomicUsize>,
    /// Opens the gate.
    open: tokio::sync::watch::Sender<bool>,
}

fn server_with_gated_origin(
    body: &'static [u8],
    threads: usize,
    grace_period: Duration,
) -> GatedOrigin {
    let arrived = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::watch::channel(false);
    let seen = arrived.clone();
    let gated = tower::service_fn(move |_req: http::Request<pingora_dsl::DownstreamBody>| {
        let (seen, mut gate) = (seen.clone(), gate.clone());
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            // Never opened: the origin stalls until the server drops it.
            let _ = gate.wait_for(|open| *open).await;
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(body))))
        }
    });
    let mut origin = serve_handler("gated", gated);
    origin.add_tcp("127.0.0.1:0");
    origin.bind().expect("bind origin");
    let origin_addr = origin.local_addrs()[0];
    let mut proxy = http_proxy_service("proxy", ToOrigin(origin_addr));
    proxy.add_tcp("127.0.0.1:0");
    proxy.bind().expect("bind");
    let addr = proxy.local_addrs()[0];
    let mut server = Server::new(ServerConf {
        threads,
        grace_period,
        ..ServerConf::default()
    });
    server.add_service(origin);
    server.add_service(proxy);
    GatedOrigin {
        server,
        addr,
        arrived,
        open,
    }
}

#[test]
fn in_flight_requests_finish_during_shutdown() {
    let GatedOrigin {
        server,
        addr,
        arrived,
        open,
    } = server_with_gated_origin(b"late but whole", 2, Duration::from_secs(5));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        server.run_until(async move {
            let _ = stop_rx.await;
        })
    });
    let client = std::thread::spawn(move || blocking_get(addr, "/"));
    wait_until_blocking(WAIT, "the request reached the origin", || {
        arrived.load(Ordering::SeqCst) == 1
    });
    stop_tx.send(()).expect("running");
    // The stop is under way once no worker accepts any more; only then may the origin
    // answer, so the response can only have been finished by the drain.
    wait_until_blocking(WAIT, "the listeners closed", || {
        TcpStream::connect(addr).is_err()
    });
    assert!(!client.is_finished(), "the request was still in flight");
    open.send(true).expect("the origin waits");
    let out = client.join().expect("client");
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("late but whole"), "{out}");
    handle.join().expect("thread").expect("server ran");
}

/// How a test stops the server.
enum StopBy {
    /// `run_until_stop` with `Stop::Immediate`.
    Immediate,
    /// `run_until_signal`, then a real SIGINT.
    Sigint,
}

/// A proxy to an origin that never answers, a 10 s grace period, and a request in flight;
/// returns how long the stop took to end the run, and what the client got, how its read
/// ended and how long after the stop.
fn stop_with_a_request_in_flight(
    by: StopBy,
) -> (Duration, String, std::io::Result<usize>, Duration) {
    let GatedOrigin {
        server,
        addr,
        arrived,
        open: _open,
    } = server_with_gated_origin(b"late", 1, Duration::from_secs(10));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<pingora_dsl::shutdown::Stop>();
    let signal = matches!(by, StopBy::Sigint);
    let mut server = server;
    if signal {
        // From here on a SIGINT is the server's: one raised before it runs waits for it.
        server.install_signals().expect("handlers installed");
    }
    let handle = std::thread::spawn(move || {
        if signal {
            server.run_until_signal()
        } else {
            server.run_until_stop(async move {
                stop_rx
                    .await
                    .unwrap_or(pingora_dsl::shutdown::Stop::Immediate)
            })
        }
    });
    let client = std::thread::spawn(move || timed_get(addr, "/"));
    wait_until_blocking(WAIT, "the request reached the origin", || {
        arrived.load(Ordering::SeqCst) == 1
    });
    let mut started = Instant::now();
    match by {
        StopBy::Sigint => {
            assert!(catches_signal(nix::sys::signal::Signal::SIGINT));
            started = Instant::now();
            // Once: the handler was installed before the run, and a signal is not lost.
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT).expect("raise SIGINT");
            wait_until_blocking(WAIT, "SIGINT stopped the server", || handle.is_finished());
        }
        StopBy::Immediate => stop_tx
            .send(pingora_dsl::shutdown::Stop::Immediate)
            .expect("running"),
    }
    handle.join().expect("thread").expect("server ran");
    let took = started.elapsed();
    let (out, ended, at) = client.join().expect("client");
    (took, out, ended, at.saturating_duration_since(started))
}

/// The client's request was cut: the connection closed (not timed out) soon after the stop,
/// with no response at all (the origin never answered; the grace period was not waited).
fn assert_cut(took: Duration, out: &str, ended: std::io::Result<usize>, client_after: Duration) {
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        ended.is_ok(),
        "the connection was closed, not left open: {ended:?}"
    );
    assert!(
        client_after < Duration::from_secs(2),
        "the client saw the close {client_after:?} after the stop"
    );
    assert!(out.is_empty(), "no response for the cut request: {out}");
}

#[test]
fn an_immediate_stop_does_not_wait_for_the_grace_period() {
    let (took, out, ended, client_after) = stop_with_a_request_in_flight(StopBy::Immediate);
    assert_cut(took, &out, ended, client_after);
}

#[test]
fn sigint_stops_at_once_despite_a_long_grace_period() {
    let (took, out, ended, client_after) = stop_with_a_request_in_flight(StopBy::Sigint);
    assert_cut(took, &out, ended, client_after);
}

/// Set in the environment of the process [`signal_child`] serves in.
const SIGNAL_CHILD: &str = "PINGORA_DSL_TEST_SIGNAL_CHILD";

/// Not a test of its own (it returns at once): the server process that
/// `a_sigterm_sent_on_the_readiness_line_stops_the_server_gracefully` starts. It starts as
/// the CLI does: binds, installs the signal handlers, says where it listens, then runs
/// until a signal, and says how the run ended.
#[test]
fn signal_child() {
    if std::env::var_os(SIGNAL_CHILD).is_none() {
        return;
    }
    let (service, addrs) = hello_service("child", &["127.0.0.1:0"]);
    let mut server = Server::new(ServerConf {
        threads: 1,
        grace_period: Duration::from_secs(1),
        ..ServerConf::default()
    });
    server.add_service(service);
    server.install_signals().expect("handlers installed");
    println!("listening on {}", addrs[0]);
    std::io::stdout().flush().expect("flush");
    let result = server.run_until_signal();
    println!("run ended: {result:?}");
    std::io::stdout().flush().expect("flush");
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// Kills (SIGKILL) and reaps the child on drop unless it was reaped already.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A SIGTERM sent the moment a server says it listens (without waiting for its handler to
/// show in `SigCgt`) stops it gracefully: exit status 0 and the run's end reported, never
/// the signal's default action. Twenty starts, each signalled at once.
#[test]
fn a_sigterm_sent_on_the_readiness_line_stops_the_server_gracefully() {
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..20 {
        let mut command = std::process::Command::new(&exe);
        command
            .args([
                "signal_child",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(SIGNAL_CHILD, "1");
        // (After libtest's "test signal_child ... ", on the same line.)
        let (lines, mut seen) = sigterm_on_ready(&mut command, "listening on ", round);
        support::read_until(&lines, &mut seen, |l| l.ends_with("run ended: Ok(())"));
    }
}

/// The same through a declared proxy's `run()`: the `load_balancer` example, signalled the
/// moment it prints its "listening on" line, twenty times.
#[test]
fn a_sigterm_sent_on_an_examples_listening_line_stops_it_gracefully() {
    for round in 0..20 {
        let mut command = std::process::Command::new(support::example_binary("load_balancer"));
        command.args(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"]);
        sigterm_on_ready(&mut command, " listening on ", round);
    }
}

/// Starts `command`, sends it SIGTERM the moment it prints a line containing `ready`, and
/// asserts it then exits 0 (not ended by the signal's default action). Returns its further
/// output lines and those seen so far.
fn sigterm_on_ready(
    command: &mut std::process::Command,
    ready: &str,
    round: usize,
) -> (std::sync::mpsc::Receiver<String>, Vec<String>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::os::unix::process::ExitStatusExt as _;
    let (child, lines) = support::spawn_with_lines(command);
    let mut child = ChildGuard(child);
    let mut seen = Vec::new();
    support::read_until(&lines, &mut seen, |l| l.contains(ready));
    let pid = Pid::from_raw(i32::try_from(child.0.id()).expect("a pid"));
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    let mut status = None;
    wait_until_blocking(WAIT, "the process exits after SIGTERM", || {
        status = child.0.try_wait().expect("wait for the child");
        status.is_some()
    });
    let status = status.expect("exited");
    assert_eq!(
        status.signal(),
        None,
        "round {round}: the SIGTERM took its default action (ended the process)"
    );
    assert!(status.success(), "round {round}: {status:?}");
    (lines, seen)
}

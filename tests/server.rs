//! The `Server`: services on one shared runtime (single- and multi-threaded), background
//! tasks, several listeners (IPv4 and IPv6), startup errors, shutdown.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use pingora_dsl::listen::Sockets;
use pingora_dsl::prelude::*;
use pingora_dsl::server::{background_service, RuntimeFlavor};

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
) -> (impl pingora_dsl::server::Service, Vec<SocketAddr>) {
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
    let err =
        pingora_dsl::server::Service::bind(&mut none, &mut Sockets::new()).expect_err("no address");
    assert!(err.to_string().contains("add_tcp"), "{err}");
    let mut bad = http_proxy_service("bad", ToOrigin(taken.local_addr().expect("addr")));
    bad.add_tcp("not-an-address");
    assert!(bad.bind().is_err());
}

/// A server running a slow origin (answering `body` after `delay`) and a proxy to it;
/// returns the server and the proxy's address.
fn server_with_slow_origin(
    delay: Duration,
    body: &'static [u8],
    threads: usize,
    grace_period: Duration,
) -> (Server, SocketAddr) {
    let (origin, origin_addrs) = hello_service("slow-app", &["127.0.0.1:0"]);
    drop(origin);
    let slow = tower::service_fn(
        move |_req: http::Request<pingora_dsl::DownstreamBody>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(body))))
        },
    );
    let mut slow_service = serve_handler("slow", slow);
    slow_service.add_tcp(&origin_addrs[0].to_string());
    let mut proxy = http_proxy_service("proxy", ToOrigin(origin_addrs[0]));
    proxy.add_tcp("127.0.0.1:0");
    proxy.bind().expect("bind");
    let addr = proxy.local_addrs()[0];
    let mut server = Server::new(ServerConf {
        threads,
        grace_period,
        ..ServerConf::default()
    });
    server.add_service(slow_service);
    server.add_service(proxy);
    (server, addr)
}

#[test]
fn in_flight_requests_finish_during_shutdown() {
    let (server, addr) = server_with_slow_origin(
        Duration::from_millis(500),
        b"late but whole",
        2,
        Duration::from_secs(5),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        server.run_until(async move {
            let _ = stop_rx.await;
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    let client = std::thread::spawn(move || blocking_get(addr, "/"));
    std::thread::sleep(Duration::from_millis(150));
    stop_tx.send(()).expect("running");
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

/// A proxy to an origin that answers after 5 s, a 10 s grace period, and a request in
/// flight; returns how long the stop took to end the run and what the client got.
fn stop_with_a_request_in_flight(by: StopBy) -> (Duration, String) {
    let (server, addr) =
        server_with_slow_origin(Duration::from_secs(5), b"late", 1, Duration::from_secs(10));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<pingora_dsl::server::Stop>();
    let signal = matches!(by, StopBy::Sigint);
    let handle = std::thread::spawn(move || {
        if signal {
            server.run_until_signal()
        } else {
            server.run_until_stop(async move {
                stop_rx
                    .await
                    .unwrap_or(pingora_dsl::server::Stop::Immediate)
            })
        }
    });
    // run_until_signal has installed its handlers by the time the request is in flight.
    std::thread::sleep(Duration::from_millis(300));
    let client = std::thread::spawn(move || blocking_get(addr, "/"));
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    match by {
        StopBy::Sigint => {
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT).expect("raise SIGINT")
        }
        StopBy::Immediate => stop_tx
            .send(pingora_dsl::server::Stop::Immediate)
            .expect("running"),
    }
    handle.join().expect("thread").expect("server ran");
    let took = started.elapsed();
    (took, client.join().expect("client"))
}

#[test]
fn an_immediate_stop_does_not_wait_for_the_grace_period() {
    let (took, out) = stop_with_a_request_in_flight(StopBy::Immediate);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        !out.contains("late"),
        "the in-flight request was cut: {out}"
    );
}

#[test]
fn sigint_stops_at_once_despite_a_long_grace_period() {
    let (took, out) = stop_with_a_request_in_flight(StopBy::Sigint);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        !out.contains("late"),
        "the in-flight request was cut: {out}"
    );
}

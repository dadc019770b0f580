//! The layer-4 proxies with real sockets: TCP (balancing, byte-exact echo with a
//! half-close, failover past a dead peer, idle timeout, TLS termination) and UDP (echo per
//! client, a fresh mapping after the idle timeout).

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use pingora_dsl::l4::tcp::TcpProxyService;
use pingora_dsl::l4::udp::UdpProxyService;
use pingora_dsl::lb::UpstreamGroup;
use pingora_dsl::lb::{Backend, Strategy};
use pingora_dsl::listen::tls::TlsSettings;
use pingora_dsl_suite::certs::TestCa;
use pingora_dsl_suite::origin::start_tcp_echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use support::{refused_port, wait_until};

const WAIT: Duration = Duration::from_secs(10);

async fn echo_server(name: &'static str) -> SocketAddr {
    start_tcp_echo(name).await.expect("echo server")
}

fn group(peers: &[SocketAddr], retries: u32) -> UpstreamGroup {
    let backends = peers.iter().map(|a| Backend::new(*a)).collect();
    let g = UpstreamGroup::new("echo", backends, Strategy::RoundRobin);
    g.set_retries(retries);
    g
}

/// Connects, reads the greeting line, sends `data`, half-closes, and reads the echo.
async fn echo_through<S>(mut s: S, data: &[u8]) -> (String, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut all = Vec::new();
    let exchange = async {
        s.write_all(data).await.expect("write");
        s.shutdown().await.expect("half-close");
        s.read_to_end(&mut all).await.expect("read to the end");
    };
    tokio::time::timeout(WAIT, exchange).await.expect("in time");
    let newline = all.iter().position(|b| *b == b'\n').expect("greeting");
    let name = String::from_utf8_lossy(&all[..newline]).into_owned();
    (name, all[newline + 1..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_balanced_and_echo_byte_exact_through_a_half_close() {
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let mut service = TcpProxyService::new("tcp", group(&[a, b], 0));
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("starts");
    let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut names = Vec::new();
    for _ in 0..4 {
        let s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let (name, echoed) = echo_through(s, &data).await;
        assert!(echoed == data, "1 MiB echoed byte-exact");
        names.push(name);
    }
    assert_eq!(names, ["a", "b", "a", "b"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_skipped_and_an_idle_connection_is_closed() {
    let dead = refused_port();
    let live = echo_server("live").await;
    let mut service = TcpProxyService::new("tcp", group(&[dead.addr(), live], 1));
    service.set_idle_timeout(Duration::from_millis(300));
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("starts");
    for _ in 0..4 {
        let s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let (name, echoed) = echo_through(s, b"hello").await;
        assert_eq!((name.as_str(), &echoed[..]), ("live", &b"hello"[..]));
    }
    // Idle past the 300 ms idle timeout: the proxy closes the connection, not before.
    let opened = Instant::now();
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut greeting = [0u8; 5];
    s.read_exact(&mut greeting).await.expect("greeting");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "closed after idling: {closed:?}"
    );
    let idled = opened.elapsed();
    assert!(
        idled >= Duration::from_millis(300),
        "closed after {idled:?}, before the idle timeout"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_terminates_tls() {
    let dir = std::env::temp_dir().join(format!("pdsl-l4-tls-{}", std::process::id()));
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server("localhost", &["localhost"]).expect("cert");
    let echo = echo_server("behind-tls").await;
    let mut service = TcpProxyService::new("tls-tcp", group(&[echo], 0));
    service.add_tls("127.0.0.1:0", TlsSettings::new(&cert.cert, &cert.key));
    let proxy = service.spawn().expect("starts");
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    b.set_ca_file(ca.cert_path()).expect("ca");
    b.set_verify(SslVerifyMode::PEER);
    let ssl = b
        .build()
        .configure()
        .expect("config")
        .into_ssl("localhost")
        .expect("ssl");
    let tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("stream");
    Pin::new(&mut tls).connect().await.expect("handshake");
    let (name, echoed) = echo_through(tls, b"secret").await;
    assert_eq!((name.as_str(), &echoed[..]), ("behind-tls", &b"secret"[..]));
    proxy.shutdown().await;
}

/// A UDP echo server recording the source address of every datagram.
async fn udp_echo() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            record.lock().expect("lock").push(from);
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, seen)
}

async fn udp_roundtrip(client: &UdpSocket, proxy: SocketAddr, msg: &[u8]) -> Vec<u8> {
    client.send_to(msg, proxy).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
        .await
        .expect("reply in time")
        .expect("reply");
    buf[..n].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_echo_per_client_and_mappings_expire_when_idle() {
    let (echo, seen) = udp_echo().await;
    let pool = group(&[echo], 0);
    let peer = pool.peers()[0].clone();
    let mut service = UdpProxyService::new("udp", pool);
    service.set_idle_timeout(Duration::from_millis(300));
    service.add_udp("127.0.0.1:0");
    let proxy = service.spawn().expect("starts");
    let (one, two) = (
        UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
        UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
    );
    let mut quiet_since = Instant::now();
    for i in 0..100 {
        quiet_since = Instant::now();
        let msg = format!("one {i}");
        assert_eq!(
            udp_roundtrip(&one, proxy.addr(), msg.as_bytes()).await,
            msg.as_bytes()
        );
        let msg = format!("two {i}");
        assert_eq!(
            udp_roundtrip(&two, proxy.addr(), msg.as_bytes()).await,
            msg.as_bytes()
        );
    }
    let sources: std::collections::HashSet<SocketAddr> =
        seen.lock().expect("lock").iter().copied().collect();
    assert_eq!(sources.len(), 2, "one upstream socket per client");
    assert_eq!(peer.in_flight(), 2, "a mapping per client");

    // After the idle timeout the mappings are gone (not before): the next datagram gets a
    // new socket.
    wait_until(WAIT, "the idle mappings expire", || peer.in_flight() == 0).await;
    let idled = quiet_since.elapsed();
    assert!(
        idled >= Duration::from_millis(300),
        "expired after {idled:?} of quiet, before the idle timeout"
    );
    assert_eq!(udp_roundtrip(&one, proxy.addr(), b"again").await, b"again");
    let sources: std::collections::HashSet<SocketAddr> =
        seen.lock().expect("lock").iter().copied().collect();
    assert_eq!(sources.len(), 3, "a fresh mapping after idling");
    proxy.shutdown().await;
}

pingora_dsl::tcp_proxy! {
    /// A declared TCP proxy (peers replaced from the command line in the test).
    pub DeclaredTcp {
        listen "127.0.0.1:6432";
        upstream db {
            peers ["127.0.0.1:9", "127.0.0.1:10"];
            select least_conn;
            retry 1;
            timeout connect 1s;
        }
        idle 5m;
    }
}

pingora_dsl::udp_proxy! {
    /// A declared UDP proxy.
    pub DeclaredUdp {
        listen "127.0.0.1:5353";
        upstream dns { peers ["127.0.0.1:9"]; }
        idle 30s;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_tcp_and_udp_proxies_serve_with_peers_from_the_command_line() {
    let echo = echo_server("declared").await;
    let (udp_echo_addr, _) = udp_echo().await;
    assert_eq!(DeclaredTcp::LISTEN, ["127.0.0.1:6432"]);
    assert_eq!(DeclaredTcp::new().router().groups()[0].retries(), 1);

    let cli = pingora_dsl::server::cli::ProxyCli {
        upstream: vec![echo.to_string()],
        ..Default::default()
    };
    let mut tcp = DeclaredTcp::new();
    cli.configure("DeclaredTcp", tcp.router_mut())
        .expect("peers");
    let mut service = tcp.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("starts");
    let s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (name, echoed) = echo_through(s, b"declared bytes").await;
    assert_eq!(
        (name.as_str(), &echoed[..]),
        ("declared", &b"declared bytes"[..])
    );
    proxy.shutdown().await;

    let cli = pingora_dsl::server::cli::ProxyCli {
        upstream: vec![udp_echo_addr.to_string()],
        ..Default::default()
    };
    let mut udp = DeclaredUdp::new();
    cli.configure("DeclaredUdp", udp.router_mut())
        .expect("peers");
    let mut service = udp.service();
    service.clear_listen();
    service.add_udp("127.0.0.1:0");
    let proxy = service.spawn().expect("starts");
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    assert_eq!(
        udp_roundtrip(&client, proxy.addr(), b"query").await,
        b"query"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_reaches_a_tls_peer() {
    let dir = std::env::temp_dir().join(format!("pdsl-l4-up-tls-{}", std::process::id()));
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server("origin.test", &["origin.test"]).expect("cert");
    let (origin, seen) =
        pingora_dsl_suite::origin::start_tls_origin(TlsSettings::new(&cert.cert, &cert.key))
            .await
            .expect("tls origin");
    let tls = pingora_dsl::upstream::UpstreamTls {
        ca_file: Some(ca.cert_path()),
        ..pingora_dsl::upstream::UpstreamTls::with_sni("origin.test")
    };
    let mut service = TcpProxyService::new("to-tls", group(&[origin], 0).with_tls(&tls));
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("starts");
    // Plain bytes in, TLS to the peer: an HTTP request written by hand.
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("x-sni: origin.test"), "{text}");
    assert!(text.ends_with("tls origin"), "{text}");
    assert_eq!(
        seen.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    proxy.shutdown().await;
}

/// One admin listener watching a TCP and a UDP proxy: connections and mappings are
/// counted per peer, connections per listener, and `/metrics` serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer4_proxies_are_counted_per_peer_on_the_admin_listener() {
    use pingora_dsl::observe::admin::Admin;
    use pingora_dsl::service::Observable;
    let (a, b) = (echo_server("a").await, echo_server("b").await);
    let mut tcp = TcpProxyService::new("tcp", group(&[a, b], 0));
    tcp.add_tcp("127.0.0.1:0");
    let (echo, _) = udp_echo().await;
    let mut udp = UdpProxyService::new("udp", group(&[echo], 0));
    udp.add_udp("127.0.0.1:0");
    let admin = Admin::new();
    admin.watch(tcp.observer());
    admin.watch(udp.observer());
    let tcp = tcp.spawn().expect("starts");
    let udp = udp.spawn().expect("starts");
    for _ in 0..4 {
        let s = TcpStream::connect(tcp.addr()).await.expect("connect");
        echo_through(s, b"hello").await;
    }
    for _ in 0..2 {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        assert_eq!(udp_roundtrip(&client, udp.addr(), b"ping").await, b"ping");
    }
    let status = admin.status();
    let [t, u] = &status.services[..] else {
        panic!("two services: {status:?}")
    };
    assert_eq!((t.name.as_str(), t.kind), ("tcp", "tcp"));
    assert_eq!(t.connections_accepted, Some(4));
    let requests: Vec<u64> = t.pools[0].peers.iter().map(|p| p.requests).collect();
    assert_eq!(requests, [2, 2]);
    assert!(t.pools[0]
        .peers
        .iter()
        .all(|p| p.state == "up" && p.errors == 0));
    assert_eq!((u.name.as_str(), u.kind), ("udp", "udp"));
    assert_eq!(u.pools[0].peers[0].requests, 2, "one mapping per client");
    let metrics = admin.metrics_text();
    let line = format!(
        "pingora_dsl_upstream_connect_seconds_count{{proxy=\"tcp\",pool=\"echo\",peer=\"{a}\"}} 2"
    );
    assert!(metrics.contains(&line), "{metrics}");
    tcp.shutdown().await;
    udp.shutdown().await;
}

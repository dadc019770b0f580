//! The PROXY protocol over real sockets: a "load balancer" (this test) writes v1 and v2
//! headers before HTTP and before TLS, the proxy takes the client from them (or closes a
//! connection without one when it is required, or after the header-read deadline), and
//! sends a v2 header of its own to a peer that reads it — one upstream connection per
//! client.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora_dsl::lb::UpstreamGroup;
use pingora_dsl::listen::proxy_protocol::ProxyProtocol;
use pingora_dsl::listen::tls::TlsSettings;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::certs::self_signed;
use pingora_dsl_suite::origin::read_request_head;
use support::{closed_within, point};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

proxy! {
    /// Behind a balancer that always sends a header; its own peers read one too.
    pub Behind {
        listen "127.0.0.1:6188";
        proxy_protocol required;
        client_timeout header_read 500ms;
        upstream app {
            peers ["127.0.0.1:8001"];
            proxy_protocol v2;
            health http "/health" every 100ms;
        }
        set_response_header "x-client" "${client_ip}";
        route => upstream app;
    }
}

proxy! {
    /// One listener behind the balancer, one for clients that connect directly.
    pub Mixed {
        listen "127.0.0.1:6188";
        listen "127.0.0.2:6188" proxy_protocol required;
        client_timeout header_read 500ms;
        upstream app { peers ["127.0.0.1:8001"]; }
        set_response_header "x-client" "${client_ip}";
        route => upstream app;
    }
}

pingora_dsl::tcp_proxy! {
    /// A TCP relay behind a balancer, passing the client on to peers that read it.
    pub Relay {
        listen "127.0.0.1:6432" proxy_protocol required;
        upstream db {
            peers ["127.0.0.1:9"];
            proxy_protocol v2;
        }
    }
}

proxy! {
    /// Headers are welcome but not needed.
    pub Either {
        listen "127.0.0.1:6188";
        proxy_protocol optional;
        upstream app { peers ["127.0.0.1:8001"]; }
        set_response_header "x-client" "${client_ip}";
        route => upstream app;
    }
}

/// Each upstream connection the origin accepted: the client its PROXY header named
/// (`None`: a `LOCAL` header), and the requests it carried. A connection without a header
/// is closed, as a backend that requires one does.
type Seen = Arc<Mutex<Vec<(Option<SocketAddr>, usize)>>>;

/// An origin that requires a PROXY v2 header on every connection, then answers keep-alive
/// requests with `x-upstream-client: <the header's client>`.
async fn start_origin() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Some(client) = read_v2(&mut stream).await else {
                    return;
                };
                let index = {
                    let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                    seen.push((client, 0));
                    seen.len() - 1
                };
                let shown = client.map_or_else(|| "-".to_owned(), |c| c.to_string());
                while read_request_head(&mut stream).await.is_some() {
                    record.lock().unwrap_or_else(|e| e.into_inner())[index].1 += 1;
                    let answer = format!("HTTP/1.1 200 OK\r\nx-upstream-client: {shown}\r\ncontent-length: 2\r\n\r\nok");
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// The client a v2 header at the start of `stream` names (`Some(None)`: `LOCAL`; `None`:
/// no header).
async fn read_v2(stream: &mut TcpStream) -> Option<Option<SocketAddr>> {
    let mut fixed = [0u8; 16];
    stream.peek(&mut fixed).await.ok()?;
    if &fixed[..12] != b"\r\n\r\n\0\r\nQUIT\n" {
        return None;
    }
    stream.read_exact(&mut fixed).await.ok()?;
    let mut header = fixed.to_vec();
    header.resize(
        16 + usize::from(u16::from_be_bytes([fixed[14], fixed[15]])),
        0,
    );
    stream.read_exact(&mut header[16..]).await.ok()?;
    let header = ppp::v2::Header::try_from(&header[..]).ok()?;
    if header.command == ppp::v2::Command::Local {
        return Some(None);
    }
    match header.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            Some(Some(SocketAddr::from((a.source_address, a.source_port))))
        }
        ppp::v2::Addresses::IPv6(a) => {
            Some(Some(SocketAddr::from((a.source_address, a.source_port))))
        }
        _ => None,
    }
}

/// `GET /` on `stream` (keep-alive): the status line and the `x-client` and
/// `x-upstream-client` values.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> (String, String, String) {
    let (head, _) = support::exchange_head(stream, "/", None).await;
    let head = head.to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, header("x-client:"), header("x-upstream-client:"))
}

fn v2(client: &str, proxy: SocketAddr) -> Vec<u8> {
    let client: SocketAddr = client.parse().expect("addr");
    let proxy = match client {
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, proxy.port())),
        SocketAddr::V4(_) => proxy,
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, proxy),
    )
    .build()
    .expect("header")
}

async fn behind() -> (pingora_dsl::downstream::RunningService, Seen, UpstreamGroup) {
    let (origin, seen) = start_origin().await;
    let mut proxy = Behind::new();
    point(proxy.router_mut(), "app", &[origin]);
    let group = proxy.router().groups()[0].clone();
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    (service.spawn().expect("proxy starts"), seen, group)
}

#[tokio::test]
async fn the_client_comes_from_the_header_and_goes_on_to_the_peer() {
    let (proxy, seen, group) = behind().await;
    let addr = proxy.addr();

    let mut one = TcpStream::connect(addr).await.expect("connect");
    one.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n")
        .await
        .expect("write");
    for _ in 0..2 {
        let (status, client, upstream) = get(&mut one).await;
        assert!(status.contains("200"), "{status}");
        assert_eq!(
            (client.as_str(), upstream.as_str()),
            ("203.0.113.7", "203.0.113.7:5555")
        );
    }

    let mut two = TcpStream::connect(addr).await.expect("connect");
    two.write_all(&v2("[2001:db8::9]:7000", addr))
        .await
        .expect("write");
    let (_, client, upstream) = get(&mut two).await;
    assert_eq!(
        (client.as_str(), upstream.as_str()),
        ("2001:db8::9", "[2001:db8::9]:7000")
    );

    let mut local = TcpStream::connect(addr).await.expect("connect");
    let header = ppp::v2::Builder::new(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::Protocol::Unspecified as u8,
    )
    .build()
    .expect("header");
    local.write_all(&header).await.expect("write");
    let (status, client, _) = get(&mut local).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        client, "127.0.0.1",
        "LOCAL: the balancer's own check keeps its address"
    );

    // A health check reaches the strict peer with a LOCAL header of its own.
    let checker = group.health_checker().expect("a health check");
    tokio::time::timeout(Duration::from_secs(10), checker.check_once())
        .await
        .expect("a round of probes within 10 s");
    let checked = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(c, n)| c.is_none() && *n == 1);
    assert!(checked, "the probe's GET went over a LOCAL connection");
    // Each client had a connection of its own upstream; the first reused its own.
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let for_client = |c: &str| {
        seen.iter()
            .filter(|(s, _)| *s == Some(c.parse().expect("addr")))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        for_client("203.0.113.7:5555"),
        [(Some("203.0.113.7:5555".parse().expect("addr")), 2)]
    );
    assert_eq!(for_client("[2001:db8::9]:7000").len(), 1);
}

#[tokio::test]
async fn without_a_header_the_connection_is_closed() {
    let (proxy, seen, _) = behind().await;
    let mut plain = TcpStream::connect(proxy.addr()).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut plain, Duration::from_secs(5)).await,
        "no answer without a header"
    );
    let mut bad = TcpStream::connect(proxy.addr()).await.expect("connect");
    bad.write_all(b"PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut bad, Duration::from_secs(5)).await,
        "a malformed header closes"
    );
    // Nothing at all: closed after the header-read timeout (500 ms).
    let mut silent = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "the deadline closes it"
    );
    let forwarded = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(c, _)| c.is_some())
        .count();
    assert_eq!(forwarded, 0, "nothing went upstream for a client");
}

#[tokio::test]
async fn optional_headers_and_headers_before_tls() {
    let origin = pingora_dsl_suite::origin::Origin::start("app")
        .await
        .expect("origin");
    let dir = std::env::temp_dir().join(format!("pdsl-pp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = self_signed(&dir, &["localhost"]).expect("certificate");
    let mut proxy = Either::new();
    point(proxy.router_mut(), "app", &[origin.addr()]);
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    service.add_tls("127.0.0.1:0", TlsSettings::new(&cert.cert, &cert.key));
    let running = service.spawn().expect("proxy starts");
    let bound = running.addrs();
    let (plain_addr, tls_addr) = (bound[0], bound[1]);

    let mut plain = TcpStream::connect(plain_addr).await.expect("connect");
    let (status, client, _) = get(&mut plain).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(client, "127.0.0.1", "no header: the peer is the client");
    let mut with = TcpStream::connect(plain_addr).await.expect("connect");
    with.write_all(b"PROXY TCP4 198.51.100.4 127.0.0.1 1234 80\r\n")
        .await
        .expect("write");
    assert_eq!(get(&mut with).await.1, "198.51.100.4");

    // The header comes before the TLS handshake.
    let mut tcp = TcpStream::connect(tls_addr).await.expect("connect");
    tcp.write_all(&v2("192.0.2.55:4444", tls_addr))
        .await
        .expect("write");
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).expect("tls");
    connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let ssl = connector
        .build()
        .configure()
        .expect("tls")
        .into_ssl("localhost")
        .expect("tls");
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("tls");
    tokio::time::timeout(
        Duration::from_secs(10),
        std::pin::Pin::new(&mut tls).connect(),
    )
    .await
    .expect("a handshake within 10 s")
    .expect("handshake");
    assert_eq!(get(&mut tls).await.1, "192.0.2.55");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn each_listener_has_its_own_mode() {
    let origin = pingora_dsl_suite::origin::Origin::start("app")
        .await
        .expect("origin");
    let mut proxy = Mixed::new();
    point(proxy.router_mut(), "app", &[origin.addr()]);
    let mut service = proxy.service();
    let declared: Vec<_> = service
        .listen_addrs()
        .iter()
        .map(|l| (l.addr.clone(), l.proxy_protocol))
        .collect();
    assert_eq!(
        declared,
        [
            ("127.0.0.1:6188".to_owned(), None),
            ("127.0.0.2:6188".to_owned(), Some(ProxyProtocol::Required))
        ]
    );
    // The same listeners on ports of the system's choosing.
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    service.add_tcp("127.0.0.2:0");
    service.set_listener_proxy_protocol("127.0.0.2:0", false, ProxyProtocol::Required);
    let running = service.spawn().expect("proxy starts");
    let on = |ip: &str| {
        running
            .addrs()
            .iter()
            .copied()
            .find(|a| a.ip().to_string() == ip)
            .expect("a listener on that address")
    };
    let (direct, behind) = (on("127.0.0.1"), on("127.0.0.2"));
    let mut plain = TcpStream::connect(direct).await.expect("connect");
    let (status, client, _) = get(&mut plain).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(client, "127.0.0.1", "the direct listener reads no header");
    let mut with = TcpStream::connect(behind).await.expect("connect");
    with.write_all(b"PROXY TCP4 198.51.100.8 127.0.0.2 1234 80\r\n")
        .await
        .expect("write");
    assert_eq!(get(&mut with).await.1, "198.51.100.8");
    // A balancer that writes its header in pieces (a slow client: the pause is the input).
    let mut pieces = TcpStream::connect(behind).await.expect("connect");
    for piece in [
        &b"PROX"[..],
        b"Y TCP4 198.51.1",
        b"00.9 127.0.0.2 1234 80\r\n",
    ] {
        pieces.write_all(piece).await.expect("write");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(get(&mut pieces).await.1, "198.51.100.9");
    let mut without = TcpStream::connect(behind).await.expect("connect");
    without
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut without, Duration::from_secs(5)).await,
        "the listener behind the balancer requires a header"
    );
}

/// A TCP origin that requires a PROXY v2 header, records the client it names, then echoes.
async fn start_echo() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Some(Some(client)) = read_v2(&mut stream).await else {
                    return;
                };
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(client);
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_tcp_relay_reads_and_sends_the_header() {
    let (echo, seen) = start_echo().await;
    let mut relay = Relay::new();
    point(relay.router_mut(), "db", &[echo]);
    let mut service = relay.service();
    assert_eq!(
        service.listen_addrs()[0].proxy_protocol,
        Some(ProxyProtocol::Required)
    );
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    service.set_listener_proxy_protocol("127.0.0.1:0", false, ProxyProtocol::Required);
    let running = service.spawn().expect("relay starts");
    let addr = running.addrs()[0];
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4321 5432\r\nhello")
        .await
        .expect("write");
    let mut echoed = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut echoed))
        .await
        .expect("an echo within 10 s")
        .expect("echo");
    assert_eq!(&echoed, b"hello");
    let named = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        named,
        ["203.0.113.9:4321".parse::<SocketAddr>().expect("addr")]
    );
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"hello without a header\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut plain, Duration::from_secs(5)).await,
        "no header: closed"
    );
    assert_eq!(
        seen.lock().unwrap_or_else(|e| e.into_inner()).len(),
        1,
        "nothing went upstream for it"
    );
}

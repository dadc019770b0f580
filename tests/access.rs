//! IP access lists and trusted proxies declared in `proxy!`, over real sockets: clients
//! connect from different loopback addresses (127.0.0.0/8 is all local), a trusted "load
//! balancer" names clients in `X-Forwarded-For`/`Forwarded`, routes have their own lists,
//! and the config file replaces the proxy's.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use pingora_dsl::prelude::*;
use pingora_dsl::proxy::ProxyOptions;
use pingora_dsl::server::config::Config;
use pingora_dsl_suite::origin::Origin;
use support::point;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

proxy! {
    /// Loopback is refused except 127.0.0.1; 10/8 and a documentation block are let in;
    /// 127.0.0.2 is a load balancer whose forwarding headers are believed.
    pub Guarded {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        trusted_proxies ["127.0.0.2"];
        deny ["127.0.0.0/8"];
        allow ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"];
        set_response_header "x-client" "${client_ip}";
        route path "/open" => upstream app { allow ["0.0.0.0/0", "::/0"]; }
        route path "/lab" => upstream app { allow ["192.0.2.0/24"]; }
        route => upstream app;
    }
}

/// The proxy in front of `app`, with `config` applied as a `-c` file would be.
fn start(app: &Origin, config: Option<&str>) -> pingora_dsl::downstream::RunningService {
    let mut proxy = Guarded::new();
    point(proxy.router_mut(), "app", &[app.addr()]);
    let mut options: ProxyOptions = Guarded::options();
    if let Some(text) = config {
        let config = Config::parse(text).expect("config parses");
        config
            .apply_proxy("Guarded", proxy.router_mut())
            .expect("applies");
        config
            .apply_options("Guarded", &mut options)
            .expect("applies");
    }
    let mut service = proxy.service_with(options);
    service.clear_tcp();
    // Clients connect to 127.0.0.1 from 127.0.0.1, .2 or .3: all are local addresses.
    service.add_tcp("127.0.0.1:0");
    service.spawn().expect("proxy starts")
}

/// `GET path` from the local address `from` with `extra` header lines: the status, the
/// `x-client` the proxy saw, and the `x-seen-xff` the origin saw.
async fn get_from(proxy: SocketAddr, from: &str, path: &str, extra: &str) -> (u16, String, String) {
    let socket = TcpSocket::new_v4().expect("socket");
    let source: IpAddr = from.parse().expect("source");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source");
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(proxy))
        .await
        .expect("connect within 10 s")
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: app\r\n{extra}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {text}"));
    let header = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix(name)
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    (status, header("x-client:"), header("x-seen-xff:"))
}

#[tokio::test]
async fn the_most_specific_block_decides() {
    let app = Origin::start("app").await.expect("origin");
    let proxy = start(&app, None);
    let addr = proxy.addr();
    let (status, client, _) = get_from(addr, "127.0.0.1", "/", "").await;
    assert_eq!(
        (status, client.as_str()),
        (200, "127.0.0.1"),
        "the /32 allow beats the /8 deny"
    );
    let (status, _, _) = get_from(addr, "127.0.0.3", "/", "").await;
    assert_eq!(status, 403, "denied by 127.0.0.0/8");
    let (status, _, _) = get_from(addr, "127.0.0.3", "/open", "").await;
    assert_eq!(status, 200, "the route's own list replaces the proxy's");
    let (status, _, _) = get_from(addr, "127.0.0.1", "/lab", "").await;
    assert_eq!(status, 403, "the route allows 192.0.2.0/24 only");
    assert_eq!(app.requests(), 2, "refused requests never went upstream");
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client() {
    let app = Origin::start("app").await.expect("origin");
    let proxy = start(&app, None);
    let addr = proxy.addr();
    let lb = "127.0.0.2";
    let (status, client, xff) = get_from(addr, lb, "/", "x-forwarded-for: 10.1.2.3\r\n").await;
    assert_eq!((status, client.as_str()), (200, "10.1.2.3"));
    assert_eq!(
        xff, "10.1.2.3, 127.0.0.2",
        "the chain goes on with the hop it came from"
    );

    // A client that wrote its own X-Forwarded-For behind the balancer is not believed.
    let spoofed = "x-forwarded-for: 10.0.0.1, 203.0.113.9\r\n";
    let (status, _, _) = get_from(addr, lb, "/", spoofed).await;
    assert_eq!(
        status, 403,
        "203.0.113.9 is the client, in no allowed block"
    );

    let forwarded = "forwarded: for=\"[2001:db8::5]:4711\";proto=https\r\n";
    let (status, client, _) = get_from(addr, lb, "/", forwarded).await;
    assert_eq!((status, client.as_str()), (200, "2001:db8::5"));

    // An untrusted peer's headers change nothing.
    let (status, client, _) =
        get_from(addr, "127.0.0.1", "/", "x-forwarded-for: 203.0.113.9\r\n").await;
    assert_eq!((status, client.as_str()), (200, "127.0.0.1"));
    let (status, _, _) = get_from(addr, "127.0.0.3", "/", "x-forwarded-for: 10.1.1.1\r\n").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_config_file_replaces_the_lists() {
    let app = Origin::start("app").await.expect("origin");
    let config = "[proxy.Guarded]\nallow = [\"127.0.0.3\"]\ntrusted_proxies = []\n";
    let proxy = start(&app, Some(config));
    let addr = proxy.addr();
    let (status, client, _) = get_from(addr, "127.0.0.3", "/", "").await;
    assert_eq!((status, client.as_str()), (200, "127.0.0.3"));
    let (status, _, _) = get_from(addr, "127.0.0.1", "/", "").await;
    assert_eq!(status, 403, "an allow list refuses the rest");
    // With no trusted proxy left, the balancer's header is not believed.
    let (status, _, _) = get_from(addr, "127.0.0.2", "/", "x-forwarded-for: 127.0.0.3\r\n").await;
    assert_eq!(status, 403);

    let bad = Config::parse("[proxy.Guarded]\ndeny = [\"10.0.0.1/8\"]\n").expect("parses");
    let e = bad
        .apply_proxy("Guarded", Guarded::new().router_mut())
        .expect_err("a block with host bits");
    assert!(
        e.to_string()
            .contains("\"10.0.0.1/8\" is not an address block"),
        "{e}"
    );
}

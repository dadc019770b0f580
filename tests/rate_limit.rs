//! `rate_limit` in declared proxies: a client (by IP), an API key (by header) or a route
//! over its limit gets 429 with `Retry-After`; the others are not refused.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::Origin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

proxy! {
    /// At most 5 requests per 10 s per client IP.
    pub ByIp {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:9"]; }
        rate_limit 5 per 10s by client_ip;
    }

    /// At most 3 requests per 10 s per API key.
    pub ByKey {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:9"]; }
        rate_limit 3 per 10s by header "x-api-key";
    }

    /// At most 4 requests per 10 s per route.
    pub ByRoute {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:9"]; }
        rate_limit 4 per 10s by route;
        route path "/a" => upstream web;
        route path "/b" => upstream web;
    }
}

/// Starts a declared proxy on an ephemeral port, forwarding to `origin`.
macro_rules! start {
    ($proxy:ident, $origin:expr) => {{
        let cli = ProxyCli {
            upstream: vec![$origin.to_string()],
            ..Default::default()
        };
        let mut proxy = $proxy::new();
        cli.configure(stringify!($proxy), proxy.router_mut())
            .expect("peers");
        let mut service = proxy.service();
        service.clear_tcp();
        service.add_tcp("127.0.0.1:0");
        service.spawn().expect("starts")
    }};
}

/// One request from source IP `from`; returns the status and the `Retry-After` value.
async fn get(
    proxy: SocketAddr,
    from: IpAddr,
    path: &str,
    key: Option<&str>,
) -> (u16, Option<String>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the source address");
    let mut s = tokio::time::timeout(Duration::from_secs(10), socket.connect(proxy))
        .await
        .expect("in time")
        .expect("connect");
    let key = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{key}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let retry_after = text
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .map(str::to_owned);
    (status, retry_after)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_limit_is_refused_and_others_are_not() {
    let origin = Origin::start("limited").await.expect("origin");
    let proxy = start!(ByIp, origin.addr());
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(get(proxy.addr(), ip(11), "/", None).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(
        statuses[5].1.as_deref(),
        Some("10"),
        "429 says when to retry"
    );
    // Another client is not refused.
    assert_eq!(get(proxy.addr(), ip(12), "/", None).await.0, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_and_a_route_have_budgets_of_their_own() {
    let origin = Origin::start("limited").await.expect("origin");
    let proxy = start!(ByKey, origin.addr());
    // By header: key "a" gets 3 (each from another client IP, so only the key counts).
    let mut codes = Vec::new();
    for n in 0..4 {
        codes.push(get(proxy.addr(), ip(20 + n), "/", Some("a")).await.0);
    }
    assert_eq!(codes, [200, 200, 200, 429]);
    assert_eq!(get(proxy.addr(), ip(30), "/", Some("b")).await.0, 200);
    // Without the header a request is not counted (an absent key is no shared key).
    for n in 0..5 {
        assert_eq!(get(proxy.addr(), ip(60 + n), "/", None).await.0, 200);
    }
    proxy.shutdown().await;

    // By route: /a gets 4, then /b still answers (distinct clients, no key).
    let proxy = start!(ByRoute, origin.addr());
    let mut codes = Vec::new();
    for n in 0..5 {
        codes.push(get(proxy.addr(), ip(40 + n), "/a", None).await.0);
    }
    assert_eq!(codes, [200, 200, 200, 200, 429]);
    assert_eq!(get(proxy.addr(), ip(50), "/b", None).await.0, 200);
    // 3 + 1 by key, 5 without it, 4 + 1 by route: refused requests never reached the
    // origin.
    assert_eq!(origin.requests(), 14);
    proxy.shutdown().await;
}

//! Stickiness declared in `proxy!`, against real origins: a pool's stickiness cookie pins a
//! client to the peer that first answered it and moves it when that peer fails; a hashing
//! pool spreads the requests that lack its key instead of sending them all to one peer.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::lb::peer_id;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use support::{client, point, refused_port, send, TestClient};

proxy! {
    /// A pinned pool and a pool hashed by a cookie.
    pub Sticky {
        listen "127.0.0.1:6188";
        upstream app {
            peers ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];
            sticky cookie "srv";
        }
        upstream hashed {
            peers ["127.0.0.1:8004", "127.0.0.1:8005", "127.0.0.1:8006"];
            select hash(cookie "uid");
        }
        route path "/hashed" => upstream hashed;
        route => upstream app;
    }
}

struct Setup {
    origins: Vec<Origin>,
    proxy: pingora_dsl::downstream::RunningService,
    client: TestClient,
}

/// Three origins behind both pools, plus `extra` peers in the pinned pool.
async fn setup(extra: &[SocketAddr]) -> Setup {
    let mut origins = Vec::new();
    for name in ["one", "two", "three"] {
        origins.push(Origin::start(name).await.expect("origin"));
    }
    let addrs: Vec<SocketAddr> = origins.iter().map(Origin::addr).collect();
    let mut proxy = Sticky::new();
    let router = proxy.router_mut();
    let pinned: Vec<SocketAddr> = addrs.iter().chain(extra).copied().collect();
    point(router, "app", &pinned);
    point(router, "hashed", &addrs);
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    Setup {
        origins,
        proxy: service.spawn().expect("proxy starts"),
        client: client(),
    }
}

/// Which origin answered, and the `Set-Cookie` of the answer (or `-`).
async fn get(s: &Setup, path: &str, cookie: Option<&str>) -> (String, String) {
    let mut b = Request::get(format!("http://{}{path}", s.proxy.addr()));
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    let (resp, _) = send(&s.client, b.body(Full::new(Bytes::new())).expect("request")).await;
    assert_eq!(resp.status(), 200);
    let text = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    (text("x-origin"), text("set-cookie"))
}

#[tokio::test]
async fn the_cookie_pins_a_client_to_the_peer_that_first_answered() {
    let s = setup(&[]).await;
    let (first, set) = get(&s, "/", None).await;
    assert!(set.starts_with("srv="), "{set}");
    assert!(set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
    let pair = set.split(';').next().expect("name=value").to_owned();
    for _ in 0..9 {
        let (origin, again) = get(&s, "/", Some(&format!("theme=dark; {pair}"))).await;
        assert_eq!(origin, first, "round robin alone would move on");
        assert_eq!(again, "-", "a request naming its peer gets no new cookie");
    }
    // Without the cookie the strategy decides: round robin visits every peer.
    let mut seen = HashMap::new();
    for _ in 0..6 {
        *seen.entry(get(&s, "/", None).await.0).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn a_pinned_peer_that_fails_gives_its_clients_to_another_and_a_new_cookie() {
    let gone = refused_port();
    let s = setup(&[gone.addr()]).await;
    let id = peer_id(gone.addr());
    let pair = format!("srv={}", std::str::from_utf8(&id).expect("hex"));
    let (origin, set) = get(&s, "/", Some(&pair)).await;
    assert!(
        ["one", "two", "three"].contains(&origin.as_str()),
        "{origin}"
    );
    assert!(set.starts_with("srv=") && !set.starts_with(&pair), "{set}");
    // An unknown or malformed id is no peer: the strategy picks, and pins.
    let (_, set) = get(&s, "/", Some("srv=not-a-peer-id")).await;
    assert!(set.starts_with("srv="), "{set}");
}

#[tokio::test]
async fn a_hash_without_its_key_spreads_and_with_it_sticks() {
    let s = setup(&[]).await;
    let mut seen = HashMap::new();
    for _ in 0..30 {
        *seen.entry(get(&s, "/hashed", None).await.0).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "keyless requests reach every peer: {seen:?}");
    assert!(seen.values().all(|&n| n >= 3), "{seen:?}");
    let (first, _) = get(&s, "/hashed", Some("uid=42")).await;
    for _ in 0..5 {
        assert_eq!(get(&s, "/hashed", Some("uid=42")).await.0, first);
    }
    let total: usize = s.origins.iter().map(Origin::requests).sum();
    assert_eq!(total, 36);
}

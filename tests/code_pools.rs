//! Declared pools picked from code, against real origins: a `request_filter` that sends a
//! request to another pool than its route's, and an `upstream_peer` that returns a pool —
//! both keeping the pool's strategy and its tries on other peers after a failed connect.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use support::{client, point, refused_port, send, RefusedPort, TestClient};

proxy! {
    /// Routes send everything to `stable`; code moves beta testers to `canary`.
    pub Chooser {
        listen "127.0.0.1:6188";
        upstream stable { peers ["127.0.0.1:8001"]; }
        upstream canary { peers ["127.0.0.1:8002"]; }
        route => upstream stable;
        request_filter(session, _ctx) {
            if session.headers().contains_key("x-beta") {
                session.use_pool(Self::POOL_CANARY);
            }
        }
    }
}

proxy! {
    /// No routes: code picks the pool, the pool picks the peer.
    pub Picker {
        listen "127.0.0.1:6189";
        upstream reports { peers ["127.0.0.1:8003", "127.0.0.1:8004"]; }
        upstream web { peers ["127.0.0.1:8005"]; }
        upstream_peer(session, _ctx) {
            if session.path().starts_with("/reports") {
                Self::POOL_REPORTS
            } else {
                Self::POOL_WEB
            }
        }
    }
}

async fn origin_of(client: &TestClient, addr: SocketAddr, path: &str, beta: bool) -> String {
    let mut b = Request::get(format!("http://{addr}{path}"));
    if beta {
        b = b.header("x-beta", "1");
    }
    let (resp, _) = send(client, b.body(Full::new(Bytes::new())).expect("request")).await;
    assert_eq!(resp.status(), 200);
    let origin = resp.headers().get("x-origin").expect("an origin answered");
    origin.to_str().expect("ascii").to_owned()
}

#[tokio::test]
async fn a_filter_moves_a_request_to_another_declared_pool() {
    let (stable, canary) = (
        Origin::start("stable").await.expect("origin"),
        Origin::start("canary").await.expect("origin"),
    );
    let mut proxy = Chooser::new();
    point(proxy.router_mut(), "stable", &[stable.addr()]);
    point(proxy.router_mut(), "canary", &[canary.addr()]);
    assert_eq!(
        proxy.router().pool_named("canary"),
        Some(Chooser::POOL_CANARY)
    );
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn().expect("proxy starts");
    let c = client();
    assert_eq!(origin_of(&c, running.addr(), "/", false).await, "stable");
    assert_eq!(origin_of(&c, running.addr(), "/", true).await, "canary");
    assert_eq!((stable.requests(), canary.requests()), (1, 1));
}

#[tokio::test]
async fn upstream_peer_returns_a_pool_that_keeps_its_failover() {
    let (reports, web) = (
        Origin::start("reports").await.expect("origin"),
        Origin::start("web").await.expect("origin"),
    );
    let gone: RefusedPort = refused_port();
    let mut proxy = Picker::new();
    point(
        proxy.router_mut(),
        "reports",
        &[gone.addr(), reports.addr()],
    );
    point(proxy.router_mut(), "web", &[web.addr()]);
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn().expect("proxy starts");
    let c = client();
    // Round robin meets the refused peer on one of two requests: the pool tries the
    // other peer, as it does for its routes.
    for _ in 0..4 {
        assert_eq!(
            origin_of(&c, running.addr(), "/reports/q1", false).await,
            "reports"
        );
    }
    assert_eq!(origin_of(&c, running.addr(), "/", false).await, "web");
    assert_eq!((reports.requests(), web.requests()), (4, 1));
}

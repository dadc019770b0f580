//! A declared proxy's own answers — a 401 from `request_filter`, `respond` and `redirect`
//! routes, the 404 of no route, 502 and 504 errors — get its response header edits and its
//! `response_filter`, as proxied answers do (so CORS headers are on every answer);
//! `filter_local_answers off;` keeps Pingora's behaviour. Over real sockets.

mod support;

use std::net::SocketAddr;

use pingora_dsl::lb::Backend;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use support::{client, get, send, TestClient};

proxy! {
    /// CORS on everything, an auth check in code, a filter marking what it saw.
    pub Edge {
        listen "127.0.0.1:6188";
        upstream app {
            peers ["127.0.0.1:8001"];
            timeout read 300ms;
        }
        set_response_header "access-control-allow-origin" "*";
        route path "/teapot" => respond 418 "short and stout\n";
        route path "/moved" => redirect 301 "/teapot";
        route path "/app" => upstream app { strip_prefix "/app"; }
        request_filter(session, _ctx) {
            if session.path() == "/app/private" && !session.headers().contains_key("authorization") {
                return Ok(Flow::respond(StatusCode::UNAUTHORIZED));
            }
        }
        response_filter(_session, response, _ctx) {
            response.headers.insert("x-filtered", HeaderValue::from_static("1"));
        }
    }
}

proxy! {
    /// The same, opting out.
    pub Unfiltered {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        filter_local_answers off;
        set_response_header "access-control-allow-origin" "*";
        route path "/teapot" => respond 418;
        route path "/app" => upstream app;
        request_filter(session, _ctx) {
            if session.path() == "/app/private" {
                return Ok(Flow::respond(StatusCode::UNAUTHORIZED));
            }
        }
        response_filter(_session, response, _ctx) {
            response.headers.insert("x-filtered", HeaderValue::from_static("1"));
        }
    }
}

/// Status and the two marks of an answer: the CORS header and the filter's.
async fn marks(c: &TestClient, addr: SocketAddr, path: &str) -> (u16, bool, bool) {
    let (resp, _) = send(c, get(addr, path, None)).await;
    let h = resp.headers();
    (
        resp.status().as_u16(),
        h.get("access-control-allow-origin").is_some(),
        h.get("x-filtered").is_some(),
    )
}

/// Serves `$service` on an ephemeral loopback port.
macro_rules! start {
    ($service:expr) => {{
        let mut service = $service;
        service.clear_tcp();
        service.add_tcp("127.0.0.1:0");
        service.spawn().expect("proxy starts")
    }};
}

#[tokio::test]
async fn every_answer_of_a_declared_proxy_gets_its_edits_and_filter() {
    let origin = Origin::start("app").await.expect("origin");
    let mut edge = Edge::new();
    let group = edge.router_mut().group_mut("app").expect("group");
    group.set_backends(vec![Backend::new(origin.addr())]);
    let running = start!(edge.service());
    let c = client();
    let addr = running.addr();
    assert_eq!(marks(&c, addr, "/app/x").await, (200, true, true));
    assert_eq!(marks(&c, addr, "/app/private").await, (401, true, true));
    assert_eq!(marks(&c, addr, "/teapot").await, (418, true, true));
    assert_eq!(marks(&c, addr, "/moved").await, (301, true, true));
    assert_eq!(marks(&c, addr, "/nowhere").await, (404, true, true));
    // The origin takes longer than the read timeout: 504.
    assert_eq!(marks(&c, addr, "/app/stall").await, (504, true, true));
    assert_eq!(origin.requests(), 2);
    drop(origin);
}

#[tokio::test]
async fn a_refused_upstream_answer_gets_them_too() {
    let dead = support::refused_port();
    let mut edge = Edge::new();
    let group = edge.router_mut().group_mut("app").expect("group");
    group.set_backends(vec![Backend::new(dead.addr())]);
    let running = start!(edge.service());
    assert_eq!(
        marks(&client(), running.addr(), "/app/x").await,
        (502, true, true)
    );
}

#[tokio::test]
async fn opting_out_leaves_local_answers_unfiltered() {
    let origin = Origin::start("app").await.expect("origin");
    let mut proxy = Unfiltered::new();
    let group = proxy.router_mut().group_mut("app").expect("group");
    group.set_backends(vec![Backend::new(origin.addr())]);
    let running = start!(proxy.service());
    let c = client();
    let addr = running.addr();
    assert_eq!(marks(&c, addr, "/app/x").await, (200, true, true));
    assert_eq!(marks(&c, addr, "/app/private").await, (401, false, false));
    // A route's own answer carries the edits either way (the router adds them).
    assert_eq!(marks(&c, addr, "/teapot").await, (418, true, false));
}

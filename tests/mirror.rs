//! Request mirroring declared in `proxy!`, against real origins: a route's requests are
//! copied to a shadow pool that sees what the client sent, the real answer never waits for
//! the copy nor fails with it, a share is copied when asked, bodies are not copied, and
//! copies over the in-flight cap are dropped — each counted.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::route::{Mirror, MAX_MIRRORED};
use pingora_dsl_suite::origin::Origin;
use support::{client, point, refused_port, send, wait_until, TestClient};

proxy! {
    /// Live traffic, copied to a shadow pool.
    pub Shadowed {
        listen "127.0.0.1:6188";
        upstream live { peers ["127.0.0.1:8001"]; }
        upstream shadow { peers ["127.0.0.1:8002"]; }
        route path "/api" => upstream live {
            strip_prefix "/api";
            mirror shadow;
        }
        route path "/sample" => upstream live { mirror shadow 10%; }
        route => upstream live;
    }
}

struct Setup {
    live: Origin,
    shadow: Origin,
    mirrors: Vec<Arc<Mirror>>,
    proxy: pingora_dsl::downstream::RunningService,
    client: TestClient,
}

/// The origins and the proxy; the shadow pool's peer is `shadow_at` when given.
async fn setup(shadow_at: Option<SocketAddr>) -> Setup {
    let live = Origin::start("live").await.expect("origin");
    let shadow = Origin::start("shadow").await.expect("origin");
    let mut proxy = Shadowed::new();
    point(proxy.router_mut(), "live", &[live.addr()]);
    point(
        proxy.router_mut(),
        "shadow",
        &[shadow_at.unwrap_or(shadow.addr())],
    );
    let mirrors = proxy
        .router()
        .routes()
        .iter()
        .filter_map(|r| r.mirror().cloned())
        .collect();
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    Setup {
        live,
        shadow,
        mirrors,
        proxy: service.spawn().expect("proxy starts"),
        client: client(),
    }
}

impl Setup {
    async fn request(&self, method: &str, path: &str, body: &'static [u8]) -> (u16, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy.addr()))
            .header("x-test", "copied")
            .body(Full::new(Bytes::from_static(body)))
            .expect("request");
        let (resp, body) = send(&self.client, req).await;
        (resp.status().as_u16(), body)
    }
}

#[tokio::test]
async fn the_shadow_pool_gets_a_copy_of_what_the_client_sent() {
    let s = setup(None).await;
    let (status, body) = s.request("GET", "/api/users?page=2", b"").await;
    assert_eq!((status, &body[..]), (200, &b"origin live"[..]));
    let outcomes = &s.mirrors[0].outcomes;
    wait_until(Duration::from_secs(5), "the copy to be answered", || {
        outcomes.sent.get() == 1
    })
    .await;
    let seen = s.shadow.last_headers().expect("the shadow got the copy");
    assert_eq!(seen["x-test"], "copied");
    assert!(seen.contains_key("host"));
    assert_eq!((s.live.requests(), s.shadow.requests()), (1, 1));
}

#[tokio::test]
async fn the_real_answer_neither_waits_for_nor_fails_with_the_copy() {
    // A shadow that answers late: the real answer comes first.
    let s = setup(None).await;
    s.shadow.set_delay(Duration::from_secs(30));
    assert_eq!(s.request("GET", "/api/a", b"").await.0, 200);
    assert_eq!(
        s.mirrors[0].outcomes.sent.get(),
        0,
        "the copy is still under way"
    );
    // A shadow that is down: the real request is answered, the copy counted as failed.
    let gone = refused_port();
    let s = setup(Some(gone.addr())).await;
    assert_eq!(s.request("GET", "/api/b", b"").await.0, 200);
    let outcomes = &s.mirrors[0].outcomes;
    wait_until(
        Duration::from_secs(5),
        "the failed copy to be counted",
        || outcomes.failed.get() == 1,
    )
    .await;
}

#[tokio::test]
async fn a_share_is_copied_and_bodies_are_not() {
    let s = setup(None).await;
    for _ in 0..50 {
        assert_eq!(s.request("GET", "/sample", b"").await.0, 200);
    }
    let sampled = &s.mirrors[1].outcomes;
    wait_until(Duration::from_secs(5), "5 copies of 50 requests", || {
        sampled.sent.get() == 5
    })
    .await;
    let (status, body) = s.request("POST", "/api/echo", b"payload").await;
    assert_eq!((status, &body[..]), (200, &b"payload"[..]));
    assert_eq!(s.mirrors[0].outcomes.skipped.get(), 1);
    assert_eq!(
        s.shadow.requests(),
        5,
        "the body went to the live pool only"
    );
}

#[tokio::test]
async fn copies_over_the_in_flight_cap_are_dropped() {
    let s = setup(None).await;
    s.shadow.set_delay(Duration::from_secs(30));
    let extra = 6;
    for _ in 0..MAX_MIRRORED + extra {
        assert_eq!(s.request("GET", "/api/x", b"").await.0, 200);
    }
    assert_eq!(s.mirrors[0].outcomes.dropped.get(), extra as u64);
    assert_eq!(s.live.requests(), MAX_MIRRORED + extra);
}

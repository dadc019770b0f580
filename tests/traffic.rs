//! Traffic management declared in `proxy!`, over real sockets against real origins: route
//! conditions (headers, query, cookies, exact and regex paths, client blocks, scheme,
//! negation), weighted splits (sticky and spread, counted per arm) and path rewrites
//! (checked by the target the origin received).

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::route::{RouteAction, Router, Split};
use pingora_dsl_suite::origin::Origin;
use support::{client, point, send, TestClient};

proxy! {
    /// Every kind of condition, two splits and three rewrites.
    pub Traffic {
        listen "127.0.0.1:6188";
        upstream stable { peers ["127.0.0.1:8001"]; }
        upstream canary { peers ["127.0.0.1:8002"]; }
        upstream api { peers ["127.0.0.1:8003"]; }
        route not client ["127.0.0.0/8", "::1"] => respond 403 "outside\n";
        route scheme https => respond 421 "cleartext only\n";
        route header "user-agent" ~ "(?i)bot" => respond 403 "no bots\n";
        route query "debug" == "1" => respond 200 "debug\n";
        route header "x-canary" == "1" => upstream canary;
        route path "/split" => split { 90% stable, 10% canary } by header "x-user";
        route path "/spread" => split { 50% stable, 50% canary };
        route path "/v1" => upstream api { strip_prefix "/v1"; }
        route path "/old" => upstream api { replace_prefix "/old" "/new"; }
        route path regex "^/u/[0-9]+$" => upstream api {
            rewrite_path "^/u/(?P<id>[0-9]+)$" "/users/${id}";
        }
        route path exact "/exact" not method POST => upstream api;
        route path "/exact" => respond 405;
        route cookie "session" == "abc" => upstream canary;
        route => upstream stable;
    }
}

/// The three origins and a proxy in front of them.
struct Setup {
    stable: Origin,
    canary: Origin,
    api: Origin,
    proxy: pingora_dsl::downstream::RunningService,
    splits: Vec<Arc<Split>>,
    client: TestClient,
}

async fn setup() -> Setup {
    let (stable, canary, api) = (
        Origin::start("stable").await.expect("origin"),
        Origin::start("canary").await.expect("origin"),
        Origin::start("api").await.expect("origin"),
    );
    let mut proxy = Traffic::new();
    let router = proxy.router_mut();
    point(router, "stable", &[stable.addr()]);
    point(router, "canary", &[canary.addr()]);
    point(router, "api", &[api.addr()]);
    let splits = splits(proxy.router());
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("proxy starts");
    Setup {
        stable,
        canary,
        api,
        proxy,
        splits,
        client: client(),
    }
}

/// The router's splits, to read their counters.
fn splits(router: &Router) -> Vec<Arc<Split>> {
    router
        .routes()
        .iter()
        .filter_map(|r| match r.action() {
            RouteAction::Split(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// An answer: status, which origin answered (or `-`), the target it saw, the body.
struct Seen {
    status: u16,
    origin: String,
    target: String,
    body: Bytes,
}

impl Setup {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Seen {
        self.request("GET", path, headers).await
    }

    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy.addr()));
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        let req = b.body(Full::new(Bytes::new())).expect("request");
        let (resp, body) = send(&self.client, req).await;
        let text = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        Seen {
            status: resp.status().as_u16(),
            origin: text("x-origin"),
            target: text("x-seen-target"),
            body,
        }
    }
}

#[tokio::test]
async fn headers_queries_cookies_and_paths_choose_the_route() {
    let s = setup().await;
    let plain = s.get("/", &[]).await;
    assert_eq!((plain.status, plain.origin.as_str()), (200, "stable"));
    let canary = s.get("/anything", &[("x-canary", "1")]).await;
    assert_eq!(canary.origin, "canary");
    assert_eq!(
        s.get("/anything", &[("x-canary", "2")]).await.origin,
        "stable"
    );
    let bot = s.get("/", &[("user-agent", "GoodBot/2.1")]).await;
    assert_eq!((bot.status, &bot.body[..]), (403, &b"no bots\n"[..]));
    let debug = s.get("/x?a=2&debug=1", &[]).await;
    assert_eq!((debug.status, &debug.body[..]), (200, &b"debug\n"[..]));
    assert_eq!(s.get("/x?debug=10", &[]).await.origin, "stable");
    let cookie = s.get("/c", &[("cookie", "theme=dark; session=abc")]).await;
    assert_eq!(cookie.origin, "canary");
    assert_eq!(
        s.get("/c", &[("cookie", "session=abcd")]).await.origin,
        "stable"
    );
    assert_eq!(s.get("/exact", &[]).await.origin, "api");
    assert_eq!(s.request("POST", "/exact", &[]).await.status, 405);
    assert_eq!(s.get("/exact/more", &[]).await.status, 405);
    // Loopback clients are inside the blocks and arrive in cleartext: neither refusal.
    assert_eq!(s.stable.requests() + s.canary.requests(), 6);
    assert_eq!(s.api.requests(), 1);
}

#[tokio::test]
async fn prefixes_and_regexes_rewrite_what_the_origin_sees() {
    let s = setup().await;
    let strip = s.get("/v1/users?page=2", &[]).await;
    assert_eq!(
        (strip.origin.as_str(), strip.target.as_str()),
        ("api", "/users?page=2")
    );
    assert_eq!(s.get("/v1", &[]).await.target, "/");
    let not_under = s.get("/v10/x", &[]).await;
    assert_eq!(
        (not_under.origin.as_str(), not_under.target.as_str()),
        ("stable", "/v10/x")
    );
    assert_eq!(s.get("/old/a/b", &[]).await.target, "/new/a/b");
    let regex = s.get("/u/42?tab=1", &[]).await;
    assert_eq!(
        (regex.origin.as_str(), regex.target.as_str()),
        ("api", "/users/42?tab=1")
    );
    let no_match = s.get("/u/abc", &[]).await;
    assert_eq!(
        (no_match.origin.as_str(), no_match.target.as_str()),
        ("stable", "/u/abc")
    );
}

#[tokio::test]
async fn a_keyed_split_is_sticky_and_keeps_its_proportions() {
    let s = setup().await;
    let mut arm_of: HashMap<String, String> = HashMap::new();
    for user in 0..400 {
        let key = format!("user-{user}");
        let seen = s.get("/split", &[("x-user", &key)]).await;
        assert_eq!(seen.status, 200);
        arm_of.insert(key, seen.origin);
    }
    // The same key lands in the same arm again.
    for user in (0..400).step_by(7) {
        let key = format!("user-{user}");
        let again = s.get("/split", &[("x-user", &key)]).await;
        assert_eq!(again.origin, arm_of[&key], "{key}");
    }
    let to_canary = arm_of.values().filter(|o| *o == "canary").count();
    assert!(
        (16..=64).contains(&to_canary),
        "{to_canary} of 400 keys went to the canary"
    );
    let counted: Vec<u64> = s.splits[0]
        .arms()
        .iter()
        .map(|a| a.requests.get())
        .collect();
    assert_eq!(counted.iter().sum::<u64>(), 400 + 58);
    assert_eq!(counted[1] as usize, s.canary.requests());
}

#[tokio::test]
async fn an_unkeyed_split_spreads_evenly() {
    let s = setup().await;
    let mut to = HashMap::new();
    for _ in 0..200 {
        *to.entry(s.get("/spread", &[]).await.origin).or_insert(0) += 1;
    }
    let stable = to.get("stable").copied().unwrap_or(0);
    assert!((80..=120).contains(&stable), "{to:?}");
    let counted: Vec<u64> = s.splits[1]
        .arms()
        .iter()
        .map(|a| a.requests.get())
        .collect();
    assert_eq!(counted, [stable as u64, 200 - stable as u64]);
}

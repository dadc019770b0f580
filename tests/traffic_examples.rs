//! The traffic-management examples as processes in front of real origins. `gateway`: the
//! token check's 401 carries the CORS headers and request id of every answer, and the
//! public `/v1` API strips its prefix, splits 90/10 sticky by user with a header override
//! to the canary, and limits each key. `canary`: the split it prints is 90/10, sticky.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl_suite::origin::Origin;
use support::{addr_after, client, example_binary, read_until, send, spawn_with_lines, TestClient};

/// Status, headers of interest, and which origin answered and saw what.
async fn get(
    c: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>) {
    request(c, "GET", addr, path, headers).await
}

/// `METHOD path` with `headers`: the status and the response's headers.
async fn request(
    c: &TestClient,
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (resp, _) = send(c, b.body(Full::new(Bytes::new())).expect("request")).await;
    let seen = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    (resp.status().as_u16(), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_checks_tokens_splits_v1_and_answers_with_cors_everywhere() {
    let web = Origin::start("web").await.expect("origin");
    let api = Origin::start("api").await.expect("origin");
    let canary = Origin::start("canary").await.expect("origin");
    let dir = std::env::temp_dir().join(format!("pdsl-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("gateway.toml");
    std::fs::write(
        &conf,
        format!(
            "[proxy.Gateway]\nlisten = [\"127.0.0.1:0\"]\nupstream.web.peers = [\"{}\"]\nupstream.api.peers = [\"{}\"]\nupstream.canary.peers = [\"{}\"]\n",
            web.addr(),
            api.addr(),
            canary.addr()
        ),
    )
    .expect("config");
    let (child, lines) = spawn_with_lines(
        Command::new(example_binary("gateway")).args(["-c", conf.to_str().expect("utf-8")]),
    );
    let _running = support::KillOnDrop(child);
    let addr = addr_after(
        &read_until(&lines, &mut Vec::new(), |l| {
            l.contains("listening on http://")
        }),
        "http://",
    );
    let c = client();

    let app = ("origin", "https://app.example.com");
    let (status, h) = get(&c, addr, "/api/items", &[app]).await;
    assert_eq!(status, 401);
    assert_eq!(
        h["access-control-allow-origin"], "https://app.example.com",
        "{h:?}"
    );
    assert_eq!(h["access-control-allow-credentials"], "true", "{h:?}");
    assert_eq!(h["www-authenticate"], "Bearer");
    assert_eq!(h["x-request-id"].len(), 32, "{h:?}");
    assert_eq!(api.requests(), 0);

    let (status, h) = get(&c, addr, "/v1/items?x=1", &[("x-canary", "1"), app]).await;
    assert_eq!((status, h["x-origin"].as_str()), (200, "canary"));
    assert_eq!(h["x-seen-target"], "/items?x=1", "the prefix is stripped");
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");

    // A browser's preflight is answered by the gateway, before the token check.
    let preflight = [
        app,
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "authorization"),
    ];
    let (status, h) = request(&c, "OPTIONS", addr, "/api/items", &preflight).await;
    assert_eq!(status, 204, "{h:?}");
    assert_eq!(h["access-control-allow-methods"], "GET, POST, PUT, DELETE");
    assert_eq!(api.requests(), 0);
    let (status, h) = get(
        &c,
        addr,
        "/api/items",
        &[("authorization", "Bearer let-me-in")],
    )
    .await;
    assert_eq!((status, h["x-gateway"].as_str()), (200, "api"));
    assert_eq!(
        api.last_headers().expect("forwarded")["x-caller"],
        "bearer",
        "the identity goes upstream"
    );

    // Sticky by user: each user stays in one pool; across users, both pools serve.
    let mut pools = HashMap::new();
    for user in 0..60 {
        let user = format!("user-{user}");
        let (status, first) = get(&c, addr, "/v1/a", &[("x-user", &user)]).await;
        assert_eq!(status, 200, "{first:?}");
        let (_, again) = get(&c, addr, "/v1/b", &[("x-user", &user)]).await;
        assert_eq!(first["x-origin"], again["x-origin"], "{user} moved");
        *pools.entry(first["x-origin"].clone()).or_insert(0) += 1;
    }
    let share = |pool: &str| pools.get(pool).copied().unwrap_or(0);
    assert!(
        share("api") > share("canary") && share("canary") > 0,
        "{pools:?}"
    );

    // Ten requests a second per key: the eleventh is refused, with the CORS headers.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(
            get(&c, addr, "/v1/c", &[("x-api-key", "k1"), ("x-user", "u")])
                .await
                .0,
        );
    }
    assert_eq!(statuses[..10], [200; 10]);
    let (status, h) = get(
        &c,
        addr,
        "/v1/c",
        &[("x-api-key", "k1"), ("origin", "https://shop.example.com")],
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(h["access-control-allow-origin"], "https://shop.example.com");
    let (status, _) = get(&c, addr, "/v1/c", &[("x-api-key", "k2")]).await;
    assert_eq!(status, 200, "another key has its own budget");
}

#[test]
fn the_canary_example_observes_a_sticky_90_10_split() {
    let out = Command::new(example_binary("canary"))
        .arg("1000")
        .output()
        .expect("the example runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let users_of = |pool: &str| -> usize {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("answered by {pool}: ")))
            .unwrap_or_else(|| panic!("no line for {pool}: {text}"));
        line.split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .expect("a count")
    };
    let canary = users_of("canary");
    assert!((60..=140).contains(&canary), "about 10% of 1000: {text}");
    assert_eq!(users_of("stable") + canary, 1000);
    assert!(
        text.contains("changed pool between their requests: 0"),
        "{text}"
    );
    assert!(
        text.contains("x-canary: 1 was answered by canary"),
        "{text}"
    );
    assert!(
        text.contains(&format!("split counter canary: {} requests", 2 * canary)),
        "{text}"
    );
}

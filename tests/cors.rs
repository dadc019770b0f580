//! CORS declared in `proxy!`, over real sockets: preflights answered by the proxy (never
//! forwarded), refused with a reason, the `Access-Control-*` headers and `Vary: Origin` on
//! proxied answers and on the proxy's own (a `respond` route, 404, 502), an upstream's own
//! CORS headers overridden, a route with its own policy or none, origins from the config
//! file — and Chromium itself making cross-origin requests through the proxy.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use pingora_dsl::prelude::*;
use pingora_dsl::server::config::Config;
use pingora_dsl_suite::origin::Origin;
use support::{chromium_dom, client, point, refused_port, send, serve_page, TestClient};

proxy! {
    /// An API for browsers on app.example.com and its subdomains.
    pub Browsers {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        upstream down { peers ["127.0.0.1:8002"]; }
        cors {
            origins ["https://app.example.com", "https://*.example.com"];
            methods [GET, PUT, DELETE];
            headers ["content-type", "x-token"];
            expose ["x-request-id", "x-origin"];
            credentials on;
            max_age 10m;
        }
        set_response_header "x-request-id" "${request_id}";
        route path "/public" => upstream app { cors { origins any; } }
        route path "/internal" => upstream app { cors off; }
        route path "/teapot" => respond 418 "short and stout\n";
        route path "/down" => upstream down;
        route path "/api" => upstream app;
    }
}

proxy! {
    /// A policy and nothing else: no response edit of its own.
    pub OnlyCors {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        cors { origins any; }
    }
}

#[tokio::test]
async fn a_proxy_with_a_policy_and_no_edits_still_decorates_proxied_answers() {
    let app = Origin::start("app").await.expect("origin");
    let mut proxy = OnlyCors::new();
    point(proxy.router_mut(), "app", &[app.addr()]);
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn().expect("proxy starts");
    let req = Request::get(format!("http://{}/x", running.addr()))
        .header("origin", "https://a.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (r, body) = send(&client(), req).await;
    assert_eq!(body, "origin app");
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
}

struct Setup {
    app: Origin,
    proxy: pingora_dsl::downstream::RunningService,
    client: TestClient,
}

/// The proxy in front of one origin (and a pool whose peer refuses connections), with
/// `config` applied as a `-c` file would be.
async fn setup(config: Option<&str>) -> Setup {
    let app = Origin::start("app").await.expect("origin");
    let down = refused_port();
    let mut proxy = Browsers::new();
    let router = proxy.router_mut();
    point(router, "app", &[app.addr()]);
    point(router, "down", &[down.addr()]);
    if let Some(text) = config {
        let config = Config::parse(text).expect("config parses");
        config
            .apply_proxy("Browsers", router)
            .expect("config applies");
    }
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    Setup {
        app,
        proxy: service.spawn().expect("proxy starts"),
        client: client(),
    }
}

impl Setup {
    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Response<()>, Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy.addr()));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        send(
            &self.client,
            req.body(Full::new(Bytes::new())).expect("request"),
        )
        .await
    }
}

fn header<'a>(response: &'a Response<()>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn vary_has_origin(response: &Response<()>) -> bool {
    response.headers().get_all("vary").iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("origin"))
    })
}

#[tokio::test]
async fn preflights_are_answered_by_the_proxy() {
    let s = setup(None).await;
    let (r, body) = s
        .request(
            "OPTIONS",
            "/api/items",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "Content-Type, X-Token"),
            ],
        )
        .await;
    assert_eq!(r.status(), 204, "{body:?}");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, PUT, DELETE")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("content-type, x-token")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert!(vary_has_origin(&r));
    assert!(
        header(&r, "x-request-id").is_some(),
        "the proxy's response edits apply"
    );

    for (origin, method, asked, why) in [
        (
            "https://evil.test",
            "GET",
            "",
            "origin https://evil.test is not allowed",
        ),
        (
            "https://app.example.com",
            "PATCH",
            "",
            "method PATCH is not allowed",
        ),
        (
            "https://www.example.com",
            "GET",
            "x-other",
            "header x-other is not allowed",
        ),
    ] {
        let mut headers = vec![
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        if !asked.is_empty() {
            headers.push(("access-control-request-headers", asked));
        }
        let (r, body) = s.request("OPTIONS", "/api", &headers).await;
        assert_eq!(r.status(), 403);
        assert!(String::from_utf8_lossy(&body).contains(why), "{body:?}");
        if origin == "https://evil.test" {
            assert_eq!(header(&r, "access-control-allow-origin"), None);
        }
    }
    assert_eq!(s.app.requests(), 0, "no preflight went upstream");
}

#[tokio::test]
async fn every_answer_to_an_allowed_origin_carries_the_headers() {
    let s = setup(None).await;
    let origin = [("origin", "https://shop.example.com")];
    for (path, status) in [
        ("/api/with-cors", 200),
        ("/teapot", 418),
        ("/nowhere", 404),
        ("/down", 502),
    ] {
        let (r, _) = s.request("GET", path, &origin).await;
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("https://shop.example.com"),
            "{path}: the policy's value, never the upstream's `*`"
        );
        assert_eq!(
            header(&r, "access-control-allow-credentials"),
            Some("true"),
            "{path}"
        );
        assert_eq!(
            header(&r, "access-control-expose-headers"),
            Some("x-request-id, x-origin"),
            "{path}"
        );
        assert!(vary_has_origin(&r), "{path}");
    }
    assert_eq!(s.app.requests(), 1);

    // Another origin, or none: the request still goes through, with no CORS grant (and the
    // upstream's own `Access-Control-Allow-Origin: *` removed).
    for headers in [&[("origin", "https://example.org")][..], &[]] {
        let (r, body) = s.request("GET", "/api/with-cors", headers).await;
        assert_eq!(r.status(), 200);
        assert_eq!(body, "origin app");
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        assert!(vary_has_origin(&r), "the answer depends on the origin");
    }
}

#[tokio::test]
async fn routes_have_their_own_policy_or_none() {
    let s = setup(None).await;
    let (r, _) = s
        .request("GET", "/public", &[("origin", "https://anyone.test")])
        .await;
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert!(!vary_has_origin(&r), "`*` for everyone does not vary");

    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "PUT"),
    ];
    let (r, body) = s.request("OPTIONS", "/internal", &preflight).await;
    assert_eq!(
        r.status(),
        200,
        "`cors off`: the OPTIONS request is the upstream's"
    );
    assert_eq!(body, "origin app");
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(s.app.requests(), 2, "the GET and the OPTIONS");
}

#[tokio::test]
async fn the_config_file_replaces_the_origins() {
    let s = setup(Some(
        "[proxy.Browsers]\ncors_origins = [\"https://other.test\"]\n",
    ))
    .await;
    let (r, _) = s
        .request("GET", "/api", &[("origin", "https://other.test")])
        .await;
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://other.test")
    );
    let (r, _) = s
        .request("GET", "/api", &[("origin", "https://app.example.com")])
        .await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    let mut proxy = Browsers::new();
    for (text, error) in [
        (
            "cors_origins = [\"app.test\"]",
            "invalid origin \"app.test\"",
        ),
        ("cors_origins = [\"*\"]", "credentials on"),
    ] {
        let config = Config::parse(&format!("[proxy.Browsers]\n{text}\n")).expect("parses");
        let e = config
            .apply_proxy("Browsers", proxy.router_mut())
            .expect_err(text);
        assert!(e.to_string().contains(error), "{e}");
    }
}

/// The page a browser loads from one origin: it calls the proxy (another origin) with a
/// method and header that need a preflight, reads a local answer's status, and writes
/// what it saw into the DOM.
const PAGE: &str = r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const proxy = location.hash.slice(1);
const out = [];
async function run() {
  try {
    const r = await fetch(proxy + "/api/items", {method: "PUT", headers: {"content-type": "application/json", "x-token": "t"}, body: "{}"});
    out.push("put=" + r.status + " origin=" + r.headers.get("x-origin") + " id=" + (r.headers.get("x-request-id") ? "yes" : "no") + " body=" + await r.text());
  } catch (e) { out.push("put=failed " + e.name); }
  try {
    const r = await fetch(proxy + "/teapot");
    out.push("teapot=" + r.status);
  } catch (e) { out.push("teapot=failed " + e.name); }
  document.getElementById("out").textContent = out.join("\n");
}
run();
</script></body></html>"#;

/// Chromium on an allowed origin makes both calls (the PUT after a preflight the proxy
/// answered) and reads the answers; on another origin, the browser refuses to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_calls_the_proxy_from_an_allowed_origin_only() {
    let allowed_page = serve_page(PAGE).await;
    let other_page = serve_page(PAGE).await;
    let config = format!("[proxy.Browsers]\ncors_origins = [\"http://{allowed_page}\"]\n");
    let s = setup(Some(&config)).await;
    let proxy = format!("http://{}", s.proxy.addr());

    let dom = chromium_dom(&page_url(allowed_page, &proxy), 5000).await;
    assert!(
        dom.contains("put=200 origin=app id=yes body=origin app"),
        "{dom}"
    );
    assert!(dom.contains("teapot=418"), "{dom}");
    let seen = s.app.last_headers().expect("the PUT reached the origin");
    assert_eq!(seen.get("x-token").map(|v| v.as_bytes()), Some(&b"t"[..]));
    assert_eq!(s.app.requests(), 1, "the preflight did not go upstream");

    let dom = chromium_dom(&page_url(other_page, &proxy), 5000).await;
    assert!(dom.contains("put=failed TypeError"), "{dom}");
    assert!(dom.contains("teapot=failed TypeError"), "{dom}");
    assert_eq!(s.app.requests(), 1, "the refused preflight stopped the PUT");
}

fn page_url(page: SocketAddr, proxy: &str) -> String {
    format!("http://{page}/#{proxy}")
}

//! Variables in declared values, against a real origin: `${...}` in header edits (what the
//! origin received, what the client got), redirect targets and answer bodies, including
//! captures of a route's path regex.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::lb::Backend;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use support::{client, send, TestClient};

proxy! {
    /// Each place a variable may stand.
    pub Variables {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        set_response_header "x-echo-id" "${request_id}";
        route path "/http" => redirect 301 "https://${host}${request_uri}";
        route path regex "^/users/(?P<id>[0-9]+)/(\\w+)$" => upstream app {
            set_request_header "x-user-id" "${id}";
            set_request_header "x-tab" "${2}";
            set_request_header "x-from" "${client_ip} ${method} ${header.x-tenant}";
            set_response_header "x-served-path" "${path}";
        }
        route path "/hello" => respond 200 "hello ${query.name} via ${scheme}\n";
        route path "/cookie" => respond 200 "${cookie.uid}|${path}|${query}|$${literal}";
        route => upstream app {
            strip_prefix "/api";
            set_request_header "x-original-uri" "${request_uri}";
        }
    }
}

struct Setup {
    app: Origin,
    proxy: pingora_dsl::downstream::RunningService,
    client: TestClient,
}

async fn setup() -> Setup {
    let app = Origin::start("app").await.expect("origin");
    let mut proxy = Variables::new();
    proxy
        .router_mut()
        .group_mut("app")
        .expect("declared group")
        .set_backends(vec![Backend::new(app.addr())]);
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
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (http::Response<()>, Bytes) {
        let mut b = Request::get(format!("http://{}{path}", self.proxy.addr()));
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        send(
            &self.client,
            b.body(Full::new(Bytes::new())).expect("request"),
        )
        .await
    }

    /// A header the origin received with the last request.
    fn origin_saw(&self, name: &str) -> String {
        let headers = self
            .app
            .last_headers()
            .expect("a request reached the origin");
        let value = headers.get(name).expect("the header was sent upstream");
        value.to_str().expect("ascii").to_owned()
    }
}

fn header<'r>(resp: &'r http::Response<()>, name: &str) -> &'r str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

#[tokio::test]
async fn request_edits_fill_in_captures_headers_and_the_client() {
    let s = setup().await;
    let (resp, _) = s
        .get(
            "/users/42/orders",
            &[("x-tenant", "acme"), ("x-request-id", "r-1")],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(s.origin_saw("x-user-id"), "42");
    assert_eq!(s.origin_saw("x-tab"), "orders");
    assert_eq!(s.origin_saw("x-from"), "127.0.0.1 GET acme");
    assert_eq!(header(&resp, "x-served-path"), "/users/42/orders");
    assert_eq!(header(&resp, "x-echo-id"), "r-1");
    // A missing header is empty, not an error (the trailing space is not sent).
    s.get("/users/7/a", &[]).await;
    assert_eq!(s.origin_saw("x-from"), "127.0.0.1 GET");
}

#[tokio::test]
async fn the_original_target_survives_a_rewrite() {
    let s = setup().await;
    let (resp, body) = s.get("/api/items?page=2", &[]).await;
    assert_eq!(
        (resp.status().as_u16(), &body[..]),
        (200, &b"origin app"[..])
    );
    assert_eq!(s.origin_saw("x-original-uri"), "/api/items?page=2");
    assert_eq!(header(&resp, "x-seen-target"), "/items?page=2");
}

#[tokio::test]
async fn redirects_and_answers_are_filled_in_per_request() {
    let s = setup().await;
    let (resp, _) = s.get("/http/a?b=1", &[("host", "shop.example:8080")]).await;
    assert_eq!(resp.status(), 301);
    assert_eq!(header(&resp, "location"), "https://shop.example/http/a?b=1");
    assert_ne!(
        header(&resp, "x-echo-id"),
        "-",
        "local answers get the edits too"
    );
    let (resp, body) = s.get("/hello?name=ada&x=1", &[]).await;
    assert_eq!(
        (resp.status().as_u16(), &body[..]),
        (200, &b"hello ada via http\n"[..])
    );
    let (_, body) = s.get("/cookie?q=1", &[("cookie", "a=b; uid=u-9")]).await;
    assert_eq!(&body[..], b"u-9|/cookie|q=1|${literal}");
    assert_eq!(s.app.requests(), 0, "none of these went upstream");
}

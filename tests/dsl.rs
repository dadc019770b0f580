//! Proxies declared with `proxy!`, run over real sockets against real origins: every
//! keyword of the language is exercised for its behaviour (which peer answered, statuses,
//! headers seen by the origin and by the client, counts).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::downstream::{HttpService, MakeConnService, RunningService};
use pingora_dsl::lb::Backend;
use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::Origin;
use support::{client, get, raw_exchange, refused_port, send};

/// Replaces the peers of `group` with `addrs` (the declared ones are fixed literals; test
/// origins listen on ephemeral ports).
fn point(router: &mut pingora_dsl::proxy::route::Router, group: &str, addrs: &[SocketAddr]) {
    router
        .group_mut(group)
        .expect("declared group")
        .set_backends(addrs.iter().map(|a| Backend::new(*a)).collect());
}

/// Serves `service` on an ephemeral loopback port instead of its declared addresses.
fn spawn<M: MakeConnService>(mut service: HttpService<M>) -> RunningService
where
    HttpService<M>: Spawnable,
{
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    service.spawn_now()
}

/// `HttpService::spawn` for any service the server can run.
trait Spawnable {
    fn spawn_now(self) -> RunningService;
}

impl<M, S, B> Spawnable for HttpService<M>
where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<pingora_dsl::DownstreamBody>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<pingora_dsl::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<pingora_dsl::BoxError>,
{
    fn spawn_now(self) -> RunningService {
        self.spawn().expect("proxy starts")
    }
}

fn header<'a>(resp: &'a http::Response<()>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

proxy! {
    /// Round robin with a Host rewrite, as in the blog post.
    pub Blog {
        listen "127.0.0.1:6188";
        upstream origins {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
        }
        set_request_header "host" "one.one.one.one";
    }
}

#[tokio::test]
async fn declared_round_robin_alternates_and_rewrites_host() {
    let (a, b) = (
        Origin::start("a").await.expect("origin"),
        Origin::start("b").await.expect("origin"),
    );
    let mut proxy = Blog::new();
    point(proxy.router_mut(), "origins", &[a.addr(), b.addr()]);
    let running = spawn(proxy.service());
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-seen-host"), Some("one.one.one.one"));
        seen.push(header(&resp, "x-origin").expect("x-origin").to_owned());
    }
    assert_eq!(seen, ["a", "b", "a", "b", "a", "b"]);
    assert_eq!(Blog::LISTEN, ["127.0.0.1:6188"]);
}

proxy! {
    /// Weights and the random strategy.
    pub Weighted {
        listen "127.0.0.1:6188";
        upstream smooth {
            peers ["127.0.0.1:8001", "127.0.0.1:8002" weight 3];
            select round_robin;
        }
        upstream dice {
            peers ["127.0.0.1:8001" weight 1, "127.0.0.1:8002" weight 3];
            select random;
        }
        route path "/dice" => upstream dice;
        route => upstream smooth;
    }
}

#[tokio::test]
async fn weights_split_traffic_smoothly_or_randomly() {
    let (a, b) = (
        Origin::start("a").await.expect("origin"),
        Origin::start("b").await.expect("origin"),
    );
    let mut proxy = Weighted::new();
    for group in ["smooth", "dice"] {
        let backends = vec![
            Backend::weighted(a.addr(), 1),
            Backend::weighted(b.addr(), 3),
        ];
        proxy
            .router_mut()
            .group_mut(group)
            .expect("group")
            .set_backends(backends);
    }
    let running = spawn(proxy.service());
    let c = client();
    let mut order = String::new();
    for _ in 0..8 {
        let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
        order.push_str(header(&resp, "x-origin").expect("x-origin"));
    }
    // Smooth: the light peer's turns are spread out, exactly 1 in 4.
    assert_eq!(order, "babbbabb");
    let mut heavy = 0;
    for _ in 0..400 {
        let (resp, _) = send(&c, get(running.addr(), "/dice", None)).await;
        heavy += usize::from(header(&resp, "x-origin") == Some("b"));
    }
    // Expected 300 of 400; ±60 is over six standard deviations.
    assert!(
        (240..=360).contains(&heavy),
        "weighted random sent {heavy}/400 to b"
    );
}

proxy! {
    /// Routing by host, path prefix and method; answers and redirects; header edits.
    pub Routed {
        listen "127.0.0.1:6188";
        upstream web { peers ["127.0.0.1:8001"]; }
        upstream api { peers ["127.0.0.1:8002"]; }
        route path "/healthz" => respond 200 "ok\n";
        route path "/gone" => respond 410;
        route path "/old" => redirect 308 "https://example.com/new";
        route host "*.api.test" => upstream api;
        route path "/api" method [GET, HEAD] => upstream api {
            set_request_header "x-route" "api";
            remove_request_header "x-secret";
            set_response_header "x-route-seen" "api";
        }
        route path "/site/" => upstream web;
        set_request_header "x-proxy" "pingora-dsl";
        set_response_header "x-served-by" "dsl";
        remove_response_header "x-origin-internal";
    }
}

#[tokio::test]
async fn routes_match_host_path_and_method_first_match_wins() {
    let (web, api) = (
        Origin::start("web").await.expect("origin"),
        Origin::start("api").await.expect("origin"),
    );
    let mut proxy = Routed::new();
    point(proxy.router_mut(), "web", &[web.addr()]);
    point(proxy.router_mut(), "api", &[api.addr()]);
    let running = spawn(proxy.service());
    let addr = running.addr();
    let c = client();

    let (resp, body) = send(&c, get(addr, "/healthz", None)).await;
    assert_eq!((resp.status().as_u16(), &body[..]), (200, &b"ok\n"[..]));
    assert_eq!(header(&resp, "x-served-by"), Some("dsl"));
    let (resp, _) = send(&c, get(addr, "/gone", None)).await;
    assert_eq!(resp.status(), 410);
    let (resp, _) = send(&c, get(addr, "/old/page", None)).await;
    assert_eq!(resp.status(), 308);
    assert_eq!(header(&resp, "location"), Some("https://example.com/new"));

    // Path prefix at segment boundaries; method filter.
    let req = Request::get(format!("http://{addr}/api/users"))
        .header("x-secret", "hunter2")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (resp, _) = send(&c, req).await;
    assert_eq!(header(&resp, "x-origin"), Some("api"));
    assert_eq!(header(&resp, "x-route-seen"), Some("api"));
    assert_eq!(header(&resp, "x-served-by"), Some("dsl"));
    let seen = api.last_headers().expect("api saw the request");
    assert_eq!(seen.get("x-route").map(|v| v.as_bytes()), Some(&b"api"[..]));
    assert_eq!(
        seen.get("x-proxy").map(|v| v.as_bytes()),
        Some(&b"pingora-dsl"[..])
    );
    assert!(seen.get("x-secret").is_none(), "x-secret removed");
    let (resp, _) = send(&c, get(addr, "/apix", None)).await;
    assert_eq!(resp.status(), 404, "/apix is not under /api");
    let post = Request::post(format!("http://{addr}/api/users"))
        .body(Full::new(Bytes::from_static(b"x")))
        .expect("request");
    let (resp, _) = send(&c, post).await;
    assert_eq!(resp.status(), 404, "POST is not routed to /api");

    // Host wildcard (port ignored), checked before the path routes below it.
    let req = Request::get(format!("http://{addr}/site/x"))
        .header("host", "v1.api.test:8080")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (resp, _) = send(&c, req).await;
    assert_eq!(header(&resp, "x-origin"), Some("api"));
    let (resp, _) = send(&c, get(addr, "/site/x", None)).await;
    assert_eq!(header(&resp, "x-origin"), Some("web"));
    assert!(
        header(&resp, "x-route-seen").is_none(),
        "route edits stay on their route"
    );
    let (resp, _) = send(&c, get(addr, "/elsewhere", None)).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(web.requests() + api.requests(), 3);
}

/// What `logging` saw: request id (the query), status, error kind, phases run.
type FilterLogEntry = (String, u16, Option<ErrorKind>, u32);

static FILTER_LOG: Mutex<Vec<FilterLogEntry>> = Mutex::new(Vec::new());

/// Per-request context of [`Filtered`].
#[derive(Default)]
pub struct Counted {
    phases: u32,
    user: Option<String>,
}

async fn require_token(session: &mut Session, ctx: &mut Counted) -> Result<Flow> {
    ctx.phases += 1;
    match session
        .headers()
        .get("x-token")
        .and_then(|v| v.to_str().ok())
    {
        Some("secret") => {
            ctx.user = Some("alice".into());
            Ok(Flow::Continue)
        }
        Some(_) => Err(Error::filter("token check failed")),
        None => Ok(Flow::respond_with(
            StatusCode::UNAUTHORIZED,
            "token please\n",
        )),
    }
}

fn tag_upstream_response(
    _session: &mut Session,
    response: &mut ResponseHeader,
    ctx: &mut Counted,
) -> Result<()> {
    ctx.phases += 1;
    response.remove_header("x-seen-xff");
    Ok(())
}

proxy! {
    /// Every phase: inline blocks with a typed ctx, and functions by path.
    pub Filtered {
        listen "127.0.0.1:6188";
        ctx Counted;
        upstream origin { peers ["127.0.0.1:8001"]; }
        route path "/static" => respond 200 "static\n";
        route => upstream origin;

        early_request_filter(session, ctx) {
            ctx.phases += 1;
            if session.path() == "/early-fail" {
                return Err(Error::filter("early failure"));
            }
        }
        request_filter = require_token;
        upstream_request_filter(_session, request, ctx) {
            ctx.phases += 1;
            let user = ctx.user.clone().unwrap_or_default();
            request.insert_header("x-user", user)?;
        }
        upstream_response_filter = tag_upstream_response;
        response_filter(_session, response, ctx) {
            ctx.phases += 1;
            response.insert_header("x-phases", ctx.phases.to_string())?;
        }
        logging(session, error, ctx) {
            let id = session
                .req_header()
                .uri
                .query()
                .unwrap_or("")
                .to_owned();
            let status = session.response_status().map_or(0, |s| s.as_u16());
            FILTER_LOG
                .lock()
                .expect("log")
                .push((id, status, error.map(|e| e.kind()), ctx.phases));
        }
    }
}

#[tokio::test]
async fn every_phase_runs_inline_or_by_path_and_logging_once() {
    let origin = Origin::start("o").await.expect("origin");
    let mut proxy = Filtered::new();
    point(proxy.router_mut(), "origin", &[origin.addr()]);
    let running = spawn(proxy.service());
    let addr = running.addr();
    let c = client();
    let with_token = |path: &str, token: &str| {
        Request::get(format!("http://{addr}{path}"))
            .header("x-token", token)
            .body(Full::new(Bytes::new()))
            .expect("request")
    };

    let (resp, _) = send(&c, with_token("/p?ok", "secret")).await;
    assert_eq!(resp.status(), 200);
    // early, request (fn), upstream_request, upstream_response (fn), response.
    assert_eq!(header(&resp, "x-phases"), Some("5"));
    assert!(header(&resp, "x-seen-xff").is_none());
    let seen = origin.last_headers().expect("origin saw it");
    assert_eq!(
        seen.get("x-user").map(|v| v.as_bytes()),
        Some(&b"alice"[..])
    );

    let (resp, body) = send(&c, get(addr, "/p?no-token", None)).await;
    assert_eq!(
        (resp.status().as_u16(), &body[..]),
        (401, &b"token please\n"[..])
    );
    let (resp, _) = send(&c, with_token("/p?bad-token", "wrong")).await;
    assert_eq!(resp.status(), 500);
    let (resp, _) = send(&c, with_token("/early-fail?early", "secret")).await;
    assert_eq!(resp.status(), 500);
    let (resp, _) = send(&c, get(addr, "/static?static", None)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        origin.requests(),
        1,
        "only the authorized request reached the origin"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while FILTER_LOG.lock().expect("log").len() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log: HashMap<String, (u16, Option<ErrorKind>, u32)> = FILTER_LOG
        .lock()
        .expect("log")
        .iter()
        .map(|(id, s, e, n)| (id.clone(), (*s, *e, *n)))
        .collect();
    assert_eq!(
        FILTER_LOG.lock().expect("log").len(),
        5,
        "logging ran once per request"
    );
    assert_eq!(log["ok"], (200, None, 5));
    // The proxy's own answers go through response_filter too (one phase more each).
    assert_eq!(log["no-token"], (401, None, 3));
    assert_eq!(log["bad-token"], (500, Some(ErrorKind::Filter), 3));
    assert_eq!(log["early"], (500, Some(ErrorKind::Filter), 2));
    // A route answer comes before request_filter.
    assert_eq!(log["static"], (200, None, 2));
}

proxy! {
    /// A pool whose first peer is down, with one retry, one without, and one with a short
    /// read timeout.
    pub Failover {
        listen "127.0.0.1:6188";
        upstream retried {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
            timeout connect 1s;
            retry 1;
        }
        upstream single {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
        }
        upstream slow {
            peers ["127.0.0.1:8003"];
            timeout read 200ms;
        }
        route path "/single" => upstream single;
        route path "/stall" => upstream slow;
        route => upstream retried;
    }
}

#[tokio::test]
async fn retry_moves_to_another_peer_and_pool_timeouts_apply() {
    let live = Origin::start("live").await.expect("origin");
    let refused = refused_port();
    let dead = refused.addr();
    let mut proxy = Failover::new();
    point(proxy.router_mut(), "retried", &[dead, live.addr()]);
    point(proxy.router_mut(), "single", &[dead, live.addr()]);
    point(proxy.router_mut(), "slow", &[live.addr()]);
    let running = spawn(proxy.service());
    let addr = running.addr();
    let c = client();
    for _ in 0..10 {
        let (resp, _) = send(&c, get(addr, "/", None)).await;
        assert_eq!(
            resp.status(),
            200,
            "a refused connect is retried on the live peer"
        );
        assert_eq!(header(&resp, "x-origin"), Some("live"));
    }
    // Without `retry`, a refused connect still goes to the other peer: nothing was sent.
    for _ in 0..4 {
        let (resp, _) = send(&c, get(addr, "/single", None)).await;
        assert_eq!(
            resp.status(),
            200,
            "a refused connect fails over by default"
        );
        assert_eq!(header(&resp, "x-origin"), Some("live"));
    }

    let started = Instant::now();
    let (resp, _) = send(&c, get(addr, "/stall", None)).await;
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the 200ms read timeout applied"
    );
}

static PICKED: AtomicUsize = AtomicUsize::new(0);
static PEER: Mutex<Option<SocketAddr>> = Mutex::new(None);

proxy! {
    /// `upstream_peer` chooses; route answers still apply; the rest falls through to it.
    pub Chooser {
        listen "127.0.0.1:6188";
        route path "/ping" => respond 200 "pong";
        upstream_peer(_session, _ctx) {
            PICKED.fetch_add(1, Ordering::Relaxed);
            let addr = (*PEER.lock().expect("peer")).ok_or(Error::new(ErrorKind::NoPeer, "unset"))?;
            HttpPeer::new(addr)
        }
        via "1.1 dsl-test";
        forwarded_for off;
        max_header_bytes 8192;
        client_timeout header_read 5s, body_read 5s, write 5s;
        max_idle_per_peer 8;
        keepalive on;
    }
}

#[tokio::test]
async fn user_upstream_peer_with_settings() {
    let origin = Origin::start("chosen").await.expect("origin");
    *PEER.lock().expect("peer") = Some(origin.addr());
    let running = spawn(Chooser::new().service());
    let addr = running.addr();
    let c = client();
    let (resp, body) = send(&c, get(addr, "/ping", None)).await;
    assert_eq!((resp.status().as_u16(), &body[..]), (200, &b"pong"[..]));
    assert_eq!(PICKED.load(Ordering::Relaxed), 0);
    let (resp, _) = send(&c, get(addr, "/anything", None)).await;
    assert_eq!(header(&resp, "x-origin"), Some("chosen"));
    assert_eq!(header(&resp, "via"), Some("1.1 dsl-test"));
    assert_eq!(PICKED.load(Ordering::Relaxed), 1);
    let seen = origin.last_headers().expect("seen");
    assert!(seen.get("x-forwarded-for").is_none(), "forwarded_for off");
    assert_eq!(
        seen.get("via").map(|v| v.as_bytes()),
        Some(&b"1.1 dsl-test"[..])
    );
    // max_header_bytes 8192: a 10 KB header is refused with 431.
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let reply = raw_exchange(addr, big.as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(Chooser::options().client.max_idle_per_peer, 8);
}

proxy! {
    /// Tower layers, first declared outermost.
    pub Layered {
        listen "127.0.0.1:6188";
        upstream origin {
            peers ["127.0.0.1:8001"];
        }
        layer tower::util::MapResponseLayer::new(|mut r: http::Response<pingora_dsl::proxy::ProxyBody<Layered>>| {
            r.headers_mut().insert("x-layer", HeaderValue::from_static("outer"));
            r
        });
        layer tower::util::MapResponseLayer::new(|mut r: http::Response<pingora_dsl::proxy::ProxyBody<Layered>>| {
            r.headers_mut().insert("x-layer", HeaderValue::from_static("inner"));
            r.headers_mut().insert("x-inner-ran", HeaderValue::from_static("yes"));
            r
        });
        layer tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_millis(300));
    }
}

#[tokio::test]
async fn layers_wrap_the_pipeline_in_declared_order() {
    let origin = Origin::start("o").await.expect("origin");
    let mut proxy = Layered::new();
    point(proxy.router_mut(), "origin", &[origin.addr()]);
    let running = spawn(proxy.service());
    let c = client();
    let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-layer"),
        Some("outer"),
        "the first layer runs last on the way out"
    );
    assert_eq!(header(&resp, "x-inner-ran"), Some("yes"));
    let started = Instant::now();
    let (resp, _) = send(&c, get(running.addr(), "/stall", None)).await;
    assert_eq!(resp.status(), 408, "the timeout layer answered");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn cli_overrides_listeners_and_peers() {
    let mut cli = ProxyCli {
        listen: vec!["127.0.0.1:7001".into(), "[::1]:7001".into()],
        upstream: vec!["api=127.0.0.1:9101".into(), "api=127.0.0.1:9102".into()],
        ..ProxyCli::default()
    };
    let mut proxy = Routed::new();
    cli.apply_upstreams(proxy.router_mut())
        .expect("valid overrides");
    let api = &proxy.router().groups()[1];
    assert_eq!(api.name(), "api");
    let ports: Vec<u16> = api.backends().iter().map(|b| b.addr.port()).collect();
    assert_eq!(ports, [9101, 9102]);
    assert_eq!(
        proxy.router().groups()[0].backends()[0].addr.port(),
        8001,
        "web untouched"
    );
    let mut service = proxy.service();
    cli.apply_listeners(&mut service);
    assert_eq!(service.tcp_addrs(), ["127.0.0.1:7001", "[::1]:7001"]);

    cli.upstream = vec!["127.0.0.1:9101".into()];
    let e = cli
        .apply_upstreams(Routed::new().router_mut())
        .expect_err("ambiguous");
    assert!(e.to_string().contains("GROUP="), "{e}");
    cli.upstream = vec!["nope=127.0.0.1:1".into()];
    let e = cli
        .apply_upstreams(Routed::new().router_mut())
        .expect_err("unknown group");
    assert!(e.to_string().contains("no upstream group \"nope\""), "{e}");
    cli.upstream = vec!["127.0.0.1:9101".into()];
    let mut blog = Blog::new();
    cli.apply_upstreams(blog.router_mut())
        .expect("one group needs no name");
    assert_eq!(blog.router().groups()[0].backends().len(), 1);
}

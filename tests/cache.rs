//! The HTTP cache declared in `proxy!` (`cache { ... }`), over real sockets, against a real
//! origin that counts what it is asked: what is stored and what is not (RFC 9111), `Vary`,
//! conditional and range requests answered from the cache, revalidation with a 304,
//! `stale-while-revalidate`, `stale-if-error` (an origin's 5xx, an origin gone), request
//! coalescing, bodies over `max_object` or cut off, invalidation by unsafe methods, purges
//! through the admin listener, and the counters.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use pingora_dsl::prelude::*;
use support::{client, count, fetch, point, send, wait_until};
use tokio::sync::Notify;

proxy! {
    /// A proxy-wide cache, a route without one, a route with its own small one, a route
    /// whose cache gives freshness to responses without their own, and a flaky pool.
    pub Cached {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        upstream flaky { peers ["127.0.0.1:8002"]; }
        upstream cut { peers ["127.0.0.1:8003"]; }
        cache {
            memory 16MiB;
            lock_timeout 10s;
            stale_if_error 1m;
            key header "x-tenant";
            key cookie "lang";
        }
        route path "/off" => upstream app { cache off; }
        route path "/small" => upstream app {
            cache { max_object 1KiB; ttl 1m; status_header "x-edge-cache"; }
        }
        route path "/ttl" => upstream app { cache { ttl 1m; } }
        route path "/brief" => upstream app { cache { lock_timeout 100ms; } }
        route path "/themed" => upstream app {
            cache { ttl 1m; key "${cookie.theme}-${header.x-device}"; }
        }
        route path "/down" => upstream flaky;
        route path "/cut" => upstream cut;
        route => upstream app;
    }
}

/// What the origin was asked: requests per path, and the last request's headers per path.
struct Asked {
    counts: Mutex<HashMap<String, usize>>,
    headers: Mutex<HashMap<String, HeaderMap>>,
    /// Held by `/slow` until released.
    release: Notify,
    /// `/flip/*` answers 503 once set.
    failing: std::sync::atomic::AtomicBool,
    /// `/gated` answers once this is true.
    gate: tokio::sync::watch::Sender<bool>,
}

impl Default for Asked {
    fn default() -> Self {
        Asked {
            counts: Mutex::default(),
            headers: Mutex::default(),
            release: Notify::new(),
            failing: std::sync::atomic::AtomicBool::new(false),
            gate: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Asked {
    fn count(&self, path: &str) -> usize {
        self.counts
            .lock()
            .expect("counts")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn last_headers(&self, path: &str) -> HeaderMap {
        self.headers
            .lock()
            .expect("headers")
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    for (name, value) in headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    response
}

/// The origin's answer to `req`, the `n`th request for its path.
async fn answer(asked: &Asked, req: &Request<Incoming>, n: usize) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let body = format!("{path} #{n}");
    let inm = req.headers().get("if-none-match").cloned();
    match path.as_str() {
        "/fresh" | "/off/x" | "/small/fits" => respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("content-type", "text/plain"),
            ],
            body,
        ),
        "/nostore" => respond(200, &[("cache-control", "no-store")], body),
        "/private" => respond(200, &[("cache-control", "private, max-age=60")], body),
        "/cookie" => respond(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            body,
        ),
        "/plain" | "/ttl/plain" | "/small/plain" => respond(200, &[], body),
        "/vary" => {
            let lang = req
                .headers()
                .get("accept-language")
                .map_or("none".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
            respond(
                200,
                &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
                format!("{body} {lang}"),
            )
        }
        "/varystar" => respond(200, &[("cache-control", "max-age=60"), ("vary", "*")], body),
        // Stale at once, revalidated each time: a 304 while the ETag matches.
        "/revalidate" => match inm {
            Some(tag) if tag == "\"r1\"" => respond(
                304,
                &[
                    ("etag", "\"r1\""),
                    ("cache-control", "no-cache"),
                    ("x-refreshed", &n.to_string()),
                ],
                "",
            ),
            _ => respond(
                200,
                &[("etag", "\"r1\""), ("cache-control", "no-cache")],
                body,
            ),
        },
        // Revalidated by date: a 304 while If-Modified-Since is this Last-Modified.
        "/dated" => {
            let modified = "Sat, 01 Jan 2022 00:00:00 GMT";
            match req.headers().get("if-modified-since") {
                Some(since) if since == modified => {
                    respond(304, &[("cache-control", "no-cache")], "")
                }
                _ => respond(
                    200,
                    &[("cache-control", "no-cache"), ("last-modified", modified)],
                    body,
                ),
            }
        }
        "/swr" => respond(
            200,
            &[("cache-control", "max-age=0, stale-while-revalidate=60")],
            body,
        ),
        "/flip/sie" => {
            if asked.failing.load(std::sync::atomic::Ordering::SeqCst) {
                respond(503, &[], "origin down")
            } else {
                respond(
                    200,
                    &[("cache-control", "max-age=0, stale-if-error=60")],
                    body,
                )
            }
        }
        "/flip/must" => {
            if asked.failing.load(std::sync::atomic::Ordering::SeqCst) {
                respond(503, &[], "origin down")
            } else {
                respond(
                    200,
                    &[("cache-control", "max-age=0, must-revalidate")],
                    body,
                )
            }
        }
        "/slow" => {
            asked.release.notified().await;
            respond(200, &[("cache-control", "max-age=60")], body)
        }
        "/gated" | "/brief/gated" => {
            let mut open = asked.gate.subscribe();
            let _ = open.wait_for(|open| *open).await;
            respond(200, &[("cache-control", "no-store")], body)
        }
        "/small/big" | "/big" => respond(200, &[("cache-control", "max-age=60")], vec![b'x'; 4096]),
        "/public-auth" => respond(200, &[("cache-control", "public, max-age=60")], body),
        _ => respond(404, &[("cache-control", "max-age=60")], body),
    }
}

/// The origin: answers by path, counting and recording each request.
async fn start_origin(asked: Arc<Asked>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let asked = asked.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let asked = asked.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let n = {
                            let mut counts = asked.counts.lock().expect("counts");
                            let n = counts.entry(path.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        asked
                            .headers
                            .lock()
                            .expect("headers")
                            .insert(path, req.headers().clone());
                        Ok::<_, Infallible>(answer(&asked, &req, n).await)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

/// An origin that writes `answer` to each connection after its request head, counting the
/// connections; it serves until its task is aborted (then its port refuses).
async fn start_raw_origin(
    answer: Vec<u8>,
) -> (
    SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = pingora_dsl_suite::origin::read_request_head(&mut stream).await;
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &answer).await;
        }
    });
    (addr, accepted, task)
}

/// Answers that stop halfway: 1,000 bytes announced, 500 sent, then the connection closed.
fn cut_answer() -> Vec<u8> {
    let mut answer =
        b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 1000\r\n\r\n".to_vec();
    answer.extend_from_slice(&[b'c'; 500]);
    answer
}

/// A fresh-for-no-time 200 that may be served stale on errors, closing the connection.
const FLAKY_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncache-control: max-age=0, stale-if-error=60\r\n\
etag: \"d1\"\r\ncontent-length: 4\r\nconnection: close\r\n\r\nup!\n";

struct Running {
    proxy: pingora_dsl::downstream::RunningService,
    admin: pingora_dsl::downstream::RunningService,
    asked: Arc<Asked>,
    flaky: tokio::task::JoinHandle<()>,
    flaky_addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicUsize>,
    caches: Vec<(String, Arc<pingora_dsl::proxy::cache::HttpCache>)>,
}

async fn start() -> Running {
    let asked = Arc::new(Asked::default());
    let origin = start_origin(asked.clone()).await;
    let (flaky_addr, _, flaky) = start_raw_origin(FLAKY_ANSWER.to_vec()).await;
    let (cut_addr, cut, _) = start_raw_origin(cut_answer()).await;
    let mut proxy = Cached::new();
    point(proxy.router_mut(), "app", &[origin]);
    point(proxy.router_mut(), "flaky", &[flaky_addr]);
    point(proxy.router_mut(), "cut", &[cut_addr]);
    let caches = proxy.router().caches();
    let (proxy, admin) = support::start_with_admin(proxy.service());
    Running {
        proxy,
        admin,
        asked,
        flaky,
        flaky_addr,
        cut,
        caches,
    }
}

impl Running {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (Response<()>, Bytes) {
        self.request("GET", path, headers).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Response<()>, Bytes) {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy.addr()));
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        send(&client(), b.body(Full::new(Bytes::new())).expect("request")).await
    }

    fn cache(&self, label: &str) -> &pingora_dsl::proxy::cache::HttpCache {
        &self
            .caches
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("a cache for {label}"))
            .1
    }
}

fn x_cache(response: &Response<()>) -> &str {
    response
        .headers()
        .get("x-cache")
        .map_or("-", |v| v.to_str().unwrap_or("?"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_response_is_stored_and_served_with_its_age() {
    let run = start().await;
    let (first, body) = run.get("/fresh", &[]).await;
    assert_eq!((first.status().as_u16(), x_cache(&first)), (200, "MISS"));
    assert_eq!(body, "/fresh #1");
    for _ in 0..3 {
        let (hit, body) = run.get("/fresh", &[]).await;
        assert_eq!((hit.status().as_u16(), x_cache(&hit)), (200, "HIT"));
        assert_eq!(body, "/fresh #1", "the stored body");
        assert!(hit.headers().contains_key("age"), "{:?}", hit.headers());
        assert_eq!(hit.headers()["etag"], "\"v1\"");
        assert_eq!(hit.headers()["content-length"], "9");
    }
    assert_eq!(
        run.asked.count("/fresh"),
        1,
        "one request reached the origin"
    );
    // HEAD from the stored GET: the same head, no body, no origin request.
    let (head, body) = run.request("HEAD", "/fresh", &[]).await;
    assert_eq!((head.status().as_u16(), x_cache(&head)), (200, "HIT"));
    assert_eq!(head.headers()["content-length"], "9");
    assert!(body.is_empty());
    // The key has the declared header: another tenant has its own entry.
    let (other, _) = run.get("/fresh", &[("x-tenant", "b")]).await;
    assert_eq!(x_cache(&other), "MISS");
    assert_eq!(run.asked.count("/fresh"), 2);
    let stats = run.cache("proxy").stats();
    assert_eq!(
        (stats.hits.get(), stats.misses.get(), stats.stored.get()),
        (4, 2, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_may_not_be_stored_is_not() {
    let run = start().await;
    for path in ["/nostore", "/private", "/cookie", "/plain", "/varystar"] {
        for _ in 0..2 {
            let (response, _) = run.get(path, &[]).await;
            assert_eq!(x_cache(&response), "MISS", "{path}");
        }
        assert_eq!(
            run.asked.count(path),
            2,
            "{path}: every request reached the origin"
        );
    }
    // Without freshness of its own, a response is stored only where a `ttl` is declared.
    run.get("/ttl/plain", &[]).await;
    let (hit, body) = run.get("/ttl/plain", &[]).await;
    assert_eq!((x_cache(&hit), &body[..]), ("HIT", &b"/ttl/plain #1"[..]));
    // A request with Authorization shares only what the response allows.
    run.get("/fresh", &[]).await;
    let (auth, _) = run.get("/fresh", &[("authorization", "Bearer t")]).await;
    assert_eq!(
        x_cache(&auth),
        "MISS",
        "max-age alone does not allow sharing"
    );
    run.get("/public-auth", &[("authorization", "Bearer t")])
        .await;
    let (shared, _) = run
        .get("/public-auth", &[("authorization", "Bearer u")])
        .await;
    assert_eq!(x_cache(&shared), "HIT", "public allows it");
    // A route with `cache off` has no cache at all.
    for _ in 0..2 {
        let (response, _) = run.get("/off/x", &[]).await;
        assert!(!response.headers().contains_key("x-cache"));
    }
    assert_eq!(run.asked.count("/off/x"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_are_kept_apart_by_vary() {
    let run = start().await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(x_cache(&run.get("/vary", &en).await.0), "MISS");
    let (hit, body) = run.get("/vary", &en).await;
    assert_eq!((x_cache(&hit), &body[..]), ("HIT", &b"/vary #1 en"[..]));
    let (miss, body) = run.get("/vary", &fr).await;
    assert_eq!((x_cache(&miss), &body[..]), ("MISS", &b"/vary #2 fr"[..]));
    let (hit, body) = run.get("/vary", &fr).await;
    assert_eq!((x_cache(&hit), &body[..]), ("HIT", &b"/vary #2 fr"[..]));
    let (hit, body) = run.get("/vary", &en).await;
    assert_eq!((x_cache(&hit), &body[..]), ("HIT", &b"/vary #1 en"[..]));
    let (none, _) = run.get("/vary", &[]).await;
    assert_eq!(
        x_cache(&none),
        "MISS",
        "no Accept-Language is a variant too"
    );
    assert_eq!(run.asked.count("/vary"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditionals_and_ranges_are_answered_from_the_cache() {
    let run = start().await;
    run.get("/fresh", &[]).await;
    let (not_modified, body) = run.get("/fresh", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (not_modified.status().as_u16(), x_cache(&not_modified)),
        (304, "HIT")
    );
    assert!(body.is_empty());
    let (changed, body) = run.get("/fresh", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(
        (changed.status().as_u16(), &body[..]),
        (200, &b"/fresh #1"[..])
    );
    let (part, body) = run.get("/fresh", &[("range", "bytes=1-5")]).await;
    assert_eq!(part.status(), 206);
    assert_eq!(&body[..], b"fresh");
    assert_eq!(part.headers()["content-range"], "bytes 1-5/9");
    let (past, _) = run.get("/fresh", &[("range", "bytes=100-")]).await;
    assert_eq!(past.status(), 416);
    assert_eq!(
        run.asked.count("/fresh"),
        1,
        "all from the one stored response"
    );
    // A range on a miss goes upstream as asked and is not stored.
    let (_, _) = run.get("/nothing-yet", &[("range", "bytes=0-1")]).await;
    let last = run.asked.last_headers("/nothing-yet");
    assert_eq!(last["range"], "bytes=0-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_is_revalidated_with_its_etag() {
    let run = start().await;
    let (first, body) = run.get("/revalidate", &[]).await;
    assert_eq!(
        (x_cache(&first), &body[..]),
        ("MISS", &b"/revalidate #1"[..])
    );
    let (again, body) = run
        .get("/revalidate", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(x_cache(&again), "REVALIDATED");
    assert_eq!(
        (again.status().as_u16(), &body[..]),
        (200, &b"/revalidate #1"[..])
    );
    assert_eq!(
        again.headers()["x-refreshed"],
        "2",
        "the 304's fields are stored"
    );
    let sent = run.asked.last_headers("/revalidate");
    assert_eq!(
        sent["if-none-match"], "\"r1\"",
        "the cache's validator, not the client's"
    );
    // A client whose copy matches gets a 304 after the revalidation.
    let (mine, body) = run.get("/revalidate", &[("if-none-match", "\"r1\"")]).await;
    assert_eq!(
        (mine.status().as_u16(), x_cache(&mine)),
        (304, "REVALIDATED")
    );
    assert!(body.is_empty());
    assert_eq!(run.asked.count("/revalidate"), 3);
    assert_eq!(run.cache("proxy").stats().revalidated.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes() {
    let run = start().await;
    run.get("/swr", &[]).await;
    let (stale, body) = run.get("/swr", &[]).await;
    assert_eq!((x_cache(&stale), &body[..]), ("STALE", &b"/swr #1"[..]));
    // The background refresh stores the origin's next answer.
    let asked = run.asked.clone();
    wait_until(Duration::from_secs(10), "the background refresh", || {
        asked.count("/swr") == 2
    })
    .await;
    let cache = run.cache("proxy");
    wait_until(
        Duration::from_secs(10),
        "the refreshed response stored",
        || cache.stats().stored.get() == 2,
    )
    .await;
    let (stale, body) = run.get("/swr", &[]).await;
    assert_eq!((x_cache(&stale), &body[..]), ("STALE", &b"/swr #2"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_covers_an_origin_that_fails_or_is_gone() {
    let run = start().await;
    run.get("/flip/sie", &[]).await;
    run.get("/flip/must", &[]).await;
    run.asked
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (stale, body) = run.get("/flip/sie", &[]).await;
    assert_eq!((stale.status().as_u16(), x_cache(&stale)), (200, "STALE"));
    assert_eq!(body, "/flip/sie #1");
    let (refused, _) = run.get("/flip/must", &[]).await;
    assert_eq!(refused.status(), 503, "must-revalidate: never served stale");
    // The origin gone: refused connections, answered from the cache.
    let (up, body) = run.get("/down", &[]).await;
    assert_eq!((up.status().as_u16(), &body[..]), (200, &b"up!\n"[..]));
    run.flaky.abort();
    let gone = run.flaky_addr;
    support::wait_until_async(
        Duration::from_secs(10),
        "the flaky origin's port refusing",
        || async move { tokio::net::TcpStream::connect(gone).await.is_err() },
    )
    .await;
    let (stale, body) = run.get("/down", &[]).await;
    assert_eq!((stale.status().as_u16(), x_cache(&stale)), (200, "STALE"));
    assert_eq!(&body[..], b"up!\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_send_one_request_upstream() {
    let run = Arc::new(start().await);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let run = run.clone();
            tokio::spawn(async move { run.get("/slow", &[]).await })
        })
        .collect();
    let cache = run.cache("proxy");
    wait_until(Duration::from_secs(10), "seven requests waiting", || {
        cache.stats().coalesced.get() == 7
    })
    .await;
    assert_eq!(run.asked.count("/slow"), 1);
    run.asked.release.notify_one();
    let mut labels = Vec::new();
    for request in requests {
        let (response, body) = request.await.expect("request");
        assert_eq!(body, "/slow #1");
        labels.push(x_cache(&response).to_owned());
    }
    labels.sort();
    assert_eq!(
        labels.iter().filter(|l| *l == "HIT").count(),
        7,
        "{labels:?}"
    );
    assert_eq!(
        labels.iter().filter(|l| *l == "MISS").count(),
        1,
        "{labels:?}"
    );
    assert_eq!(run.asked.count("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_object_pass_through_uncached() {
    let run = start().await;
    for _ in 0..2 {
        let (response, body) = run.get("/small/big", &[]).await;
        assert_eq!(body.len(), 4096);
        assert_eq!(
            response.headers()["x-edge-cache"],
            "MISS",
            "the route's own header"
        );
    }
    assert_eq!(run.asked.count("/small/big"), 2);
    run.get("/small/fits", &[]).await;
    let (hit, _) = run.get("/small/fits", &[]).await;
    assert_eq!(hit.headers()["x-edge-cache"], "HIT");
    let own = run.cache("/small");
    assert_eq!(
        own.stats().stored.get(),
        1,
        "the route's cache, not the proxy's"
    );
    assert_eq!(run.cache("proxy").stats().stored.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_and_purges_remove() {
    let run = start().await;
    run.get("/fresh", &[]).await;
    let (post, _) = run.request("POST", "/fresh", &[]).await;
    assert_eq!(x_cache(&post), "BYPASS");
    assert_eq!(
        x_cache(&run.get("/fresh", &[]).await.0),
        "MISS",
        "invalidated by the POST"
    );
    assert_eq!(x_cache(&run.get("/fresh", &[]).await.0), "HIT");
    // Purge by key, then by prefix, through the admin listener.
    let admin = run.admin.addr();
    let key = format!("http://{}/fresh", run.proxy.addr());
    let purge = |query: String| {
        let req = Request::builder()
            .method("PURGE")
            .uri(format!("http://{admin}/cache?{query}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        async move { send(&client(), req).await }
    };
    let (purged, body) = purge(format!("key={}", percent(&key))).await;
    assert_eq!(purged.status(), 200, "{body:?}");
    assert!(
        String::from_utf8_lossy(&body).contains("\"purged\": 1"),
        "{body:?}"
    );
    assert_eq!(x_cache(&run.get("/fresh", &[]).await.0), "MISS");
    run.get("/vary", &[]).await;
    let prefix = format!("http://{}/", run.proxy.addr());
    let (purged, body) = purge(format!("prefix={}", percent(&prefix))).await;
    assert_eq!(purged.status(), 200);
    assert!(
        String::from_utf8_lossy(&body).contains("\"purged\": 2"),
        "{body:?}"
    );
    assert_eq!(x_cache(&run.get("/vary", &[]).await.0), "MISS");
    // Counters in the metrics.
    let metrics = fetch(admin, "/metrics").await;
    assert!(
        count(
            &metrics,
            "pingora_dsl_cache_purged_total",
            &[("cache", "proxy")]
        ) >= 3
    );
    assert!(
        count(
            &metrics,
            "pingora_dsl_cache_hits_total",
            &[("cache", "proxy")]
        ) >= 1
    );
    let (bad, _) = purge("nothing=1".to_owned()).await;
    assert_eq!(bad.status(), 400);
}

/// `s` percent-encoded for a query value.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_memory_evicts_is_read_back_from_the_disk_tier() {
    let asked = Arc::new(Asked::default());
    let origin = start_origin(asked.clone()).await;
    let dir = std::env::temp_dir().join(format!("pdsl-cache-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut proxy = Cached::new();
    point(proxy.router_mut(), "app", &[origin]);
    // A memory tier that holds about two of these objects, and a disk tier for the rest.
    let cache = proxy.router_mut().cache_mut().expect("the proxy's cache");
    *cache = std::mem::take(cache)
        .memory_budget(10 * 1024)
        .disk(&dir, 16 << 20);
    proxy.router().check_caches().expect("the disk tier opens");
    let caches = proxy.router().caches();
    let (proxy, _admin) = support::start_with_admin(proxy.service());
    let get = |path: String| {
        let request = support::get(proxy.addr(), &path, None);
        async move { send(&client(), request).await }
    };
    for i in 0..8 {
        let (response, body) = get(format!("/big?{i}")).await;
        assert_eq!((x_cache(&response), body.len()), ("MISS", 4096));
    }
    let cache = caches[0].1.clone();
    wait_until(Duration::from_secs(10), "eight objects on disk", || {
        cache.disk_store().is_some_and(|d| d.usage().1 == 8)
    })
    .await;
    assert!(
        cache.stats().evictions.get() > 0,
        "memory could not keep them all"
    );
    for i in 0..8 {
        let (response, body) = get(format!("/big?{i}")).await;
        assert_eq!(
            (x_cache(&response), body.len()),
            ("HIT", 4096),
            "object {i}"
        );
    }
    assert_eq!(
        asked.count("/big"),
        8,
        "every answer after the first from a tier"
    );
    assert!(cache.stats().disk_loads.get() > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_off_upstream_is_never_stored() {
    let run = start().await;
    for expected in 1..=2 {
        let request = support::get(run.proxy.addr(), "/cut", None);
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let response = client().request(request).await.ok()?;
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .ok()
        })
        .await
        .expect("within 10 s");
        assert!(outcome.is_none(), "the client sees the body break");
        assert_eq!(
            run.cut.load(std::sync::atomic::Ordering::SeqCst),
            expected,
            "each request went to the origin"
        );
    }
    assert_eq!(run.cache("proxy").stats().stored.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_go_upstream_themselves_when_the_fill_is_not_storable() {
    let run = Arc::new(start().await);
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let run = run.clone();
            tokio::spawn(async move { run.get("/gated", &[]).await })
        })
        .collect();
    let cache = run.cache("proxy");
    let asked = run.asked.clone();
    wait_until(
        Duration::from_secs(10),
        "one request upstream, two waiting",
        || cache.stats().coalesced.get() == 2 && asked.count("/gated") == 1,
    )
    .await;
    run.asked.gate.send_replace(true);
    for request in requests {
        let (response, _) = request.await.expect("request");
        assert_eq!(
            (response.status().as_u16(), x_cache(&response)),
            (200, "MISS")
        );
    }
    assert_eq!(
        run.asked.count("/gated"),
        3,
        "no-store: each waiter asked for itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_is_revalidated_with_its_last_modified() {
    let run = start().await;
    run.get("/dated", &[]).await;
    let (again, body) = run.get("/dated", &[]).await;
    assert_eq!(
        (x_cache(&again), &body[..]),
        ("REVALIDATED", &b"/dated #1"[..])
    );
    let sent = run.asked.last_headers("/dated");
    assert_eq!(sent["if-modified-since"], "Sat, 01 Jan 2022 00:00:00 GMT");
    assert!(
        !sent.contains_key("if-none-match"),
        "no ETag stored, none sent"
    );
    let (mine, _) = run
        .get(
            "/dated",
            &[("if-modified-since", "Sun, 02 Jan 2022 00:00:00 GMT")],
        )
        .await;
    assert_eq!(mine.status(), 304, "the client's copy is as new");
    assert_eq!(run.asked.count("/dated"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_cookie_is_part_of_the_key() {
    let run = start().await;
    let en = [("cookie", "session=1; lang=en")];
    let fr = [("cookie", "lang=fr; session=1")];
    assert_eq!(x_cache(&run.get("/fresh", &en).await.0), "MISS");
    assert_eq!(x_cache(&run.get("/fresh", &en).await.0), "HIT");
    assert_eq!(x_cache(&run.get("/fresh", &fr).await.0), "MISS");
    let other_session = [("cookie", "session=2; lang=fr")];
    assert_eq!(
        x_cache(&run.get("/fresh", &other_session).await.0),
        "HIT",
        "only the declared cookie counts"
    );
    assert_eq!(x_cache(&run.get("/fresh", &[]).await.0), "MISS");
    assert_eq!(run.asked.count("/fresh"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_longer_than_lock_timeout_goes_upstream_itself() {
    let run = Arc::new(start().await);
    let first = {
        let run = run.clone();
        tokio::spawn(async move { run.get("/brief/gated", &[]).await })
    };
    let asked = run.asked.clone();
    wait_until(
        Duration::from_secs(10),
        "the first request upstream",
        || asked.count("/brief/gated") == 1,
    )
    .await;
    let second = {
        let run = run.clone();
        tokio::spawn(async move { run.get("/brief/gated", &[]).await })
    };
    // Past its 100 ms wait, the second asks the origin itself, the first still pending.
    wait_until(
        Duration::from_secs(10),
        "the second request upstream",
        || asked.count("/brief/gated") == 2,
    )
    .await;
    assert!(!first.is_finished());
    run.asked.gate.send_replace(true);
    for request in [first, second] {
        let (response, _) = request.await.expect("request");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(run.cache("/brief").stats().coalesced.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_each_cache() {
    let run = start().await;
    run.get("/fresh", &[]).await;
    run.get("/fresh", &[]).await;
    let status: serde_json::Value =
        serde_json::from_str(&fetch(run.admin.addr(), "/status.json").await).expect("json");
    let caches = &status["services"][0]["caches"];
    let proxy = caches
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["label"] == "proxy")
        .expect("the proxy's cache");
    assert_eq!(
        (proxy["hits"].as_u64(), proxy["misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(proxy["objects"].as_u64(), Some(1));
    let page = fetch(run.admin.addr(), "/status").await;
    assert!(page.contains("<table class=\"caches\">"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_template_of_variables_keeps_variants_apart() {
    let run = start().await;
    let dark_phone = [("cookie", "theme=dark"), ("x-device", "phone")];
    let dark_desk = [("cookie", "theme=dark"), ("x-device", "desk")];
    assert_eq!(
        x_cache(&run.get("/themed/page", &dark_phone).await.0),
        "MISS"
    );
    assert_eq!(
        x_cache(&run.get("/themed/page", &dark_phone).await.0),
        "HIT"
    );
    assert_eq!(
        x_cache(&run.get("/themed/page", &dark_desk).await.0),
        "MISS"
    );
    assert_eq!(x_cache(&run.get("/themed/page", &dark_desk).await.0), "HIT");
    assert_eq!(x_cache(&run.get("/themed/page", &[]).await.0), "MISS");
    assert_eq!(run.asked.count("/themed/page"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_on_a_miss_stores_nothing_for_the_gets_after_it() {
    let run = start().await;
    let (head, body) = run.request("HEAD", "/public-auth", &[]).await;
    assert_eq!((head.status().as_u16(), x_cache(&head)), (200, "MISS"));
    assert!(body.is_empty());
    let (get, body) = run.get("/public-auth", &[]).await;
    assert_eq!(
        (x_cache(&get), &body[..]),
        ("MISS", &b"/public-auth #2"[..])
    );
    let (hit, body) = run.get("/public-auth", &[]).await;
    assert_eq!((x_cache(&hit), &body[..]), ("HIT", &b"/public-auth #2"[..]));
    let (head, _) = run.request("HEAD", "/public-auth", &[]).await;
    assert_eq!(x_cache(&head), "HIT");
    assert_eq!(head.headers()["content-length"], "15");
}

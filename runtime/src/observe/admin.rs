//! The admin listener: Prometheus metrics at `/metrics`, a live status page at `/status`
//! and the same data as JSON at `/status.json`, for every service it watches.
//!
//! The counters live where they are counted ([`crate::metrics`]); the admin listener reads
//! them only when asked, through one [`Observer`] per watched service. A declared proxy
//! started with `--admin ADDR` (or `admin "ADDR";`, or `[server] admin`) watches itself;
//! by hand:
//!
//! ```no_run
//! use pingora_dsl_runtime::observe::admin::Admin;
//! use pingora_dsl_runtime::service::Observable;
//! use pingora_dsl_runtime::lb::{Backend, Strategy};
//! use pingora_dsl_runtime::server::{Server, ServerConf};
//! use pingora_dsl_runtime::l4::tcp::TcpProxyService;
//! use pingora_dsl_runtime::lb::UpstreamGroup;
//!
//! let peers = vec![Backend::new("127.0.0.1:5432".parse().unwrap())];
//! let mut db = TcpProxyService::new("db", UpstreamGroup::new("pg", peers, Strategy::round_robin()));
//! db.add_tcp("127.0.0.1:6432");
//! let admin = Admin::new();
//! admin.watch(db.observer());
//! let mut server = Server::new(ServerConf::default());
//! server.add_service(admin.service("127.0.0.1:9100"));
//! server.add_service(db);
//! server.run_forever();
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Ready;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::Encoder as _;
use serde::Serialize;
use MetricType::{COUNTER, GAUGE, HISTOGRAM};

use super::metric_family::Family;
use crate::downstream::{serve_handler, HttpService, ServeHandler};
use crate::lb::PeerState;
use crate::metrics::{ListenerStats, RouteStats, STATUS_CLASSES};
use crate::service::{Observer, ServiceView};

struct Inner {
    observers: RwLock<Vec<Observer>>,
    registry: prometheus::Registry,
    started: Instant,
    /// The counts at the previous status request, for rates.
    previous: Mutex<Option<Sample>>,
}

impl Inner {
    /// Every watched service as it is now.
    fn views(&self) -> Vec<ServiceView> {
        match self.observers.read() {
            Ok(list) => list.iter().map(|o| o()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Request and error totals keyed by route or peer, at one moment.
struct Sample {
    at: Instant,
    counts: HashMap<String, (u64, u64)>,
}

/// The admin listener's state: the watched services and a Prometheus registry (to which
/// users may add their own metrics). Cheap to clone.
#[derive(Clone)]
pub struct Admin(Arc<Inner>);

impl Default for Admin {
    fn default() -> Self {
        Admin::new()
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin listener watching nothing yet.
    pub fn new() -> Self {
        let admin = Admin(Arc::new(Inner {
            observers: RwLock::new(Vec::new()),
            registry: prometheus::Registry::new(),
            started: Instant::now(),
            previous: Mutex::new(None),
        }));
        let collector = Collector(Arc::downgrade(&admin.0));
        if let Err(e) = admin.0.registry.register(Box::new(collector)) {
            tracing::error!(error = %e, "cannot register the proxy metrics");
        }
        admin
    }

    /// Watches a service: its counters appear in every scrape from now on.
    pub fn watch(&self, observer: Observer) {
        if let Ok(mut list) = self.0.observers.write() {
            list.push(observer);
        }
    }

    /// The registry `/metrics` serves; register your own collectors in it.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.0.registry
    }

    /// A listening service named `admin` serving this admin's pages on `addr`.
    pub fn service(&self, addr: &str) -> HttpService<ServeHandler<AdminHandler>> {
        let mut service = serve_handler("admin", AdminHandler(self.clone()));
        service.add_tcp(addr);
        service
    }

    fn views(&self) -> Vec<ServiceView> {
        self.0.views()
    }

    /// Everything in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let families = self.0.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The status of every watched service, with rates since the previous call (at
    /// least a second ago; `None` on the first).
    pub fn status(&self) -> Status {
        let views = self.views();
        let now = Instant::now();
        let mut counts = HashMap::new();
        let mut services: Vec<ServiceStatus> = views
            .iter()
            .map(|v| service_status(v, &mut counts))
            .collect();
        let Ok(mut previous) = self.0.previous.lock() else {
            return Status::new(self.0.started, services);
        };
        if let Some(prev) = previous.as_ref() {
            let secs = now.duration_since(prev.at).as_secs_f64();
            if secs >= 0.25 {
                let rate = |key: &str, now: (u64, u64)| {
                    prev.counts.get(key).map(|then| {
                        (
                            now.0.saturating_sub(then.0) as f64 / secs,
                            now.1.saturating_sub(then.1) as f64 / secs,
                        )
                    })
                };
                for s in &mut services {
                    for r in &mut s.routes {
                        let key = format!("{}\0route\0{}", s.name, r.label);
                        if let Some((req, err)) = rate(&key, (r.requests, r.server_errors)) {
                            r.request_rate = Some(req);
                            r.error_rate = Some(err);
                        }
                    }
                    for pool in &mut s.pools {
                        for p in &mut pool.peers {
                            let key = format!("{}\0{}\0{}", s.name, pool.name, p.addr);
                            if let Some((req, err)) = rate(&key, (p.requests, p.errors)) {
                                p.request_rate = Some(req);
                                p.error_rate = Some(err);
                            }
                        }
                    }
                }
            }
        }
        if previous
            .as_ref()
            .is_none_or(|p| now.duration_since(p.at).as_secs_f64() >= 1.0)
        {
            *previous = Some(Sample { at: now, counts });
        }
        Status::new(self.0.started, services)
    }

    fn respond(&self, method: &Method, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        if path == "/cache" && (method.as_str() == "PURGE" || method == Method::DELETE) {
            return match super::cache_admin::purge(&self.views(), query) {
                Ok(body) => text(StatusCode::OK, "application/json", body),
                Err(why) => text(StatusCode::BAD_REQUEST, "text/plain", why.into()),
            };
        }
        if method != Method::GET && method != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match path {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics_text(),
            ),
            "/status.json" => {
                let body = serde_json::to_string_pretty(&self.status()).unwrap_or_default();
                text(StatusCode::OK, "application/json", body)
            }
            "/status" | "/" => text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                status_page(&self.status()),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics, /status or /status.json\n".into(),
            ),
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

/// The admin listener's request handler.
#[derive(Clone, Debug)]
pub struct AdminHandler(Admin);

impl<B> tower_service::Service<Request<B>> for AdminHandler {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let uri = request.uri();
        std::future::ready(Ok(self.0.respond(
            request.method(),
            uri.path(),
            uri.query(),
        )))
    }
}

/// What `/status.json` serves.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Seconds since the admin listener started.
    pub uptime_seconds: f64,
    /// Every watched service.
    pub services: Vec<ServiceStatus>,
}

impl Status {
    fn new(started: Instant, services: Vec<ServiceStatus>) -> Self {
        Status {
            uptime_seconds: started.elapsed().as_secs_f64(),
            services,
        }
    }
}

/// One service on the status page.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// `http`, `tcp` or `udp`.
    pub kind: &'static str,
    /// Downstream connections open now.
    pub connections_open: Option<u64>,
    /// Downstream connections accepted.
    pub connections_accepted: Option<u64>,
    /// Failed TLS handshakes with clients.
    pub tls_failures: Option<u64>,
    /// Requests in flight.
    pub active_requests: Option<u64>,
    /// Routes, in match order (plus `(no route)` for requests none took).
    pub routes: Vec<RouteStatus>,
    /// Upstream pools.
    pub pools: Vec<PoolStatus>,
    /// HTTP caches.
    pub caches: Vec<super::cache_admin::CacheStatus>,
    /// Rate limits shared through Redis.
    pub shared_limits: Vec<super::shared_limit_admin::SharedLimitStatus>,
}

/// One route on the status page.
#[derive(Debug, Serialize)]
pub struct RouteStatus {
    /// Its label.
    pub label: String,
    /// What it does.
    pub target: String,
    /// Finished requests.
    pub requests: u64,
    /// Finished requests by status class.
    pub responses: HashMap<&'static str, u64>,
    /// Of those, 5xx.
    pub server_errors: u64,
    /// Requests per second lately.
    pub request_rate: Option<f64>,
    /// 5xx responses per second lately.
    pub error_rate: Option<f64>,
    /// Mean request duration in milliseconds.
    pub mean_duration_ms: Option<f64>,
}

/// One upstream pool on the status page.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    /// The group's name.
    pub name: String,
    /// Its peers.
    pub peers: Vec<PeerStatus>,
}

/// One peer on the status page.
#[derive(Debug, Serialize)]
pub struct PeerStatus {
    /// Its address.
    pub addr: String,
    /// Its weight.
    pub weight: u32,
    /// `up`, `down` (failed active checks) or `ejected` (failed requests).
    pub state: &'static str,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent.
    pub requests: u64,
    /// Of those, failed on the peer's side.
    pub errors: u64,
    /// Requests per second lately.
    pub request_rate: Option<f64>,
    /// Errors per second lately.
    pub error_rate: Option<f64>,
    /// New connections opened.
    pub connections_new: u64,
    /// Requests over reused connections.
    pub connections_reused: u64,
    /// Times ejected.
    pub ejections: u64,
}

fn peer_state(p: &PeerState) -> &'static str {
    if !p.is_healthy() {
        "down"
    } else if p.is_ejected() {
        "ejected"
    } else {
        "up"
    }
}

fn route_status(label: String, target: String, s: &RouteStats) -> RouteStatus {
    let count = s.duration.count();
    RouteStatus {
        label,
        target,
        requests: s.requests(),
        responses: STATUS_CLASSES
            .iter()
            .zip(&s.responses)
            .map(|(class, c)| (*class, c.get()))
            .collect(),
        server_errors: s.server_errors(),
        request_rate: None,
        error_rate: None,
        mean_duration_ms: (count > 0).then(|| s.duration.sum() * 1000.0 / count as f64),
    }
}

fn service_status(v: &ServiceView, counts: &mut HashMap<String, (u64, u64)>) -> ServiceStatus {
    let mut routes: Vec<RouteStatus> = v
        .routes
        .iter()
        .map(|r| route_status(r.label.clone(), r.target.clone(), &r.stats))
        .collect();
    if let Some(p) = &v.proxy {
        if p.unrouted.requests() > 0 || routes.is_empty() {
            routes.push(route_status("(no route)".into(), "-".into(), &p.unrouted));
        }
    }
    for r in &routes {
        counts.insert(
            format!("{}\0route\0{}", v.name, r.label),
            (r.requests, r.server_errors),
        );
    }
    let pools = v
        .groups
        .iter()
        .map(|g| PoolStatus {
            name: g.name().to_owned(),
            peers: g
                .peers()
                .iter()
                .map(|p| {
                    let s = p.stats();
                    let status = PeerStatus {
                        addr: p.addr().to_string(),
                        weight: p.backend().weight,
                        state: peer_state(p),
                        in_flight: p.in_flight() as u64,
                        requests: s.requests.get(),
                        errors: s.errors.get(),
                        request_rate: None,
                        error_rate: None,
                        connections_new: s.connections_new.get(),
                        connections_reused: s.connections_reused.get(),
                        ejections: s.ejections.get(),
                    };
                    counts.insert(
                        format!("{}\0{}\0{}", v.name, g.name(), status.addr),
                        (status.requests, status.errors),
                    );
                    status
                })
                .collect(),
        })
        .collect();
    ServiceStatus {
        name: v.name.clone(),
        kind: v.kind,
        connections_open: v.listener.as_ref().map(|l| l.open.get()),
        connections_accepted: v.listener.as_ref().map(|l| l.accepted.get()),
        tls_failures: v.listener.as_ref().map(|l| l.tls_failures.get()),
        active_requests: v.proxy.as_ref().map(|p| p.active_requests.get()),
        routes,
        pools,
        caches: super::cache_admin::statuses(&v.caches),
        shared_limits: super::shared_limit_admin::statuses(&v.shared_limits),
    }
}

/// The caches' table on the status page.
fn cache_table(caches: &[super::cache_admin::CacheStatus], out: &mut String) {
    if caches.is_empty() {
        return;
    }
    out.push_str("<table class=\"caches\"><tr><th>cache</th><th>hits</th><th>misses</th><th>stale</th><th>revalidated</th><th>coalesced</th><th>stored</th><th>evictions</th><th>purged</th><th>objects</th><th>MiB</th></tr>\n");
    for c in caches {
        let n = &c.counts;
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} / {:.0}</td></tr>",
            Html(&c.label),
            n.hits,
            n.misses,
            n.stale,
            n.revalidated,
            n.coalesced,
            n.stored,
            n.evictions,
            n.purged,
            n.objects,
            n.bytes as f64 / 1048576.0,
            n.budget as f64 / 1048576.0,
        );
    }
    out.push_str("</table>\n");
}

/// Escapes text for HTML.
struct Html<'a>(&'a str);

impl std::fmt::Display for Html<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '&' => f.write_str("&amp;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn per_second(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{r:.1}"))
}

/// How often the status page refreshes itself.
const REFRESH_MS: u32 = 2000;

/// The status page: server-rendered tables, replaced every [`REFRESH_MS`] by a fresh
/// rendering fetched in the background (and reloaded whole without JavaScript).
fn status_page(status: &Status) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pingora-dsl status</title>
<noscript><meta http-equiv="refresh" content="{refresh_s}"></noscript>
<style>
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}
h1{{font-size:1.3em}} h2{{font-size:1.1em;margin:1.4em 0 .3em}} h3{{font-size:1em;margin:.8em 0 .3em}}
table{{border-collapse:collapse;margin-bottom:.6em}}
th,td{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}
th:first-child,td:first-child{{text-align:left}} th{{background:#eee}}
.up{{background:#c8efc8}} .down{{background:#f5b5b5}} .ejected{{background:#f8d9a0}}
.meta{{color:#666}}
</style></head>
<body><h1>pingora-dsl status</h1>
<div id="status">"#,
        refresh_s = REFRESH_MS / 1000
    );
    status_body(status, &mut out);
    let _ = write!(
        out,
        r#"</div>
<script>
setInterval(async () => {{
  try {{
    const r = await fetch(location.pathname, {{cache: "no-store"}});
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const fresh = doc.getElementById("status");
    if (fresh) {{
      document.getElementById("status").innerHTML = fresh.innerHTML;
      document.body.dataset.refreshes = (Number(document.body.dataset.refreshes) || 0) + 1;
    }}
  }} catch (e) {{}}
}}, {REFRESH_MS});
</script></body></html>
"#
    );
    out
}

fn status_body(status: &Status, out: &mut String) {
    let _ = writeln!(
        out,
        r#"<p class="meta">up {:.0} s · refreshes every {} s · <a href="/status.json">JSON</a> · <a href="/metrics">metrics</a></p>"#,
        status.uptime_seconds,
        REFRESH_MS / 1000
    );
    for s in &status.services {
        let _ = writeln!(
            out,
            r#"<section class="service" data-name="{0}"><h2>{0} <span class="meta">({1})</span></h2>"#,
            Html(&s.name),
            s.kind
        );
        let mut meta = Vec::new();
        if let (Some(open), Some(accepted)) = (s.connections_open, s.connections_accepted) {
            meta.push(format!("connections: {open} open, {accepted} accepted"));
        }
        if let Some(active) = s.active_requests {
            meta.push(format!("requests in flight: {active}"));
        }
        if let Some(tls) = s.tls_failures.filter(|n| *n > 0) {
            meta.push(format!("failed TLS handshakes: {tls}"));
        }
        if !meta.is_empty() {
            let _ = writeln!(out, r#"<p class="meta">{}</p>"#, meta.join(" · "));
        }
        if !s.routes.is_empty() {
            out.push_str("<table class=\"routes\"><tr><th>route</th><th>target</th><th>requests</th><th>2xx</th><th>4xx</th><th>5xx</th><th>req/s</th><th>5xx/s</th><th>mean ms</th></tr>\n");
            for r in &s.routes {
                let class = |c: &str| r.responses.get(c).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    Html(&r.label),
                    Html(&r.target),
                    r.requests,
                    class("2xx"),
                    class("4xx"),
                    class("5xx"),
                    per_second(r.request_rate),
                    per_second(r.error_rate),
                    r.mean_duration_ms
                        .map_or_else(|| "–".to_owned(), |m| format!("{m:.2}")),
                );
            }
            out.push_str("</table>\n");
        }
        for pool in &s.pools {
            let _ = writeln!(
                out,
                r#"<h3>pool {}</h3><table class="pool" data-pool="{}"><tr><th>peer</th><th>state</th><th>weight</th><th>in flight</th><th>requests</th><th>errors</th><th>req/s</th><th>err/s</th><th>new conns</th><th>reused</th><th>ejections</th></tr>"#,
                Html(&pool.name),
                Html(&pool.name)
            );
            for p in &pool.peers {
                let _ = writeln!(
                    out,
                    r#"<tr class="peer {state}" data-peer="{addr}"><td>{addr}</td><td class="state">{state_up}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    p.weight,
                    p.in_flight,
                    p.requests,
                    p.errors,
                    per_second(p.request_rate),
                    per_second(p.error_rate),
                    p.connections_new,
                    p.connections_reused,
                    p.ejections,
                    state = p.state,
                    state_up = p.state.to_ascii_uppercase(),
                    addr = Html(&p.addr),
                );
            }
            out.push_str("</table>\n");
        }
        cache_table(&s.caches, out);
        out.push_str("</section>\n");
    }
}

/// Builds the proxy families from the watched services at scrape time.
struct Collector(std::sync::Weak<Inner>);

impl prometheus::core::Collector for Collector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self.0.upgrade() {
            Some(inner) => families(&inner.views()),
            None => Vec::new(),
        }
    }
}

/// Every proxy family, with one metric per proxy, route, pool and peer of `views`.
fn families(views: &[ServiceView]) -> Vec<MetricFamily> {
    let (mut routes, mut listeners, mut peers) = (
        RouteFamilies::new(),
        ListenerFamilies::new(),
        PeerFamilies::new(),
    );
    for v in views {
        let proxy = v.name.as_str();
        for r in &v.routes {
            routes.record(proxy, &r.label, &r.stats);
            for (pool, requests) in &r.arms {
                let l = [
                    ("proxy", proxy),
                    ("route", r.label.as_str()),
                    ("pool", pool),
                ];
                routes.split.counter(&l, requests.get());
            }
            if let Some((pool, outcomes)) = &r.mirror {
                for (outcome, count) in outcomes.by_outcome() {
                    let l = [
                        ("proxy", proxy),
                        ("route", r.label.as_str()),
                        ("pool", pool.as_str()),
                        ("outcome", outcome),
                    ];
                    routes.mirror.counter(&l, count.get());
                }
            }
        }
        if let Some(p) = &v.proxy {
            if p.unrouted.requests() > 0 || v.routes.is_empty() {
                routes.record(proxy, "", &p.unrouted);
            }
            listeners
                .active
                .gauge(&[("proxy", proxy)], p.active_requests.get() as f64);
        }
        if let Some(l) = &v.listener {
            listeners.record(proxy, l);
        }
        for g in &v.groups {
            for p in g.peers() {
                peers.record(proxy, g.name(), &p);
            }
        }
    }
    routes
        .into_families()
        .chain(listeners.into_families())
        .chain(peers.into_families())
        .chain(discovery_family(views))
        .chain(super::cache_admin::families(views))
        .chain(super::shared_limit_admin::families(views))
        .collect()
}

/// `discovery_failures_total` of every group that discovers its peers.
fn discovery_family(views: &[ServiceView]) -> Option<MetricFamily> {
    let mut family = Family::new(
        "discovery_failures_total",
        "Answers of a pool's discovery source that failed (the pool kept its peers).",
        MetricType::COUNTER,
    );
    for v in views {
        for g in &v.groups {
            if let Some(failures) = g.discovery_failures() {
                family.counter(&[("proxy", &v.name), ("pool", g.name())], failures);
            }
        }
    }
    (!family.0.get_metric().is_empty()).then_some(family.0)
}

/// The families labelled by proxy and route.
struct RouteFamilies {
    requests: Family,
    duration: Family,
    bytes_in: Family,
    bytes_spliced: Family,
    bytes_out: Family,
    bytes_out_spliced: Family,
    retries: Family,
    split: Family,
    mirror: Family,
}

impl RouteFamilies {
    fn new() -> Self {
        RouteFamilies {
            requests: Family::new(
                "requests_total",
                "Finished requests by proxy, route and status class.",
                COUNTER,
            ),
            duration: Family::new(
                "request_duration_seconds",
                "Time from the request head to the end of the response body.",
                HISTOGRAM,
            ),
            bytes_in: Family::new(
                "request_body_bytes_total",
                "Request body bytes received from clients.",
                COUNTER,
            ),
            bytes_spliced: Family::new(
                "request_body_spliced_bytes_total",
                "Of the request body bytes, those spliced to the upstream socket in the kernel, never copied into the proxy's memory.",
                COUNTER,
            ),
            bytes_out: Family::new(
                "response_body_bytes_total",
                "Response body bytes sent to clients.",
                COUNTER,
            ),
            bytes_out_spliced: Family::new(
                "response_body_spliced_bytes_total",
                "Of the response body bytes, those spliced from the upstream socket in the kernel, never copied into the proxy's memory.",
                COUNTER,
            ),
            retries: Family::new(
                "retries_total",
                "Requests sent again to another peer.",
                COUNTER,
            ),
            split: Family::new(
                "split_requests_total",
                "Requests a weighted split sent to each of its pools.",
                COUNTER,
            ),
            mirror: Family::new(
                "mirror_requests_total",
                "Copies of a route's requests for its shadow pool, by outcome (sent, failed, dropped over the in-flight cap, skipped for having a body).",
                COUNTER,
            ),
        }
    }

    fn record(&mut self, proxy: &str, route: &str, s: &RouteStats) {
        let l = [("proxy", proxy), ("route", route)];
        for (class, c) in STATUS_CLASSES.iter().zip(&s.responses) {
            self.requests
                .counter(&[l[0], l[1], ("class", class)], c.get());
        }
        self.duration.push(&l, s.duration.sample());
        self.bytes_in.counter(&l, s.bytes_in.get());
        self.bytes_spliced.counter(&l, s.bytes_spliced.get());
        self.bytes_out.counter(&l, s.bytes_out.get());
        self.bytes_out_spliced
            .counter(&l, s.bytes_out_spliced.get());
        self.retries.counter(&l, s.retries.get());
    }

    fn into_families(self) -> impl Iterator<Item = MetricFamily> {
        [
            self.requests,
            self.duration,
            self.bytes_in,
            self.bytes_spliced,
            self.bytes_out,
            self.bytes_out_spliced,
            self.retries,
            self.split,
            self.mirror,
        ]
        .into_iter()
        .map(|f| f.0)
    }
}

/// The families labelled by proxy alone: requests in flight and client connections.
struct ListenerFamilies {
    active: Family,
    open: Family,
    accepted: Family,
    tls_failures: Family,
    tls_handshakes: Family,
    quic: [Family; 5],
}

impl ListenerFamilies {
    fn new() -> Self {
        ListenerFamilies {
            active: Family::new("active_requests", "Requests in flight.", GAUGE),
            open: Family::new(
                "downstream_connections",
                "Client connections open now.",
                GAUGE,
            ),
            accepted: Family::new(
                "downstream_connections_total",
                "Client connections accepted.",
                COUNTER,
            ),
            tls_failures: Family::new(
                "tls_handshake_failures_total",
                "Failed TLS handshakes with clients.",
                COUNTER,
            ),
            tls_handshakes: Family::new(
                "tls_handshakes_total",
                "TLS handshakes with clients, by the key-exchange group agreed on.",
                COUNTER,
            ),
            quic: [
                (
                    "http3_connections_total",
                    "HTTP/3 connections whose handshakes completed.",
                ),
                ("http3_requests_total", "HTTP/3 requests received."),
                (
                    "quic_handshake_failures_total",
                    "QUIC or HTTP/3 handshakes that failed or timed out.",
                ),
                (
                    "quic_retries_total",
                    "New QUIC connections asked to prove their address (Retry).",
                ),
                (
                    "quic_refused_total",
                    "New QUIC connections refused past the listener's cap.",
                ),
            ]
            .map(|(name, help)| Family::new(name, help, COUNTER)),
        }
    }

    fn record(&mut self, proxy: &str, l: &ListenerStats) {
        let labels = [("proxy", proxy)];
        self.open.gauge(&labels, l.open.get() as f64);
        self.accepted.counter(&labels, l.accepted.get());
        self.tls_failures.counter(&labels, l.tls_failures.get());
        for (group, n) in l.tls_groups() {
            self.tls_handshakes
                .counter(&[("proxy", proxy), ("group", group)], n);
        }
        let q = &l.quic;
        let counts = [
            q.connections.get(),
            q.requests.get(),
            q.handshake_failures.get(),
            q.retries.get(),
            q.refused.get(),
        ];
        // Only a service that served QUIC has these.
        if counts.iter().any(|&n| n > 0) {
            for (family, n) in self.quic.iter_mut().zip(counts) {
                family.counter(&labels, n);
            }
        }
    }

    fn into_families(self) -> impl Iterator<Item = MetricFamily> {
        [
            self.active,
            self.open,
            self.accepted,
            self.tls_failures,
            self.tls_handshakes,
        ]
        .into_iter()
        .chain(self.quic)
        .map(|f| f.0)
    }
}

/// The families labelled by proxy, pool and peer.
struct PeerFamilies {
    requests: Family,
    errors: Family,
    connections: Family,
    connect_time: Family,
    first_byte_time: Family,
    in_flight: Family,
    healthy: Family,
    ejections: Family,
}

impl PeerFamilies {
    fn new() -> Self {
        PeerFamilies {
            requests: Family::new(
                "upstream_requests_total",
                "Requests (TCP: connections) sent to each peer.",
                COUNTER,
            ),
            errors: Family::new(
                "upstream_errors_total",
                "Requests that failed on the peer's side: refused, timed out, reset, bad response, TLS.",
                COUNTER,
            ),
            connections: Family::new(
                "upstream_connections_total",
                "Requests by whether their upstream connection was new or reused.",
                COUNTER,
            ),
            connect_time: Family::new(
                "upstream_connect_seconds",
                "Time to open a connection (TCP and TLS) to a peer.",
                HISTOGRAM,
            ),
            first_byte_time: Family::new(
                "upstream_first_byte_seconds",
                "Time from sending a request to a peer to its response head.",
                HISTOGRAM,
            ),
            in_flight: Family::new(
                "upstream_in_flight",
                "Requests in flight to each peer.",
                GAUGE,
            ),
            healthy: Family::new(
                "upstream_healthy",
                "1 if the peer passes its health checks and is not ejected, else 0.",
                GAUGE,
            ),
            ejections: Family::new(
                "upstream_ejections_total",
                "Times a peer was ejected after failed requests.",
                COUNTER,
            ),
        }
    }

    fn record(&mut self, proxy: &str, pool: &str, p: &PeerState) {
        let addr = p.addr().to_string();
        let l = [("proxy", proxy), ("pool", pool), ("peer", addr.as_str())];
        let s = p.stats();
        self.requests.counter(&l, s.requests.get());
        self.errors.counter(&l, s.errors.get());
        let (new, reused) = (s.connections_new.get(), s.connections_reused.get());
        self.connections
            .counter(&[l[0], l[1], l[2], ("reused", "false")], new);
        self.connections
            .counter(&[l[0], l[1], l[2], ("reused", "true")], reused);
        self.connect_time.push(&l, s.connect_time.sample());
        self.first_byte_time.push(&l, s.first_byte_time.sample());
        self.in_flight.gauge(&l, p.in_flight() as f64);
        self.healthy
            .gauge(&l, if p.is_available() { 1.0 } else { 0.0 });
        self.ejections.counter(&l, s.ejections.get());
    }

    fn into_families(self) -> impl Iterator<Item = MetricFamily> {
        [
            self.requests,
            self.errors,
            self.connections,
            self.connect_time,
            self.first_byte_time,
            self.in_flight,
            self.healthy,
            self.ejections,
        ]
        .into_iter()
        .map(|f| f.0)
    }
}

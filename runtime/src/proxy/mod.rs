//! The proxy: Pingora's phases around a pooled upstream client, as a tower service.
//!
//! A user implements [`ProxyHttp`] — only [`ProxyHttp::upstream_peer`] is required — and
//! gets a listening service from [`http_proxy_service`]. Per request, in this order:
//!
//! 1. the request is checked (`headers` rules: one valid `Host`, unambiguous framing);
//! 2. `early_request_filter`, then `request_filter` (which may answer at once: [`Flow`]);
//! 3. `upstream_peer` says where the request goes;
//! 4. the upstream request is built (hop-by-hop fields removed, `X-Forwarded-For`
//!    appended) and `upstream_request_filter` edits it;
//! 5. it is sent over a pooled connection; the response head passes
//!    `upstream_response_filter` then `response_filter`;
//! 6. the body streams to the client, and `logging` runs once when it has ended or failed.
//!
//! Any error becomes a response with the status of its [`crate::ErrorKind`] (400, 500, 502,
//! 503, 504) and reaches `logging`. Hand-written tower layers wrap the whole pipeline with
//! [`http_proxy_service_with`].

pub mod auth;
mod body;
pub mod cache;
mod forward;
mod headers;
mod listening;
mod panic;
pub mod phase;
mod real_client;
pub mod route;
mod session;
mod tunnel;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::downstream::body::DownstreamBody;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, LOCATION};
use http::{Request, Response, StatusCode};
pub use tower_layer::{Identity, Layer, Stack};

pub use body::{ProxyBody, RequestBody};
pub use real_client::TrustedProxies;
use session::ConnCtx;
pub use session::{RequestHeader, ResponseHeader, Session, REQUEST_ID};
pub use tunnel::AllowedUpgrades;

use crate::downstream::{ConnInfo, HttpService, MakeConnService};
use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::lb::UpstreamGroup;
use crate::metrics::ProxyStats;
use crate::observe::access_log::{AccessEntry, AccessLog};
use crate::service::RouteView;
use crate::upstream::{ClientOptions, HttpClient, HttpPeer};
use body::{LogState, ResponseSource};

/// The most times one request is sent to another peer after failed connects, whatever
/// `fail_to_connect` says (as Pingora's default `max_retries`).
pub const MAX_CONNECT_RETRIES: u32 = crate::lb::MAX_RETRIES;

/// What `request_filter` decided: go on to the upstream, or answer the client now.
#[derive(Debug)]
pub enum Flow {
    /// Continue with `upstream_peer` and forward the request.
    Continue,
    /// Send this response to the client; the upstream is never contacted.
    Respond(Response<Bytes>),
}

impl Flow {
    /// Answer with `status` and an empty body.
    pub fn respond(status: StatusCode) -> Flow {
        Flow::respond_with(status, Bytes::new())
    }

    /// Answer with `status` and a plain-text `body`.
    pub fn respond_with(status: StatusCode, body: impl Into<Bytes>) -> Flow {
        let body = body.into();
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = status;
        if !body.is_empty() {
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        *response.body_mut() = body;
        Flow::Respond(response)
    }

    /// Redirect with `status` (301, 302, 303, 307 or 308) to `location`.
    pub fn redirect(status: StatusCode, location: &str) -> Result<Flow> {
        if !status.is_redirection() {
            return Err(Error::new(ErrorKind::Filter, "redirect needs a 3xx status"));
        }
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(LOCATION, HeaderValue::try_from(location)?);
        Ok(Flow::Respond(response))
    }
}

/// The phases of an HTTP proxy, named and ordered as in Pingora's `ProxyHttp`.
///
/// Only [`upstream_peer`](ProxyHttp::upstream_peer) must be written; every other phase has
/// a default that does nothing. Phases may be written as `async fn` in the impl.
///
/// ```
/// use pingora_dsl_runtime::lb::LoadBalancer;
/// use pingora_dsl_runtime::proxy::{EditHeaders, ProxyHttp, RequestHeader, Session};
/// use pingora_dsl_runtime::upstream::HttpPeer;
/// use pingora_dsl_runtime::{Error, ErrorKind, Result};
///
/// struct Lb(LoadBalancer);
///
/// impl ProxyHttp for Lb {
///     type Ctx = ();
///     fn new_ctx(&self) {}
///
///     async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
///         let backend = self.0.select(b"", 256).ok_or(Error::new(ErrorKind::NoPeer, "no backend"))?;
///         Ok(HttpPeer::new(backend.addr))
///     }
///
///     async fn upstream_request_filter(
///         &self,
///         _s: &mut Session,
///         req: &mut RequestHeader,
///         _ctx: &mut (),
///     ) -> Result<()> {
///         req.insert_header("host", "one.one.one.one")
///     }
/// }
/// ```
pub trait ProxyHttp: Send + Sync + 'static {
    /// Per-request state, created by [`new_ctx`](ProxyHttp::new_ctx) and handed to every
    /// phase of that request.
    type Ctx: Send + 'static;

    /// Creates the context of a new request.
    fn new_ctx(&self) -> Self::Ctx;

    /// Runs first, before `request_filter`. Default: nothing.
    fn early_request_filter(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::Ctx,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Inspects the request; returns [`Flow::Respond`] to answer at once (403, redirect, ...)
    /// without contacting an upstream. Default: [`Flow::Continue`].
    fn request_filter(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::Ctx,
    ) -> impl Future<Output = Result<Flow>> + Send {
        async { Ok(Flow::Continue) }
    }

    /// Chooses where the request goes. Required. An error of kind
    /// [`ErrorKind::NoPeer`] answers 503.
    fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::Ctx,
    ) -> impl Future<Output = Result<HttpPeer>> + Send;

    /// Called when connecting to `peer` failed (refused or timed out), so nothing was sent.
    /// Return the error with [`Error::set_retry`] set to have `upstream_peer` choose again
    /// and the request go there (at most [`MAX_CONNECT_RETRIES`] times). Default: no retry
    /// (a proxy written by hand chooses its peers itself); a declared proxy tries each
    /// other peer of its group (`Router::fail_to_connect`).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut Self::Ctx,
        error: Error,
    ) -> Error {
        error
    }

    /// Whether to keep a copy of the request — its head and up to the returned number of
    /// body bytes — so that it can be sent again if the upstream connection breaks before
    /// a response head arrives (see [`error_while_proxy`](ProxyHttp::error_while_proxy)).
    /// A body larger than the limit is never resent. Default: no copy.
    fn replay_buffer(&self, _session: &Session, _ctx: &Self::Ctx) -> Option<usize> {
        None
    }

    /// Called when the upstream failed after the request was sent and before a response
    /// head arrived. Return the error with [`Error::set_retry`] set to send the request
    /// again to the peer `upstream_peer` then picks; the proxy does so only with a whole
    /// copy kept by [`replay_buffer`](ProxyHttp::replay_buffer). Default: no retry.
    fn error_while_proxy(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut Self::Ctx,
        error: Error,
    ) -> Error {
        error
    }

    /// Edits the request head sent upstream (after hop-by-hop removal and
    /// `X-Forwarded-For`). Default: nothing.
    fn upstream_request_filter(
        &self,
        _session: &mut Session,
        _upstream_request: &mut RequestHeader,
        _ctx: &mut Self::Ctx,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Edits the upstream's response head as received (after hop-by-hop removal), before
    /// `response_filter`. Synchronous, as in Pingora. Default: nothing.
    fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        _ctx: &mut Self::Ctx,
    ) -> Result<()> {
        Ok(())
    }

    /// Edits the response head sent to the client (for proxied responses). Default: nothing.
    fn response_filter(
        &self,
        _session: &mut Session,
        _response: &mut ResponseHeader,
        _ctx: &mut Self::Ctx,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Runs exactly once per request, after the response body finished or failed (or the
    /// client left), with the error if there was one. Default: nothing.
    fn logging(&self, _session: &Session, _error: Option<&Error>, _ctx: &mut Self::Ctx) {}

    /// The routes and upstream groups the admin listener reports (metrics per route and
    /// peer, the status page). Declared proxies return their router's. Default: none, and
    /// the proxy is reported as a whole.
    fn observed_routes(&self) -> Option<(Vec<RouteView>, Vec<UpstreamGroup>)> {
        None
    }

    /// The HTTP caches the admin listener reports and purges. Declared proxies return
    /// their router's. Default: none.
    fn observed_caches(&self) -> Vec<crate::service::CacheView> {
        Vec::new()
    }

    /// The rate limits shared through Redis the admin listener reports. Declared proxies
    /// return their router's. Default: none.
    fn observed_shared_limits(&self) -> Vec<crate::service::SharedLimitView> {
        Vec::new()
    }
}

/// Header editing helpers for request and response heads in filters.
pub trait EditHeaders {
    /// Sets `name` to `value`, replacing previous values.
    fn insert_header<N, V>(&mut self, name: N, value: V) -> Result<()>
    where
        N: TryInto<HeaderName>,
        N::Error: Into<http::Error>,
        V: TryInto<HeaderValue>,
        V::Error: Into<http::Error>;

    /// Removes every value of `name`.
    fn remove_header(&mut self, name: &str);
}

macro_rules! edit_headers_for {
    ($t:ty) => {
        impl EditHeaders for $t {
            fn insert_header<N, V>(&mut self, name: N, value: V) -> Result<()>
            where
                N: TryInto<HeaderName>,
                N::Error: Into<http::Error>,
                V: TryInto<HeaderValue>,
                V::Error: Into<http::Error>,
            {
                let name = name.try_into().map_err(|e| Error::from(e.into()))?;
                let value = value.try_into().map_err(|e| Error::from(e.into()))?;
                self.headers.insert(name, value);
                Ok(())
            }

            fn remove_header(&mut self, name: &str) {
                self.headers.remove(name);
            }
        }
    };
}

edit_headers_for!(RequestHeader);
edit_headers_for!(ResponseHeader);

/// Settings of a proxy beyond its phases.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Append the client's IP to `X-Forwarded-For`. Default true.
    pub forwarded_for: bool,
    /// A `Via` value (e.g. `"1.1 edge"`) appended to requests and responses; default none.
    pub via: Option<HeaderValue>,
    /// Time the client may send nothing while its request body is forwarded. Default 60 s.
    pub body_read_timeout: Duration,
    /// Longest a client may take to send a whole request body, from when the proxy starts
    /// forwarding it; a slower body is answered 408. Default 60 s.
    pub body_total_timeout: Duration,
    /// The upstream client and its pool.
    pub client: ClientOptions,
    /// How long an upgraded connection (WebSocket) may carry nothing before it is closed.
    /// Default 1 hour.
    pub tunnel_idle_timeout: Duration,
    /// The protocols a client may switch to with `Upgrade` (default: `websocket`; `h2c`
    /// never). Any other upgrade request is answered as plain HTTP/1.1.
    pub allowed_upgrades: AllowedUpgrades,
    /// Where a line per finished request goes; default none.
    pub access_log: Option<AccessLog>,
    /// Whether answers the proxy makes itself (from `request_filter`, and the error answers
    /// 400, 408, 500, 502, 503 and 504) go through `response_filter` too, like proxied
    /// ones. Default false, as in Pingora; declared proxies set it (`filter_local_answers
    /// off;` opts out), so their CORS headers or response edits are on every answer.
    pub filter_local_answers: bool,
    /// Proxies in front whose `Forwarded`/`X-Forwarded-For` name the client (for access
    /// lists, rate limits, `client` conditions, `${client_ip}` and the access log); none by
    /// default: the connection's peer is the client.
    pub trusted_proxies: Option<Arc<TrustedProxies>>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            forwarded_for: true,
            via: None,
            body_read_timeout: Duration::from_secs(60),
            body_total_timeout: Duration::from_secs(60),
            client: ClientOptions::default(),
            tunnel_idle_timeout: Duration::from_secs(3600),
            allowed_upgrades: AllowedUpgrades::default(),
            access_log: None,
            filter_local_answers: false,
            trusted_proxies: None,
        }
    }
}

pub(crate) struct Shared<P> {
    proxy: Arc<P>,
    options: ProxyOptions,
    client: HttpClient<RequestBody>,
    stats: Arc<ProxyStats>,
}

/// The proxy as a tower service for one downstream connection: runs the phases for each
/// request. Built per connection by [`ProxyPipeline`].
pub struct HttpProxy<P> {
    shared: Arc<Shared<P>>,
    conn: Arc<ConnCtx>,
}

impl<P> Clone for HttpProxy<P> {
    fn clone(&self) -> Self {
        HttpProxy {
            shared: self.shared.clone(),
            conn: self.conn.clone(),
        }
    }
}

/// The future of one proxied request. Boxed once per request: the phases are `async fn`s
/// whose futures have no nameable type.
pub type ProxyFuture<P> =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody<P>>, Infallible>> + Send>>;

impl<P: ProxyHttp> tower_service::Service<Request<DownstreamBody>> for HttpProxy<P> {
    type Response = Response<ProxyBody<P>>;
    type Error = Infallible;
    type Future = ProxyFuture<P>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<DownstreamBody>) -> Self::Future {
        let shared = self.shared.clone();
        let conn = self.conn.clone();
        let mut session = Session::new(request, conn);
        if let Some(trusted) = &shared.options.trusted_proxies {
            session.find_real_client(trusted);
        }
        // A debug-level span: free unless enabled (`RUST_LOG=pingora_dsl_runtime=debug`),
        // then every event of the request carries its id.
        let span = tracing::debug_span!(
            "request",
            id = session.request_id(),
            method = %session.method(),
            path = session.path(),
        );
        // The box is made first and the future written into it: the future (about 3.8 KB)
        // is then built in place, not built on the stack and copied.
        let boxed = Box::write(
            Box::new_uninit(),
            tracing::Instrument::instrument(proxy_request(shared, session), span),
        );
        Box::into_pin(boxed)
    }
}

/// The phases of one request, then its response with `logging` attached.
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn`
/// keeps each by-value argument twice in its future (the argument, then the local it is
/// moved into), and this future is the one boxed per request.
#[allow(clippy::manual_async_fn)] // (see above)
fn proxy_request<P: ProxyHttp>(
    shared: Arc<Shared<P>>,
    mut session: Session,
) -> impl Future<Output = Result<Response<ProxyBody<P>>, Infallible>> {
    async move {
        shared.stats.active_requests.inc();
        if shared.options.access_log.is_some() {
            session.keep_logged_headers();
        }
        let mut ctx = shared.proxy.new_ctx();
        let result = {
            // If this future is dropped before a response exists (the client left, or a layer
            // around the proxy gave up), `logging` still runs, from the guard.
            let guard = AbandonGuard {
                shared: &shared,
                session: &mut session,
                ctx: &mut ctx,
            };
            let phases = run_phases(&shared, &mut *guard.session, &mut *guard.ctx);
            let result = panic::CatchPanic::new(phases).await;
            std::mem::forget(guard);
            result
        };
        let (mut response, error) = match result {
            Ok(response) if !shared.options.filter_local_answers || session.was_forwarded() => {
                (response, None)
            }
            // An error, or an answer the proxy made itself that goes through the response
            // filter: boxed, so this rare path keeps the common request's future as it was.
            outcome => Box::pin(local_answer(&shared, &mut session, &mut ctx, outcome)).await,
        };
        session.status = Some(response.status());
        // An origin's body the proxy passes on unchanged may go socket to socket.
        if !session.compresses() && !session.caches() && response.body().can_splice() {
            response
                .extensions_mut()
                .insert(ProxyBody::<P>::splice_hook());
        }
        let log = LogState {
            shared,
            session,
            ctx,
            error,
        };
        Ok(response.map(|source| ProxyBody::new(source, log)))
    }
}

/// Runs `logging` for a request abandoned before its response head existed. Holds only
/// borrows, so forgetting it on the normal path leaks nothing.
struct AbandonGuard<'a, P: ProxyHttp> {
    shared: &'a Shared<P>,
    session: &'a mut Session,
    ctx: &'a mut P::Ctx,
}

impl<P: ProxyHttp> Drop for AbandonGuard<'_, P> {
    fn drop(&mut self) {
        let error = Error::new(
            ErrorKind::DownstreamClosed,
            "request abandoned before a response: the client left or an outer layer gave up",
        );
        finish(self.shared, self.session, Some(&error), self.ctx);
    }
}

/// The end of every request, once: its counters, its access log line, then the
/// `logging` phase.
pub(crate) fn finish<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &Session,
    error: Option<&Error>,
    ctx: &mut P::Ctx,
) {
    let stats = &shared.stats;
    stats.active_requests.dec();
    let elapsed = session.elapsed();
    let route = session.route_stats.as_deref().unwrap_or(&stats.unrouted);
    route.record(session.status, elapsed, session.body_bytes_sent);
    if session.body_bytes_spliced != 0 {
        route.bytes_out_spliced.add(session.body_bytes_spliced);
    }
    if session.retries() > 0 {
        route.retries.add(u64::from(session.retries()));
    }
    if let Some(peer) = &session.peer_stats {
        peer.requests.inc();
        if error.is_some_and(|e| e.kind().is_upstream_failure()) {
            peer.errors.inc();
        }
    }
    if let Some(log) = &shared.options.access_log {
        log.write(&access_entry(session, error, elapsed));
    }
    shared.proxy.logging(session, error, ctx);
}

/// The access log's view of a finished request.
fn access_entry<'a>(
    session: &'a Session,
    error: Option<&Error>,
    elapsed: Duration,
) -> AccessEntry<'a> {
    let logged = session.logged.as_deref();
    let text = |v: Option<&'a HeaderValue>| v.and_then(|v| v.to_str().ok());
    AccessEntry {
        time: std::time::SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(std::time::UNIX_EPOCH),
        client: session.client_addr(),
        method: session.method().as_str(),
        host: session.host(),
        path: session.uri().path_and_query().map_or("/", |pq| pq.as_str()),
        protocol: match session.version() {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        },
        status: session.status.map_or(0, |s| s.as_u16()),
        bytes: session.body_bytes_sent,
        duration: elapsed,
        upstream: session.upstream_addr(),
        retries: session.retries(),
        request_id: session.request_id(),
        referer: text(logged.and_then(|l| l.referer.as_ref())),
        user_agent: text(logged.and_then(|l| l.user_agent.as_ref())),
        tls_group: session.tls_group(),
        user: session.identity().map(|i| i.user.as_str()),
        error: error.map(|e| e.to_string()),
    }
}

/// Counts a failed attempt on the peer it went to (a retry goes elsewhere next).
/// The phases of one request, from its head to the response head to send: checks and
/// the request filters, the peer, the upstream request, the exchange with its retries, and
/// the response filters (see [`forward`] for each step).
async fn run_phases<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &mut P::Ctx,
) -> Result<Response<ResponseSource>> {
    let proxy = &*shared.proxy;
    {
        let head = session.req_header();
        headers::validate_request(&head.method, &head.uri, head.version, &head.headers)?;
    }
    proxy.early_request_filter(session, ctx).await?;
    if let Flow::Respond(response) = proxy.request_filter(session, ctx).await? {
        // (Filtered after this function, when the proxy filters its own answers.)
        return Ok(response.map(ResponseSource::full));
    }
    let mut peer = proxy.upstream_peer(session, ctx).await?;
    session.upstream = Some(peer.addr());
    let upgrade = {
        let head = session.req_header();
        tunnel::requested_upgrade(
            &head.method,
            head.version,
            &head.headers,
            &shared.options.allowed_upgrades,
        )
    };
    let mut up = session.take_upstream_head();
    let downstream_upgrade = forward::prepare_head(shared, session, &mut up, &upgrade)?;
    proxy.upstream_request_filter(session, &mut up, ctx).await?;
    let (body, attempt) = forward::attempt(shared, session, ctx, &mut up, &peer);
    if body.can_splice() {
        up.extensions.insert(RequestBody::splice_hook());
    }
    let mut request = Request::from_parts(up, body);
    let response = loop {
        session.peer_stats = peer.stats().cloned();
        let sent = session
            .peer_stats
            .as_ref()
            .map(|_| std::time::Instant::now());
        match shared.client.try_send(&peer, request).await {
            Ok(response) => {
                if let (Some(stats), Some(sent)) = (&session.peer_stats, sent) {
                    stats.first_byte_time.observe(sent.elapsed());
                }
                break response;
            }
            Err(failed) => {
                request = forward::after_failure(shared, session, ctx, &peer, &attempt, failed)?;
                peer = proxy.upstream_peer(session, ctx).await?;
                session.upstream = Some(peer.addr());
                forward::retarget(&attempt, &mut request, &peer);
            }
        }
    };
    drop(attempt);
    let (mut head, body) = response.into_parts();
    forward::shape_response_head(
        shared,
        session,
        &mut head,
        &peer,
        upgrade,
        downstream_upgrade,
    )?;
    proxy.upstream_response_filter(session, &mut head, ctx)?;
    proxy.response_filter(session, &mut head, ctx).await?;
    let body = match session.take_replacement_body() {
        // The cache answers instead (a revalidated or stale response): the origin's body
        // (none, for a 304) is dropped.
        Some(cached) => ResponseSource::full(cached),
        None => ResponseSource::Upstream(body),
    };
    Ok(Response::from_parts(head, body))
}

/// The answer for a request whose phases ended in `outcome`: a local answer (not
/// forwarded) or the error answer, each through `response_filter` when the proxy filters its
/// own answers. `logging` still runs if this is abandoned.
async fn local_answer<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    outcome: Result<Response<ResponseSource>>,
) -> (Response<ResponseSource>, Option<Error>) {
    let guard = AbandonGuard {
        shared,
        session,
        ctx,
    };
    let answer = match outcome {
        Ok(local) => match filtered(shared, &mut *guard.session, &mut *guard.ctx, local).await {
            Ok(response) => (response, None),
            Err(e) => (
                error_answer(shared, &mut *guard.session, &mut *guard.ctx, &e).await,
                Some(e),
            ),
        },
        Err(e) => match stale_for(&mut *guard.session, &e) {
            // `stale-if-error`: the cache's stale answer instead of the error's.
            Some(stale) => {
                match filtered(shared, &mut *guard.session, &mut *guard.ctx, stale).await {
                    Ok(response) => (response, None),
                    Err(e) => (
                        error_answer(shared, &mut *guard.session, &mut *guard.ctx, &e).await,
                        Some(e),
                    ),
                }
            }
            None => (
                error_answer(shared, &mut *guard.session, &mut *guard.ctx, &e).await,
                Some(e),
            ),
        },
    };
    std::mem::forget(guard);
    answer
}

/// The cache's stale answer for a request that failed with `error`, when the failure is
/// the upstream's (500, 502, 503, 504) and the cache kept one.
fn stale_for(session: &mut Session, error: &Error) -> Option<Response<ResponseSource>> {
    let status = error.status().as_u16();
    if !matches!(status, 500 | 502 | 503 | 504) {
        return None;
    }
    let fallback = session.take_stale_fallback()?;
    tracing::warn!(error = %error, "upstream failed: answered from the cache (stale-if-error)");
    Some(fallback.give().map(ResponseSource::full))
}

/// Logs a request's failure at error level with its context (request id, route, pool,
/// peer, method, host, path), so an error report (Sentry) carries it too.
fn log_failure(session: &Session, error: &Error) {
    tracing::error!(
        error = %error,
        request_id = session.request_id(),
        route = session.route_label().unwrap_or("-"),
        pool = session.pool().unwrap_or("-"),
        peer = %session.upstream_addr().map_or_else(|| "-".to_owned(), |a| a.to_string()),
        method = %session.method(),
        host = session.host().unwrap_or("-"),
        path = session.uri().path(),
        client = %session.client_addr(),
        "request failed"
    );
}

/// The answer to a request that failed with `error` (logged here), through
/// `response_filter` when the proxy filters its own answers (if the filter fails too, the
/// answer goes out unfiltered).
async fn error_answer<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    error: &Error,
) -> Response<ResponseSource> {
    if error.status().is_server_error() {
        log_failure(session, error);
    } else {
        tracing::debug!(error = %error, client = %session.client_addr(), "request refused");
    }
    let response = error_response(error);
    if !shared.options.filter_local_answers {
        return response;
    }
    match filtered(shared, session, ctx, response).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(error = %e, "response_filter failed on an error answer; sent unfiltered");
            error_response(error)
        }
    }
}

/// A local answer through `response_filter`.
async fn filtered<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    response: Response<ResponseSource>,
) -> Result<Response<ResponseSource>> {
    let (mut head, body) = response.into_parts();
    session.status = Some(head.status);
    shared
        .proxy
        .response_filter(session, &mut head, ctx)
        .await?;
    Ok(Response::from_parts(head, body))
}

/// The response a client gets for `error`: its status and a one-line plain-text body. A bad
/// request also closes the connection, since its framing cannot be trusted.
fn error_response(error: &Error) -> Response<ResponseSource> {
    let status = error.status();
    let text: &'static str = match status {
        StatusCode::BAD_REQUEST => "400 Bad Request\n",
        StatusCode::REQUEST_TIMEOUT => "408 Request Timeout\n",
        StatusCode::PAYLOAD_TOO_LARGE => "413 Content Too Large\n",
        StatusCode::BAD_GATEWAY => "502 Bad Gateway\n",
        StatusCode::SERVICE_UNAVAILABLE => "503 Service Unavailable\n",
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Timeout\n",
        _ => "500 Internal Server Error\n",
    };
    let mut response = Response::new(ResponseSource::full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if matches!(
        error.kind(),
        ErrorKind::BadRequest
            | ErrorKind::DownstreamClosed
            | ErrorKind::DownstreamTimeout
            | ErrorKind::BodyTooLarge
    ) {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A tower layer the proxy pipeline can be wrapped in: any [`Layer`] whose service serves
/// hyper requests with an HTTP body, named by its parts so that code generated by `proxy!`
/// can return a pipeline without naming the layer's type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot wrap the proxy `{P}`: it is not a tower layer over its service",
    label = "a `layer` takes a `tower::Layer` over the proxy's service whose own service answers HTTP requests, e.g. `tower_http::timeout::TimeoutLayer::new(..)` or `tower::limit::ConcurrencyLimitLayer::new(..)`",
    note = "to run code per request, write a phase instead (`request_filter(session, ctx) {{ ... }}`)"
)]
pub trait ProxyLayer<P: ProxyHttp>: Clone + Send + Sync + 'static {
    /// The per-connection service the layer makes.
    type Service: tower_service::Service<
            Request<DownstreamBody>,
            Response = Response<Self::Body>,
            Error = Self::Error,
            Future = Self::Future,
        > + Clone
        + Send
        + 'static;
    /// The response body type.
    type Body: http_body::Body<Data = Bytes, Error = Self::BodyError> + Send + 'static;
    /// The response body's error type.
    type BodyError: Into<BoxError>;
    /// The service's error type.
    type Error: Into<BoxError>;
    /// The service's future.
    type Future: Future<Output = std::result::Result<Response<Self::Body>, Self::Error>>
        + Send
        + 'static;

    /// Wraps the proxy service of one connection.
    fn layer_proxy(&self, inner: HttpProxy<P>) -> Self::Service;
}

impl<P, L, S, B> ProxyLayer<P> for L
where
    P: ProxyHttp,
    L: Layer<HttpProxy<P>, Service = S> + Clone + Send + Sync + 'static,
    S: tower_service::Service<Request<DownstreamBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Service = S;
    type Body = B;
    type BodyError = B::Error;
    type Error = S::Error;
    type Future = S::Future;

    fn layer_proxy(&self, inner: HttpProxy<P>) -> S {
        self.layer(inner)
    }
}

/// Builds the per-connection pipeline: `layer` (any tower layer; [`Identity`] for none)
/// around an [`HttpProxy`] for `P`.
pub struct ProxyPipeline<P, L = Identity> {
    shared: Arc<Shared<P>>,
    layer: L,
}

impl<P: ProxyHttp, L> ProxyPipeline<P, L> {
    /// A pipeline for `proxy` with `options`, wrapped in `layer`.
    pub fn new(proxy: P, options: ProxyOptions, layer: L) -> Self {
        ProxyPipeline::sharing(Arc::new(proxy), options, layer, Arc::default())
    }

    /// A pipeline for an already shared `proxy`, with a new upstream pool.
    fn sharing(proxy: Arc<P>, options: ProxyOptions, layer: L, stats: Arc<ProxyStats>) -> Self {
        let client = HttpClient::new(options.client.clone());
        ProxyPipeline {
            shared: Arc::new(Shared {
                proxy,
                options,
                client,
                stats,
            }),
            layer,
        }
    }

    /// The proxy's counters (requests no route took, requests in flight), shared by
    /// every worker.
    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.shared.stats
    }

    /// The options the proxy runs with.
    pub fn options(&self) -> &ProxyOptions {
        &self.shared.options
    }

    /// The user's proxy, shared.
    pub fn proxy_arc(&self) -> &Arc<P> {
        &self.shared.proxy
    }

    /// The user's proxy.
    pub fn proxy(&self) -> &P {
        &self.shared.proxy
    }

    /// The upstream client (and pool) the proxy forwards through.
    pub fn client(&self) -> &HttpClient<RequestBody> {
        &self.shared.client
    }

    /// The service for a connection from `conn` (what the listener does per connection).
    pub fn service_for(&self, conn: &ConnInfo) -> L::Service
    where
        L: ProxyLayer<P>,
    {
        let client_ip = headers::client_ip_value(conn.client_addr.ip());
        self.layer.layer_proxy(HttpProxy {
            shared: self.shared.clone(),
            conn: Arc::new(ConnCtx {
                info: conn.clone(),
                client_ip,
            }),
        })
    }
}

impl<P, L> MakeConnService for ProxyPipeline<P, L>
where
    P: ProxyHttp,
    L: ProxyLayer<P>,
{
    type Service = L::Service;

    fn make_service(&self, conn: &ConnInfo) -> L::Service {
        self.service_for(conn)
    }

    /// Same proxy and options, its own upstream pool.
    fn for_worker(this: &Arc<Self>) -> Arc<Self> {
        Arc::new(ProxyPipeline::sharing(
            this.shared.proxy.clone(),
            this.shared.options.clone(),
            this.layer.clone(),
            this.shared.stats.clone(),
        ))
    }
}

/// A listening HTTP proxy service named `name` running `proxy`'s phases, with default
/// options. Add listeners with [`HttpService::add_tcp`].
pub fn http_proxy_service<P: ProxyHttp>(
    name: impl Into<String>,
    proxy: P,
) -> HttpService<ProxyPipeline<P>> {
    http_proxy_service_with(name, proxy, ProxyOptions::default(), Identity::new())
}

/// Like [`http_proxy_service`], with `options` and a tower `layer` around the pipeline
/// (e.g. `tower::limit::ConcurrencyLimitLayer`, or a `tower::ServiceBuilder` stack).
pub fn http_proxy_service_with<P, L>(
    name: impl Into<String>,
    proxy: P,
    options: ProxyOptions,
    layer: L,
) -> HttpService<ProxyPipeline<P, L>>
where
    P: ProxyHttp,
    L: ProxyLayer<P>,
{
    HttpService::new(name, ProxyPipeline::new(proxy, options, layer))
}

//! One proxy written twice — declared with `proxy!` and written by hand with the runtime
//! API — and an in-memory harness to drive either, for the zero-cost benchmark
//! (`benches/dsl.rs`) and tests (`tests/zero_cost.rs`).
//!
//! Both twins have the same routes (an answered `/healthz`, `/api` forwarded with a request
//! header, everything else forwarded), the same response header, and the same
//! `request_filter` and `response_filter`. The hand-written twin is what a person writes
//! with the runtime's `Router` and `ProxyHttp`; the declared twin is what `proxy!` makes of
//! the declaration. Requests reach the pipeline over an in-memory duplex pipe (no
//! downstream socket); forwarded ones go to a loopback origin.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use pingora_dsl::downstream::ConnInfo;
use pingora_dsl::lb::UpstreamGroup;
use pingora_dsl::lb::{Backend, Strategy};
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::route::{HeaderEdit, Route, RouteAction, RouteCtx, RouteMatch, Router};

/// The header both twins' `response_filter` sets on forwarded responses.
pub const X_TWIN: HeaderName = HeaderName::from_static("x-twin");

/// Per-request state of both twins.
#[derive(Default)]
pub struct TwinCtx {
    /// Requests that passed `request_filter`.
    pub passed: u32,
}

proxy! {
    /// The declared twin.
    pub DeclaredTwin {
        listen "127.0.0.1:6188";
        ctx TwinCtx;
        upstream origin { peers ["127.0.0.1:8001"]; }
        route path "/healthz" => respond 200 "ok\n";
        route path "/api" => upstream origin {
            set_request_header "x-route" "api";
        }
        route => upstream origin;
        set_response_header "x-served-by" "twin";

        request_filter(session, ctx) {
            if session.headers().contains_key("x-deny") {
                return Ok(Flow::respond(StatusCode::FORBIDDEN));
            }
            ctx.passed += 1;
        }
        response_filter(_session, response, ctx) {
            if ctx.passed > 0 {
                response.headers.insert(X_TWIN, HeaderValue::from_static("1"));
            }
        }
    }
}

/// The hand-written twin.
pub struct HandWrittenTwin {
    router: Router,
}

impl HandWrittenTwin {
    /// The twin with its routes, forwarding to `127.0.0.1:8001` until re-pointed.
    pub fn new() -> Self {
        let origin = UpstreamGroup::new(
            "origin",
            vec![Backend::weighted(
                SocketAddr::from(([127, 0, 0, 1], 8001)),
                1,
            )],
            Strategy::round_robin(),
        );
        let routes = vec![
            Route::new(
                RouteMatch {
                    path_prefix: Some("/healthz".into()),
                    ..RouteMatch::default()
                },
                RouteAction::Respond(StatusCode::OK, Bytes::from_static(b"ok\n")),
            ),
            Route::new(
                RouteMatch {
                    path_prefix: Some("/api".into()),
                    ..RouteMatch::default()
                },
                RouteAction::Upstream(0),
            )
            .with_request_edits(vec![HeaderEdit::Set(
                HeaderName::from_static("x-route"),
                HeaderValue::from_static("api"),
            )]),
            Route::new(RouteMatch::default(), RouteAction::Upstream(0)),
        ];
        HandWrittenTwin {
            router: Router::new(vec![origin], routes).with_response_edits(vec![HeaderEdit::Set(
                HeaderName::from_static("x-served-by"),
                HeaderValue::from_static("twin"),
            )]),
        }
    }

    /// Mutable routes and groups, to point the twin at a test origin.
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }
}

impl Default for HandWrittenTwin {
    fn default() -> Self {
        HandWrittenTwin::new()
    }
}

impl ProxyHttp for HandWrittenTwin {
    type Ctx = RouteCtx<TwinCtx>;

    fn new_ctx(&self) -> Self::Ctx {
        RouteCtx::new(TwinCtx::default())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::Ctx) -> Result<Flow> {
        if let Some(flow) = self.router.request_filter(session, ctx) {
            return Ok(flow);
        }
        if session.headers().contains_key("x-deny") {
            return Ok(Flow::respond(StatusCode::FORBIDDEN));
        }
        ctx.user.passed += 1;
        Ok(Flow::Continue)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Self::Ctx) -> Result<HttpPeer> {
        self.router.upstream_peer(session, ctx).await
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        ctx: &mut Self::Ctx,
    ) -> Result<()> {
        self.router.upstream_request_filter(ctx, request);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::Ctx,
    ) -> Result<()> {
        self.router.response_filter(ctx, response);
        if ctx.user.passed > 0 {
            response
                .headers
                .insert(X_TWIN, HeaderValue::from_static("1"));
        }
        Ok(())
    }
}

/// Points both twins' `origin` group at `addr`.
pub fn point_twins(declared: &mut DeclaredTwin, hand: &mut HandWrittenTwin, addr: SocketAddr) {
    for router in [declared.router_mut(), hand.router_mut()] {
        if let Some(group) = router.group_mut("origin") {
            group.set_backends(vec![Backend::new(addr)]);
        }
    }
}

/// A client connection to each twin's pipeline (declared first), both forwarding to
/// `origin`: what the benchmark and the tests compare.
pub async fn connect_twins(
    origin: SocketAddr,
) -> std::io::Result<(SendRequest<Empty<Bytes>>, SendRequest<Empty<Bytes>>)> {
    let (mut declared, mut hand) = (DeclaredTwin::new(), HandWrittenTwin::new());
    point_twins(&mut declared, &mut hand, origin);
    let declared = declared.pipeline();
    let hand = pingora_dsl::proxy::ProxyPipeline::new(
        hand,
        ProxyOptions::default(),
        pingora_dsl::proxy::Identity::new(),
    );
    let a = connect_in_memory(declared.service_for(&harness_conn())).await?;
    let b = connect_in_memory(hand.service_for(&harness_conn())).await?;
    Ok((a, b))
}

/// The connection identity the harness presents to a pipeline.
pub fn harness_conn() -> ConnInfo {
    ConnInfo::new(
        SocketAddr::from(([127, 0, 0, 1], 40000)),
        SocketAddr::from(([127, 0, 0, 1], 6188)),
    )
}

/// Serves `service` (one downstream connection's service) over an in-memory pipe on the
/// current tokio runtime, and returns a hyper client connected to it.
pub async fn connect_in_memory<S, B>(service: S) -> std::io::Result<SendRequest<Empty<Bytes>>>
where
    S: tower_service::Service<Request<DownstreamBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let service =
        tower::util::MapRequest::new(service, |r: Request<Incoming>| r.map(DownstreamBody::from));
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), TowerToHyperService::new(service)),
    );
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends `GET path` on `sender` and reads the whole response; returns its status and body
/// length.
pub async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<(StatusCode, usize), Box<dyn std::error::Error + Send + Sync>> {
    sender.ready().await?;
    let request = Request::get(path)
        .header(http::header::HOST, "twin.test")
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body.len()))
}

/// A tower service wrapper that records the size of each response future it passes on
/// (the boxed future of one proxied request), for the future-size comparison.
#[derive(Clone)]
pub struct MeasureFuture<S> {
    inner: S,
    size: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<S> MeasureFuture<S> {
    /// Wraps `inner`; sizes go to `size`.
    pub fn new(inner: S, size: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        MeasureFuture { inner, size }
    }
}

impl<S, T> tower_service::Service<Request<DownstreamBody>> for MeasureFuture<S>
where
    S: tower_service::Service<
        Request<DownstreamBody>,
        Error = Infallible,
        Future = std::pin::Pin<Box<T>>,
    >,
    T: std::future::Future<Output = Result<S::Response, Infallible>> + ?Sized,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<T>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<DownstreamBody>) -> Self::Future {
        let future = self.inner.call(request);
        self.size.store(
            std::mem::size_of_val(&*future),
            std::sync::atomic::Ordering::Relaxed,
        );
        future
    }
}

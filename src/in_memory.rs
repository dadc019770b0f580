//! An in-memory harness for one proxy pipeline: a client connection over a duplex pipe (no
//! downstream socket, so the figures are the proxy's and not the kernel's), a request
//! helper, and the size of each request's boxed future. The zero-cost benchmark
//! (`benches/dsl.rs`) and tests (`tests/zero_cost.rs`) drive the two load balancers of the
//! examples with it, the declared one and the hand-written one; forwarded requests go to a
//! loopback origin.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use pingora_dsl::downstream::ConnInfo;
use pingora_dsl::lb::Backend;
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::route::Router;
use pingora_dsl::proxy::{Identity, ProxyPipeline};

/// A client connection to a proxy served in memory.
pub type Client = SendRequest<Empty<Bytes>>;

/// The `Host` every request of [`exchange`] carries (the proxies under test replace it).
pub const CLIENT_HOST: &str = "client.test";

/// Replaces the peers of `router`'s pool `pool` with the single `addr`, as `--upstream
/// ADDR` does for a declared proxy. Returns whether the pool exists.
pub fn point_pool(router: &mut Router, pool: &str, addr: SocketAddr) -> bool {
    match router.group_mut(pool) {
        Some(group) => {
            group.set_backends(vec![Backend::new(addr)]);
            true
        }
        None => false,
    }
}

/// The pipeline `http_proxy_service` builds for `proxy`: `options`, no tower layer. For a
/// proxy declared without `layer`, this is also what `pipeline()` returns, with its type
/// nameable (`pipeline()` returns an opaque layer, whose futures cannot be measured).
pub fn pipeline<P: ProxyHttp>(proxy: P, options: ProxyOptions) -> ProxyPipeline<P> {
    ProxyPipeline::new(proxy, options, Identity::new())
}

/// Serves `proxy` (see [`pipeline`]) to one in-memory client connection, on the current
/// tokio runtime.
pub async fn connect<P: ProxyHttp>(proxy: P, options: ProxyOptions) -> std::io::Result<Client> {
    connect_in_memory(pipeline(proxy, options).service_for(&harness_conn())).await
}

/// Like [`connect`], recording the size of each request's boxed future in the returned
/// [`FutureSize`].
pub async fn connect_measured<P: ProxyHttp>(
    proxy: P,
    options: ProxyOptions,
) -> std::io::Result<(Client, FutureSize)> {
    let size = FutureSize::default();
    let service = pipeline(proxy, options).service_for(&harness_conn());
    let client = connect_in_memory(MeasureFuture {
        inner: service,
        size: size.clone(),
    })
    .await?;
    Ok((client, size))
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
pub async fn connect_in_memory<S, B>(service: S) -> std::io::Result<Client>
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

/// What a proxy answered to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response status.
    pub status: StatusCode,
    /// The whole response body.
    pub body: Bytes,
}

/// Sends `GET path` (with `Host: client.test`) on `client` and reads the whole response.
pub async fn exchange(
    client: &mut Client,
    path: &str,
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    exchange_with(client, path, &[]).await
}

/// Like [`exchange`], with `headers` added to the request.
pub async fn exchange_with(
    client: &mut Client,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    client.ready().await?;
    let mut request = Request::get(path).header(http::header::HOST, CLIENT_HOST);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new())?;
    let response = client.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer { status, body })
}

/// The size in bytes of the boxed future of the last request a [`connect_measured`]
/// connection served (0 before the first): what one proxied request holds on the heap
/// while it runs, the part of its cost that the proxy's code decides.
#[derive(Clone, Debug, Default)]
pub struct FutureSize(Arc<AtomicUsize>);

impl FutureSize {
    /// The last size recorded.
    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A tower service wrapper that records the size of each response future it passes on
/// (the boxed future of one proxied request).
#[derive(Clone)]
struct MeasureFuture<S> {
    inner: S,
    size: FutureSize,
}

impl<S, T> tower_service::Service<Request<DownstreamBody>> for MeasureFuture<S>
where
    S: tower_service::Service<Request<DownstreamBody>, Error = Infallible, Future = Pin<Box<T>>>,
    T: Future<Output = Result<S::Response, Infallible>> + ?Sized,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = Pin<Box<T>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<DownstreamBody>) -> Self::Future {
        let future = self.inner.call(request);
        self.size
            .0
            .store(std::mem::size_of_val(&*future), Ordering::Relaxed);
        future
    }
}

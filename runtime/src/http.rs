//! Downstream HTTP/1.1 serving: a listening [`HttpService`] that hands each accepted
//! connection to hyper with a per-connection tower service.
//!
//! The per-connection service comes from a [`MakeConnService`], which sees the client's
//! address once per connection (so per-connection values such as `X-Forwarded-For` are
//! computed once, not per request). A proxy is one such maker; [`serve_handler`] makes any
//! plain tower service one, for apps that are not proxies.
//!
//! hyper enforces the HTTP/1 framing rules (malformed request line or headers -> 400,
//! oversized head -> 431, conflicting `Content-Length` -> 400) and answers
//! `Expect: 100-continue` when the body is first read. This module sets the head size and
//! count limits and adds the timeouts: a write timeout per stalled write, and the head read
//! timeout, which runs from the end of the previous response (or the accept) until the next
//! request head is complete — the keep-alive idle limit and the slowloris limit in one. It
//! is enforced by the connection's [`TimedIo`] with one lazily re-armed timer, rather than by
//! hyper's, which allocates and registers a timer for every request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::error::BoxError;
use crate::io_timeout::{ActiveGuard, ActiveRequests, ReadDeadline, TimedIo};
use crate::listen::{self, AcceptStats};
use crate::server::{self, shutdown_channel, BoxFuture, ShutdownTrigger, ShutdownWatch};

/// hyper refuses read buffers smaller than this.
const MIN_HEAD_BYTES: usize = 8192;
/// hyper's own header count limit when none is configured.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Limits and timeouts of downstream HTTP connections. The defaults are finite everywhere.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Time allowed from accept, or from the end of the previous response, until a request
    /// head is complete: the slow-header (slowloris) limit and the keep-alive idle timeout.
    /// Default 60 s.
    pub header_read_timeout: Duration,
    /// Time a response write may make no progress (client not reading). Default 60 s.
    pub write_timeout: Duration,
    /// Largest request head in bytes; a larger one is answered with 431. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in a request head; more is answered with 431. Default 100.
    pub max_headers: usize,
    /// Whether connections are kept alive between requests. Default true.
    pub keepalive: bool,
    /// Keep the case of header names as the client sent them, toward the upstream.
    /// Costs an allocation per request; default false.
    pub preserve_header_case: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            keepalive: true,
            preserve_header_case: false,
        }
    }
}

impl HttpOptions {
    fn hyper_builder(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.keep_alive(self.keepalive)
            .max_buf_size(self.max_header_bytes.max(MIN_HEAD_BYTES))
            .preserve_header_case(self.preserve_header_case);
        // hyper parses up to 100 headers in a stack array, but any explicit limit (even 100)
        // into a heap vector per request: only set a limit that differs.
        if self.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            b.max_headers(self.max_headers);
        }
        b
    }
}

/// The peer and local addresses of a downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The address the connection was accepted on.
    pub local_addr: SocketAddr,
}

/// Makes the tower service that serves one downstream connection.
pub trait MakeConnService: Send + Sync + 'static {
    /// The per-connection service.
    type Service;

    /// Builds the service for a new connection.
    fn make_service(&self, conn: &ConnInfo) -> Self::Service;

    /// The maker a worker of a per-core server uses. The default shares `this`; a maker
    /// with per-worker state (a proxy's connection pool) returns a fresh copy, so no
    /// request crosses threads.
    fn for_worker(this: &Arc<Self>) -> Arc<Self>
    where
        Self: Sized,
    {
        this.clone()
    }
}

/// A [`MakeConnService`] that clones one plain handler for every connection.
#[derive(Debug, Clone)]
pub struct ServeHandler<S>(S);

impl<S: Clone + Send + Sync + 'static> MakeConnService for ServeHandler<S> {
    type Service = S;

    fn make_service(&self, _conn: &ConnInfo) -> S {
        self.0.clone()
    }
}

/// An HTTP server service serving `handler`, a tower service from request to response, on
/// every connection. For apps that are not proxies.
///
/// ```no_run
/// use std::convert::Infallible;
/// use pingora_dsl_runtime::http::serve_handler;
/// use pingora_dsl_runtime::server::{Server, ServerConf};
///
/// let hello = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
///     Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hello\n"))))
/// });
/// let mut service = serve_handler("hello", hello);
/// service.add_tcp("127.0.0.1:8080");
/// let mut server = Server::new(ServerConf::default());
/// server.add_service(service);
/// server.run_forever();
/// ```
pub fn serve_handler<S>(name: impl Into<String>, handler: S) -> HttpService<ServeHandler<S>>
where
    ServeHandler<S>: MakeConnService,
{
    HttpService::new(name, ServeHandler(handler))
}

/// Counts open connections so shutdown can wait for them to drain.
#[derive(Debug, Default)]
struct ConnTracker {
    open: AtomicUsize,
    drained: Notify,
}

struct ConnGuard(Arc<ConnTracker>);

impl ConnTracker {
    fn enter(self: &Arc<Self>) -> ConnGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.clone())
    }

    async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// A listening service speaking HTTP/1.1 on its TCP addresses, serving each connection with
/// the service its [`MakeConnService`] builds.
pub struct HttpService<M> {
    name: String,
    addrs: Vec<String>,
    listeners: Vec<std::net::TcpListener>,
    make: Arc<M>,
    options: HttpOptions,
    stats: Arc<AcceptStats>,
    tracker: Arc<ConnTracker>,
}

impl<M: MakeConnService> HttpService<M> {
    /// A service named `name` with no listener yet.
    pub fn new(name: impl Into<String>, make: M) -> Self {
        HttpService {
            name: name.into(),
            addrs: Vec::new(),
            listeners: Vec::new(),
            make: Arc::new(make),
            options: HttpOptions::default(),
            stats: Arc::new(AcceptStats::default()),
            tracker: Arc::new(ConnTracker::default()),
        }
    }

    /// Adds a TCP listening address (`"127.0.0.1:6188"`, `"[::]:80"`); bound at startup.
    pub fn add_tcp(&mut self, addr: &str) {
        self.addrs.push(addr.to_owned());
    }

    /// Removes the listening addresses added so far (not yet bound ones), e.g. to replace
    /// a declared proxy's addresses with those given on the command line.
    pub fn clear_tcp(&mut self) {
        self.addrs.clear();
    }

    /// The listening addresses, as added.
    pub fn tcp_addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection limits and timeouts.
    pub fn options(&self) -> &HttpOptions {
        &self.options
    }

    /// Mutable access to the connection limits and timeouts, before the service starts.
    pub fn options_mut(&mut self) -> &mut HttpOptions {
        &mut self.options
    }

    /// The connection maker (for a proxy: the proxy).
    pub fn maker(&self) -> &M {
        &self.make
    }

    /// Accept counters shared by all of this service's listeners.
    pub fn accept_stats(&self) -> Arc<AcceptStats> {
        self.stats.clone()
    }

    /// The addresses actually bound (after [`server::Service::bind`]; useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Binds every listening address now (idempotent). [`server::Server`] does this at
    /// startup; call it yourself to learn the addresses of port-0 listeners early.
    pub fn bind(&mut self) -> io::Result<()> {
        self.bind_with(&mut listen::Sockets::new())
    }

    /// Like [`HttpService::bind`], taking the sockets from `sockets`: those inherited from
    /// an old process in a graceful upgrade are adopted instead of bound.
    pub fn bind_with(&mut self, sockets: &mut listen::Sockets) -> io::Result<()> {
        if !self.listeners.is_empty() {
            return Ok(());
        }
        if self.addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listening address: call add_tcp(\"127.0.0.1:6188\") first",
            ));
        }
        for addr in &self.addrs {
            for resolved in listen::resolve(addr)? {
                self.listeners.push(sockets.tcp(resolved)?);
            }
        }
        Ok(())
    }
}

impl<M, S, B> HttpService<M>
where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Binds (if not yet bound) and starts serving on the current tokio runtime, returning a
    /// handle with the bound addresses and a way to stop. For tests and embedding.
    pub fn spawn(mut self) -> io::Result<RunningService> {
        HttpService::bind(&mut self)?;
        let addrs = self.local_addrs();
        let stats = self.stats.clone();
        let (trigger, watch) = shutdown_channel();
        let grace = Duration::from_secs(1);
        let task = tokio::spawn(server::Service::start(Box::new(self), watch, grace));
        Ok(RunningService {
            addrs,
            stats,
            trigger,
            task,
        })
    }

    async fn run(self, shutdown: ShutdownWatch, grace: Duration) {
        let shared = Arc::new(ConnShared {
            make: self.make,
            builder: self.options.hyper_builder(),
            options: self.options,
            tracker: self.tracker.clone(),
        });
        let mut loops = Vec::with_capacity(self.listeners.len());
        for std_listener in self.listeners {
            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(service = %self.name, error = %e, "cannot adopt listener");
                    continue;
                }
            };
            let local_addr = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(service = %self.name, error = %e, "listener has no address");
                    continue;
                }
            };
            tracing::info!(service = %self.name, addr = %local_addr, "listening");
            let shared = shared.clone();
            let conn_shutdown = shutdown.clone();
            loops.push(tokio::spawn(listen::accept_loop(
                listener,
                self.stats.clone(),
                shutdown.clone(),
                move |stream, client_addr| {
                    let conn = ConnInfo {
                        client_addr,
                        local_addr,
                    };
                    let guard = shared.tracker.enter();
                    tokio::spawn(serve_connection(
                        shared.clone(),
                        stream,
                        conn,
                        conn_shutdown.clone(),
                        guard,
                    ));
                },
            )));
        }
        for l in loops {
            let _ = l.await;
        }
        // Accepting has stopped; connections got the shutdown signal and finish their work,
        // until the grace period ends or an immediate stop cuts it short.
        let mut immediate = shutdown.clone();
        tokio::select! {
            drained = tokio::time::timeout(grace, self.tracker.wait_drained()) => {
                if drained.is_err() {
                    tracing::warn!(
                        service = %self.name,
                        open = self.tracker.open.load(Ordering::Relaxed),
                        "grace period over; closing remaining connections"
                    );
                }
            }
            _ = immediate.wait_immediate() => {
                tracing::info!(
                    service = %self.name,
                    open = self.tracker.open.load(Ordering::Relaxed),
                    "stopping now; closing remaining connections"
                );
            }
        }
    }
}

struct ConnShared<M> {
    make: Arc<M>,
    builder: hyper::server::conn::http1::Builder,
    options: HttpOptions,
    tracker: Arc<ConnTracker>,
}

async fn serve_connection<M, S, B>(
    shared: Arc<ConnShared<M>>,
    stream: TcpStream,
    conn: ConnInfo,
    mut shutdown: ShutdownWatch,
    _guard: ConnGuard,
) where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Small responses must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let active = ActiveRequests::default();
    let read_deadline = ReadDeadline::WhileIdle {
        active: active.clone(),
        timeout: shared.options.header_read_timeout,
    };
    let io = TimedIo::new(stream, read_deadline, Some(shared.options.write_timeout));
    let service = Tracked {
        inner: shared.make.make_service(&conn),
        active: active.clone(),
    };
    let connection = shared
        .builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let result = drive_until_shutdown(connection, &mut shutdown, &active).await;
    if let Err(e) = result {
        tracing::debug!(client = %conn.client_addr, error = %e, "downstream connection ended with an error");
    }
}

/// Drives `connection` to its end, draining it when shutdown is requested first.
///
/// Draining never closes a connection under a request the client may already have sent.
/// The next response made says `Connection: close` (see `Tracked`), and hyper closes the
/// connection once it is written; a response already under way finishes as it started.
/// A connection that stays idle for [`IDLE_LINGER`] is closed.
///
/// The shutdown future is polled once to register this task's waker, then only when the
/// watch reports a change: re-polling it on every wake-up of the connection (several per
/// request) would cost a lock each time.
async fn drive_until_shutdown<C>(
    mut connection: std::pin::Pin<&mut C>,
    shutdown: &mut ShutdownWatch,
    active: &ActiveRequests,
) -> C::Output
where
    C: std::future::Future + GracefulShutdown,
{
    use std::task::Poll;
    let probe = shutdown.clone();
    let mut wait = std::pin::pin!(shutdown.wait());
    let mut registered = false;
    let stop = std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = connection.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if !registered || probe.has_changed() {
            registered = true;
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await;
    if let Some(out) = stop {
        return out;
    }
    active.set_draining();
    // The linger restarts whenever the connection is seen busy: it counts idle time only.
    let mut linger = std::pin::pin!(tokio::time::sleep(IDLE_LINGER));
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = connection.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if active.get() > 0 {
            linger
                .as_mut()
                .reset(tokio::time::Instant::now() + IDLE_LINGER);
            return Poll::Pending;
        }
        if linger.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    if let Some(out) = ended {
        return out;
    }
    // Idle all along the linger: close it.
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// How long a draining connection may stay idle before it is closed. Closing an idle
/// keep-alive connection at once would lose a request the client may already have sent
/// (it sees a reset or an empty reply): the race every keep-alive client of a restarting
/// server otherwise runs.
pub const IDLE_LINGER: Duration = Duration::from_secs(1);

/// hyper's connections that can be asked to finish gracefully.
trait GracefulShutdown {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> GracefulShutdown for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

impl<M, S, B> server::Service for HttpService<M>
where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn bind(&mut self, sockets: &mut listen::Sockets) -> io::Result<()> {
        HttpService::bind_with(self, sockets)
    }

    fn start(self: Box<Self>, shutdown: ShutdownWatch, grace: Duration) -> BoxFuture<()> {
        Box::pin(self.run(shutdown, grace))
    }

    fn worker_copy(&self) -> io::Result<Option<Box<dyn server::Service>>> {
        let listeners = self
            .listeners
            .iter()
            .map(|l| l.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Some(Box::new(HttpService {
            name: self.name.clone(),
            addrs: self.addrs.clone(),
            listeners,
            make: M::for_worker(&self.make),
            options: self.options.clone(),
            stats: self.stats.clone(),
            tracker: Arc::new(ConnTracker::default()),
        })))
    }
}

/// A service started with [`HttpService::spawn`]: its addresses, counters and a stop switch.
pub struct RunningService {
    addrs: Vec<SocketAddr>,
    stats: Arc<AcceptStats>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl RunningService {
    /// The bound addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Accept counters of the service's listeners.
    pub fn accept_stats(&self) -> &AcceptStats {
        &self.stats
    }

    /// Stops accepting, lets open connections finish (up to one second), and waits.
    pub async fn shutdown(self) {
        self.trigger.trigger();
        let _ = self.task.await;
    }
}

/// Counts a connection's requests as active from the call until the response body is done
/// (hyper drops the body when it has written it), which gates the head read timeout.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    active: ActiveRequests,
}

impl<S, B> tower::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let guard = self.active.enter();
        TrackedFuture {
            inner: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<ActiveGuard>,
    }
}

impl<F, B, E> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        // A response made while the connection drains is its last: it says so, and
        // hyper closes the connection once it is written.
        let draining = guard.as_ref().is_some_and(ActiveGuard::is_draining);
        std::task::Poll::Ready(result.map(|mut response| {
            if draining {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            response.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as active until it is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<ActiveGuard>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

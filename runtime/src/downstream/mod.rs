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

use crate::listen::proxy_protocol::{read_header, ProxyProtocol};
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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::Notify;

pub mod body;
mod direct_body;
mod h1;
mod h2;
pub mod h3;

use crate::error::BoxError;
use crate::io_timeout::{ActiveGuard, ActiveRequests, ReadDeadline, TimedIo};
use crate::listen::set::{AdoptedListener, ListenerSet};
use crate::listen::sniff::{sniff, Prefixed, Sniffed};
use crate::listen::tls::{TlsAcceptor, TlsSettings};
use crate::listen::{self, AcceptStats, ListenAddr};
use crate::metrics::ListenerStats;
use crate::service::{self, BoxFuture};
use crate::shutdown::ShutdownWatch;
use crate::splice::SpliceHook;
use body::DownstreamBody;
use h1::{End, HeadLimits};
use h2::FieldLimit;

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
    /// HTTP/2: offered by ALPN on TLS listeners and detected by its preface (prior
    /// knowledge, h2c) on cleartext ones. Default on.
    pub http2: Http2Options,
    /// Whether connections start with a PROXY protocol header naming the client (read
    /// within `header_read_timeout`, before TLS), on listeners without a mode of their own
    /// ([`ListenAddr::proxy_protocol`]). Default off.
    pub proxy_protocol: ProxyProtocol,
    /// The limits of HTTP/3 connections (QUIC listeners).
    pub quic: crate::listen::quic::QuicOptions,
    /// The `Alt-Svc` field HTTP/1 and HTTP/2 answers carry: set when a QUIC listener is
    /// bound, so that clients find it.
    pub alt_svc: Option<http::HeaderValue>,
}

/// HTTP/2 serving limits. The defaults follow nginx's and protect against rapid-reset
/// floods (CVE-2023-44487) and streams reset by the server's own errors.
#[derive(Debug, Clone)]
pub struct Http2Options {
    /// Whether HTTP/2 is served at all. Default true.
    pub enabled: bool,
    /// Streams a client may have open at once on one connection. Default 128.
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before the server processed them, before the
    /// connection is closed with `ENHANCE_YOUR_CALM`. Default 20.
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for protocol errors before it closes the connection.
    /// Default 256.
    pub max_local_error_reset_streams: usize,
    /// Flow-control window per stream, in bytes. Default 1 MiB.
    pub initial_stream_window: u32,
    /// Flow-control window per connection, in bytes. Default 2 MiB.
    pub initial_connection_window: u32,
}

impl Default for Http2Options {
    fn default() -> Self {
        Http2Options {
            enabled: true,
            max_concurrent_streams: 128,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 2 * 1024 * 1024,
        }
    }
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
            http2: Http2Options::default(),
            proxy_protocol: ProxyProtocol::Off,
            quic: crate::listen::quic::QuicOptions::default(),
            alt_svc: None,
        }
    }
}

impl HttpOptions {
    fn hyper_builder(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        // The read buffer bounds a head still arriving; `max_header_size` bounds a head
        // that completes within one read into a roomier buffer (the direct path hands
        // over everything it read at once), so both limits are needed for one limit.
        let head_limit = self.max_header_bytes.max(MIN_HEAD_BYTES);
        b.keep_alive(self.keepalive)
            .max_buf_size(head_limit)
            .max_header_size(head_limit)
            .preserve_header_case(self.preserve_header_case);
        // hyper parses up to 100 headers in a stack array, but any explicit limit (even 100)
        // into a heap vector per request: only set a limit that differs.
        if self.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            b.max_headers(self.max_headers);
        }
        b
    }

    fn h2_builder(&self) -> hyper::server::conn::http2::Builder<TokioExecutor> {
        let h2 = &self.http2;
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(h2.max_concurrent_streams)
            .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(h2.max_local_error_reset_streams)
            .initial_stream_window_size(h2.initial_stream_window)
            .initial_connection_window_size(h2.initial_connection_window)
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX));
        b
    }
}

/// The peer and local addresses of a downstream connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The address the connection was accepted on.
    pub local_addr: SocketAddr,
    /// Whether the connection arrived on a TLS listener (its requests' scheme is https).
    pub tls: bool,
    /// The key-exchange group its TLS handshake agreed on (as
    /// [`crate::tls::GROUP_NAMES`] spells it), for a TLS connection.
    pub tls_group: Option<&'static str>,
    /// The connection's request count: a tunnel (an upgraded connection) counts as a
    /// request in flight, so the idle-read deadline does not cut it.
    pub(crate) activity: ActiveRequests,
}

impl ConnInfo {
    /// A connection from `client_addr` accepted on `local_addr`.
    pub fn new(client_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        ConnInfo {
            client_addr,
            local_addr,
            tls: false,
            tls_group: None,
            activity: ActiveRequests::default(),
        }
    }

    /// The same, arrived on a TLS listener if `tls`.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Counts a tunnel over this connection as a request in flight while the guard lives.
    pub fn enter_tunnel(&self) -> ActiveGuard {
        self.activity.enter()
    }
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
/// use pingora_dsl_runtime::downstream::serve_handler;
/// use pingora_dsl_runtime::server::{Server, ServerConf};
///
/// let hello = tower::service_fn(|_req: http::Request<pingora_dsl_runtime::DownstreamBody>| async {
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
    stats: Arc<ListenerStats>,
}

struct ConnGuard(Arc<ConnTracker>);

impl ConnTracker {
    fn enter(self: &Arc<Self>) -> ConnGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.stats.accepted.inc();
        self.stats.open.inc();
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
        self.0.stats.open.dec();
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// A listening service speaking HTTP/1.1 on its TCP addresses, serving each connection with
/// the service its [`MakeConnService`] builds.
pub struct HttpService<M> {
    name: String,
    listeners: ListenerSet,
    /// QUIC (HTTP/3) listening addresses, then their bound sockets.
    quic: Vec<String>,
    quic_bound: Vec<BoundQuic>,
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
            listeners: ListenerSet::default(),
            quic: Vec::new(),
            quic_bound: Vec::new(),
            make: Arc::new(make),
            options: HttpOptions::default(),
            stats: Arc::new(AcceptStats::default()),
            tracker: Arc::new(ConnTracker::default()),
        }
    }

    /// Adds a TCP listening address (`"127.0.0.1:6188"`, `"[::]:80"`); bound at startup.
    pub fn add_tcp(&mut self, addr: &str) {
        self.listeners.add_tcp(addr);
    }

    /// Adds a listening address that terminates TLS with `tls` (certificates are loaded
    /// and checked at startup).
    pub fn add_tls(&mut self, addr: &str, tls: TlsSettings) {
        self.listeners.add_tls(addr, tls);
    }

    /// Adds `listen`, with TLS or without.
    pub fn add_listen(&mut self, listen: ListenAddr) {
        self.listeners.add(listen);
    }

    /// Sets the PROXY protocol mode of the listener on `addr` (TLS or not), added already or
    /// later, in place of the service's ([`HttpOptions::proxy_protocol`]).
    pub fn set_listener_proxy_protocol(&mut self, addr: &str, tls: bool, mode: ProxyProtocol) {
        self.listeners.set_proxy_protocol_of(addr, tls, mode);
    }

    /// Sets the PROXY protocol mode of every listener, theirs included (what a config
    /// file's `proxy_protocol` does).
    pub fn set_proxy_protocol(&mut self, mode: ProxyProtocol) {
        self.listeners.clear_proxy_protocol();
        self.options.proxy_protocol = mode;
    }

    /// Removes the cleartext listening addresses added so far (not yet bound ones), e.g.
    /// to replace a declared proxy's addresses with those given on the command line.
    pub fn clear_tcp(&mut self) {
        self.listeners.clear_tcp();
    }

    /// Removes the TLS listening addresses added so far (not yet bound ones).
    pub fn clear_tls(&mut self) {
        self.listeners.clear_tls();
    }

    /// The listening addresses, as added (TLS ones too).
    pub fn tcp_addrs(&self) -> Vec<String> {
        self.listeners.addr_texts()
    }

    /// The listening addresses and, once bound, their sockets.
    pub fn listeners(&self) -> &ListenerSet {
        &self.listeners
    }

    /// The listening addresses with their TLS settings.
    pub fn listen_addrs(&self) -> &[ListenAddr] {
        self.listeners.addrs()
    }

    /// Checks what binding would need besides the sockets: the addresses resolve, and
    /// every TLS certificate, key and CA loads and matches.
    pub fn check(&self) -> io::Result<()> {
        self.listeners.check(self.options.http2.enabled)?;
        for addr in &self.quic {
            self.quic_config(addr)?;
        }
        Ok(())
    }

    /// Adds a QUIC listening address (HTTP/3), serving the certificates of the service's
    /// (first) TLS listener, SNI included; bound at startup, its UDP socket handed over in
    /// upgrades like the TCP ones. HTTP/1 and HTTP/2 answers then carry `Alt-Svc` naming
    /// its port.
    pub fn add_quic(&mut self, addr: &str) {
        self.quic.push(addr.to_owned());
    }

    /// The QUIC configuration of listener `addr`: the TLS listener's certificates and the
    /// options' limits.
    fn quic_config(&self, addr: &str) -> io::Result<quinn::ServerConfig> {
        let in_context =
            |e: io::Error| io::Error::new(e.kind(), format!("QUIC listener {addr}: {e}"));
        let tls = self.listeners.tls_addrs().into_iter().find_map(|l| l.tls).ok_or_else(|| {
            in_context(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it serves the certificates of the proxy's TLS listener, and there is none: add one (`listen tls`, `tls_listen`, `--tls-listen`)",
            ))
        })?;
        listen::quic::server_config(&tls, &self.options.quic).map_err(in_context)
    }

    /// Removes the QUIC listening addresses (not yet bound ones).
    pub fn clear_quic(&mut self) {
        self.quic.clear();
    }

    /// The QUIC listening addresses as configured.
    pub fn quic_addrs(&self) -> Vec<String> {
        self.quic.clone()
    }

    /// The bound QUIC addresses (after [`bind`](HttpService::bind)).
    pub fn local_quic_addrs(&self) -> Vec<SocketAddr> {
        self.quic_bound.iter().map(|q| q.addr).collect()
    }

    /// Binds the QUIC listeners' UDP sockets (from `sockets`) and loads their certificates;
    /// sets the `Alt-Svc` of the other answers to the first one's port.
    fn bind_quic(&mut self, sockets: &mut listen::Sockets) -> io::Result<()> {
        if !self.quic_bound.is_empty() {
            return Ok(());
        }
        for addr in &self.quic {
            let config = self.quic_config(addr)?;
            for resolved in listen::resolve(addr)? {
                let socket = sockets.udp(resolved)?;
                let addr = socket.local_addr()?;
                self.quic_bound.push(BoundQuic {
                    socket,
                    addr,
                    config: config.clone(),
                });
            }
        }
        if let Some(first) = self.quic_bound.first() {
            let value = format!("h3=\":{}\"; ma=86400", first.addr.port());
            self.options.alt_svc = http::HeaderValue::from_str(&value).ok();
        }
        Ok(())
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

    /// Counters of the downstream connections: accepted, open, failed TLS handshakes.
    pub fn listener_stats(&self) -> &Arc<ListenerStats> {
        &self.tracker.stats
    }

    /// Accept counters shared by all of this service's listeners.
    pub fn accept_stats(&self) -> Arc<AcceptStats> {
        self.stats.clone()
    }

    /// The addresses actually bound, each with whether it terminates TLS.
    pub fn local_listeners(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners.local_listeners()
    }

    /// The addresses actually bound (after [`service::Service::bind`]; useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.local_addrs()
    }

    /// Binds every listening address now (idempotent). [`crate::server::Server`] does this at
    /// startup; call it yourself to learn the addresses of port-0 listeners early.
    pub fn bind(&mut self) -> io::Result<()> {
        self.bind_with(&mut listen::Sockets::new())
    }

    /// Like [`HttpService::bind`], taking the sockets from `sockets`: those inherited from
    /// an old process in a graceful upgrade are adopted instead of bound.
    pub fn bind_with(&mut self, sockets: &mut listen::Sockets) -> io::Result<()> {
        let http2 = self.options.http2.enabled;
        self.listeners.bind_with(sockets, http2)?;
        self.bind_quic(sockets)
    }
}

impl<M, S, B> HttpService<M>
where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>> + Clone + Send + 'static,
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
        let quic = self.local_quic_addrs();
        let stats = self.stats.clone();
        let running = service::Running::spawn(addrs, |watch| {
            service::Service::start(Box::new(self), watch, Duration::from_secs(1))
        });
        Ok(RunningService {
            running,
            stats,
            quic,
        })
    }

    async fn run(self, shutdown: ShutdownWatch, grace: Duration) {
        let shared = Arc::new(ConnShared {
            make: self.make,
            builder: self.options.hyper_builder(),
            h2_builder: self.options.h2_builder(),
            options: self.options,
            tracker: self.tracker.clone(),
        });
        let mut loops = Vec::new();
        for quic in self.quic_bound {
            match listen::quic::endpoint(quic.socket, quic.config) {
                Ok(endpoint) => loops.push(tokio::spawn(h3::serve_endpoint(
                    endpoint,
                    shared.clone(),
                    shared.options.quic.clone(),
                    shutdown.clone(),
                ))),
                Err(e) => {
                    tracing::error!(service = %self.name, addr = %quic.addr, error = %e, "cannot serve QUIC")
                }
            }
        }
        for AdoptedListener {
            listener,
            local_addr,
            tls,
            proxy_protocol,
        } in self.listeners.adopt(&self.name)
        {
            let proxy_protocol = proxy_protocol.unwrap_or(shared.options.proxy_protocol);
            let shared = shared.clone();
            let conn_shutdown = shutdown.clone();
            loops.push(tokio::spawn(listen::accept_loop(
                listener,
                self.stats.clone(),
                shutdown.clone(),
                move |stream, client_addr| {
                    let conn = ConnInfo::new(client_addr, local_addr).with_tls(tls.is_some());
                    let guard = shared.tracker.enter();
                    // Boxed here, built in its box: the connection's future (about 4 KB)
                    // is otherwise moved by value through every step of spawning a task
                    // and again as the task ends, each move a copy.
                    let connection = Box::write(
                        Box::new_uninit(),
                        serve_connection(
                            shared.clone(),
                            stream,
                            (tls.clone(), proxy_protocol),
                            conn,
                            conn_shutdown.clone(),
                            guard,
                        ),
                    );
                    tokio::spawn(Box::into_pin(connection));
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

/// A bound QUIC listener, to serve.
struct BoundQuic {
    socket: std::net::UdpSocket,
    addr: SocketAddr,
    config: quinn::ServerConfig,
}

struct ConnShared<M> {
    make: Arc<M>,
    builder: hyper::server::conn::http1::Builder,
    h2_builder: hyper::server::conn::http2::Builder<TokioExecutor>,
    options: HttpOptions,
    tracker: Arc<ConnTracker>,
}

async fn serve_connection<M, S, B>(
    shared: Arc<ConnShared<M>>,
    stream: TcpStream,
    (tls, proxy_protocol): (Option<Arc<TlsAcceptor>>, ProxyProtocol),
    mut conn: ConnInfo,
    mut shutdown: ShutdownWatch,
    _guard: ConnGuard,
) where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Small responses must not wait for Nagle. On Linux the socket has it from its listener
    // (see `ListenerSet::adopt`).
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    match read_header(
        &mut stream,
        proxy_protocol,
        shared.options.header_read_timeout,
    )
    .await
    {
        Ok(Some(client)) => conn.client_addr = client,
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(peer = %conn.client_addr, error = %e, "connection closed: PROXY protocol");
            return;
        }
    }
    let active = conn.activity.clone();
    let read_deadline = ReadDeadline::WhileIdle {
        active: active.clone(),
        timeout: shared.options.header_read_timeout,
    };
    let io = TimedIo::new(stream, read_deadline, Some(shared.options.write_timeout));
    // The handshake first: the connection's service sees what it negotiated.
    let io = match tls {
        Some(acceptor) => match Box::pin(acceptor.accept(io)).await {
            Ok(tls) => {
                shared.tracker.stats.count_tls_group(tls.group);
                conn.tls_group = Some(tls.group);
                Ok(tls)
            }
            Err(e) => {
                shared.tracker.stats.tls_failures.inc();
                crate::listen::tls::log_handshake_failure(conn.client_addr, &e);
                return;
            }
        },
        None => Err(io),
    };
    let service = Tracked {
        inner: shared.make.make_service(&conn),
        active: active.clone(),
        alt_svc: shared.options.alt_svc.clone().map(Arc::new),
    };
    let result = match io {
        Ok(tls) if tls.h2 => Box::pin(serve_h2(
            &shared,
            tls.stream,
            service,
            &mut shutdown,
            &active,
        ))
        .await
        .map_err(Into::into),
        Ok(tls) => serve_h1(&shared, tls.stream, service, &mut shutdown, &active).await,
        Err(io) if shared.options.http2.enabled => match sniff(io).await {
            // Boxed, as the TLS handshake: what most connections never do is not kept in
            // every connection's task.
            Ok(Sniffed::Http2(io)) => {
                Box::pin(serve_h2(&shared, io, service, &mut shutdown, &active))
                    .await
                    .map_err(Into::into)
            }
            Ok(Sniffed::Http1(io)) => serve_h1(&shared, io, service, &mut shutdown, &active).await,
            Ok(Sniffed::Closed) => return,
            Err(e) => {
                tracing::debug!(client = %conn.client_addr, error = %e, "nothing readable arrived");
                return;
            }
        },
        Err(io) => serve_h1(&shared, io, service, &mut shutdown, &active).await,
    };
    if let Err(e) = result {
        tracing::debug!(client = %conn.client_addr, error = %e, "downstream connection ended with an error");
    }
}

async fn serve_h1<M, S, B, I>(
    shared: &ConnShared<M>,
    io: I,
    mut service: Tracked<S>,
    shutdown: &mut ShutdownWatch,
    active: &ActiveRequests,
) -> Result<(), BoxError>
where
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    I: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + crate::splice::SpliceSocket
        + Unpin
        + Send
        + 'static,
{
    // Plain requests are served on the direct path until one needs hyper (see
    // `downstream_h1`); header-case preservation and disabled keep-alive are hyper's alone.
    let (io, buffered) = if shared.options.keepalive && !shared.options.preserve_header_case {
        let limits = HeadLimits {
            max_bytes: shared.options.max_header_bytes.max(MIN_HEAD_BYTES),
            max_headers: shared.options.max_headers,
        };
        match h1::serve(io, &mut service, limits, shutdown, active, IDLE_LINGER).await {
            End::Closed(result) => return result,
            End::HandOff { io, buffered } => (io, buffered),
        }
    } else {
        (io, Bytes::new())
    };
    // With upgrades: a tunnelled request (WebSocket) takes the connection over after its
    // 101 response.
    // Boxed: hyper's connection is large, and in place it would make every connection's
    // task that large, on the direct path too (which hands over rarely).
    let mut connection = Box::pin(
        shared
            .builder
            .serve_connection(
                TokioIo::new(Prefixed::new(buffered, io)),
                TowerToHyperService::new(service),
            )
            .with_upgrades(),
    );
    drive_until_shutdown(connection.as_mut(), shutdown, Some(active))
        .await
        .map_err(Into::into)
}

async fn serve_h2<M, S, B, I>(
    shared: &ConnShared<M>,
    io: I,
    service: Tracked<S>,
    shutdown: &mut ShutdownWatch,
    active: &ActiveRequests,
) -> hyper::Result<()>
where
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = FieldLimit {
        inner: service,
        max_headers: shared.options.max_headers,
    };
    let connection = shared
        .h2_builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    // Draining an HTTP/2 connection is a GOAWAY: the client learns which streams were
    // not processed and retries them elsewhere, so there is no idle race to avoid. An idle
    // connection is drained the same way (see `downstream_h2`).
    active.signal_idle();
    {
        let drive = drive_until_shutdown(connection.as_mut(), shutdown, None);
        tokio::pin!(drive);
        let idle = std::future::poll_fn(|cx| match drive.as_mut().poll(cx) {
            std::task::Poll::Ready(ended) => std::task::Poll::Ready(Some(ended)),
            // (Set by the connection's read during the poll above.)
            std::task::Poll::Pending if active.idle_reached() => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        });
        if let Some(ended) = idle.await {
            return ended;
        }
    }
    tracing::debug!("idle HTTP/2 connection: GOAWAY");
    GracefulShutdown::graceful_shutdown(connection.as_mut());
    drive_until_shutdown(connection, shutdown, None).await
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
    http1: Option<&ActiveRequests>,
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
    let Some(active) = http1 else {
        connection.as_mut().graceful_shutdown();
        return connection.await;
    };
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

impl<I, S, B> GracefulShutdown for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

impl<I, S, B> GracefulShutdown for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<M, S, B> service::Service for HttpService<M>
where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>> + Clone + Send + 'static,
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

    fn worker_copy(&self) -> io::Result<Option<Box<dyn service::Service>>> {
        Ok(Some(Box::new(HttpService {
            name: self.name.clone(),
            listeners: self.listeners.try_clone()?,
            // A QUIC endpoint reads its socket alone (a packet read by another would be
            // lost to it): the first worker serves HTTP/3.
            quic: Vec::new(),
            quic_bound: Vec::new(),
            make: M::for_worker(&self.make),
            options: self.options.clone(),
            stats: self.stats.clone(),
            // Each worker drains its own connections, into the service's one set of
            // counters.
            tracker: Arc::new(ConnTracker {
                stats: self.tracker.stats.clone(),
                ..ConnTracker::default()
            }),
        })))
    }
}

/// A service started with [`HttpService::spawn`]: its addresses, counters and a stop switch.
pub struct RunningService {
    running: service::Running,
    stats: Arc<AcceptStats>,
    quic: Vec<SocketAddr>,
}

impl RunningService {
    /// The bound addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        self.running.addrs()
    }

    /// The first bound address.
    pub fn addr(&self) -> SocketAddr {
        self.running.addr()
    }

    /// Accept counters of the service's listeners.
    pub fn accept_stats(&self) -> &AcceptStats {
        &self.stats
    }

    /// The bound QUIC (HTTP/3) addresses.
    pub fn quic_addrs(&self) -> &[SocketAddr] {
        &self.quic
    }

    /// Stops accepting, lets open connections finish (up to one second), and waits.
    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }
}

/// Counts a connection's requests as active from the call until the response body is done
/// (hyper drops the body when it has written it), which gates the head read timeout.
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    pub(crate) inner: S,
    pub(crate) active: ActiveRequests,
    /// The `Alt-Svc` every answer carries (the proxy's QUIC listener), if any (shared:
    /// a request's future carries a pointer, not the value).
    pub(crate) alt_svc: Option<Arc<http::HeaderValue>>,
}

/// Serves hyper's requests (`Incoming` bodies) and the direct path's alike.
impl<S, B, R> tower::Service<Request<R>> for Tracked<S>
where
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>>,
    B: 'static,
    R: Into<DownstreamBody>,
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

    fn call(&mut self, request: Request<R>) -> Self::Future {
        let guard = self.active.enter();
        TrackedFuture {
            inner: self.inner.call(request.map(Into::into)),
            guard: Some(guard),
            alt_svc: self.alt_svc.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<ActiveGuard>,
        alt_svc: Option<Arc<http::HeaderValue>>,
    }
}

impl<F, B, E> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
    B: 'static,
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
            // (A 101 keeps its `Connection: upgrade`: the connection becomes a tunnel.)
            if let Some(alt_svc) = this.alt_svc.take() {
                response
                    .headers_mut()
                    .insert(http::header::ALT_SVC, (*alt_svc).clone());
            }
            if draining && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            // A body that may be spliced is still found inside its wrapper.
            if let Some(hook) = response.extensions_mut().get_mut::<SpliceHook>() {
                *hook = hook.wrapped(|body| {
                    body.downcast_mut::<TrackedBody<B>>()
                        .map(|tracked| &mut tracked.inner as &mut dyn std::any::Any)
                });
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

impl<M: MakeConnService> crate::service::TlsListeners for HttpService<M> {
    fn proxy_name(&self) -> &str {
        self.name()
    }

    fn listen_addrs(&self) -> &[ListenAddr] {
        HttpService::listen_addrs(self)
    }

    fn clear_tls(&mut self) {
        HttpService::clear_tls(self)
    }

    fn add_tls(&mut self, addr: &str, tls: TlsSettings) {
        HttpService::add_tls(self, addr, tls)
    }
}

//! [`HttpClient`]: sends requests to an [`HttpPeer`] over pooled HTTP/1.1 connections.
//!
//! The proxy forwards through it, and it is usable on its own. A request goes out on the
//! most recently used idle connection to the peer, or a new one. If hyper reports that a
//! reused connection closed before the request was written (the origin's keep-alive timer
//! raced ours), the untouched request is sent again on another connection: nothing reaches
//! the origin twice, and no request fails because a pooled connection had died.
//!
//! Requests without a body (GET, HEAD, OPTIONS, TRACE) and requests whose body is framed by
//! its `Content-Length` to HTTP/1.1 peers take the direct path of [`h1`](super::h1) instead
//! of hyper's client: the same pool discipline, without a connection task in between. A
//! pooled connection that turns out closed before the origin answered a word is retried on
//! another there too, for the bodiless safe methods only (a body, once streamed, is gone,
//! and an unsafe method may have taken effect).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::http2::SendRequest as Http2Sender;
use hyper_util::rt::TokioIo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::io_timeout::{BusyFlag, IoTimeout, ReadDeadline, TimedIo};
use crate::splice::{Pipe, Piped, SpliceHook, SpliceSource};
use crate::upstream::h1::{self, BodyReader, H1Conn, HeadProgress};
use crate::upstream::peer::{HttpPeer, PoolKey, UpstreamHttp};
use crate::upstream::pool::{Conn, Pool};
use crate::upstream::stream::UpstreamStream;

/// How often a request whose pooled connection turned out closed is tried on another one.
const MAX_STALE_RETRIES: usize = 3;

/// Settings of an [`HttpClient`] and its pool.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Most idle connections kept per peer; the oldest beyond it are closed. Default 1024,
    /// so a busy proxy does not churn connections (a smaller cap trades reuse for memory).
    pub max_idle_per_peer: usize,
    /// Write header names in the case the downstream client used (when the request carries
    /// hyper's case map, see `HttpOptions::preserve_header_case`). Default false.
    pub preserve_header_case: bool,
    /// Largest response head accepted from an upstream, in bytes. Default 64 KiB.
    pub max_response_head_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_idle_per_peer: 1024,
            preserve_header_case: false,
            max_response_head_bytes: 64 * 1024,
        }
    }
}

/// An HTTP/1.1 client with a connection pool keyed by peer. Cheap to clone (shares the pool).
///
/// ```no_run
/// # async fn demo() -> Result<(), pingora_dsl_runtime::Error> {
/// use http_body_util::{BodyExt, Empty};
/// use pingora_dsl_runtime::upstream::{HttpClient, HttpPeer};
///
/// let client: HttpClient<Empty<bytes::Bytes>> = HttpClient::default();
/// let peer = HttpPeer::new("127.0.0.1:8080".parse().unwrap());
/// let request = http::Request::get("/").header("host", "example.org").body(Empty::new())?;
/// let response = client.send(&peer, request).await?;
/// let body = response.into_body().collect().await?.to_bytes();
/// println!("{} bytes", body.len());
/// # Ok(()) }
/// ```
pub struct HttpClient<B> {
    pool: Arc<Pool<B>>,
    builder: Arc<hyper::client::conn::http1::Builder>,
    h2_builder: Arc<hyper::client::conn::http2::Builder<TokioExecutor>>,
    /// Whether bodiless requests may take the direct path (not when header case must be
    /// preserved: only hyper reads its case map).
    direct: bool,
    max_response_head_bytes: usize,
}

impl<B> Clone for HttpClient<B> {
    fn clone(&self) -> Self {
        HttpClient {
            pool: self.pool.clone(),
            builder: self.builder.clone(),
            h2_builder: self.h2_builder.clone(),
            direct: self.direct,
            max_response_head_bytes: self.max_response_head_bytes,
        }
    }
}

/// A new upstream connection: HTTP/1.1, or a multiplexed HTTP/2 one.
enum Connected<B> {
    Http1(Conn<B>),
    Http2(Http2Sender<B>),
}

/// The connection a request goes on, and whether it was reused.
enum Chosen<B> {
    Http1(Conn<B>, bool),
    Http2(Http2Sender<B>, bool),
}

/// How often an HTTP/2 upstream connection is pinged while streams are open, and how long
/// a ping may go unanswered before the connection counts as dead.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

impl<B> Default for HttpClient<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    fn default() -> Self {
        HttpClient::new(ClientOptions::default())
    }
}

impl<B> HttpClient<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// A client with `options` and an empty pool.
    pub fn new(options: ClientOptions) -> Self {
        let mut builder = hyper::client::conn::http1::Builder::new();
        builder
            .preserve_header_case(options.preserve_header_case)
            .max_buf_size(options.max_response_head_bytes.max(8192));
        let mut h2 = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEPALIVE)
            .keep_alive_timeout(H2_KEEPALIVE)
            .max_header_list_size(
                u32::try_from(options.max_response_head_bytes).unwrap_or(u32::MAX),
            );
        HttpClient {
            pool: Arc::new(Pool::new(options.max_idle_per_peer)),
            builder: Arc::new(builder),
            h2_builder: Arc::new(h2),
            direct: !options.preserve_header_case,
            max_response_head_bytes: options.max_response_head_bytes.max(1024),
        }
    }

    /// Sends `request` to `peer` and returns the response head; the body streams after.
    ///
    /// The request is sent as is: its URI should be in origin form (`/path?query`) and it
    /// should carry a `Host` header. Errors carry an [`ErrorKind`] that says what failed
    /// (connect refused or timed out, read or write timeout, closed, invalid response).
    pub async fn send(
        &self,
        peer: &HttpPeer,
        request: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>> {
        self.try_send(peer, request).await.map_err(|e| e.error)
    }

    /// Like [`send`](HttpClient::send), but when no connection to `peer` could be made the
    /// untouched request comes back in the error, so it can go to another peer.
    ///
    /// (A function returning an `async move` block: an `async fn` would keep the request
    /// twice in its future, which is part of every proxied request's boxed future.)
    #[allow(clippy::manual_async_fn)] // (see above)
    pub fn try_send<'a>(
        &'a self,
        peer: &'a HttpPeer,
        mut request: Request<B>,
    ) -> impl std::future::Future<Output = Result<Response<UpstreamBody<B>>, SendError<B>>> + 'a
    {
        async move {
            if self.direct
                && (peer.http() == UpstreamHttp::Http1
                    || (peer.http() == UpstreamHttp::Negotiate && peer.tls().is_none()))
                && h1::is_direct(&request)
            {
                if request.body().is_end_stream() {
                    return self.send_direct(peer, request).await;
                }
                return Box::pin(self.send_direct_with_body(peer, request)).await;
            }
            let key = peer.pool_key();
            let mut fresh = None;
            if peer.http() != UpstreamHttp::Http1 && !self.pool.negotiated_h1(&key) {
                match self.h2_connection(peer, key).await {
                    Ok(Chosen::Http2(sender, reused)) => {
                        return Box::pin(self.send_h2(sender, peer, request, reused)).await
                    }
                    Ok(Chosen::Http1(conn, _)) => fresh = Some(conn),
                    Err(error) => {
                        return Err(SendError {
                            error,
                            request: Some(request),
                        })
                    }
                }
            }
            let mut stale = 0;
            loop {
                let (mut conn, reused) = match self.h1_connection(peer, key, fresh.take()).await {
                    Ok(Chosen::Http1(conn, reused)) => (conn, reused),
                    Ok(Chosen::Http2(sender, reused)) => {
                        return Box::pin(self.send_h2(sender, peer, request, reused)).await;
                    }
                    Err(error) => {
                        return Err(SendError {
                            error,
                            request: Some(request),
                        })
                    }
                };
                if reused && !conn.sender.is_ready() {
                    // A connection goes idle a moment after its body ended; wait for that, and
                    // skip it if it died instead.
                    let ready = Box::pin(tokio::time::timeout(
                        peer.timeouts().connect,
                        conn.sender.ready(),
                    ));
                    match ready.await {
                        Ok(Ok(())) => {}
                        _ => continue,
                    }
                }
                if reused {
                    count_reuse(peer);
                }
                conn.busy.set(true);
                match conn.sender.try_send_request(request).await {
                    Ok(response) => return Ok(self.pooled_response(response, peer, key, conn)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if reused && stale < MAX_STALE_RETRIES => {
                            tracing::debug!(peer = %peer.addr(), "pooled connection was closed; resending on another");
                            stale += 1;
                            request = unsent;
                        }
                        _ => {
                            return Err(SendError {
                                error: upstream_error(e.into_error(), "sending request upstream"),
                                request: None,
                            })
                        }
                    },
                }
            }
        }
    }

    /// The connection for a request to `peer`, which may speak HTTP/2: a pooled HTTP/2
    /// connection, else a new one (which ALPN may make HTTP/1.1: later requests to the
    /// peer then skip this). One connection attempt at a time per peer, so concurrent
    /// first requests share the multiplexed connection instead of each opening their own.
    async fn h2_connection(&self, peer: &HttpPeer, key: PoolKey) -> Result<Chosen<B>> {
        if let Some(sender) = self.pool.h2_checkout(&key) {
            count_reuse(peer);
            return Ok(Chosen::Http2(sender, true));
        }
        let gate = self.pool.h2_gate(&key);
        let _held = gate.lock().await;
        if let Some(sender) = self.pool.h2_checkout(&key) {
            count_reuse(peer);
            return Ok(Chosen::Http2(sender, true));
        }
        Ok(match Box::pin(self.connect(peer)).await? {
            Connected::Http2(sender) => {
                self.pool.h2_checkin(key, sender.clone());
                Chosen::Http2(sender, false)
            }
            Connected::Http1(conn) => {
                self.pool.mark_h1(key);
                Chosen::Http1(conn, false)
            }
        })
    }

    /// The HTTP/1 connection for the next try of a request to `peer`: `fresh` if given,
    /// else a pooled one, else a new one (which ALPN may make HTTP/2: it is pooled).
    async fn h1_connection(
        &self,
        peer: &HttpPeer,
        key: PoolKey,
        fresh: Option<Conn<B>>,
    ) -> Result<Chosen<B>> {
        if let Some(conn) = fresh {
            return Ok(Chosen::Http1(conn, false));
        }
        let pooled = match self.pool.checkout(&key) {
            Some(conn) => Some(conn),
            None => self.adopt_direct(&key, peer).await,
        };
        if let Some(conn) = pooled {
            return Ok(Chosen::Http1(conn, true));
        }
        // Connecting is the cold path: boxed, so the common (pooled) request's future
        // stays small.
        Ok(match Box::pin(self.connect(peer)).await? {
            Connected::Http2(sender) => {
                self.pool.h2_checkin(key, sender.clone());
                Chosen::Http2(sender, false)
            }
            Connected::Http1(conn) => Chosen::Http1(conn, false),
        })
    }

    /// The response of a pooled HTTP/1 connection, whose body gives `conn` back to the pool
    /// when read to the end. A connection switching protocols (101) never returns to the
    /// pool, and the tunnel it becomes has its own idle timeout, not the read timeout.
    fn pooled_response(
        &self,
        response: Response<Incoming>,
        peer: &HttpPeer,
        key: PoolKey,
        conn: Conn<B>,
    ) -> Response<UpstreamBody<B>> {
        let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            conn.busy.set(false);
        }
        let release = (!switching).then(|| Release {
            pool: self.pool.clone(),
            key,
            idle_timeout: peer.timeouts().idle,
            conn,
        });
        response.map(|body| UpstreamBody::hyper(body, release))
    }

    /// Sends a bodiless `request` on the direct path (see the module docs). (An `async
    /// move` block, as in `try_send`: an `async fn` would hold the request twice.)
    #[allow(clippy::manual_async_fn)] // (see above)
    fn send_direct<'a>(
        &'a self,
        peer: &'a HttpPeer,
        request: Request<B>,
    ) -> impl std::future::Future<Output = Result<Response<UpstreamBody<B>>, SendError<B>>> + 'a
    {
        async move {
            let key = peer.pool_key();
            // (`Content-Length: 0` brings an unsafe method here too; it is not resent.)
            let resendable = h1::is_safe(request.method());
            let mut stale = 0;
            loop {
                let (mut conn, reused) = match self.direct_connection(peer, &key).await {
                    Ok(chosen) => chosen,
                    Err(error) => {
                        return Err(SendError {
                            error,
                            request: Some(request),
                        })
                    }
                };
                let exchanged = match conn.write_request(&request).await {
                    Ok(()) => {
                        conn.read_response(request.method(), self.max_response_head_bytes)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match exchanged {
                    Ok((head, reader)) => {
                        // The request head is written: its map serves a later request.
                        crate::header_pool::give_back(request.into_parts().0.headers);
                        let release = Release {
                            pool: self.pool.clone(),
                            key,
                            idle_timeout: peer.timeouts().idle,
                            conn,
                        };
                        return Ok(head.map(|()| UpstreamBody::direct(reader, release, None)));
                    }
                    Err(e) if e.unanswered && resendable && reused && stale < MAX_STALE_RETRIES => {
                        tracing::debug!(peer = %peer.addr(), error = %e.error, "pooled connection was closed; resending on another");
                        stale += 1;
                    }
                    Err(e) => {
                        return Err(SendError {
                            error: e.error,
                            request: None,
                        })
                    }
                }
            }
        }
    }

    /// A pooled direct-path connection to `peer`, or a new one, marked busy; and whether it
    /// was reused.
    async fn direct_connection(
        &self,
        peer: &HttpPeer,
        key: &PoolKey,
    ) -> Result<(Box<H1Conn>, bool)> {
        let (conn, reused) = match self.pool.checkout_direct(key) {
            Some(conn) => {
                count_reuse(peer);
                (conn, true)
            }
            // Connecting is the cold path: boxed, so the pooled request's future stays small.
            None => (Box::pin(self.connect_direct(peer)).await?, false),
        };
        conn.busy.set(true);
        Ok((conn, reused))
    }

    /// Sends `request`, whose body is framed by its `Content-Length`, on the direct path:
    /// the body goes out while the response head is awaited, and if the head comes first
    /// (an origin that answers early, or streams its answer as the body arrives) the rest
    /// of the body goes out as the response body is read. An origin that closes the
    /// connection while the body goes out is still heard if it answered first (a 413).
    /// Never resent: the body is consumed as it goes.
    async fn send_direct_with_body(
        &self,
        peer: &HttpPeer,
        request: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>, SendError<B>> {
        let key = peer.pool_key();
        let (mut conn, _) = match self.direct_connection(peer, &key).await {
            Ok(chosen) => chosen,
            Err(error) => {
                return Err(SendError {
                    error,
                    request: Some(request),
                })
            }
        };
        let length = request.body().size_hint().exact().unwrap_or(0);
        conn.encode_request_head(&request);
        let (mut parts, body) = request.into_parts();
        crate::header_pool::give_back(std::mem::take(&mut parts.headers));
        let mut body = body;
        let splice = parts.extensions.remove::<SpliceHook>().filter(|hook| {
            conn.is_plain() && hook.source(&mut body).is_some_and(|s| s.can_splice())
        });
        let mut sending = Sending {
            body,
            out: h1::Outgoing::new(length),
            splice,
        };
        let max_head = self.max_response_head_bytes;
        let method = &parts.method;
        let mut progress = HeadProgress::default();
        let first = std::future::poll_fn(|cx| {
            match sending.poll_send(&mut conn, cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(None)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            conn.poll_response(method, max_head, &mut progress, cx)
                .map(|r| r.map(Some).map_err(|e| e.error))
        })
        .await;
        let (answer, unsent) = match first {
            Ok(Some(answer)) => (Ok(answer), Some(Box::new(Aside::Sending(sending)))),
            // All sent: go on reading the head where the loop above left it (interim
            // answers it skipped stay counted).
            Ok(None) => (
                std::future::poll_fn(|cx| conn.poll_response(method, max_head, &mut progress, cx))
                    .await,
                None,
            ),
            // Writing failed as the origin closed: it may have answered first (the
            // connection is not reused, see below).
            Err(e) if e.kind() == ErrorKind::UpstreamClosed => (
                conn.read_response(method, max_head)
                    .await
                    .map(|(head, mut reader)| {
                        reader.forbid_reuse();
                        (head, reader)
                    })
                    .map_err(|_| h1::ExchangeError {
                        error: e,
                        unanswered: false,
                    }),
                None,
            ),
            Err(error) => {
                return Err(SendError {
                    error,
                    request: None,
                })
            }
        };
        let (head, reader) = answer.map_err(|e| SendError {
            error: e.error,
            request: None,
        })?;
        let release = Release {
            pool: self.pool.clone(),
            key,
            idle_timeout: peer.timeouts().idle,
            conn,
        };
        Ok(head.map(|()| UpstreamBody::direct(reader, release, unsent)))
    }

    /// An idle direct-path connection to `key`, handed over to hyper for a request only
    /// hyper's client carries (one with a body, an upgrade): a peer keeps one set of
    /// connections whichever path its requests take. (The other way is closed: hyper does
    /// not give a connection back.)
    async fn adopt_direct(&self, key: &PoolKey, peer: &HttpPeer) -> Option<Conn<B>> {
        let (stream, busy) = self.pool.checkout_direct(key)?.into_parts();
        let sender = self.handshake(stream, peer).await.ok()?;
        Some(Conn { sender, busy })
    }

    /// Opens a direct-path connection to `peer`, counted like [`connect`](Self::connect).
    async fn connect_direct(&self, peer: &HttpPeer) -> Result<Box<H1Conn>> {
        let (stream, busy, _) = counted(peer, self.open_stream(peer, false)).await?;
        Ok(Box::new(H1Conn::new(stream, busy)))
    }

    /// Idle connections currently pooled for `peer`.
    pub fn idle_connections(&self, peer: &HttpPeer) -> usize {
        self.pool.idle_count(&peer.pool_key())
    }

    /// Sends `request` as a stream of the multiplexed connection `sender`. A connection
    /// found dead before the request went out is dropped from the pool, and (when it was
    /// a pooled one) the request goes on a new connection.
    async fn send_h2(
        &self,
        mut sender: Http2Sender<B>,
        peer: &HttpPeer,
        request: Request<B>,
        pooled: bool,
    ) -> Result<Response<UpstreamBody<B>>, SendError<B>> {
        let key = peer.pool_key();
        let request = h2_request(request, peer);
        let t = peer.timeouts();
        let ready = tokio::time::timeout(t.connect, sender.ready()).await;
        if !matches!(ready, Ok(Ok(()))) {
            self.pool.h2_remove(&key, &sender);
            if pooled {
                return match Box::pin(self.connect(peer)).await {
                    Ok(Connected::Http2(fresh)) => {
                        self.pool.h2_checkin(key, fresh.clone());
                        Box::pin(self.send_h2_once(fresh, peer, request)).await
                    }
                    Ok(Connected::Http1(_)) => Err(SendError {
                        error: Error::new(
                            ErrorKind::InvalidResponse,
                            "upstream no longer offers HTTP/2",
                        ),
                        request: None,
                    }),
                    Err(error) => Err(SendError {
                        error,
                        request: Some(request),
                    }),
                };
            }
            return Err(SendError {
                error: Error::new(
                    ErrorKind::UpstreamClosed,
                    "HTTP/2 connection to upstream closed",
                ),
                request: Some(request),
            });
        }
        self.send_h2_once(sender, peer, request).await
    }

    async fn send_h2_once(
        &self,
        mut sender: Http2Sender<B>,
        peer: &HttpPeer,
        request: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>, SendError<B>> {
        let t = peer.timeouts();
        match tokio::time::timeout(t.read, sender.send_request(request)).await {
            Ok(Ok(response)) => Ok(response.map(|body| UpstreamBody::hyper(body, None))),
            Ok(Err(e)) => Err(SendError {
                error: upstream_error(e, "sending request upstream over HTTP/2"),
                request: None,
            }),
            Err(_) => Err(SendError {
                error: Error::new(ErrorKind::ReadTimeout, "waiting for the HTTP/2 response"),
                request: None,
            }),
        }
    }

    /// Opens a new connection to `peer`, counting it (and how long it took) in the
    /// peer's stats.
    async fn connect(&self, peer: &HttpPeer) -> Result<Connected<B>> {
        counted(peer, self.open(peer)).await
    }

    async fn open(&self, peer: &HttpPeer) -> Result<Connected<B>> {
        let offer_h2 = peer.http() != UpstreamHttp::Http1;
        let (stream, busy, h2) = self.open_stream(peer, offer_h2).await?;
        let h2c = peer.tls().is_none() && peer.http() == UpstreamHttp::Http2;
        if h2 || h2c {
            // A stream's read timeout is per request.
            busy.set(false);
            return Ok(Connected::Http2(self.handshake_h2(stream, peer).await?));
        }
        if peer.http() == UpstreamHttp::Http2 {
            return Err(Error::new(
                ErrorKind::UpstreamTls,
                "upstream did not agree to HTTP/2 (ALPN)",
            ));
        }
        Ok(Connected::Http1(Conn {
            sender: self.handshake(stream, peer).await?,
            busy,
        }))
    }

    /// Connects to `peer` (TCP, then TLS if the peer has it, offering HTTP/2 by ALPN when
    /// `offer_h2`). Returns the stream, the flag arming its read timeout, and whether ALPN
    /// chose HTTP/2.
    async fn open_stream(
        &self,
        peer: &HttpPeer,
        offer_h2: bool,
    ) -> Result<(UpstreamStream, BusyFlag, bool)> {
        let t = peer.timeouts();
        let stream = match tokio::time::timeout(t.connect, TcpStream::connect(peer.addr())).await {
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::ConnectTimeout,
                    "connecting to upstream",
                ))
            }
            Ok(Err(e)) => {
                return Err(Error::with_source(
                    ErrorKind::ConnectRefused,
                    "connecting to upstream",
                    e,
                ))
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        if let Some(header) = peer.proxy_header() {
            send_proxy_header(&mut stream, header, t.write).await?;
        }
        let busy = BusyFlag::default();
        let read_deadline = ReadDeadline::WhileBusy {
            busy: busy.clone(),
            timeout: t.read,
        };
        let io = TimedIo::new(stream, read_deadline, Some(t.write));
        let Some(tls) = peer.tls() else {
            return Ok((UpstreamStream::Plain(io), busy, false));
        };
        let handshake = tls.connect(io, peer.addr().ip(), offer_h2);
        match tokio::time::timeout(t.connect, handshake).await {
            Ok(done) => {
                let (stream, h2) = done?;
                Ok((UpstreamStream::Tls(stream), busy, h2))
            }
            Err(_) => Err(Error::new(
                ErrorKind::ConnectTimeout,
                "TLS handshake with upstream",
            )),
        }
    }

    /// Starts HTTP/2 on a connected `io` and drives the connection on its own task.
    async fn handshake_h2<I>(&self, io: I, peer: &HttpPeer) -> Result<Http2Sender<B>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = self
            .h2_builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| upstream_error(e, "starting upstream HTTP/2 connection"))?;
        let addr = peer.addr();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %addr, error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Starts HTTP/1.1 on a connected `io` and drives the connection on its own task.
    async fn handshake<I>(&self, io: I, peer: &HttpPeer) -> Result<SendRequest<B>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = self
            .builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| upstream_error(e, "starting upstream connection"))?;
        let addr = peer.addr();
        tokio::spawn(async move {
            // With upgrades: after a 101 the connection becomes a tunnel (WebSocket).
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(peer = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Runs `connecting` (a new connection to `peer`) and counts it, with how long it took, in
/// the peer's stats.
async fn counted<T>(
    peer: &HttpPeer,
    connecting: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let Some(stats) = peer.stats() else {
        return connecting.await;
    };
    let started = std::time::Instant::now();
    let connected = connecting.await?;
    stats.connect_time.observe(started.elapsed());
    stats.connections_new.inc();
    Ok(connected)
}

/// Counts a request sent over an existing connection to `peer`.
fn count_reuse(peer: &HttpPeer) {
    if let Some(stats) = peer.stats() {
        stats.connections_reused.inc();
    }
}

/// An HTTP/2 request has its target in absolute form (`:scheme`, `:authority`), taken
/// from `Host` (or the peer's address), and no `Host` field.
fn h2_request<B>(mut request: Request<B>, peer: &HttpPeer) -> Request<B> {
    let authority = request
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .or_else(|| http::uri::Authority::try_from(peer.addr().to_string()).ok());
    let scheme = if peer.tls().is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = http::Version::HTTP_2;
    request
}

/// Why [`HttpClient::try_send`] failed, with the request if none of it was sent.
pub struct SendError<B> {
    /// What failed.
    pub error: Error,
    /// The request, returned untouched when no connection could be made.
    pub request: Option<Request<B>>,
}

impl<B> std::fmt::Debug for SendError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .field("request_returned", &self.request.is_some())
            .finish()
    }
}

/// Maps a hyper client error to the proxy's [`ErrorKind`]s.
pub(crate) fn upstream_error(e: hyper::Error, context: &'static str) -> Error {
    if let Some(t) = IoTimeout::find(&e) {
        let kind = match t {
            IoTimeout::Write => ErrorKind::WriteTimeout,
            IoTimeout::Read | IoTimeout::Idle => ErrorKind::ReadTimeout,
        };
        return Error::with_source(kind, context, e);
    }
    // A failure of the body we were forwarding is the downstream's, not the upstream's.
    if let Some(kind) = downstream_cause(&e) {
        return Error::with_source(kind, "reading the request body from the client", e);
    }
    let kind = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        ErrorKind::InvalidResponse
    } else {
        ErrorKind::UpstreamClosed
    };
    Error::with_source(kind, context, e)
}

fn downstream_cause(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut cur = e.source();
    while let Some(s) = cur {
        if let Some(ours) = s.downcast_ref::<Error>() {
            return Some(ours.kind());
        }
        cur = s.source();
    }
    None
}

/// Hands a connection back to its pool once its response is complete.
struct Release<B, C> {
    pool: Arc<Pool<B>>,
    key: PoolKey,
    idle_timeout: Duration,
    conn: C,
}

/// A request body still going out while its response is read (see
/// `HttpClient::send_direct_with_body`).
struct Sending<B> {
    body: B,
    out: h1::Outgoing,
    /// How to splice the body, when it can be and the connection is cleartext.
    splice: Option<SpliceHook>,
}

impl<B> Sending<B>
where
    B: Body<Data = Bytes> + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// Writes what the body has, until all of it is written.
    fn poll_send(&mut self, conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let spliced = self.splice.and_then(|hook| hook.source(&mut self.body));
        match spliced {
            Some(source) => self.out.poll_send_spliced(conn, source, cx),
            None => self.out.poll_send(conn, Pin::new(&mut self.body), cx),
        }
    }
}

/// A response body streaming from an upstream; its connection returns to the pool when the
/// body has been read to the end (a body dropped early closes its connection instead).
pub struct UpstreamBody<B> {
    inner: Inner<B>,
}

enum Inner<B> {
    /// Read by hyper's client (request bodies, upgrades, HTTP/2).
    Hyper {
        body: Incoming,
        release: Option<Release<B, Conn<B>>>,
    },
    /// Read off the connection by the direct path.
    Direct {
        reader: BodyReader,
        /// The connection, until the body ends or fails.
        conn: Option<Release<B, Box<H1Conn>>>,
        /// A failure held back for one poll (see `poll_frame`).
        failed: Option<Error>,
        /// What the few bodies that need more carry beside (boxed: most carry nothing).
        aside: Option<Box<Aside<B>>>,
    },
}

/// What a direct-path body carries beside its reader.
enum Aside<B> {
    /// The rest of the request body, when the origin answered before it had it all.
    Sending(Sending<B>),
    /// The pipe the body is spliced through, once its taker asked for that.
    Splicing(Splicing),
}

impl<B> Aside<B> {
    /// Whether a request body is still going out.
    fn is_sending(aside: &Option<Box<Aside<B>>>) -> bool {
        matches!(aside.as_deref(), Some(Aside::Sending(_)))
    }
}

/// A response body on its way from the origin's socket to the client's through a pipe.
struct Splicing {
    pipe: Pipe,
    /// Bytes in the pipe, not drained yet.
    piped: usize,
}

impl<B: Send + 'static> UpstreamBody<B> {
    fn hyper(body: Incoming, release: Option<Release<B, Conn<B>>>) -> Self {
        let mut body = UpstreamBody {
            inner: Inner::Hyper { body, release },
        };
        if body.is_end() {
            body.release();
        }
        body
    }

    fn direct(
        reader: BodyReader,
        conn: Release<B, Box<H1Conn>>,
        aside: Option<Box<Aside<B>>>,
    ) -> Self {
        let mut body = UpstreamBody {
            inner: Inner::Direct {
                reader,
                conn: Some(conn),
                failed: None,
                aside,
            },
        };
        if body.is_end() {
            body.release();
        }
        body
    }

    fn is_end(&self) -> bool {
        match &self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            // A body still going out holds the end back (see `poll_frame`).
            // (as do bytes still in the pipe).
            Inner::Direct { reader, aside, .. } => {
                reader.is_end()
                    && match aside.as_deref() {
                        None => true,
                        Some(Aside::Sending(_)) => false,
                        Some(Aside::Splicing(s)) => s.piped == 0,
                    }
            }
        }
    }

    /// Returns the connection to the pool (the body is complete).
    fn release(&mut self) {
        match &mut self.inner {
            Inner::Hyper { release, .. } => {
                if let Some(r) = release.take() {
                    r.pool.checkin(r.key, r.conn, r.idle_timeout);
                }
            }
            Inner::Direct {
                reader,
                conn,
                aside,
                ..
            } => {
                if let Some(r) = conn.take() {
                    // A request body not sent whole leaves the connection unusable.
                    if reader.reusable(&r.conn) && !Aside::is_sending(aside) {
                        r.pool.checkin_direct(r.key, r.conn, r.idle_timeout);
                    }
                }
            }
        }
    }
}

impl<B> UpstreamBody<B> {
    /// Whether the rest of the body may be spliced into the client's socket (see
    /// [`SpliceSource`]): read on the direct path, framed by its length, large, over
    /// cleartext, with no request body still going out.
    pub(crate) fn can_splice(&self) -> bool {
        match &self.inner {
            Inner::Direct {
                reader,
                conn: Some(r),
                failed: None,
                aside: None,
            } => reader.can_splice(&r.conn),
            _ => false,
        }
    }
}

/// Spliced, the body ends as read frame by frame does: its connection back to the pool at
/// its end (the bytes in the pipe are no longer the connection's), closed on a failure.
impl<B> SpliceSource for UpstreamBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    fn can_splice(&self) -> bool {
        UpstreamBody::can_splice(self)
    }

    fn poll_piped(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piped>>> {
        let Inner::Direct {
            reader,
            conn,
            failed,
            aside,
        } = &mut self.inner
        else {
            // Not asked: `can_splice` said no.
            return Poll::Ready(Some(Err(Error::new(
                ErrorKind::Internal,
                "a body hyper reads is not spliced",
            ))));
        };
        if let Some(e) = failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(Aside::Splicing(s)) = aside.as_deref() {
            if s.piped != 0 {
                return Poll::Ready(Some(Ok(Piped::InPipe(s.piped))));
            }
        }
        let Some(r) = conn.as_mut() else {
            return Poll::Ready(None);
        };
        if aside.is_none() {
            match Pipe::new() {
                Ok(pipe) => *aside = Some(Box::new(Aside::Splicing(Splicing { pipe, piped: 0 }))),
                Err(e) => tracing::debug!(error = %e, "no pipe for splicing: the body is copied"),
            }
        }
        let polled = match aside.as_deref() {
            Some(Aside::Splicing(s)) => reader.poll_piped(&mut r.conn, &s.pipe, cx),
            _ => reader
                .poll_frame(&mut r.conn, cx)
                .map(|r| r.map(|frame| frame.and_then(|f| f.into_data().ok()).map(Piped::Chunk))),
        };
        let next = match std::task::ready!(polled) {
            Err(e) => {
                *conn = None;
                return Poll::Ready(Some(Err(e)));
            }
            Ok(next) => next,
        };
        if let (Some(Piped::InPipe(n)), Some(Aside::Splicing(s))) = (&next, aside.as_deref_mut()) {
            s.piped = *n;
        }
        if next.is_none() || reader.is_end() {
            self.release();
        }
        Poll::Ready(next.map(Ok))
    }

    fn poll_drain(&mut self, into: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Inner::Direct {
            aside: Some(aside), ..
        } = &mut self.inner
        else {
            return Poll::Ready(Err(io::ErrorKind::InvalidInput.into()));
        };
        let Aside::Splicing(s) = &mut **aside else {
            return Poll::Ready(Err(io::ErrorKind::InvalidInput.into()));
        };
        let n = std::task::ready!(s.pipe.poll_drain(into, s.piped, cx))?;
        s.piped -= n;
        Poll::Ready(Ok(n))
    }
}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Hyper { body, release } => match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    *release = None;
                    return Poll::Ready(Some(Err(upstream_error(
                        e,
                        "reading response body from upstream",
                    ))));
                }
                Poll::Ready(Some(Ok(frame))) => Some(Ok(frame)),
                Poll::Ready(None) => None,
                Poll::Pending => return Poll::Pending,
            },
            Inner::Direct {
                reader,
                conn,
                failed,
                aside,
            } => {
                if let Some(e) = failed.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                let Some(r) = conn.as_mut() else {
                    // Complete (or failed) before.
                    return Poll::Ready(None);
                };
                if let Some(Aside::Sending(rest)) = aside.as_deref_mut() {
                    match rest.poll_send(&mut r.conn, cx) {
                        Poll::Ready(Ok(())) => *aside = None,
                        // The origin stopped taking the body, or the client stopped giving
                        // it after the answer was whole: the answer stands (the reader
                        // says whether it is whole), but the connection is done.
                        Poll::Ready(Err(e))
                            if e.kind() == ErrorKind::UpstreamClosed || reader.is_end() =>
                        {
                            reader.forbid_reuse();
                            *aside = None;
                        }
                        Poll::Ready(Err(e)) => {
                            *conn = None;
                            *aside = None;
                            return Poll::Ready(Some(Err(e)));
                        }
                        // The answer is whole and the origin keeps the connection: the
                        // body goes on to it (as a client's HTTP/1.1 does), so the client's
                        // connection and this one both serve again; the end waits for it.
                        Poll::Pending if reader.reusable(&r.conn) => return Poll::Pending,
                        Poll::Pending => {}
                    }
                }
                match reader.poll_frame(&mut r.conn, cx) {
                    Poll::Ready(Ok(frame)) => frame.map(Ok),
                    Poll::Ready(Err(e)) => {
                        // The data read before the failure may still sit in the downstream
                        // connection's write buffer, which an error would discard: give it
                        // one turn to go out first, as it would had the failure come later.
                        *conn = None;
                        *failed = Some(e);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        if polled.is_none() || this.is_end() {
            this.release();
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Direct { reader, .. } => reader
                .exact_len()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

/// Writes a PROXY protocol header at the start of a new connection, within `timeout`.
async fn send_proxy_header(
    stream: &mut TcpStream,
    header: std::io::Result<Vec<u8>>,
    timeout: std::time::Duration,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let failed = |e| {
        Error::with_source(
            ErrorKind::ConnectRefused,
            "sending the PROXY protocol header",
            e,
        )
    };
    let header = header.map_err(failed)?;
    match tokio::time::timeout(timeout, stream.write_all(&header)).await {
        Ok(written) => written.map_err(failed),
        Err(_) => Err(Error::new(
            ErrorKind::WriteTimeout,
            "sending the PROXY protocol header",
        )),
    }
}

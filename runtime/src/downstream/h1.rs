//! The direct HTTP/1.1 server path: requests (and bodies framed by `Content-Length`) are
//! read, and their responses written, by the connection's task itself.
//!
//! hyper's HTTP/1.1 server runs every request through its dispatcher: a state machine over
//! reading, the service call and writing, with a body channel even for a request that has
//! no body. For the bulk of proxied traffic (a GET with a handful of headers) that was
//! about a third of the proxy's instructions per request. Here a connection starts on the
//! direct path: the head is parsed with `httparse` into a request whose header values share
//! the read buffer, the service is called, and the response is framed and written, its head
//! and first body bytes in one write.
//!
//! Only plain requests take it: HTTP/1.1, any method but CONNECT, at most one
//! `Content-Length` holding only digits (at most 19), no `Transfer-Encoding`, no `Expect`,
//! `Upgrade` or `TE`, and a `Connection` field (if any) that says only `keep-alive` or
//! `close`. The body of such a request is read by the connection as the service takes it
//! (see `downstream::direct_body`), straight off the socket in reads of up to 64 KiB; a
//! response whose head is ready before the whole body was read closes the connection
//! (`Connection: close`; what is left of the body is read and dropped for a moment first, so
//! the client sees the answer rather than a reset). The first request that is anything
//! else (chunked, an upgrade, HTTP/1.0, a malformed or oversized head) hands the
//! connection, with every byte read so far, to hyper for the rest of its life: hyper
//! answers the errors (400, 431) and serves everything the direct path leaves out. A
//! connection is therefore served by one engine at a time, and pipelined requests are
//! answered in order by either.
//!
//! A request line with `HTTP/1.2` to `HTTP/1.9` is read as HTTP/1.1 (RFC 9110 §2.5), and
//! one naming another major version (`HTTP/2.0` as text) is answered 505 and closed.
//! hyper knows neither rule: once it serves a connection, it answers both with 400.
//!
//! Responses are framed as hyper frames them: a `Content-Length` the service set is kept
//! (once; conflicting values count as none); otherwise a body of known size gets one and
//! any other body is chunked, chunked also ending a coding list that lacks it. Responses to
//! HEAD (which keep or get the length a GET would have), 204 and 304 carry no body and
//! announce no transfer coding. An interim (1xx) status as the answer becomes a 500 and
//! closes the connection. A `Date` field is added when missing.
//!
//! As with hyper, a client that closes its side while its request is served (before the
//! response, or while the body is awaited) cancels it; requests it pipelined before the
//! close are answered first.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::downstream::body::DownstreamBody;
use crate::downstream::direct_body::{self, BodyFeed, Fed};
use crate::error::BoxError;
use crate::io_timeout::ActiveRequests;
use crate::read_buffer::{self, READ_BUFFER};
use crate::shutdown::ShutdownWatch;
use crate::splice::{Piped, SpliceHook, SpliceSocket, SpliceSource};

/// Most header fields a request head may have on the direct path (hyper's default limit;
/// a head with more goes to hyper, which applies the configured limit).
const MAX_HEADERS: usize = 100;
/// Header slots a request's map is made with beyond its own fields.
const SPARE_FIELDS: usize = 4;
/// The most bytes a read watching for the client leaving takes (the start of a pipelined
/// request; the rest is read when its turn comes).
const PROBE_SIZE: usize = 256;
/// The most unread body bytes read and dropped before a connection whose answer came
/// early is closed, and for how long at most.
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Response bytes gathered before they are written: the head and small body frames share
/// one write.
const WRITE_GATHER: usize = 16 * 1024;
/// The largest body frame copied into the gathered bytes; larger ones are written from
/// where they are.
const GATHERED_FRAME: usize = 4 * 1024;

/// The limits of a request head, from the server's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// Largest request head, in bytes.
    pub(crate) max_bytes: usize,
    /// Most header fields.
    pub(crate) max_headers: usize,
}

/// How the direct path let go of a connection.
pub(crate) enum End<I> {
    /// The connection is finished: either side closed it, or it failed.
    Closed(Result<(), BoxError>),
    /// A request the direct path does not serve arrived: hyper serves the connection from
    /// here, reading `buffered` (that request and anything after it) first.
    HandOff { io: I, buffered: Bytes },
}

/// What parsing the buffered bytes found.
// Returned once per request and taken apart at once: boxing the request would cost an
// allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A complete head of a request the direct path serves, whether the client asked for
    /// the connection to close after it, and the feed of its body if it has one.
    Request(Request<DownstreamBody>, bool, Option<BodyFeed>),
    /// The head is not complete yet.
    Partial,
    /// A request for hyper (or bytes hyper will refuse).
    NotDirect,
    /// A request line naming an HTTP major version other than 1 (`HTTP/2.0` sent as
    /// text): answered 505 and closed.
    VersionNotSupported,
}

/// What an unparsable HTTP version in a request line turned out to be.
enum OtherVersion {
    /// The request line is not complete yet.
    Partial,
    /// `HTTP/1.x` with x above 1: rewritten as `HTTP/1.1` in the buffer (RFC 9110 §2.5: a
    /// recipient treats a higher minor version as the highest it supports).
    Rewritten,
    /// A major version other than 1.
    NotSupported,
    /// Anything else: malformed (hyper answers 400).
    Malformed,
}

/// Looks at the version of the request line at the start of `buf`, which `httparse`
/// refused, and rewrites `HTTP/1.2`..`HTTP/1.9` as `HTTP/1.1`.
fn other_version(buf: &mut BytesMut) -> OtherVersion {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return OtherVersion::Partial;
    };
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(space) = line.iter().rposition(|&b| b == b' ') else {
        return OtherVersion::Malformed;
    };
    let at = space + 1;
    match &line[at..] {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9'] => {
            buf[at + 7] = b'1';
            OtherVersion::Rewritten
        }
        [b'H', b'T', b'T', b'P', b'/', b'2'..=b'9', b'.', b'0'..=b'9'] => {
            OtherVersion::NotSupported
        }
        _ => OtherVersion::Malformed,
    }
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes are written (HEAD, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Whether the server was asked to shut down, noticed without a lock per poll.
struct ShutdownProbe {
    watch: ShutdownWatch,
    registered: bool,
    draining: bool,
}

impl ShutdownProbe {
    /// Polls `stop` once to register the task, then only when the watch reports a change.
    /// On a shutdown request the connection is marked draining: the next response says
    /// `Connection: close` (see `http::Tracked`) and ends it.
    fn poll(
        &mut self,
        stop: Pin<&mut impl Future<Output = ()>>,
        active: &ActiveRequests,
        cx: &mut std::task::Context<'_>,
    ) {
        if self.draining || (self.registered && !self.watch.has_changed()) {
            return;
        }
        self.registered = true;
        if stop.poll(cx).is_ready() {
            self.draining = true;
            active.set_draining();
        }
    }
}

/// While a request is served: a read that notices the client leaving (EOF or an error).
/// Only while nothing is buffered: with a pipelined request waiting, its requests are
/// answered first and the EOF is seen after them (as hyper does). Bytes read are kept.
fn poll_client_gone<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> Poll<io::Result<()>> {
    if !buf.is_empty() {
        return Poll::Pending;
    }
    // Into a little room on the stack: a connection holds no read buffer while its request
    // is served (see `read_buffer`).
    let mut room = [MaybeUninit::<u8>::uninit(); PROBE_SIZE];
    let mut probe = tokio::io::ReadBuf::uninit(&mut room);
    match Pin::new(io).poll_read(cx, &mut probe) {
        Poll::Ready(Ok(())) if probe.filled().is_empty() => Poll::Ready(Ok(())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        // A pipelined request: kept, and the probing stops until it is served.
        Poll::Ready(Ok(())) => {
            buf.extend_from_slice(probe.filled());
            Poll::Pending
        }
        Poll::Pending => Poll::Pending,
    }
}

/// A connection on the direct path: its socket, the bytes read and not yet served, the
/// response bytes gathered for the next write, scratch space for parsing, and the feed of
/// the body of the request being served.
struct Conn<I> {
    io: I,
    buf: BytesMut,
    out: Vec<u8>,
    fields: Vec<(HeaderName, usize, usize)>,
    feed: Option<BodyFeed>,
}

impl<I> Conn<I> {
    /// Hands the connection to hyper, with every byte read and not yet served.
    fn hand_off(self) -> End<I> {
        End::HandOff {
            io: self.io,
            buffered: self.buf.freeze(),
        }
    }
}

/// What a connection watches besides its socket: a shutdown request, and then how long a
/// draining connection has stayed idle.
struct Watch<'a, F> {
    probe: ShutdownProbe,
    stop: Pin<&'a mut F>,
    active: &'a ActiveRequests,
    linger: Duration,
    linger_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a, F: Future<Output = ()>> Watch<'a, F> {
    /// Watches `stop` (the wait of `shutdown`) and, once draining, `linger`.
    fn new(
        shutdown: ShutdownWatch,
        stop: Pin<&'a mut F>,
        active: &'a ActiveRequests,
        linger: Duration,
    ) -> Self {
        Watch {
            probe: ShutdownProbe {
                watch: shutdown,
                registered: false,
                draining: false,
            },
            stop,
            active,
            linger,
            linger_timer: None,
        }
    }

    /// While a request is served: notes a shutdown request.
    fn poll_busy(&mut self, cx: &mut std::task::Context<'_>) {
        self.probe.poll(self.stop.as_mut(), self.active, cx);
    }

    /// While waiting for a request: notes a shutdown request, and is ready once the
    /// connection, draining, has stayed idle for the linger.
    fn poll_idle(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        self.poll_busy(cx);
        if self.probe.draining && self.linger_timer.is_none() {
            self.linger_timer = Some(Box::pin(tokio::time::sleep(self.linger)));
        }
        match self.linger_timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// What reading more of a request head found.
enum Read {
    /// Bytes, appended to the buffer.
    More,
    /// A request for hyper, or a connection hyper should end: it gets what was read.
    HandOff,
    /// The connection is finished.
    Closed(Result<(), BoxError>),
}

/// Serves requests on `io` until the connection ends or a request needs hyper.
///
/// Reads while no request is in flight are bounded by `io`'s idle deadline (the header-read
/// and keep-alive timeouts). A graceful shutdown marks the connection draining: the next
/// response says `Connection: close` and ends it, and an idle connection is closed after
/// `linger`.
// The request and the response stay in this function (moving them through others' return
// values and arguments costs copies on every request).
pub(crate) async fn serve<I, S, B>(
    io: I,
    service: &mut S,
    limits: HeadLimits,
    shutdown: &mut ShutdownWatch,
    active: &ActiveRequests,
    linger: Duration,
) -> End<I>
where
    I: AsyncRead + AsyncWrite + SpliceSocket + Unpin,
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    let mut conn = Conn::new(io);
    let probe = shutdown.clone();
    let stop = pin!(shutdown.wait());
    let mut watch = Watch::new(probe, stop, active, linger);
    loop {
        // A complete request head, reading as needed.
        let (request, client_close) = loop {
            if !conn.buf.is_empty() {
                match parse_request(&mut conn.buf, limits, &mut conn.fields) {
                    Parsed::Request(request, close, feed) => {
                        if let Some(feed) = &feed {
                            if conn.io.splice_socket().is_some() {
                                feed.allow_splice();
                            }
                        }
                        conn.feed = feed;
                        break (request, close);
                    }
                    Parsed::Partial if conn.buf.len() < limits.max_bytes => {}
                    Parsed::Partial | Parsed::NotDirect => return conn.hand_off(),
                    Parsed::VersionNotSupported => return conn.refuse_version().await,
                }
            }
            match read_more(&mut conn, &mut watch).await {
                Read::More => {}
                Read::HandOff => return conn.hand_off(),
                Read::Closed(result) => return End::Closed(result),
            }
        };
        let is_head = request.method() == Method::HEAD;
        if let Err(e) = poll_fn(|cx| service.poll_ready(cx).map_err(Into::<BoxError>::into)).await {
            return End::Closed(Err(e));
        }
        let mut call = pin!(service.call(request));
        let response = poll_fn(|cx| {
            if let Poll::Ready(r) = call.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(Into::<BoxError>::into));
            }
            poll_while_served(&mut conn, &mut watch, cx)
        })
        .await;
        let (parts, body) = match response {
            Ok(response) => response.into_parts(),
            // A failed service, or a client that left: the request is dropped, cancelled.
            Err(e) => return End::Closed(Err(e)),
        };
        if parts.status.is_informational() {
            drop(body);
            return conn.refuse_interim(parts.status).await;
        }
        // The rest of a body that will not be read would be taken for the next request:
        // this answer ends the connection. (A body still wanted, one a proxy still sends
        // upstream after its origin answered early, is read while the answer goes out.)
        let body_wanted = conn.feed.as_ref().is_none_or(BodyFeed::is_wanted);
        let (framing, keep_alive) =
            conn.response_head(&parts, &body, is_head, client_close || !body_wanted);
        crate::header_pool::give_back(parts.headers);
        // A large body the proxy relays unchanged goes from socket to socket.
        let splice =
            parts.extensions.get::<SpliceHook>().copied().filter(|_| {
                matches!(framing, Framing::Length(_)) && conn.io.splice_socket().is_some()
            });
        let written = write_body(&mut conn, body, framing, splice).await;
        conn.out.clear();
        match written {
            Ok(()) if keep_alive && conn.feed.as_ref().is_none_or(BodyFeed::is_read) => {
                conn.feed = None;
            }
            Ok(()) => {
                conn.close().await;
                return End::Closed(Ok(()));
            }
            Err(e) => return End::Closed(Err(e)),
        }
    }
}

impl<I: AsyncRead + AsyncWrite + SpliceSocket + Unpin> Conn<I> {
    /// A connection on `io`, nothing read yet.
    fn new(io: I) -> Self {
        Conn {
            io,
            // Lent while bytes are read (see `read_buffer`).
            buf: BytesMut::new(),
            out: Vec::with_capacity(1024),
            fields: Vec::new(),
            feed: None,
        }
    }

    /// While a request is served: feeds its body, then watches for the client leaving (see
    /// `poll_client_gone`). Ready when the client left or its connection failed. A body
    /// dropped before its end leaves its bytes on the socket: nothing more is read.
    fn poll_inbound(&mut self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        if let Some(feed) = self.feed.as_mut() {
            match feed.poll_feed(&mut self.io, &mut self.buf, cx) {
                Poll::Ready(Fed::Read) => {}
                Poll::Ready(Fed::Abandoned) | Poll::Pending => return Poll::Pending,
                Poll::Ready(Fed::Failed(io::ErrorKind::UnexpectedEof)) => {
                    return Poll::Ready(Ok(()))
                }
                Poll::Ready(Fed::Failed(kind)) => return Poll::Ready(Err(kind.into())),
            }
        }
        poll_client_gone(&mut self.io, &mut self.buf, cx)
    }

    /// Ends the connection after its last answer. A bare socket with nothing left to read
    /// sends its FIN when it is closed: shutting it down first would only cost a system call
    /// per connection. TLS sends its `close_notify`; a body not read to its end lingers.
    async fn close(&mut self) {
        let unread = self.feed.as_ref().is_some_and(|feed| !feed.is_read());
        if unread || self.io.splice_socket().is_none() {
            let _ = self.io.shutdown().await;
        }
        self.linger().await;
    }

    /// Before a connection whose request body was not read to its end is closed: reads and
    /// drops what the client still sends (at most `LINGER_BYTES`, for `LINGER_TIME`), so
    /// that closing with unread bytes does not reset the connection before the client read
    /// its answer.
    async fn linger(&mut self) {
        if self.feed.take().is_none_or(|feed| feed.is_read()) {
            return;
        }
        let mut drained = 0;
        // Into the connection's own buffer: a buffer on the stack here would live in every
        // connection's future, lingering or not.
        let drain = async {
            while drained < LINGER_BYTES {
                self.buf.clear();
                self.buf.reserve(READ_BUFFER);
                match tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }

    /// Answers a request line naming an HTTP major version other than 1 with 505, and
    /// closes.
    async fn refuse_version(mut self) -> End<I> {
        answer_and_close(
            &mut self.io,
            &mut self.out,
            b"505 HTTP Version Not Supported",
        )
        .await;
        End::Closed(Err(
            "a request line named an HTTP version other than 1.x".into()
        ))
    }

    /// Answers 500 and closes, for a service that answered with an interim status: it
    /// cannot end a request (the client would wait on for the final one). hyper does the
    /// same.
    async fn refuse_interim(mut self, status: StatusCode) -> End<I> {
        answer_and_close(&mut self.io, &mut self.out, b"500 Internal Server Error").await;
        End::Closed(Err(format!(
            "the service answered with the interim status {status}"
        )
        .into()))
    }

    /// Gathers the response head (to a HEAD request if `is_head`) in `out`. Returns how
    /// the body is framed and whether the connection stays open: not if the client
    /// (`client_close`) or the response asked to close it.
    fn response_head(
        &mut self,
        parts: &http::response::Parts,
        body: &impl Body,
        is_head: bool,
        client_close: bool,
    ) -> (Framing, bool) {
        let (framing, response_close) =
            encode_head(&mut self.out, parts, body.size_hint().exact(), is_head);
        if client_close && !response_close {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        (framing, !client_close && !response_close)
    }
}

/// Reads more of a request head into the buffer. A draining connection that stays idle
/// for the linger is closed; one that drains or that the client closes mid-head goes to
/// hyper (which says what it says to that).
async fn read_more<I, F>(conn: &mut Conn<I>, watch: &mut Watch<'_, F>) -> Read
where
    I: AsyncRead + AsyncWrite + SpliceSocket + Unpin,
    F: Future<Output = ()>,
{
    let read = poll_fn(|cx| {
        if let Poll::Ready(r) =
            read_buffer::poll_read(Pin::new(&mut conn.io), cx, &mut conn.buf, READ_BUFFER)
        {
            return Poll::Ready(Some(r));
        }
        watch.poll_idle(cx).map(|()| None)
    })
    .await;
    match read {
        // Draining, and idle all along the linger.
        None if conn.buf.is_empty() => {
            let _ = conn.io.shutdown().await;
            Read::Closed(Ok(()))
        }
        Some(Ok(0)) if conn.buf.is_empty() => Read::Closed(Ok(())),
        None | Some(Ok(0)) => Read::HandOff,
        Some(Ok(_)) => Read::More,
        Some(Err(e)) => Read::Closed(Err(e.into())),
    }
}

/// While the service works on a request: notes a shutdown request (which makes this
/// response the last), and is ready with an error if the client leaves (which cancels the
/// request, as hyper does).
fn poll_while_served<I, F, T>(
    conn: &mut Conn<I>,
    watch: &mut Watch<'_, F>,
    cx: &mut std::task::Context<'_>,
) -> Poll<Result<T, BoxError>>
where
    I: AsyncRead + AsyncWrite + SpliceSocket + Unpin,
    F: Future<Output = ()>,
{
    watch.poll_busy(cx);
    match conn.poll_inbound(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Err("the client closed the connection".into())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        Poll::Pending => Poll::Pending,
    }
}

/// What waiting for the next body frame found.
enum Next<T> {
    /// A frame (or, spliced, the next bytes), an error, or the end.
    Frame(T),
    /// No frame yet, and gathered bytes to write first.
    Flush,
    /// The client left (or its connection failed).
    Gone(io::Result<()>),
}

/// Writes the body after the head gathered in the connection's `out`, framed as `framing`
/// says, then flushes. Meanwhile the request's body is still fed, and a client that
/// leaves while the body is awaited ends it (as hyper does); `buf` keeps any pipelined
/// bytes read meanwhile.
///
/// (An `async move` block, not an `async fn`, which would hold the body twice.)
#[allow(clippy::manual_async_fn)] // (see above)
fn write_body<'a, I, B>(
    conn: &'a mut Conn<I>,
    mut body: B,
    framing: Framing,
    splice: Option<SpliceHook>,
) -> impl Future<Output = Result<(), BoxError>> + 'a
where
    I: AsyncRead + AsyncWrite + SpliceSocket + Unpin,
    B: Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    async move {
        if framing == Framing::None {
            // The body is not sent; dropping it ends it (a proxy's `logging` runs now).
            drop(body);
            return finish_body(&mut conn.io, &mut conn.out, framing, 0).await;
        }
        if let (Some(hook), Framing::Length(n)) = (splice, framing) {
            if let Some(source) = hook.source(&mut body).filter(|s| s.can_splice()) {
                // Boxed: most bodies are not spliced, and this one's state would make
                // every response's future larger.
                return Box::pin(write_spliced(conn, source, n)).await;
            }
        }
        let mut body = pin!(body);
        let mut remaining = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            let next = next_frame(conn, |cx| {
                body.as_mut()
                    .poll_frame(cx)
                    .map(|f| f.map(|r| r.map_err(Into::<BoxError>::into)))
            });
            let data = match next.await {
                Next::Flush => {
                    conn.io.write_all(&conn.out).await?;
                    conn.out.clear();
                    continue;
                }
                Next::Gone(gone) => return Err(client_gone(gone)),
                Next::Frame(None) => break,
                Next::Frame(Some(Err(e))) => {
                    // What arrived is delivered; the connection ends without the rest.
                    let _ = conn.io.write_all(&conn.out).await;
                    return Err(e);
                }
                // Trailers: a chunked response ends without them, as hyper's does for a
                // request that did not offer `TE: trailers` (the direct path has none).
                Next::Frame(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            if let Err(e) = frame_prefix(&mut conn.out, data.len(), framing, &mut remaining) {
                let _ = conn.io.write_all(&conn.out).await;
                return Err(e);
            }
            if !gather(&mut conn.out, &data) {
                write_pair(&mut conn.io, &conn.out, &data).await?;
                conn.out.clear();
            }
            drop(data);
            if framing == Framing::Chunked {
                conn.out.extend_from_slice(b"\r\n");
            }
        }
        finish_body(&mut conn.io, &mut conn.out, framing, remaining).await
    }
}

/// [`write_body`] for a body spliced into the client's socket: bytes in memory are
/// written (gathered after the head as usual), bytes in the pipe go after what is gathered.
async fn write_spliced<I>(
    conn: &mut Conn<I>,
    source: &mut (dyn SpliceSource + Send),
    length: u64,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + SpliceSocket + Unpin,
{
    let framing = Framing::Length(length);
    let mut remaining = length;
    loop {
        let next = match next_frame(conn, |cx| source.poll_piped(cx)).await {
            Next::Flush => {
                conn.io.write_all(&conn.out).await?;
                conn.out.clear();
                continue;
            }
            Next::Gone(gone) => return Err(client_gone(gone)),
            Next::Frame(next) => next,
        };
        let (data, mut piped) = match next {
            None => break,
            Some(Err(e)) => {
                let _ = conn.io.write_all(&conn.out).await;
                return Err(e.into());
            }
            Some(Ok(Piped::Chunk(data))) => (data, 0),
            Some(Ok(Piped::InPipe(n))) => (Bytes::new(), n),
        };
        let len = data.len().max(piped);
        if let Err(e) = frame_prefix(&mut conn.out, len, framing, &mut remaining) {
            let _ = conn.io.write_all(&conn.out).await;
            return Err(e);
        }
        if piped == 0 {
            if !gather(&mut conn.out, &data) {
                write_pair(&mut conn.io, &conn.out, &data).await?;
                conn.out.clear();
            }
            continue;
        }
        conn.io.write_all(&conn.out).await?;
        conn.out.clear();
        while piped != 0 {
            let io = &mut conn.io;
            piped -=
                poll_fn(|cx| io.poll_splice_into(cx, &mut |tcp, cx| source.poll_drain(tcp, cx)))
                    .await?;
        }
    }
    finish_body(&mut conn.io, &mut conn.out, framing, remaining).await
}

/// The error of a response cut short by the client leaving (or its connection failing).
fn client_gone(gone: io::Result<()>) -> BoxError {
    match gone {
        Ok(()) => "the client closed the connection".into(),
        Err(e) => e.into(),
    }
}

/// Gathers `data` after what waits in `out` if it is small (several frames per write);
/// `false` for a larger one, which goes out at once beside what is gathered, in one
/// vectored write, without being copied.
#[inline]
fn gather(out: &mut Vec<u8>, data: &[u8]) -> bool {
    let small = data.len() <= GATHERED_FRAME && out.len() + data.len() <= WRITE_GATHER;
    if small {
        out.extend_from_slice(data);
    }
    small
}

/// The next body frame (what `poll` gives), or, while none is ready, `Flush` if gathered
/// bytes wait in `out` (the client sees what exists), or the client leaving.
fn next_frame<'a, I, T>(
    conn: &'a mut Conn<I>,
    mut poll: impl FnMut(&mut std::task::Context<'_>) -> Poll<T> + 'a,
) -> impl Future<Output = Next<T>> + 'a
where
    I: AsyncRead + AsyncWrite + SpliceSocket + Unpin,
{
    poll_fn(move |cx| {
        match poll(cx) {
            Poll::Ready(frame) => return Poll::Ready(Next::Frame(frame)),
            Poll::Pending if !conn.out.is_empty() => return Poll::Ready(Next::Flush),
            Poll::Pending => {}
        }
        conn.poll_inbound(cx).map(Next::Gone)
    })
}

/// Accounts for a data frame of `len` bytes: against the `remaining` length (an error if
/// the body runs over it), or as a chunk-size line in `out`.
fn frame_prefix(
    out: &mut Vec<u8>,
    len: usize,
    framing: Framing,
    remaining: &mut u64,
) -> Result<(), BoxError> {
    if let Framing::Length(_) = framing {
        let len = len as u64;
        if len > *remaining {
            return Err("response body longer than its Content-Length".into());
        }
        *remaining -= len;
    } else {
        // Writing into a vector cannot fail.
        let _ = write!(out, "{len:x}\r\n");
    }
    Ok(())
}

/// Ends a body whose frames are all in `out` or written: the last chunk of a chunked one,
/// an error for one shorter than its length (`remaining` bytes missing), then the write
/// and flush of what is gathered.
async fn finish_body<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    framing: Framing,
    remaining: u64,
) -> Result<(), BoxError> {
    match framing {
        Framing::Length(_) if remaining != 0 => {
            let _ = io.write_all(out).await;
            return Err("response body shorter than its Content-Length".into());
        }
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    io.write_all(out).await?;
    io.flush().await?;
    Ok(())
}

/// Writes `first` then `second`, as one vectored write when the socket takes it whole.
async fn write_pair<I: AsyncWrite + Unpin>(
    io: &mut I,
    first: &[u8],
    second: &[u8],
) -> io::Result<()> {
    let (mut a, mut b) = (first, second);
    while !a.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n >= a.len() {
            b = &b[n - a.len()..];
            a = &[];
        } else {
            a = &a[n..];
        }
    }
    io.write_all(b).await
}

/// Parses the request head at the start of `buf`, consuming it when it is one the direct
/// path serves. `fields` is scratch space kept between requests.
fn parse_request(
    buf: &mut BytesMut,
    limits: HeadLimits,
    fields: &mut Vec<(HeaderName, usize, usize)>,
) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut parsed = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots[..max_headers],
    ) {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_bytes => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::Version) => {
            return match other_version(buf) {
                OtherVersion::Partial => Parsed::Partial,
                // Parsed again as HTTP/1.1 (the version is no longer in the way).
                OtherVersion::Rewritten => parse_request(buf, limits, fields),
                OtherVersion::NotSupported => Parsed::VersionNotSupported,
                OtherVersion::Malformed => Parsed::NotDirect,
            };
        }
        _ => return Parsed::NotDirect,
    };
    if parsed.version != Some(1) {
        return Parsed::NotDirect;
    }
    let (Some(method), Some(path)) = (direct_method(parsed.method), parsed.path) else {
        return Parsed::NotDirect;
    };
    let path_at = path.as_ptr() as usize - base;
    let path_range = path_at..path_at + path.len();
    let Some(direct) = direct_fields(parsed.headers, base, fields) else {
        return Parsed::NotDirect;
    };
    let head = buf.split_to(len).freeze();
    match build_request(&head, method, path_range, fields) {
        Some(mut request) => {
            let feed = match direct.length {
                Some(len @ 1..) => {
                    let (feed, body) = direct_body::channel(len);
                    *request.body_mut() = DownstreamBody::from_direct(body);
                    Some(feed)
                }
                _ => None,
            };
            Parsed::Request(request, direct.close, feed)
        }
        None => {
            // Put the head back for hyper (a rare path: an unparsable target or value).
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::NotDirect
        }
    }
}

/// The method of a request the direct path serves (any but CONNECT).
fn direct_method(method: Option<&str>) -> Option<Method> {
    match method? {
        "GET" => Some(Method::GET),
        "HEAD" => Some(Method::HEAD),
        "CONNECT" => None,
        other => Method::from_bytes(other.as_bytes()).ok(),
    }
}

/// What the header fields of a request the direct path serves say about the connection
/// and the body.
struct DirectFields {
    /// The client asked to close the connection after this request.
    close: bool,
    /// The body's length, from `Content-Length`.
    length: Option<u64>,
}

/// Notes the header fields of a request in `fields` (name, and where the value is from
/// `base`), if the direct path serves it: at most one `Content-Length` of plain digits, no
/// transfer coding, expectation or upgrade, and a `Connection` saying only `keep-alive` or
/// `close`. Anything else (a length list, a sign, a value past 19 digits) is hyper's to
/// accept or refuse.
fn direct_fields(
    headers: &[httparse::Header<'_>],
    base: usize,
    fields: &mut Vec<(HeaderName, usize, usize)>,
) -> Option<DirectFields> {
    let mut direct = DirectFields {
        close: false,
        length: None,
    };
    fields.clear();
    for h in headers {
        let name = crate::h1_field::name(h.name.as_bytes())?;
        if name == CONTENT_LENGTH {
            if direct.length.is_some() {
                return None;
            }
            direct.length = Some(digits(h.value)?);
        } else if name == TRANSFER_ENCODING || name == EXPECT || name == UPGRADE || name == TE {
            return None;
        }
        if name == CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    direct.close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    return None;
                }
            }
        }
        let at = h.value.as_ptr() as usize - base;
        fields.push((name, at, at + h.value.len()));
    }
    Some(direct)
}

/// A `Content-Length` of 1 to 19 decimal digits (which cannot overflow), nothing else.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// The request a parsed head describes; its target and field values share `head`.
fn build_request(
    head: &Bytes,
    method: Method,
    path: std::ops::Range<usize>,
    fields: &mut Vec<(HeaderName, usize, usize)>,
) -> Option<Request<DownstreamBody>> {
    let uri = Uri::from_maybe_shared(head.slice(path)).ok()?;
    // Room for the fields a proxy adds on the way upstream (`X-Forwarded-For`, `Via`, a
    // new `Host`): growing the map later costs more than the spare slots.
    let mut headers = crate::header_pool::take(fields.len() + SPARE_FIELDS);
    for (name, start, end) in fields.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(DownstreamBody::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Some(request)
}

/// Writes the status line and header fields of a response (without the blank line ending
/// the head) into `out`, adding `Date` and the framing fields it lacks. Returns how the
/// body is framed and whether the response closes the connection. Interim (1xx) statuses
/// never get here.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    exact_len: Option<u64>,
    is_head: bool,
) -> (Framing, bool) {
    let status = parts.status;
    status_line(
        out,
        status,
        parts.extensions.get::<hyper::ext::ReasonPhrase>(),
    );
    // No body on the wire for HEAD, 204 and 304 (RFC 9112 §6.3): a transfer coding is not
    // announced for them, and 204 carries no length either.
    let no_content = status == StatusCode::NO_CONTENT;
    let bodiless = is_head || no_content || status == StatusCode::NOT_MODIFIED;
    let given = FramingFields::of(&parts.headers);
    // A transfer coding overrides the length (RFC 9112 §6.3); an unreadable or conflicting
    // length is no length (the body frames itself below). Either way none is sent.
    let length = match (given.transfer_encoding, given.content_length) {
        (Some(_), _) if !bodiless => None,
        (_, Some(Some(n))) if !no_content => Some(n),
        _ => None,
    };
    // A coding list not ending in chunked gets chunked added after it (below).
    let drop_coding = bodiless || given.transfer_encoding == Some(false);
    let close = header_fields(out, &parts.headers, length, drop_coding);
    let framing = if bodiless {
        // A HEAD response gets the length a GET would have, when the body knows it and
        // no field says it.
        if let (true, None, None, Some(n @ 1..)) = (
            is_head,
            given.transfer_encoding,
            given.content_length,
            exact_len,
        ) {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::None
    } else {
        body_framing(out, &parts.headers, given, length, exact_len)
    };
    (framing, close)
}

/// Writes the status line, with the reason the upstream gave, if any.
fn status_line(out: &mut Vec<u8>, status: StatusCode, reason: Option<&hyper::ext::ReasonPhrase>) {
    match reason {
        None if status == StatusCode::OK => out.extend_from_slice(b"HTTP/1.1 200 OK\r\n"),
        reason => {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(status.as_str().as_bytes());
            out.push(b' ');
            match reason {
                Some(reason) => out.extend_from_slice(reason.as_bytes()),
                None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The framing fields a response carries.
#[derive(Clone, Copy)]
struct FramingFields {
    /// Whether the last `Transfer-Encoding` ends in chunked; `None` without one.
    transfer_encoding: Option<bool>,
    /// The `Content-Length`; `Some(None)` if unreadable or if the values disagree.
    content_length: Option<Option<u64>>,
}

impl FramingFields {
    /// Reads them in one pass (cheaper than hashed lookups over so few fields): the last
    /// `Transfer-Encoding` counts; `Content-Length` values must agree.
    fn of(headers: &http::HeaderMap) -> Self {
        let mut given = FramingFields {
            transfer_encoding: None,
            content_length: None,
        };
        for (name, value) in headers {
            if *name == TRANSFER_ENCODING {
                given.transfer_encoding = Some(crate::h1_field::ends_in_chunked(value.as_bytes()));
            } else if *name == CONTENT_LENGTH {
                let parsed = crate::h1_field::content_length(value.as_bytes());
                given.content_length = match given.content_length {
                    None => Some(parsed),
                    Some(seen) if seen == parsed => Some(seen),
                    Some(_) => Some(None),
                };
            }
        }
        given
    }
}

/// Writes the header fields, `Content-Length` once and only if it is the `length`, no
/// `Transfer-Encoding` if `drop_coding`, and a `Date` if there is none. Returns whether
/// `Connection` says `close`.
fn header_fields(
    out: &mut Vec<u8>,
    headers: &http::HeaderMap,
    length: Option<u64>,
    drop_coding: bool,
) -> bool {
    let mut close = false;
    let mut has_date = false;
    let mut length_sent = false;
    for (name, value) in headers {
        if *name == CONTENT_LENGTH {
            if length.is_none() || length_sent {
                continue;
            }
            length_sent = true;
        } else if *name == TRANSFER_ENCODING {
            if drop_coding {
                continue;
            }
        } else if *name == CONNECTION {
            close |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if *name == DATE {
            has_date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        append_date(out);
        out.extend_from_slice(b"\r\n");
    }
    close
}

/// How the body of a response that has one is framed, writing the framing field the head
/// lacks: the `length` it gives, else chunked as its codings say, else the body's
/// `exact_len`, else chunked.
fn body_framing(
    out: &mut Vec<u8>,
    headers: &http::HeaderMap,
    given: FramingFields,
    length: Option<u64>,
    exact_len: Option<u64>,
) -> Framing {
    match (given.transfer_encoding, length, exact_len) {
        (Some(false), _, _) => {
            // A coding list not ending in chunked: chunked is applied last (as hyper
            // does), so the end of the body is still marked.
            out.extend_from_slice(b"transfer-encoding: ");
            for (i, value) in headers.get_all(TRANSFER_ENCODING).iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(value.as_bytes());
            }
            out.extend_from_slice(b", chunked\r\n");
            Framing::Chunked
        }
        (Some(true), _, _) => Framing::Chunked,
        (None, Some(n), _) => Framing::Length(n),
        (None, None, Some(n)) => {
            let _ = write!(out, "content-length: {n}\r\n");
            Framing::Length(n)
        }
        (None, None, None) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
    }
}

thread_local! {
    /// The `Date` value of the current second, rendered once per second per thread.
    static DATE_CACHE: std::cell::RefCell<(u64, [u8; 29])> = const {
        std::cell::RefCell::new((u64::MAX, [0; 29]))
    };
}

/// Writes an empty answer with `status` (code and reason) that closes the connection, then
/// closes it. Write errors are ignored: the connection ends either way.
async fn answer_and_close<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>, status: &[u8]) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\ndate: ");
    append_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    let _ = io.write_all(out).await;
    let _ = io.shutdown().await;
}

/// Appends the current time as an HTTP date (IMF-fixdate, 29 bytes).
fn append_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cache.1.copy_from_slice(text.as_bytes());
                cache.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cache.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_bytes: 64 * 1024,
            max_headers: 100,
        }
    }

    fn parse(raw: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let mut fields = Vec::new();
        let parsed = parse_request(&mut buf, limits(), &mut fields);
        (parsed, buf)
    }

    #[test]
    fn a_plain_get_is_parsed_and_consumed() {
        let (parsed, rest) =
            parse(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Y: 1\r\nx-y: 2\r\n\r\nGET /next");
        let Parsed::Request(request, close, None) = parsed else {
            panic!("not parsed as a direct request");
        };
        assert!(!close);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/a");
        assert_eq!(request.uri().query(), Some("b=c"));
        assert_eq!(request.headers()["host"], "x");
        let values: Vec<_> = request.headers().get_all("x-y").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_is_noted_and_other_options_go_to_hyper() {
        let (parsed, _) = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request(_, true, None)));
        let (parsed, _) = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request(_, false, None)));
        let (parsed, _) = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n");
        assert!(matches!(parsed, Parsed::NotDirect));
    }

    #[test]
    fn a_body_framed_by_its_length_stays_behind_the_head_for_its_feed() {
        let (parsed, rest) =
            parse(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /next");
        let Parsed::Request(request, false, Some(feed)) = parsed else {
            panic!("not parsed as a direct request with a body");
        };
        assert!(!feed.is_read());
        assert_eq!(request.body().size_hint().exact(), Some(3));
        assert_eq!(request.headers()["content-length"], "3");
        assert_eq!(&rest[..], b"abcGET /next", "the body is read by the feed");
        let (parsed, _) = parse(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert!(
            matches!(&parsed, Parsed::Request(r, false, None) if r.body().is_end_stream()),
            "an empty body needs no feed"
        );
    }

    #[test]
    fn requests_the_direct_path_leaves_to_hyper_stay_in_the_buffer() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
        ] {
            let (parsed, rest) = parse(raw);
            assert!(matches!(parsed, Parsed::NotDirect), "{raw:?}");
            assert_eq!(&rest[..], raw, "bytes kept for hyper");
        }
        let (parsed, rest) = parse(b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(rest.len(), 25);
    }

    #[test]
    fn too_many_fields_go_to_hyper() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            raw.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&raw).0, Parsed::NotDirect));
    }

    fn head_of(
        response: Response<()>,
        exact: Option<u64>,
        is_head: bool,
    ) -> (String, Framing, bool) {
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        let (framing, close) = encode_head(&mut out, &parts, exact, is_head);
        (String::from_utf8(out).unwrap_or_default(), framing, close)
    }

    #[test]
    fn responses_are_framed_like_hyper_s() {
        let (head, framing, close) = head_of(Response::new(()), Some(5), false);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("\r\ndate: ") && head.contains(" GMT\r\n"));
        assert!(head.ends_with("content-length: 5\r\n"));
        assert_eq!((framing, close), (Framing::Length(5), false));

        let (head, framing, _) = head_of(Response::new(()), None, false);
        assert!(head.ends_with("transfer-encoding: chunked\r\n"));
        assert_eq!(framing, Framing::Chunked);

        let mut given = Response::new(());
        given
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("7"));
        given
            .headers_mut()
            .insert(DATE, HeaderValue::from_static("then"));
        let (head, framing, _) = head_of(given, None, false);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: then\r\n"
        );
        assert_eq!(framing, Framing::Length(7));

        let mut no_content = Response::new(());
        *no_content.status_mut() = StatusCode::NO_CONTENT;
        no_content
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let (head, framing, _) = head_of(no_content, Some(0), false);
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!head.contains("content-length"));
        assert_eq!(framing, Framing::None);

        let mut head_response = Response::new(());
        head_response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("100"));
        let (head, framing, _) = head_of(head_response, Some(0), true);
        assert!(head.contains("content-length: 100\r\n"));
        assert_eq!(framing, Framing::None);
        let (head, framing, _) = head_of(Response::new(()), Some(9), true);
        assert!(head.ends_with("content-length: 9\r\n"));
        assert_eq!(framing, Framing::None);
        let (head, _, _) = head_of(Response::new(()), Some(0), true);
        assert!(!head.contains("content-length"));

        let mut twice = Response::new(());
        twice
            .headers_mut()
            .append(CONTENT_LENGTH, HeaderValue::from_static("4"));
        twice
            .headers_mut()
            .append(CONTENT_LENGTH, HeaderValue::from_static("4"));
        let (head, framing, _) = head_of(twice, None, false);
        assert_eq!(head.matches("content-length").count(), 1, "{head}");
        assert_eq!(framing, Framing::Length(4));

        let mut conflicting = Response::new(());
        conflicting
            .headers_mut()
            .append(CONTENT_LENGTH, HeaderValue::from_static("4"));
        conflicting
            .headers_mut()
            .append(CONTENT_LENGTH, HeaderValue::from_static("5"));
        let (head, framing, _) = head_of(conflicting, Some(4), false);
        assert!(
            head.ends_with("content-length: 4\r\n"),
            "the body's own length: {head}"
        );
        assert_eq!(framing, Framing::Length(4));

        let mut coded = Response::new(());
        coded
            .headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        coded
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("9"));
        let (head, framing, _) = head_of(coded, None, false);
        assert!(
            head.ends_with("transfer-encoding: gzip, chunked\r\n"),
            "{head}"
        );
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(framing, Framing::Chunked);

        let mut not_modified = Response::new(());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        not_modified
            .headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        not_modified
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("70"));
        let (head, framing, _) = head_of(not_modified, None, false);
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(head.contains("content-length: 70\r\n"), "{head}");
        assert_eq!(framing, Framing::None);

        let mut reason_ok = Response::new(());
        reason_ok
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"Fine"));
        let (head, _, _) = head_of(reason_ok, Some(0), false);
        assert!(head.starts_with("HTTP/1.1 200 Fine\r\n"), "{head}");

        let mut closing = Response::new(());
        closing
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        let (_, _, close) = head_of(closing, Some(0), false);
        assert!(close);

        let mut reason = Response::new(());
        *reason.status_mut() = StatusCode::BAD_GATEWAY;
        reason
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"Origin Unhappy"));
        let (head, _, _) = head_of(reason, Some(0), false);
        assert!(head.starts_with("HTTP/1.1 502 Origin Unhappy\r\n"));
    }

    /// Serving over an in-memory pipe, with the real connection code.
    mod serving {
        use super::super::*;
        use std::convert::Infallible;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        use bytes::Bytes;
        use http_body::Frame;
        use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
        use tokio::io::{AsyncReadExt, DuplexStream};

        use crate::downstream::Tracked;
        use crate::shutdown::shutdown_channel;

        type AnyBody = UnsyncBoxBody<Bytes, Infallible>;
        /// How `serve` ended: its result, and the bytes handed to hyper if it handed over.
        type Outcome = (Result<(), String>, Option<Bytes>);

        /// One data frame, then nothing ever again.
        struct Stalls(bool);

        impl Body for Stalls {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                if self.0 {
                    return Poll::Pending;
                }
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first")))))
            }
        }

        /// Answers `/interim` with 103, `/stall` with a body that stalls, `/slow` after
        /// 200 ms, `/echo` with the request's body, anything else with its path (without
        /// reading a body); counts calls.
        fn service(
            calls: Arc<AtomicUsize>,
        ) -> impl tower::Service<
            Request<DownstreamBody>,
            Response = Response<AnyBody>,
            Error = Infallible,
            Future = impl Future<Output = Result<Response<AnyBody>, Infallible>>,
        > + Clone {
            tower::service_fn(move |req: Request<DownstreamBody>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let path = req.uri().path().to_string();
                    let mut response = match path.as_str() {
                        "/stall" => Response::new(Stalls(false).boxed_unsync()),
                        "/echo" => {
                            let body = req.into_body().collect().await;
                            let bytes = body.map(|b| b.to_bytes()).unwrap_or_default();
                            return Ok(Response::new(Full::new(bytes).boxed_unsync()));
                        }
                        _ => {
                            if path == "/slow" {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Response::new(Full::new(Bytes::from(path)).boxed_unsync())
                        }
                    };
                    if req.uri().path() == "/interim" {
                        *response.status_mut() = StatusCode::EARLY_HINTS;
                    }
                    Ok(response)
                }
            })
        }

        fn limits() -> HeadLimits {
            HeadLimits {
                max_bytes: 64 * 1024,
                max_headers: 100,
            }
        }

        /// Starts `serve` on one end of a pipe; returns the other end and the outcome.
        fn start(
            calls: Arc<AtomicUsize>,
            mut shutdown: ShutdownWatch,
        ) -> (DuplexStream, tokio::task::JoinHandle<Outcome>) {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let task = tokio::spawn(async move {
                let active = ActiveRequests::default();
                let mut svc = Tracked {
                    inner: service(calls),
                    active: active.clone(),
                    alt_svc: None,
                };
                let linger = Duration::from_millis(100);
                match serve(server, &mut svc, limits(), &mut shutdown, &active, linger).await {
                    End::Closed(r) => (r.map_err(|e| e.to_string()), None),
                    End::HandOff { buffered, .. } => (Ok(()), Some(buffered)),
                }
            });
            (client, task)
        }

        async fn read_all(client: &mut DuplexStream) -> String {
            let mut all = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut all)).await;
            String::from_utf8_lossy(&all).into_owned()
        }

        async fn outcome(task: tokio::task::JoinHandle<Outcome>) -> Outcome {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("serve ends within 5 s")
                .expect("serve did not panic")
        }

        #[tokio::test]
        async fn bodies_framed_by_length_are_fed_here_and_the_connection_goes_on() {
            let calls = Arc::new(AtomicUsize::new(0));
            let (_trigger, watch) = shutdown_channel();
            let (mut client, task) = start(calls.clone(), watch);
            let big = "x".repeat(200 * 1024);
            let mut sent = format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                 PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                big.len()
            )
            .into_bytes();
            sent.extend_from_slice(big.as_bytes());
            sent.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let writer = tokio::spawn(async move {
                client.write_all(&sent).await.expect("write");
                client
            });
            let mut client = writer.await.expect("writer");
            let text = read_all(&mut client).await;
            let (result, handed) = outcome(task).await;
            assert_eq!((result, handed), (Ok(()), None), "no hand-over to hyper");
            assert_eq!(calls.load(Ordering::SeqCst), 3);
            let hello = text.find("\r\n\r\nhello").expect("first body echoed");
            let echoed = text
                .find(&format!("\r\n\r\n{big}"))
                .expect("big body echoed");
            let last = text.find("\r\n\r\n/last").expect("the GET after them");
            assert!(hello < echoed && echoed < last);
            assert_eq!(
                text.matches("connection: close").count(),
                1,
                "{}",
                &text[..200]
            );
        }

        #[tokio::test]
        async fn an_answer_before_the_body_is_read_closes_and_still_arrives() {
            let (_trigger, watch) = shutdown_channel();
            let (mut client, task) = start(Arc::new(AtomicUsize::new(0)), watch);
            client
                .write_all(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
                .await
                .expect("write");
            let mut head = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut head))
                .await
                .expect("an answer within 5 s")
                .expect("read");
            let text = String::from_utf8_lossy(&head[..n]).into_owned();
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
            assert!(text.contains("connection: close\r\n"), "{text}");
            assert!(text.ends_with("\r\n\r\n/early"), "{text}");
            // The rest of the body is read and dropped while the connection lingers.
            client
                .write_all(&[b'z'; 4096])
                .await
                .expect("the rest is taken");
            drop(client);
            let (result, handed) = outcome(task).await;
            assert_eq!((result, handed), (Ok(()), None));
        }

        #[tokio::test]
        async fn plain_requests_are_served_here_and_a_chunked_body_hands_over_with_its_bytes() {
            let calls = Arc::new(AtomicUsize::new(0));
            let (_trigger, watch) = shutdown_channel();
            let (mut client, task) = start(calls.clone(), watch);
            let post =
                &b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"[..];
            let mut sent =
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
            sent.extend_from_slice(post);
            client.write_all(&sent).await.expect("write");
            let (result, handed) = outcome(task).await;
            assert_eq!(result, Ok(()));
            assert_eq!(handed.as_deref(), Some(post), "hyper gets the POST whole");
            assert_eq!(
                calls.load(Ordering::SeqCst),
                2,
                "the GETs were served directly"
            );
            drop(handed);
            let text = read_all(&mut client).await;
            let a = text.find("\r\n\r\n/a").expect("response to /a");
            let b = text.find("\r\n\r\n/b").expect("response to /b");
            assert!(a < b, "in order: {text}");
        }

        #[tokio::test]
        async fn pipelined_requests_then_a_half_close_are_all_answered() {
            let calls = Arc::new(AtomicUsize::new(0));
            let (_trigger, watch) = shutdown_channel();
            let (mut client, task) = start(calls.clone(), watch);
            client
                .write_all(
                    b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
                )
                .await
                .expect("write");
            client.shutdown().await.expect("half-close");
            let text = read_all(&mut client).await;
            assert!(
                text.contains("\r\n\r\n/slow") && text.contains("\r\n\r\n/b"),
                "{text}"
            );
            let (result, handed) = outcome(task).await;
            assert_eq!((result, handed), (Ok(()), None));
            assert_eq!(calls.load(Ordering::SeqCst), 2);
        }

        #[tokio::test]
        async fn an_interim_status_as_the_answer_becomes_500_and_closes() {
            let (_trigger, watch) = shutdown_channel();
            let (mut client, task) = start(Arc::new(AtomicUsize::new(0)), watch);
            client
                .write_all(b"GET /interim HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let text = read_all(&mut client).await;
            assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
            assert!(text.contains("connection: close\r\n"), "{text}");
            let (result, _) = outcome(task).await;
            assert!(result.is_err());
        }

        #[tokio::test]
        async fn a_client_leaving_mid_body_ends_the_response() {
            let (_trigger, watch) = shutdown_channel();
            let (mut client, task) = start(Arc::new(AtomicUsize::new(0)), watch);
            client
                .write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut first = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut first))
                .await
                .expect("head within 5 s")
                .expect("read");
            let head = String::from_utf8_lossy(&first[..n]).into_owned();
            assert!(
                head.contains("transfer-encoding: chunked") && head.contains("first"),
                "{head}"
            );
            drop(client);
            let (result, _) = outcome(task).await;
            assert!(result.is_err(), "the stalled body was abandoned");
        }

        #[tokio::test]
        async fn a_shutdown_during_a_request_makes_its_response_the_last() {
            let (trigger, watch) = shutdown_channel();
            let (mut client, task) = start(Arc::new(AtomicUsize::new(0)), watch);
            client
                .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            tokio::time::sleep(Duration::from_millis(50)).await;
            trigger.trigger();
            let text = read_all(&mut client).await;
            assert!(text.contains("connection: close\r\n"), "{text}");
            assert!(text.ends_with("/slow"), "{text}");
            let (result, handed) = outcome(task).await;
            assert_eq!((result, handed), (Ok(()), None));
        }

        #[tokio::test]
        async fn an_idle_connection_closes_after_the_linger_once_shutdown_is_asked() {
            let (trigger, watch) = shutdown_channel();
            let (mut client, task) = start(Arc::new(AtomicUsize::new(0)), watch);
            client
                .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut first = [0u8; 512];
            let _ = client.read(&mut first).await;
            let asked = tokio::time::Instant::now();
            trigger.trigger();
            let (result, handed) = outcome(task).await;
            assert_eq!((result, handed), (Ok(()), None));
            // Not at once: a request the client may already have sent gets the linger.
            assert!(asked.elapsed() >= Duration::from_millis(100));
        }
    }
}

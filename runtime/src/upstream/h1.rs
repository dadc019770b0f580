//! The direct HTTP/1.1 exchange: a request (with no body, or one framed by its
//! `Content-Length`) is written, and its response read, by the task that sends it, on a
//! pooled connection that task holds alone.
//!
//! hyper's HTTP/1.1 client drives each connection from a task of its own and hands the
//! request, the response head and every body chunk across channels, waking a second task at
//! each step. For the bulk of proxied traffic (GET and HEAD) that hand-over was a third of
//! the proxy's instructions per request, and every request body was copied through a
//! channel frame by frame. Here the requesting task writes the head (with a small body in
//! the same write; a large body frame goes out beside it in one vectored write, then frame
//! by frame as the client's body yields them, uncopied), parses the response with
//! `httparse`, and the response body reads the socket as the downstream consumes it. An
//! origin that answers before it took the whole body (a 413, say) and closes is heard: its
//! answer is relayed. Chunked request bodies, upgrades and header-case preservation stay
//! with hyper's client (see `HttpClient::try_send`).
//!
//! Response framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked` (a `Content-Length` beside it is ignored and the
//! connection is not reused); else `Content-Length` (several must agree); else the body runs
//! to the close. Interim 1xx responses are skipped; a 101 nobody asked for is an error.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{BoxError, Error, ErrorKind};
use crate::io_timeout::{BusyFlag, IoTimeout};
use crate::splice::{Pipe, Piped, SpliceSource, MIN_SPLICED};
use crate::upstream::stream::UpstreamStream;

/// Most header fields in a response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Most trailer fields after a chunked body.
const MAX_TRAILERS: usize = 64;
/// The size of a read for a response head, and the smallest read of a body.
const HEAD_READ: usize = 8 * 1024;
/// The largest read of a body.
const MAX_BODY_READ: usize = 64 * 1024;
/// The longest chunk-size line (size and extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Interim (1xx) responses skipped before the final one, at most.
const MAX_INTERIM: usize = 16;
/// The largest body frame copied behind the request head into one write.
const GATHERED_FRAME: usize = 4 * 1024;

/// Whether `request` can take the direct path: HTTP/1.1, no connection-level headers
/// (upgrades, `Connection`, a transfer coding, an expectation), and either no body and a
/// safe method (which may be resent on another connection), or any method but CONNECT with
/// one `Content-Length` that is exactly the body's known size.
pub(crate) fn is_direct<B: http_body::Body>(request: &Request<B>) -> bool {
    if request.version() != Version::HTTP_11 {
        return false;
    }
    if is_safe(request.method()) && request.body().is_end_stream() {
        // The bulk of requests: one pass over the (few) names costs less than three hashed
        // lookups, and a length (of nothing) or an expectation changes nothing here.
        return !request
            .headers()
            .keys()
            .any(|name| name == CONNECTION || name == UPGRADE || name == TRANSFER_ENCODING);
    }
    if request.method() == Method::CONNECT {
        return false;
    }
    let mut length = None;
    for (name, value) in request.headers() {
        if name == CONNECTION || name == UPGRADE || name == TRANSFER_ENCODING || name == EXPECT {
            return false;
        }
        if name == CONTENT_LENGTH {
            if length.is_some() {
                return false;
            }
            match crate::h1_field::content_length(value.as_bytes()) {
                Some(n) => length = Some(n),
                None => return false,
            }
        }
    }
    match length {
        // A body of unknown length (chunked), or an unsafe method without a body (which
        // the direct path would not resend): hyper's client.
        None => false,
        Some(n) => request.body().size_hint().exact() == Some(n),
    }
}

/// Whether `method` is safe (RFC 9110 §9.2.1), so a request that may not have reached the
/// origin can be sent again.
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Why an exchange failed, and whether the connection broke before the origin said anything
/// (on a pooled connection: the origin closed it while idle, and the request may go again).
pub(crate) struct ExchangeError {
    pub(crate) error: Error,
    pub(crate) unanswered: bool,
}

/// An upstream HTTP/1.1 connection used by the direct path.
pub(crate) struct H1Conn {
    io: UpstreamStream,
    /// Bytes read and not consumed yet.
    buf: BytesMut,
    /// The encoded request head; kept to reuse its allocation.
    head: Vec<u8>,
    /// Header names and value positions of the head being parsed; kept for its allocation.
    fields: Vec<(HeaderName, usize, usize)>,
    /// Set while a request is in flight: arms the read timeout.
    pub(crate) busy: BusyFlag,
}

/// The outcome of parsing what has been read of a response head.
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An interim (1xx) response was read and dropped.
    Interim,
    /// The final response head and how its body is framed.
    Final(Response<()>, BodyReader),
}

impl H1Conn {
    /// A connection over `io`, whose read deadline is armed by `busy`.
    pub(crate) fn new(io: UpstreamStream, busy: BusyFlag) -> Self {
        H1Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            fields: Vec::new(),
            busy,
        }
    }

    /// The stream and its read-timeout flag, for hyper's client to take over. Only for an
    /// idle connection (nothing buffered: [`is_clean`](Self::is_clean) held at checkout).
    pub(crate) fn into_parts(self) -> (UpstreamStream, BusyFlag) {
        (self.io, self.busy)
    }

    /// Whether the connection is cleartext (a body may be spliced into it).
    pub(crate) fn is_plain(&self) -> bool {
        self.io.is_plain()
    }

    /// Whether an idle connection can take a request: nothing (no close, no stray bytes)
    /// arrived since its last response. Costs a system call only when the socket reports
    /// readable.
    pub(crate) fn is_clean(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let tcp = self.io.tcp();
        let mut cx = Context::from_waker(Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness may be stale (the last read filled its buffer exactly): ask.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the head of `request` (which has no body).
    pub(crate) async fn write_request<B>(
        &mut self,
        request: &Request<B>,
    ) -> Result<(), ExchangeError> {
        encode_head(&mut self.head, request);
        let written = match self.io.write_all(&self.head).await {
            Ok(()) => self.io.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| ExchangeError {
            unanswered: IoTimeout::find(&e).is_none(),
            error: io_error(e, "sending request upstream"),
        })
    }

    /// Writes the request line and header fields of `request` into the connection's head
    /// buffer, to go out with its body (see [`Outgoing`]).
    pub(crate) fn encode_request_head<B>(&mut self, request: &Request<B>) {
        encode_head(&mut self.head, request);
    }

    /// Reads the final response head to a request with `method`, skipping interim ones.
    pub(crate) async fn read_response(
        &mut self,
        method: &Method,
        max_head: usize,
    ) -> Result<(Response<()>, BodyReader), ExchangeError> {
        let mut progress = HeadProgress::default();
        std::future::poll_fn(|cx| self.poll_response(method, max_head, &mut progress, cx)).await
    }

    /// Reads the final response head to a request with `method`, skipping interim ones;
    /// `progress` carries what was seen between polls.
    pub(crate) fn poll_response(
        &mut self,
        method: &Method,
        max_head: usize,
        progress: &mut HeadProgress,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Response<()>, BodyReader), ExchangeError>> {
        loop {
            if !self.buf.is_empty() {
                progress.received = true;
                match self.parse_head(method, max_head) {
                    Ok(Parsed::Final(head, body)) => return Poll::Ready(Ok((head, body))),
                    Ok(Parsed::Interim) => {
                        progress.interim += 1;
                        if progress.interim > MAX_INTERIM {
                            return Poll::Ready(Err(answered(invalid(
                                "too many interim responses",
                            ))));
                        }
                        continue;
                    }
                    Ok(Parsed::Partial) if self.buf.len() >= max_head => {
                        return Poll::Ready(Err(answered(invalid("response head too large"))));
                    }
                    Ok(Parsed::Partial) => {}
                    Err(error) => return Poll::Ready(Err(answered(error))),
                }
            }
            let error = match self.poll_fill(cx, HEAD_READ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if progress.received => answered(Error::new(
                    ErrorKind::UpstreamClosed,
                    "upstream closed the connection inside the response head",
                )),
                Poll::Ready(Ok(0)) => ExchangeError {
                    error: Error::new(
                        ErrorKind::UpstreamClosed,
                        "upstream closed the connection without answering",
                    ),
                    unanswered: true,
                },
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => ExchangeError {
                    unanswered: !progress.received && IoTimeout::find(&e).is_none(),
                    error: io_error(e, "reading the response head from upstream"),
                },
            };
            return Poll::Ready(Err(error));
        }
    }

    /// Reads more bytes into the buffer, making room for at least `want`. Ready(0) is EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        self.buf.reserve(want.max(HEAD_READ));
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Parses the response head at the start of the buffer, consuming it when complete.
    fn parse_head(&mut self, method: &Method, max_head: usize) -> Result<Parsed, Error> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let buf = &self.buf;
        let fields = &mut self.fields;
        let base = buf.as_ptr() as usize;
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len > max_head => {
                return Err(invalid("response head too large"))
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::InvalidResponse,
                    "parsing the response head from upstream",
                    e.to_string(),
                ))
            }
        };
        let status = response
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| invalid("invalid status code"))?;
        let version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let reason = response
            .reason
            .filter(|r| !r.is_empty() && Some(*r) != status.canonical_reason())
            .map(|r| r.as_bytes().to_vec());
        fields.clear();
        let mut framing = Framing::default();
        for h in response.headers.iter() {
            let name = crate::h1_field::name(h.name.as_bytes())
                .ok_or_else(|| invalid("invalid header name"))?;
            framing.note(&name, h.value)?;
            let start = h.value.as_ptr() as usize - base;
            fields.push((name, start, start + h.value.len()));
        }
        let head = self.buf.split_to(len).freeze();
        if status.is_informational() {
            self.fields.clear();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(invalid(
                    "upstream switched protocols without being asked to",
                ));
            }
            return Ok(Parsed::Interim);
        }
        let mut headers = crate::header_pool::take(self.fields.len());
        for (name, start, end) in self.fields.drain(..) {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| invalid("invalid header value"))?;
            headers.append(name, value);
        }
        let mut out = Response::new(());
        *out.status_mut() = status;
        *out.version_mut() = version;
        *out.headers_mut() = headers;
        if let Some(phrase) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
            out.extensions_mut().insert(phrase);
        }
        let body = framing.reader(method, status, version);
        Ok(Parsed::Final(out, body))
    }
}

/// What reading a response head has seen so far.
#[derive(Default)]
pub(crate) struct HeadProgress {
    /// Interim (1xx) responses skipped.
    interim: usize,
    /// Whether any byte of a response arrived.
    received: bool,
}

/// A request body on its way to the origin behind the head in the connection's head buffer,
/// framed by its `Content-Length`: the first frame, when small, goes out in the same write
/// as the head, a larger one beside it in one vectored write; later frames are written from
/// where they are, as the body yields them. Polled beside the read of the response (full
/// duplex: an origin may answer, and even stream its answer, before it has the whole body).
pub(crate) struct Outgoing {
    /// Bytes of the head written so far.
    head_sent: usize,
    /// What is left to write of the current frame.
    data: Bytes,
    /// Body bytes the `Content-Length` still announces.
    remaining: u64,
    /// Whether the first frame was taken (only it may join the head).
    first_taken: bool,
    /// Whether the body ended.
    ended: bool,
    /// Body bytes in the splicing pipe, still to be drained into the socket.
    piped: usize,
}

impl Outgoing {
    /// A body of `length` bytes, its head encoded in the connection's head buffer.
    pub(crate) fn new(length: u64) -> Self {
        Outgoing {
            head_sent: 0,
            data: Bytes::new(),
            remaining: length,
            first_taken: false,
            ended: false,
            piped: 0,
        }
    }

    /// Writes the head and the body until all is written and flushed. A body that fails
    /// (the client left, or sent more or less than its length) fails with its own error; a
    /// write that fails, with the socket's.
    pub(crate) fn poll_send<B>(
        &mut self,
        conn: &mut H1Conn,
        body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        self.poll_send_from(conn, &mut Frames(body), cx)
    }

    /// [`poll_send`](Self::poll_send) for a body spliced into the connection's socket
    /// (which must be cleartext) straight from the client's.
    pub(crate) fn poll_send_spliced(
        &mut self,
        conn: &mut H1Conn,
        body: &mut dyn SpliceSource,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        self.poll_send_from(conn, body, cx)
    }

    fn poll_send_from(
        &mut self,
        conn: &mut H1Conn,
        body: &mut dyn SpliceSource,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            let head_done = self.head_sent == conn.head.len();
            if self.piped != 0 && head_done {
                let n = std::task::ready!(conn
                    .io
                    .poll_splice_into(cx, |tcp, cx| body.poll_drain(tcp, cx)))
                .map_err(|e| io_error(e, SENDING))?;
                self.piped -= n;
                continue;
            }
            if self.data.is_empty()
                && self.piped == 0
                && !self.ended
                && (head_done || !self.first_taken)
            {
                match body.poll_piped(cx) {
                    Poll::Ready(next) => {
                        self.take(conn, next)?;
                        continue;
                    }
                    Poll::Pending if head_done => return Poll::Pending,
                    // The head goes out while the body is awaited.
                    Poll::Pending => {}
                }
            }
            let head = &conn.head[self.head_sent..];
            if head.is_empty() && self.data.is_empty() {
                if !self.ended {
                    continue;
                }
                return Pin::new(&mut conn.io)
                    .poll_flush(cx)
                    .map_err(|e| io_error(e, SENDING));
            }
            let slices = [IoSlice::new(head), IoSlice::new(&self.data)];
            let n = match Pin::new(&mut conn.io).poll_write_vectored(cx, &slices) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io_error(io::ErrorKind::WriteZero.into(), SENDING)))
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e, SENDING))),
                Poll::Pending => return Poll::Pending,
            };
            let from_head = n.min(head.len());
            self.head_sent += from_head;
            self.data.advance(n - from_head);
            if self.data.is_empty() {
                // Let go of the frame's buffer now, so the client's side can read into it
                // again instead of allocating another.
                self.data = Bytes::new();
            }
        }
    }

    /// Takes what the body gave: data is counted against the length and, for a small first
    /// chunk, joins the head; bytes in the pipe are drained next.
    fn take(&mut self, conn: &mut H1Conn, next: Option<Result<Piped, Error>>) -> Result<(), Error> {
        let len = match &next {
            None => {
                self.ended = true;
                if self.remaining != 0 {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        "the request body ended before its Content-Length",
                    ));
                }
                return Ok(());
            }
            Some(Err(_)) => 0,
            Some(Ok(Piped::Chunk(data))) => data.len(),
            Some(Ok(Piped::InPipe(n))) => *n,
        };
        self.remaining = self.remaining.checked_sub(len as u64).ok_or_else(|| {
            Error::new(
                ErrorKind::Internal,
                "the request body is longer than its Content-Length",
            )
        })?;
        match next {
            Some(Err(e)) => return Err(e),
            Some(Ok(Piped::InPipe(n))) => self.piped = n,
            Some(Ok(Piped::Chunk(data)))
                if !self.first_taken && self.head_sent == 0 && data.len() <= GATHERED_FRAME =>
            {
                conn.head.extend_from_slice(&data);
            }
            Some(Ok(Piped::Chunk(data))) => self.data = data,
            None => {}
        }
        self.first_taken = true;
        Ok(())
    }
}

/// A body read frame by frame, as a [`SpliceSource`] that never splices: its data frames
/// are chunks, its trailers dropped (a body framed by its length has no place for them).
struct Frames<'a, B>(Pin<&'a mut B>);

impl<B> SpliceSource for Frames<'_, B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn can_splice(&self) -> bool {
        false
    }

    fn poll_piped(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piped, Error>>> {
        loop {
            let frame = match std::task::ready!(self.0.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(body_error(e.into())))),
                Some(Ok(frame)) => frame,
            };
            if let Ok(data) = frame.into_data() {
                return Poll::Ready(Some(Ok(Piped::Chunk(data))));
            }
        }
    }

    fn poll_drain(&mut self, _into: &TcpStream, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Never asked: this source puts nothing in a pipe.
        Poll::Ready(Err(io::ErrorKind::InvalidInput.into()))
    }
}

const SENDING: &str = "sending the request body upstream";

/// What the framing headers of a response said.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

impl Framing {
    /// Takes note of one header field.
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), Error> {
        if name == CONTENT_LENGTH {
            let n = crate::h1_field::content_length(value)
                .ok_or_else(|| invalid("invalid Content-Length"))?;
            if self.content_length.is_some_and(|seen| seen != n) {
                return Err(invalid("conflicting Content-Length values"));
            }
            self.content_length = Some(n);
        } else if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
            // What counts is the last coding of the last field.
            self.chunked = crate::h1_field::ends_in_chunked(value);
        } else if name == CONNECTION {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        }
        Ok(())
    }

    /// How the body of a response to `method` with `status` is read.
    fn reader(&self, method: &Method, status: StatusCode, version: Version) -> BodyReader {
        let keep_alive = !self.close && (version == Version::HTTP_11 || self.keep_alive);
        let no_body = *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let (state, reusable) = if no_body {
            (BodyState::Done, keep_alive)
        } else if self.transfer_encoding {
            if self.chunked {
                (
                    BodyState::Chunked(Chunk::Size),
                    keep_alive && self.content_length.is_none(),
                )
            } else {
                (BodyState::UntilClose, false)
            }
        } else if let Some(n) = self.content_length {
            (BodyState::Length(n), keep_alive)
        } else {
            (BodyState::UntilClose, false)
        };
        let state = match state {
            BodyState::Length(0) => BodyState::Done,
            other => other,
        };
        BodyReader { state, reusable }
    }
}

/// Reads a response body off its connection, frame by frame.
pub(crate) struct BodyReader {
    state: BodyState,
    reusable: bool,
}

enum BodyState {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding, at this step.
    Chunked(Chunk),
    /// Everything until the origin closes.
    UntilClose,
    /// The body is complete.
    Done,
}

enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

impl BodyReader {
    /// Whether the whole body has been read.
    pub(crate) fn is_end(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Keeps the connection from being reused, whatever the response said.
    pub(crate) fn forbid_reuse(&mut self) {
        self.reusable = false;
    }

    /// Whether the connection may carry another request once the body is complete.
    pub(crate) fn reusable(&self, conn: &H1Conn) -> bool {
        self.reusable && self.is_end() && conn.buf.is_empty()
    }

    /// The body's exact length, when the head said it.
    pub(crate) fn exact_len(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    /// The next frame of the body: data, trailers, or `None` at its end.
    pub(crate) fn poll_frame(
        &mut self,
        conn: &mut H1Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame<Bytes>>, Error>> {
        loop {
            match &mut self.state {
                BodyState::Done => return Poll::Ready(Ok(None)),
                BodyState::Length(left) => {
                    let data = match take_data(conn, cx, left) {
                        Poll::Ready(r) => r?,
                        Poll::Pending => return Poll::Pending,
                    };
                    if *left == 0 {
                        self.state = BodyState::Done;
                    }
                    return Poll::Ready(Ok(Some(Frame::data(data))));
                }
                BodyState::UntilClose => {
                    if conn.buf.is_empty() {
                        let n = match conn.poll_fill(cx, MAX_BODY_READ) {
                            Poll::Ready(r) => r.map_err(|e| io_error(e, BODY))?,
                            Poll::Pending => return Poll::Pending,
                        };
                        if n == 0 {
                            self.state = BodyState::Done;
                            return Poll::Ready(Ok(None));
                        }
                    }
                    return Poll::Ready(Ok(Some(Frame::data(conn.buf.split().freeze()))));
                }
                BodyState::Chunked(Chunk::Data(left)) => {
                    let data = match take_data(conn, cx, left) {
                        Poll::Ready(r) => r?,
                        Poll::Pending => return Poll::Pending,
                    };
                    if *left == 0 {
                        self.state = BodyState::Chunked(Chunk::DataEnd);
                    }
                    return Poll::Ready(Ok(Some(Frame::data(data))));
                }
                BodyState::Chunked(Chunk::Size) => {
                    if let Err(stop) = self.read_chunk_size(conn, cx) {
                        return stop;
                    }
                }
                BodyState::Chunked(Chunk::DataEnd) => {
                    if let Err(stop) = self.read_chunk_end(conn, cx) {
                        return stop;
                    }
                }
                BodyState::Chunked(Chunk::Trailers) => return self.poll_trailers(conn, cx),
            }
        }
    }

    /// Whether the rest of the body may be spliced out of `conn`: it is framed by its
    /// length, at least [`MIN_SPLICED`] long, over cleartext.
    pub(crate) fn can_splice(&self, conn: &H1Conn) -> bool {
        matches!(self.state, BodyState::Length(n) if n >= MIN_SPLICED) && conn.is_plain()
    }

    /// Like [`poll_frame`](Self::poll_frame), splicing into `pipe` (which must be empty)
    /// what is not read yet of a body framed by its length; bytes read already come as a
    /// chunk first.
    pub(crate) fn poll_piped(
        &mut self,
        conn: &mut H1Conn,
        pipe: &Pipe,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Piped>, Error>> {
        let BodyState::Length(left) = &mut self.state else {
            return self
                .poll_frame(conn, cx)
                .map(|r| r.map(|frame| frame.and_then(|f| f.into_data().ok()).map(Piped::Chunk)));
        };
        let next = if conn.buf.is_empty() {
            let n = std::task::ready!(conn
                .io
                .poll_splice_from(cx, |tcp, cx| pipe.poll_fill(tcp, *left, cx)))
            .map_err(|e| io_error(e, BODY))?;
            if n == 0 {
                return Poll::Ready(Err(closed_mid_body()));
            }
            *left -= n as u64;
            Piped::InPipe(n)
        } else {
            let take = usize::try_from(*left).map_or(conn.buf.len(), |l| l.min(conn.buf.len()));
            *left -= take as u64;
            Piped::Chunk(conn.buf.split_to(take).freeze())
        };
        if *left == 0 {
            self.state = BodyState::Done;
        }
        Poll::Ready(Ok(Some(next)))
    }

    /// Reads a chunk-size line (reading more first if it is not complete) and moves to the
    /// chunk's data, or to the trailers after the last chunk. `Err` is what to return.
    fn read_chunk_size(&mut self, conn: &mut H1Conn, cx: &mut Context<'_>) -> Result<(), Stop> {
        let Some(eol) = conn.buf.iter().position(|&b| b == b'\n') else {
            if conn.buf.len() > MAX_CHUNK_LINE {
                return Err(Poll::Ready(Err(invalid("chunk size line too long"))));
            }
            return fill_some(conn, cx);
        };
        let Some(size) = parse_chunk_size(&conn.buf[..eol]) else {
            return Err(Poll::Ready(Err(invalid("invalid chunk size line"))));
        };
        conn.buf.advance(eol + 1);
        self.state = BodyState::Chunked(if size == 0 {
            Chunk::Trailers
        } else {
            Chunk::Data(size)
        });
        Ok(())
    }

    /// Reads the CRLF after a chunk's data (reading more first if it is not there) and
    /// moves to the next chunk-size line. `Err` is what to return.
    fn read_chunk_end(&mut self, conn: &mut H1Conn, cx: &mut Context<'_>) -> Result<(), Stop> {
        if conn.buf.len() < 2 {
            return fill_some(conn, cx);
        }
        if &conn.buf[..2] != b"\r\n" {
            return Err(Poll::Ready(Err(invalid("chunk data not followed by CRLF"))));
        }
        conn.buf.advance(2);
        self.state = BodyState::Chunked(Chunk::Size);
        Ok(())
    }

    /// The trailer section after the last chunk, as a trailers frame (`None` if empty),
    /// reading until it is complete.
    fn poll_trailers(
        &mut self,
        conn: &mut H1Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame<Bytes>>, Error>> {
        loop {
            if conn.buf.starts_with(b"\r\n") {
                conn.buf.advance(2);
                self.state = BodyState::Done;
                return Poll::Ready(Ok(None));
            }
            let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILERS];
            match httparse::parse_headers(&conn.buf, &mut slots) {
                Ok(httparse::Status::Complete((len, fields))) => {
                    let trailers = trailer_map(fields)?;
                    conn.buf.advance(len);
                    self.state = BodyState::Done;
                    return Poll::Ready(Ok(Some(Frame::trailers(trailers))));
                }
                Ok(httparse::Status::Partial) => {
                    if conn.buf.len() > MAX_BODY_READ {
                        return Poll::Ready(Err(invalid("trailer section too large")));
                    }
                    if let Err(stop) = fill_some(conn, cx) {
                        return stop;
                    }
                }
                Err(_) => return Poll::Ready(Err(invalid("invalid trailer section"))),
            }
        }
    }
}

/// What `poll_frame` returns when a step of reading the body cannot go on now.
type Stop = Poll<Result<Option<Frame<Bytes>>, Error>>;

/// The trailer fields parsed from a response.
fn trailer_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| invalid("invalid trailer name"))?;
        let value =
            HeaderValue::from_bytes(f.value).map_err(|_| invalid("invalid trailer value"))?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

const BODY: &str = "reading response body from upstream";

/// Up to `left` bytes of body data, read from the socket if none are buffered.
fn take_data(
    conn: &mut H1Conn,
    cx: &mut Context<'_>,
    left: &mut u64,
) -> Poll<Result<Bytes, Error>> {
    if conn.buf.is_empty() {
        let want = usize::try_from(*left)
            .unwrap_or(MAX_BODY_READ)
            .min(MAX_BODY_READ);
        match conn.poll_fill(cx, want) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(closed_mid_body())),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e, BODY))),
            Poll::Pending => return Poll::Pending,
        }
    }
    let take = usize::try_from(*left).map_or(conn.buf.len(), |l| l.min(conn.buf.len()));
    *left -= take as u64;
    Poll::Ready(Ok(conn.buf.split_to(take).freeze()))
}

/// Reads more of a chunked body's framing; `Err` holds what `poll_frame` returns instead.
#[allow(clippy::type_complexity)]
fn fill_some(conn: &mut H1Conn, cx: &mut Context<'_>) -> Result<(), Stop> {
    match conn.poll_fill(cx, HEAD_READ) {
        Poll::Ready(Ok(0)) => Err(Poll::Ready(Err(closed_mid_body()))),
        Poll::Ready(Ok(_)) => Ok(()),
        Poll::Ready(Err(e)) => Err(Poll::Ready(Err(io_error(e, BODY)))),
        Poll::Pending => Err(Poll::Pending),
    }
}

/// The error of a request body that failed on its way upstream: the proxy's own error as
/// it is (a body timeout, a body over its limit), anything else as the client leaving.
fn body_error(e: BoxError) -> Error {
    match e.downcast::<Error>() {
        Ok(e) => *e,
        Err(e) => Error::with_source(
            ErrorKind::DownstreamClosed,
            "reading the request body from the client",
            e,
        ),
    }
}

/// Writes the request line and header fields of `request`, in origin form when its URI has
/// no authority.
fn encode_head<B>(out: &mut Vec<u8>, request: &Request<B>) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let uri = request.uri();
    if uri.authority().is_some() {
        out.extend_from_slice(uri.to_string().as_bytes());
    } else {
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        out.extend_from_slice(if target.is_empty() {
            b"/"
        } else {
            target.as_bytes()
        });
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The size of a chunk-size line (without its LF): hex digits, then optional whitespace
/// and extensions, then CR.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |n, &d| {
        let v = char::from(d).to_digit(16)?;
        Some((n << 4) | u64::from(v))
    })
}

fn invalid(what: &'static str) -> Error {
    Error::new(ErrorKind::InvalidResponse, what)
}

fn answered(error: Error) -> ExchangeError {
    ExchangeError {
        error,
        unanswered: false,
    }
}

fn closed_mid_body() -> Error {
    Error::new(
        ErrorKind::UpstreamClosed,
        "upstream closed the connection before the body was complete",
    )
}

/// An I/O error of the upstream socket as the proxy's error kind: a timeout, or a close.
fn io_error(e: io::Error, context: &'static str) -> Error {
    let kind = match IoTimeout::find(&e) {
        Some(IoTimeout::Write) => ErrorKind::WriteTimeout,
        Some(IoTimeout::Read | IoTimeout::Idle) => ErrorKind::ReadTimeout,
        None => ErrorKind::UpstreamClosed,
    };
    Error::with_source(kind, context, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines() {
        assert_eq!(parse_chunk_size(b"1a\r"), Some(26));
        assert_eq!(parse_chunk_size(b"0\r"), Some(0));
        assert_eq!(parse_chunk_size(b"FF;name=value\r"), Some(255));
        assert_eq!(parse_chunk_size(b"10 ;ext\r"), Some(16));
        assert_eq!(parse_chunk_size(b"10"), None, "a bare LF is not a line end");
        assert_eq!(parse_chunk_size(b"\r"), None);
        assert_eq!(parse_chunk_size(b"-1\r"), None);
        assert_eq!(parse_chunk_size(b"1x\r"), None);
        assert_eq!(
            parse_chunk_size(b"11111111111111111\r"),
            None,
            "over 64 bits"
        );
    }

    #[test]
    fn content_length_values() {
        let mut f = Framing::default();
        assert!(f.note(&CONTENT_LENGTH, b"5, 5").is_ok());
        assert!(f.note(&CONTENT_LENGTH, b"6").is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = Method::GET;
        let framed = |headers: &[(&HeaderName, &[u8])], status: u16, method: &Method| {
            let mut f = Framing::default();
            for (n, v) in headers {
                f.note(n, v).expect("valid");
            }
            let status = StatusCode::from_u16(status).expect("status");
            f.reader(method, status, Version::HTTP_11)
        };
        let r = framed(&[(&CONTENT_LENGTH, b"7")], 200, &get);
        assert_eq!(r.exact_len(), Some(7));
        assert!(r.reusable);
        let r = framed(&[(&CONTENT_LENGTH, b"7")], 200, &Method::HEAD);
        assert!(r.is_end() && r.reusable);
        let r = framed(&[(&TRANSFER_ENCODING, b"gzip, chunked")], 200, &get);
        assert!(matches!(r.state, BodyState::Chunked(Chunk::Size)) && r.reusable);
        let both = [
            (&TRANSFER_ENCODING, b"chunked" as &[u8]),
            (&CONTENT_LENGTH, b"7"),
        ];
        let r = framed(&both, 200, &get);
        assert!(matches!(r.state, BodyState::Chunked(_)) && !r.reusable);
        let r = framed(&[(&TRANSFER_ENCODING, b"gzip")], 200, &get);
        assert!(matches!(r.state, BodyState::UntilClose) && !r.reusable);
        let r = framed(&[], 200, &get);
        assert!(matches!(r.state, BodyState::UntilClose));
        let r = framed(&[(&CONTENT_LENGTH, b"7")], 304, &get);
        assert!(r.is_end());
        let r = framed(
            &[(&CONNECTION, b"close"), (&CONTENT_LENGTH, b"1")],
            200,
            &get,
        );
        assert!(!r.reusable);
    }
}

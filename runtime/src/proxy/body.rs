//! The bodies a proxy streams: the client's request body on its way upstream
//! ([`RequestBody`], with an idle timeout) and the response on its way to the client
//! ([`ProxyBody`], which runs the `logging` phase exactly once when it ends, fails or is
//! dropped). Neither buffers: each frame is passed on as it arrives.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::downstream::body::DownstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::error::{BoxError, Error, ErrorKind};
use crate::metrics::RouteStats;
use crate::proxy::cache::CacheFill;
use crate::proxy::route::Encoder;
use crate::proxy::session::Session;
use crate::proxy::{finish, ProxyHttp, Shared};
use crate::splice::{Piped, SpliceHook, SpliceSource, MIN_SPLICED};
use crate::upstream::UpstreamBody;

/// The client's request body, forwarded upstream frame by frame. Fails with
/// [`ErrorKind::DownstreamTimeout`] when the client sends nothing for the body timeout while
/// the upstream is waiting for more, or has not sent the whole body within the total body
/// timeout (counted from when forwarding began; a client dripping bytes is cut off). May
/// record what it forwards (up to a limit) so the request can be sent again, or replay such
/// a recording.
pub struct RequestBody {
    inner: Option<DownstreamBody>,
    replay: VecDeque<Bytes>,
    recorder: Option<Arc<Mutex<Recording>>>,
    timeout: Duration,
    /// When the whole body must have arrived (none for a request without a body).
    total_deadline: Option<Instant>,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Where received bytes are counted.
    counted: Option<Arc<RouteStats>>,
    /// The body bytes still allowed, when the body is capped.
    allowed: Option<u64>,
}

/// The body bytes a [`RequestBody`] forwarded, kept for a resend.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    chunks: Vec<Bytes>,
    size: usize,
    limit: usize,
    /// The body ended, and every byte of it is in `chunks`.
    complete: bool,
    /// The body outgrew `limit`: it cannot be replayed.
    truncated: bool,
}

impl Recording {
    /// The whole body, if it ended within the limit.
    pub(crate) fn replayable(&self) -> Option<VecDeque<Bytes>> {
        (self.complete && !self.truncated).then(|| self.chunks.iter().cloned().collect())
    }
}

impl RequestBody {
    /// Forwards `inner`, which must keep arriving (gaps under `timeout`) and arrive whole
    /// within `total` from now.
    pub(crate) fn new(inner: Option<DownstreamBody>, timeout: Duration, total: Duration) -> Self {
        // The clock runs only for a request that has a body (not for a GET's).
        let total_deadline = inner
            .as_ref()
            .filter(|body| !body.is_end_stream())
            .map(|_| {
                let now = Instant::now();
                now.checked_add(total).unwrap_or_else(far_future)
            });
        RequestBody {
            inner,
            replay: VecDeque::new(),
            recorder: None,
            timeout,
            total_deadline,
            waiting_since: None,
            timer: None,
            counted: None,
            allowed: None,
        }
    }

    /// Fails the body with [`ErrorKind::BodyTooLarge`] once more than `max` bytes arrive.
    pub(crate) fn cap(&mut self, max: u64) {
        self.allowed = Some(max);
    }

    /// Takes `len` bytes from the allowance, or says the cap is passed.
    fn within_cap(&mut self, len: usize) -> bool {
        let Some(allowed) = self.allowed.as_mut() else {
            return true;
        };
        match allowed.checked_sub(len as u64) {
            Some(left) => {
                *allowed = left;
                true
            }
            None => false,
        }
    }

    /// Counts the body bytes received into `stats`.
    pub(crate) fn count_into(&mut self, stats: Arc<RouteStats>) {
        self.counted = Some(stats);
    }

    /// Records up to `limit` forwarded bytes into the returned recording.
    pub(crate) fn record(&mut self, limit: usize) -> Arc<Mutex<Recording>> {
        let recording = Arc::new(Mutex::new(Recording {
            limit,
            ..Recording::default()
        }));
        self.recorder = Some(recording.clone());
        recording
    }

    /// A body that sends `chunks` (a recording) and ends.
    pub(crate) fn replaying(chunks: VecDeque<Bytes>) -> Self {
        RequestBody {
            replay: chunks,
            ..RequestBody::new(None, Duration::MAX, Duration::MAX)
        }
    }

    /// Counts `len` body bytes that arrived, against the cap too.
    fn arrived(&mut self, len: usize) -> Result<(), Error> {
        if let Some(stats) = &self.counted {
            stats.bytes_in.add(len as u64);
        }
        if !self.within_cap(len) {
            return Err(Error::new(
                ErrorKind::BodyTooLarge,
                "the request body is larger than its route's max_body",
            ));
        }
        Ok(())
    }

    /// While the client sends nothing: the timeout error once the body timeout or the total
    /// body timeout passes.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        let total = self.total_deadline.unwrap_or_else(far_future);
        let idle = self
            .waiting_since
            .get_or_insert_with(Instant::now)
            .checked_add(self.timeout)
            .unwrap_or(total);
        let deadline = idle.min(total);
        // The timer is allocated only for a body that actually had to wait.
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) if deadline == total => Poll::Ready(Error::new(
                ErrorKind::DownstreamTimeout,
                "client did not send the whole request body within the total body timeout",
            )),
            Poll::Ready(()) => Poll::Ready(Error::new(
                ErrorKind::DownstreamTimeout,
                "client sent no request body data within the body timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the body may be spliced upstream: it comes straight off a client's bare
    /// socket, nothing records or replays it, and it is large enough for a pipe to pay.
    #[inline]
    pub(crate) fn can_splice(&self) -> bool {
        self.replay.is_empty()
            && self.recorder.is_none()
            && self
                .inner
                .as_ref()
                .and_then(DownstreamBody::direct)
                .is_some_and(|b| b.remaining() >= MIN_SPLICED && b.can_splice())
    }

    /// How the upstream side reaches [`SpliceSource`] on a `RequestBody` it holds.
    pub(crate) fn splice_hook() -> SpliceHook {
        SpliceHook::new(|body| {
            body.downcast_mut::<RequestBody>()
                .map(|b| b as &mut (dyn SpliceSource + Send))
        })
    }

    fn note(&self, frame: Option<&Frame<Bytes>>, ended: bool) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let Ok(mut r) = recorder.lock() else { return };
        if frame.is_some_and(Frame::is_trailers) {
            // Trailers are not recorded: such a body cannot be replayed faithfully.
            r.truncated = true;
            r.chunks.clear();
        }
        if let Some(data) = frame.and_then(Frame::data_ref) {
            if r.size + data.len() > r.limit {
                r.truncated = true;
                r.chunks.clear();
            } else if !r.truncated {
                r.size += data.len();
                r.chunks.push(data.clone());
            }
        }
        if ended {
            r.complete = true;
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let Some(chunk) = this.replay.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.waiting_since = None;
                let len = match &r {
                    Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
                    _ => 0,
                };
                if let Err(e) = this.arrived(len) {
                    return Poll::Ready(Some(Err(e)));
                }
                if this.recorder.is_some() {
                    let ended = match &r {
                        None => true,
                        Some(Ok(_)) => this.inner.as_ref().is_none_or(|b| b.is_end_stream()),
                        Some(Err(_)) => false,
                    };
                    this.note(r.as_ref().and_then(|f| f.as_ref().ok()), ended);
                }
                Poll::Ready(r.map(|r| r.map_err(client_body_error)))
            }
            Poll::Pending => this.poll_stalled(cx).map(|e| Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let replay: u64 = self.replay.iter().map(|c| c.len() as u64).sum();
        match &self.inner {
            Some(b) => {
                let h = b.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + replay);
                if let Some(upper) = h.upper() {
                    out.set_upper(upper + replay);
                }
                out
            }
            None => SizeHint::with_exact(replay),
        }
    }
}

/// Spliced, the body keeps its timeouts, cap and count; only the bytes take another way.
impl SpliceSource for RequestBody {
    fn can_splice(&self) -> bool {
        RequestBody::can_splice(self)
    }

    fn poll_piped(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piped, Error>>> {
        let Some(body) = self.inner.as_mut().and_then(DownstreamBody::direct_mut) else {
            return Poll::Ready(None);
        };
        match body.poll_piped(cx) {
            Poll::Ready(r) => {
                self.waiting_since = None;
                let len = match &r {
                    Some(Ok(Piped::Chunk(data))) => data.len(),
                    Some(Ok(Piped::InPipe(n))) => {
                        if let Some(stats) = &self.counted {
                            stats.bytes_spliced.add(*n as u64);
                        }
                        *n
                    }
                    _ => 0,
                };
                if let Err(e) = self.arrived(len) {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(r.map(|r| r.map_err(|e| client_body_error(e.into()))))
            }
            Poll::Pending => self.poll_stalled(cx).map(|e| Some(Err(e))),
        }
    }

    fn poll_drain(&mut self, into: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match self.inner.as_mut().and_then(DownstreamBody::direct_mut) {
            Some(body) => body.poll_drain(into, cx),
            None => Poll::Ready(Err(io::ErrorKind::InvalidInput.into())),
        }
    }
}

/// A deadline that never comes (about 30 years away, as tokio's own far future).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// The error of a failed read of the client's body. A body whose framing is malformed (a
/// bad chunk size, a missing CRLF after a chunk, a bare LF ending a chunk-size line) is the
/// client's mistake: 400, and the connection closes (RFC 9112 §7.1). Anything else (the
/// client closed early) means it went away.
fn client_body_error(e: BoxError) -> Error {
    let mut malformed = false;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            malformed |= matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            );
        }
        cause = c.source();
    }
    if malformed {
        Error::with_source(
            ErrorKind::BadRequest,
            "malformed request body framing from the client",
            e,
        )
    } else {
        Error::with_source(
            ErrorKind::DownstreamClosed,
            "reading the request body from the client",
            e,
        )
    }
}

use std::future::Future as _;

/// Where a response body comes from: the upstream, or the proxy itself (early answers,
/// errors).
pub(crate) enum ResponseSource {
    Upstream(UpstreamBody<RequestBody>),
    Full(Option<Bytes>),
    /// Another source, compressed as it streams (boxed: most responses are not).
    Compressed(Box<Compressing>),
    /// Another source, stored in the cache as it streams (boxed: most are not).
    Cached(Box<Caching>),
}

/// A response body on its way to the client and, once whole, into the cache.
pub(crate) struct Caching {
    inner: ResponseSource,
    /// `None` once stored, or given up (too large, trailers, failed).
    fill: Option<CacheFill>,
}

impl Caching {
    /// The next frame of the source, kept by the fill; the fill stores the response when
    /// the source ends whole.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = self.inner.poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => match (frame.data_ref(), self.fill.as_mut()) {
                (Some(data), Some(fill)) => {
                    if !fill.push(data) {
                        self.fill = None;
                    } else if self.inner.is_end_stream() {
                        self.finish();
                    }
                }
                // Trailers are not stored: neither is a response that has them.
                (None, _) => self.fill = None,
                (Some(_), None) => {}
            },
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => self.fill = None,
        }
        polled
    }

    fn finish(&mut self) {
        if let Some(fill) = self.fill.take() {
            fill.finish();
        }
    }
}

/// A response body on its way through an encoder.
pub(crate) struct Compressing {
    inner: ResponseSource,
    /// `None` once the stream ended and the encoder's trailer went out.
    encoder: Option<Encoder>,
    /// Input was fed since the last output: flush when the source pauses.
    dirty: bool,
    /// The source's trailers, sent after the encoder's last bytes.
    trailers: Option<http::HeaderMap>,
}

impl Compressing {
    fn new(inner: ResponseSource, encoder: Encoder) -> Self {
        Compressing {
            inner,
            encoder: Some(encoder),
            dirty: false,
            trailers: None,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    /// The next compressed frame: what the encoder emits for the source's frames, a flush
    /// when the source pauses, the encoder's end, then the source's trailers.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            let Some(encoder) = self.encoder.as_mut() else {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            let out = match self.inner.poll_frame(cx) {
                Poll::Pending if self.dirty => {
                    self.dirty = false;
                    encoder.flush()
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.dirty = true;
                        encoder.push(&data)
                    }
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok();
                        self.finish()
                    }
                },
                Poll::Ready(None) => self.finish(),
            };
            match out {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                Err(e) => {
                    return Poll::Ready(Some(Err(Error::with_source(
                        ErrorKind::Internal,
                        "compressing the response",
                        e,
                    ))))
                }
            }
        }
    }

    /// Ends the encoder: its last bytes.
    fn finish(&mut self) -> std::io::Result<Bytes> {
        match self.encoder.take() {
            Some(encoder) => encoder.finish(),
            None => Ok(Bytes::new()),
        }
    }
}

impl ResponseSource {
    /// Whether the source is an origin's body that may be spliced (see `UpstreamBody`).
    pub(crate) fn can_splice(&self) -> bool {
        matches!(self, ResponseSource::Upstream(b) if b.can_splice())
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        ResponseSource::Full(if bytes.is_empty() { None } else { Some(bytes) })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseSource::Upstream(b) => b.is_end_stream(),
            ResponseSource::Full(b) => b.is_none(),
            ResponseSource::Compressed(c) => c.is_end_stream(),
            ResponseSource::Cached(c) => c.inner.is_end_stream(),
        }
    }

    /// The source's next frame.
    #[inline]
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self {
            ResponseSource::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseSource::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ResponseSource::Compressed(c) => c.poll_frame(cx),
            ResponseSource::Cached(c) => c.poll_frame(cx),
        }
    }
}

/// What `logging` needs, carried by the response body until it ends.
pub(crate) struct LogState<P: ProxyHttp> {
    pub(crate) shared: Arc<Shared<P>>,
    pub(crate) session: Session,
    pub(crate) ctx: P::Ctx,
    pub(crate) error: Option<Error>,
}

impl<P: ProxyHttp> LogState<P> {
    fn log(&mut self, late: Option<Error>) {
        let error = late.as_ref().or(self.error.as_ref());
        finish(&self.shared, &self.session, error, &mut self.ctx);
    }
}

pin_project_lite::pin_project! {
    /// The response body a proxy sends to its client. Runs `logging` once, when the last
    /// frame has been handed over, when a frame fails, or when the client went away first.
    pub struct ProxyBody<P: ProxyHttp> {
        source: ResponseSource,
        log: Option<Box<LogState<P>>>,
    }

    impl<P: ProxyHttp> PinnedDrop for ProxyBody<P> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut state) = this.log.take() {
                let late = if this.source.is_end_stream() {
                    None
                } else {
                    Some(Error::new(
                        ErrorKind::DownstreamClosed,
                        "client closed the connection before the response was complete",
                    ))
                };
                state.log(late);
            }
        }
    }
}

/// An empty body without a request behind it, for responses that tower layers around the
/// proxy make themselves (e.g. a timeout answer).
impl<P: ProxyHttp> Default for ProxyBody<P> {
    fn default() -> Self {
        ProxyBody {
            source: ResponseSource::Full(None),
            log: None,
        }
    }
}

impl<P: ProxyHttp> ProxyBody<P> {
    pub(crate) fn new(source: ResponseSource, log: LogState<P>) -> Self {
        // Boxed first, then changed in place: the state (the whole session) is moved once.
        let mut log = Box::new(log);
        let source = match log.session.take_cache_fill() {
            Some(fill) => ResponseSource::Cached(Box::new(Caching {
                inner: source,
                fill: Some(fill),
            })),
            None => source,
        };
        let source = match log.session.take_encoder() {
            Some(encoder) => {
                ResponseSource::Compressed(Box::new(Compressing::new(source, encoder)))
            }
            None => source,
        };
        ProxyBody {
            source,
            log: Some(log),
        }
    }
}

impl<P: ProxyHttp> ProxyBody<P> {
    /// Whether the body may be spliced into the client's socket: the origin's body,
    /// unchanged (not compressed), that can be spliced out of its socket.
    pub(crate) fn can_splice(&self) -> bool {
        self.source.can_splice()
    }

    /// How the client's side reaches [`SpliceSource`] on a `ProxyBody` it holds.
    pub(crate) fn splice_hook() -> SpliceHook {
        SpliceHook::new(|body| {
            body.downcast_mut::<ProxyBody<P>>()
                .map(|b| b as &mut (dyn SpliceSource + Send))
        })
    }
}

/// Runs `logging` at the end of a body (once: the state is taken). `None`, the end.
#[inline]
fn log_end<P: ProxyHttp, T>(log: &mut Option<Box<LogState<P>>>) -> Option<T> {
    if let Some(mut state) = log.take() {
        state.log(None);
    }
    None
}

/// Runs `logging` for a body that failed with `e`; the client sees only its kind (the
/// stream breaks), the detail goes to `logging`.
fn log_failure<P: ProxyHttp>(log: &mut Option<Box<LogState<P>>>, e: Error) -> Error {
    tracing::debug!(error = %e, "response body failed");
    let kind = e.kind();
    let context = e.context();
    if let Some(mut state) = log.take() {
        state.log(Some(e));
    }
    Error::new(kind, context)
}

/// Spliced, the body is counted and logged as it is frame by frame.
impl<P: ProxyHttp> SpliceSource for ProxyBody<P> {
    fn can_splice(&self) -> bool {
        ProxyBody::can_splice(self)
    }

    fn poll_piped(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piped, Error>>> {
        let polled = match &mut self.source {
            ResponseSource::Upstream(b) => std::task::ready!(b.poll_piped(cx)),
            // Not asked: `can_splice` said no.
            _ => Some(Err(Error::new(
                ErrorKind::Internal,
                "only an origin's body is spliced",
            ))),
        };
        let (sent, spliced) = match &polled {
            Some(Ok(Piped::Chunk(data))) => (data.len(), 0),
            Some(Ok(Piped::InPipe(n))) => (*n, *n),
            None => return Poll::Ready(log_end(&mut self.log)),
            Some(Err(_)) => (0, 0),
        };
        if let Some(state) = self.log.as_mut() {
            state.session.body_bytes_sent += sent as u64;
            state.session.body_bytes_spliced += spliced as u64;
        }
        Poll::Ready(polled.map(|r| r.map_err(|e| log_failure(&mut self.log, e))))
    }

    fn poll_drain(&mut self, into: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match &mut self.source {
            ResponseSource::Upstream(b) => b.poll_drain(into, cx),
            _ => Poll::Ready(Err(io::ErrorKind::InvalidInput.into())),
        }
    }
}

impl<P: ProxyHttp> Body for ProxyBody<P> {
    type Data = Bytes;
    type Error = Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.project();
        match this.source.poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(state) = this.log.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        state.session.body_bytes_sent += data.len() as u64;
                    }
                }
                if this.source.is_end_stream() {
                    if let Some(mut state) = this.log.take() {
                        state.log(None);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(log_end(this.log)),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(log_failure(this.log, e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.source.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            ResponseSource::Upstream(b) => b.size_hint(),
            ResponseSource::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseSource::Full(None) => SizeHint::with_exact(0),
            ResponseSource::Compressed(_) => SizeHint::default(),
            ResponseSource::Cached(c) => match &c.inner {
                ResponseSource::Upstream(b) => b.size_hint(),
                _ => SizeHint::default(),
            },
        }
    }
}

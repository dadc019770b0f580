//! The direct HTTP/1.1 server path: requests without a body are read, and their responses
//! written, by the connection's task itself.
//!
//! hyper's HTTP/1.1 server runs every request through its dispatcher: a state machine over
//! reading, the service call and writing, with a body channel even for a request that has
//! no body. For the bulk of proxied traffic (a GET with a handful of headers) that was
//! about a third of the proxy's instructions per request. Here a connection starts on the
//! direct path: the head is parsed with `httparse` into a request whose header values share
//! the read buffer, the service is called, and the response is framed and written, its head
//! and first body bytes in one write.
//!
//! Only plain requests take it: HTTP/1.1, any method but CONNECT, no `Content-Length`, no
//! `Transfer-Encoding`, no `Expect`, `Upgrade` or `TE`, and a `Connection` field (if any)
//! that says only `keep-alive` or `close`. The first request that is anything else (a body,
//! an upgrade, HTTP/1.0, a malformed or oversized head) hands the connection, with every
//! byte read so far, to hyper for the rest of its life: hyper answers the errors (400, 431)
//! and serves everything the direct path leaves out. A connection is therefore served by
//! one engine at a time, and pipelined requests are answered in order by either.
//!
//! Responses are framed as hyper frames them: a `Content-Length` the service set is kept;
//! otherwise a body of known size gets one and any other body is chunked. Responses to
//! HEAD (which keep or get the length a GET would have), and 1xx, 204 and 304 responses,
//! carry no body. A `Date` field is added when missing.

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

use crate::downstream_body::DownstreamBody;
use crate::error::BoxError;
use crate::io_timeout::ActiveRequests;
use crate::server::ShutdownWatch;

/// Most header fields a request head may have on the direct path (hyper's default limit;
/// a head with more goes to hyper, which applies the configured limit).
const MAX_HEADERS: usize = 100;
/// Header slots a request's map is made with beyond its own fields.
const SPARE_FIELDS: usize = 4;
/// The free room a read of a request head asks for.
const READ_SIZE: usize = 8 * 1024;
/// Response bytes gathered before they are written: the head and small body frames share
/// one write.
const WRITE_GATHER: usize = 16 * 1024;

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
    /// A complete head of a request the direct path serves, and whether the client asked
    /// for the connection to close after it.
    Request(Request<DownstreamBody>, bool),
    /// The head is not complete yet.
    Partial,
    /// A request for hyper (or bytes hyper will refuse).
    NotDirect,
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes are written (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (a transfer coding other than chunked).
    Close,
}

/// Serves requests on `io` until the connection ends or a request needs hyper.
///
/// Reads while no request is in flight are bounded by `io`'s idle deadline (the header-read
/// and keep-alive timeouts). A graceful shutdown marks the connection draining: the next
/// response says `Connection: close` and ends it, and an idle connection is closed after
/// `linger`.
pub(crate) async fn serve<I, S, B>(
    mut io: I,
    service: &mut S,
    limits: HeadLimits,
    shutdown: &mut ShutdownWatch,
    active: &ActiveRequests,
    linger: Duration,
) -> End<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut fields: Vec<(HeaderName, usize, usize)> = Vec::new();
    let probe = shutdown.clone();
    let mut stop = pin!(shutdown.wait());
    let mut registered = false;
    let mut linger_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        // A complete request head, reading as needed.
        let (request, client_close) = loop {
            if !buf.is_empty() {
                match parse_request(&mut buf, limits, &mut fields) {
                    Parsed::Request(request, close) => break (request, close),
                    Parsed::Partial if buf.len() < limits.max_bytes => {}
                    Parsed::Partial | Parsed::NotDirect => {
                        return End::HandOff {
                            io,
                            buffered: buf.freeze(),
                        }
                    }
                }
            }
            if buf.capacity() - buf.len() < READ_SIZE {
                buf.reserve(READ_SIZE);
            }
            let read = poll_fn(|cx| {
                if let Poll::Ready(r) =
                    tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut buf)
                {
                    return Poll::Ready(Some(r));
                }
                if linger_timer.is_none() && (!registered || probe.has_changed()) {
                    registered = true;
                    if stop.as_mut().poll(cx).is_ready() {
                        active.set_draining();
                        linger_timer = Some(Box::pin(tokio::time::sleep(linger)));
                    }
                }
                if let Some(timer) = linger_timer.as_mut() {
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending
            })
            .await;
            match read {
                // Draining, and idle all along the linger.
                None if buf.is_empty() => return End::Closed(Ok(())),
                None => {
                    return End::HandOff {
                        io,
                        buffered: buf.freeze(),
                    }
                }
                Some(Ok(0)) if buf.is_empty() => return End::Closed(Ok(())),
                // The client closed mid-head: hyper says what it says to that.
                Some(Ok(0)) => {
                    return End::HandOff {
                        io,
                        buffered: buf.freeze(),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return End::Closed(Err(e.into())),
            }
        };
        let is_head = request.method() == Method::HEAD;

        if let Err(e) = poll_fn(|cx| service.poll_ready(cx).map_err(Into::<BoxError>::into)).await {
            return End::Closed(Err(e));
        }
        let mut call = pin!(service.call(request));
        // Wait for the response, reading on so that a client that leaves cancels the
        // request (as hyper does); bytes of a pipelined next request are kept.
        let mut eof = false;
        let response = poll_fn(|cx| {
            if let Poll::Ready(r) = call.as_mut().poll(cx) {
                return Poll::Ready(Some(r.map_err(Into::<BoxError>::into)));
            }
            if !eof && buf.len() < limits.max_bytes {
                if buf.capacity() == buf.len() {
                    buf.reserve(READ_SIZE);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        eof = true;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Ok(_)) => cx.waker().wake_by_ref(),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        let response = match response {
            Some(Ok(response)) => response,
            Some(Err(e)) => return End::Closed(Err(e)),
            // The client left before the response: the request is dropped, cancelled.
            None => return End::Closed(Ok(())),
        };

        let (parts, body) = response.into_parts();
        let (framing, response_close) =
            encode_head(&mut out, &parts, body.size_hint().exact(), is_head);
        if client_close && !response_close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        crate::header_pool::give_back(parts.headers);
        let keep_alive = !client_close && !response_close;
        let written = write_body(&mut io, &mut out, body, framing).await;
        out.clear();
        match written {
            Ok(()) if keep_alive => {}
            Ok(()) => {
                let _ = io.shutdown().await;
                return End::Closed(Ok(()));
            }
            Err(e) => return End::Closed(Err(e)),
        }
    }
}

/// Writes the body after the head gathered in `out`, framed as `framing` says.
///
/// (An `async move` block, not an `async fn`, which would hold the body twice.)
#[allow(clippy::manual_async_fn)] // (see above)
fn write_body<'a, I, B>(
    io: &'a mut I,
    out: &'a mut Vec<u8>,
    body: B,
    framing: Framing,
) -> impl Future<Output = Result<(), BoxError>> + 'a
where
    I: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + 'a,
    B::Error: Into<BoxError>,
{
    async move {
        if framing == Framing::None {
            // The body is not sent; dropping it ends it (a proxy's `logging` runs now).
            drop(body);
            io.write_all(out).await?;
            return Ok(());
        }
        let mut body = pin!(body);
        let mut remaining = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            // Gathered bytes go out before waiting for the body: the client sees what exists.
            let next = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
                Poll::Ready(frame) => {
                    Poll::Ready(Some(frame.map(|r| r.map_err(Into::<BoxError>::into))))
                }
                Poll::Pending if !out.is_empty() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            let frame = match next {
                None => {
                    io.write_all(out).await?;
                    out.clear();
                    continue;
                }
                Some(frame) => frame,
            };
            let data = match frame {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers: a chunked response ends without them, as hyper's does for a
                    // request that did not offer `TE: trailers` (the direct path has none).
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    // What arrived is delivered; the connection ends without the rest.
                    let _ = io.write_all(out).await;
                    return Err(e);
                }
            };
            if data.is_empty() {
                continue;
            }
            let mut data = data;
            if let Framing::Length(_) = framing {
                let len = data.len() as u64;
                if len > remaining {
                    let _ = io.write_all(out).await;
                    return Err("response body longer than its Content-Length".into());
                }
                remaining -= len;
            } else if framing == Framing::Chunked {
                // Writing into a vector cannot fail.
                let _ = write!(out, "{:x}\r\n", data.len());
            }
            if out.len() + data.len() <= WRITE_GATHER {
                out.extend_from_slice(&data);
            } else {
                write_pair(io, out, &data).await?;
                out.clear();
                data = Bytes::new();
            }
            drop(data);
            if framing == Framing::Chunked {
                out.extend_from_slice(b"\r\n");
            }
        }
        match framing {
            Framing::Length(_) if remaining != 0 => {
                let _ = io.write_all(out).await;
                return Err("response body shorter than its Content-Length".into());
            }
            Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            _ => {}
        }
        io.write_all(out).await?;
        Ok(())
    }
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
        _ => return Parsed::NotDirect,
    };
    if parsed.version != Some(1) {
        return Parsed::NotDirect;
    }
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        Some("CONNECT") | None => return Parsed::NotDirect,
        Some(other) => match Method::from_bytes(other.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Parsed::NotDirect,
        },
    };
    let Some(path) = parsed.path else {
        return Parsed::NotDirect;
    };
    let path_at = path.as_ptr() as usize - base;
    let path_range = path_at..path_at + path.len();
    let mut close = false;
    fields.clear();
    for h in parsed.headers.iter() {
        let Some(name) = crate::field_name::parse(h.name.as_bytes()) else {
            return Parsed::NotDirect;
        };
        if name == CONTENT_LENGTH
            || name == TRANSFER_ENCODING
            || name == EXPECT
            || name == UPGRADE
            || name == TE
        {
            return Parsed::NotDirect;
        }
        if name == CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::NotDirect;
                }
            }
        }
        let at = h.value.as_ptr() as usize - base;
        fields.push((name, at, at + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let built = build_request(&head, method, path_range, fields);
    match built {
        Some(request) => Parsed::Request(request, close),
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
/// body is framed and whether the response closes the connection.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    exact_len: Option<u64>,
    is_head: bool,
) -> (Framing, bool) {
    let status = parts.status;
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
            Some(reason) => out.extend_from_slice(reason.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
    // 1xx and 204 responses have no framing fields; 304 and HEAD keep the ones given.
    let bodiless_status = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut content_length: Option<Option<u64>> = None;
    let mut transfer_encoding: Option<bool> = None;
    let mut close = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut has_date = false;
    let chunked_last = |v: &HeaderValue| {
        v.as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    };
    // One pass for the framing fields (cheaper than hashed lookups over so few fields):
    // the last `Transfer-Encoding` counts; `Content-Length` values must agree.
    for (name, value) in &parts.headers {
        if *name == TRANSFER_ENCODING {
            transfer_encoding = Some(chunked_last(value));
        } else if *name == CONTENT_LENGTH {
            let parsed = crate::upstream::h1::parse_decimal(value.as_bytes().trim_ascii());
            content_length = match content_length {
                None => Some(parsed),
                Some(seen) if seen == parsed => Some(seen),
                Some(_) => Some(None),
            };
        }
    }
    // A transfer coding overrides the length (RFC 9112 §6.3), and an unreadable or
    // conflicting length is no length: then no `Content-Length` is sent.
    if bodiless_status || transfer_encoding.is_some() {
        content_length = None;
    }
    let send_length = matches!(content_length, Some(Some(_)));
    let mut length_sent = false;
    for (name, value) in &parts.headers {
        if *name == CONTENT_LENGTH {
            // Sent once, and only when it frames the body.
            if !send_length || length_sent {
                continue;
            }
            length_sent = true;
        } else if *name == TRANSFER_ENCODING {
            if bodiless_status {
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
    let framing = if bodiless_status || status == StatusCode::NOT_MODIFIED {
        Framing::None
    } else if is_head {
        // The length a GET would have, when the body knows it and no field says it.
        if let (None, None, Some(n @ 1..)) = (transfer_encoding, content_length, exact_len) {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::None
    } else if let Some(chunked) = transfer_encoding {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if let Some(length) = content_length {
        match length {
            Some(n) => Framing::Length(n),
            // An unreadable or conflicting length: delimit by closing instead.
            None => Framing::Close,
        }
    } else if let Some(n) = exact_len {
        let _ = write!(out, "content-length: {n}\r\n");
        Framing::Length(n)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if framing == Framing::Close && !close {
        out.extend_from_slice(b"connection: close\r\n");
        close = true;
    }
    (framing, close)
}

thread_local! {
    /// The `Date` value of the current second, rendered once per second per thread.
    static DATE_CACHE: std::cell::RefCell<(u64, [u8; 29])> = const {
        std::cell::RefCell::new((0, [0; 29]))
    };
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
        let Parsed::Request(request, close) = parsed else {
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
        assert!(matches!(parsed, Parsed::Request(_, true)));
        let (parsed, _) = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request(_, false)));
        let (parsed, _) = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n");
        assert!(matches!(parsed, Parsed::NotDirect));
    }

    #[test]
    fn requests_the_direct_path_leaves_to_hyper_stay_in_the_buffer() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"[..],
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
    fn responses_are_framed_as_hyper_frames_them() {
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
        let (head, framing, close) = head_of(conflicting, None, false);
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!((framing, close), (Framing::Close, true));

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
}

//! HTTP/3 clients: a QUIC endpoint's connections, each request served by the same tower
//! service as HTTP/1 and HTTP/2 requests (a declared proxy needs no change).
//!
//! Per connection: the handshake (bounded by the header-read timeout), then h3's request
//! streams, each in its own task. A request's body is read from its stream as the service
//! asks ([`H3Body`]); the response is written frame by frame, and a body that fails midway
//! resets the stream rather than ending it as if whole.
//!
//! Limits: the header section as HTTP/1's `max_header_bytes` (h3 answers 431 itself) and
//! field count as `max_headers` (431 here); streams, windows and idle time from
//! [`QuicOptions`](crate::listen::quic::QuicOptions); connections past `max_connections`
//! refused; past `validate_over` a client proves its address (Retry) before the proxy keeps
//! state for it. Shutdown sends each connection a GOAWAY, lets its requests finish, then
//! closes it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::Code;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::{ConnInfo, ConnShared, MakeConnService};
use crate::listen::quic::QuicOptions;
use crate::shutdown::ShutdownWatch;
use crate::{BoxError, DownstreamBody};

type RecvStream = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;
type SendStream = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Accepts QUIC connections on `endpoint` until shutdown, serving each on its own task;
/// then refuses new ones and waits for those open to end.
pub(super) async fn serve_endpoint<M, S, B>(
    endpoint: quinn::Endpoint,
    shared: Arc<ConnShared<M>>,
    options: QuicOptions,
    mut shutdown: ShutdownWatch,
) where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let local_addr = endpoint.local_addr().ok();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.wait() => break,
        };
        let Some(incoming) = incoming else { break };
        // (This listener's QUIC connections: TCP ones do not count against its limits.)
        let open = endpoint.open_connections();
        let quic = &shared.tracker.stats.quic;
        if open >= options.max_connections {
            quic.refused.inc();
            incoming.refuse();
            continue;
        }
        if open >= options.validate_over && !incoming.remote_address_validated() {
            // A client proves it receives at its address before any state is kept.
            quic.retries.inc();
            let _ = incoming.retry();
            continue;
        }
        let Some(local_addr) = local_addr else {
            incoming.refuse();
            continue;
        };
        let guard = shared.tracker.enter();
        tokio::spawn(serve_connection(
            incoming,
            shared.clone(),
            local_addr,
            shutdown.clone(),
            guard,
        ));
    }
    // Open connections drain on their own tasks. New ones are ignored from now on, not
    // refused: in an upgrade the new process reads the same socket, and a client whose
    // first packet came here sends it again, to be answered there.
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            incoming.ignore();
        }
    });
}

/// One QUIC connection: its handshake, then its requests until it ends or drains.
async fn serve_connection<M, S, B>(
    incoming: quinn::Incoming,
    shared: Arc<ConnShared<M>>,
    local_addr: std::net::SocketAddr,
    mut shutdown: ShutdownWatch,
    _guard: super::ConnGuard,
) where
    M: MakeConnService<Service = S>,
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let client = incoming.remote_address();
    let handshake = tokio::time::timeout(shared.options.header_read_timeout, async {
        let connection = incoming.accept()?.await?;
        let h3 = h3::server::builder()
            .max_field_section_size(shared.options.max_header_bytes as u64)
            .build::<_, Bytes>(h3_quinn::Connection::new(connection.clone()))
            .await?;
        Ok::<_, BoxError>((connection, h3))
    });
    let stats = &shared.tracker.stats.quic;
    let (quic, mut h3) = match handshake.await {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => {
            stats.handshake_failures.inc();
            tracing::debug!(%client, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            stats.handshake_failures.inc();
            tracing::debug!(%client, "QUIC handshake timed out");
            return;
        }
    };
    stats.connections.inc();
    let conn = ConnInfo::new(client, local_addr).with_tls(true);
    let service = shared.make.make_service(&conn);
    let mut requests = tokio::task::JoinSet::new();
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    stats.requests.inc();
                    let service = service.clone();
                    let limits = (shared.options.header_read_timeout, shared.options.max_headers);
                    requests.spawn(serve_request(resolver, service, limits));
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(%client, error = %e, "HTTP/3 connection ended");
                    }
                    break;
                }
            },
            // Requests that ended; when draining and none is left, the connection closes.
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                if draining && requests.is_empty() {
                    break;
                }
            }
            _ = shutdown.wait(), if !draining => {
                draining = true;
                // GOAWAY: the requests accepted so far (and one more in flight) are
                // served; the client sends any other to a new connection.
                if h3.shutdown(1).await.is_err() || requests.is_empty() {
                    break;
                }
            }
        }
    }
    while requests.join_next().await.is_some() {}
    if draining {
        // The client closes once it has read the last answers (closing first could cut
        // their end, still in flight); one that does not is closed after a while.
        let _ = tokio::time::timeout(DRAIN_LINGER, quic.closed()).await;
    }
    drop(h3);
}

/// How long a drained connection waits for its client to close before it closes.
const DRAIN_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// One request: its head (within the header-read timeout), the service's answer, the
/// answer's body frame by frame.
async fn serve_request<S, B>(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    mut service: S,
    (head_timeout, max_headers): (std::time::Duration, usize),
) where
    S: tower::Service<Request<DownstreamBody>, Response = Response<B>> + Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let (request, stream) =
        match tokio::time::timeout(head_timeout, resolver.resolve_request()).await {
            Ok(Ok(resolved)) => resolved,
            // (A header section over the limit was answered 431 by h3.)
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/3 request refused");
                return;
            }
            Err(_) => return,
        };
    let (mut send, recv) = stream.split();
    if request.headers().len() > max_headers {
        let _ = answer(&mut send, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
        return;
    }
    let request = request.map(|()| DownstreamBody::from_h3(H3Body::new(recv)));
    let ready = std::future::poll_fn(|cx| service.poll_ready(cx).map_err(Into::into)).await;
    let response: Result<Response<B>, BoxError> = match ready {
        Ok(()) => service.call(request).await.map_err(Into::into),
        Err(e) => Err(e),
    };
    match response {
        Ok(response) => send_response(&mut send, response).await,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 request failed in the service");
            let _ = answer(&mut send, StatusCode::INTERNAL_SERVER_ERROR).await;
        }
    }
}

/// Writes `response` on `send`: the head without the fields HTTP/3 forbids, then the body;
/// a body error resets the stream.
async fn send_response<B>(send: &mut SendStream, response: Response<B>)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut head, body) = response.into_parts();
    for name in CONNECTION_SPECIFIC {
        head.headers.remove(name);
    }
    if send
        .send_response(Response::from_parts(head, ()))
        .await
        .is_err()
    {
        return;
    }
    let mut body = std::pin::pin!(body);
    loop {
        // (The body's error is made a `BoxError` here: its own type need not be `Send`.)
        let polled: Option<Result<Frame<Bytes>, BoxError>> =
            std::future::poll_fn(|cx| body.as_mut().poll_frame(cx).map_err(Into::into)).await;
        let frame = match polled {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/3 response body failed; resetting the stream");
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        let sent = match frame.into_data() {
            Ok(data) => send.send_data(data).await,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => send.send_trailers(trailers).await,
                Err(_) => Ok(()),
            },
        };
        if sent.is_err() {
            // The client left (or reset the stream): nothing more to send.
            return;
        }
    }
    let _ = send.finish().await;
}

/// Header fields of HTTP/1 connections that an HTTP/3 message must not carry (RFC 9114
/// §4.2).
const CONNECTION_SPECIFIC: [http::header::HeaderName; 5] = [
    http::header::CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::HeaderName::from_static("keep-alive"),
    http::header::HeaderName::from_static("proxy-connection"),
];

/// A short plain-text answer with `status`.
async fn answer(send: &mut SendStream, status: StatusCode) -> Result<(), h3::error::StreamError> {
    let text = format!("{status}\n");
    let mut response = Response::new(());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    send.send_response(response).await?;
    send.send_data(Bytes::from(text)).await?;
    send.finish().await
}

/// A request body read from its HTTP/3 stream as it is polled: data frames, then the
/// trailers if any. Dropped before its end, it tells the client to stop sending.
pub struct H3Body {
    stream: RecvStream,
    data_done: bool,
    done: bool,
}

impl H3Body {
    fn new(stream: RecvStream) -> Self {
        H3Body {
            stream,
            data_done: false,
            done: false,
        }
    }
}

impl std::fmt::Debug for H3Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Body").field("done", &self.done).finish()
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match std::task::ready!(this.stream.poll_recv_data(cx)) {
                Ok(Some(mut data)) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Ok(None) => this.data_done = true,
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
        let trailers = std::task::ready!(this.stream.poll_recv_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for H3Body {
    fn drop(&mut self) {
        if !self.done {
            self.stream.stop_sending(Code::H3_NO_ERROR);
        }
    }
}

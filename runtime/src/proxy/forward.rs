//! Forwarding a request that passed the request filters, in three steps: the upstream
//! request built from it (hop-by-hop headers out, forwarding headers in, the filters'
//! edits, a copy kept for a resend when the proxy asks), the exchange with the peer (a
//! failed connect, or a broken connection of a replayable request, tried again on the next
//! peer within the request's [`Attempts`](crate::lb::Attempts)), and the response head
//! shaped for the client (a protocol switch tunnelled, the response filters).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, EXPECT, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use super::body::{Recording, RequestBody, ResponseSource};
use super::{headers, session, tunnel, ProxyHttp, Session, Shared};
use crate::error::{Error, Result};
use crate::upstream::{HttpPeer, SendError, UpstreamBody};

/// The upstream request of a client request, and the client's side of a protocol switch.
pub(super) struct Outgoing {
    /// The request to send, and what a resend needs.
    pub attempt: Attempt,
    /// hyper's handle on the client connection, if the request may switch protocols.
    pub downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// A request ready to send.
pub(super) struct Attempt {
    request: Request<RequestBody>,
    /// The `Host` header is the peer's (the client sent none): a resend names the new one.
    host_from_peer: bool,
    replay: Option<Replay>,
}

/// What resending a request after a broken connection needs: its head, and the body
/// chunks recorded as they went (none for a request without a body).
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    recording: Option<Arc<Mutex<Recording>>>,
}

impl Replay {
    /// The request again, if its body was recorded whole.
    fn again(&self) -> Option<Request<RequestBody>> {
        let chunks: VecDeque<Bytes> = match &self.recording {
            None => VecDeque::new(),
            Some(r) => r.lock().ok().and_then(|r| r.replayable())?,
        };
        let mut again = Request::new(RequestBody::replaying(chunks));
        *again.method_mut() = self.method.clone();
        *again.uri_mut() = self.uri.clone();
        *again.headers_mut() = self.headers.clone();
        Some(again)
    }
}

/// Builds the upstream request from the session's head and body for `peer`, running
/// `upstream_request_filter`. Built here, not in the caller, so that its parts are not kept
/// beside it in the per-request future.
pub(super) async fn upstream_request<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    peer: &HttpPeer,
    upgrade: &Option<http::HeaderValue>,
) -> Result<Outgoing> {
    let mut up = session.take_upstream_head();
    let downstream_upgrade = up.extensions.remove::<hyper::upgrade::OnUpgrade>();
    headers::strip_request_hop_by_hop(&mut up.headers)?;
    if let Some(protocol) = upgrade {
        tunnel::restore_upgrade(&mut up.headers, protocol.clone());
    }
    // 100-continue is answered by our own HTTP layer when the body is first read.
    up.headers.remove(EXPECT);
    if shared.options.forwarded_for {
        headers::append_forwarded_for(&mut up.headers, &session.conn().client_ip);
    }
    if let Some(via) = &shared.options.via {
        headers::append_via(&mut up.headers, via);
    }
    if session.request_id_generated {
        up.headers
            .insert(session::REQUEST_ID, session.request_id_value().clone());
    }
    shared
        .proxy
        .upstream_request_filter(session, &mut up, ctx)
        .await?;
    // An HTTP/1.0 client may omit Host; HTTP/1.1 upstreams require one: the peer's.
    let host_from_peer = !up.headers.contains_key(HOST);
    if host_from_peer {
        up.headers.insert(HOST, peer.host_header());
    }
    let body = request_body(shared, session, &mut up.headers);
    session.forwarded = true;
    // A copy for a resend after a broken connection, only when the proxy asks (it costs a
    // header-map clone; body chunks are kept by reference count, not copied).
    let mut body = body;
    let replay = shared
        .proxy
        .replay_buffer(session, ctx)
        .map(|limit| Replay {
            method: up.method.clone(),
            uri: up.uri.clone(),
            headers: up.headers.clone(),
            // A request without a body (most GETs) needs no recording.
            recording: (!http_body::Body::is_end_stream(&body)).then(|| body.record(limit)),
        });
    Ok(Outgoing {
        attempt: Attempt {
            request: Request::from_parts(up, body),
            host_from_peer,
            replay,
        },
        downstream_upgrade,
    })
}

/// The session's body as the upstream request's, with its timeouts and byte counting.
fn request_body<P>(
    shared: &Shared<P>,
    session: &mut Session,
    headers: &mut HeaderMap,
) -> RequestBody {
    let body = session.take_body();
    if body.is_none() {
        // A filter consumed the body: forward none, and say so.
        headers.remove(CONTENT_LENGTH);
    }
    let mut body = RequestBody::new(
        body,
        shared.options.body_read_timeout,
        shared.options.body_total_timeout,
    );
    if !http_body::Body::is_end_stream(&body) {
        let stats = session
            .route_stats
            .as_ref()
            .unwrap_or(&shared.stats.unrouted);
        body.count_into(stats.clone());
    }
    body
}

/// Sends `attempt` to `peer`; after a failed connect (nothing sent) or a broken
/// connection (for a replayable request) that the proxy marks for a retry, and while the
/// request's attempts allow, sends it again to the next peer `upstream_peer` picks (which
/// `peer` then names).
pub(super) async fn exchange<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    peer: &mut HttpPeer,
    attempt: Attempt,
) -> Result<Response<UpstreamBody<RequestBody>>> {
    let proxy = &*shared.proxy;
    let Attempt {
        mut request,
        host_from_peer,
        replay,
    } = attempt;
    loop {
        session.peer_stats = peer.stats().cloned();
        let sent = session.peer_stats.as_ref().map(|_| Instant::now());
        let error = match shared.client.try_send(peer, request).await {
            Ok(response) => {
                if let (Some(stats), Some(sent)) = (&session.peer_stats, sent) {
                    stats.first_byte_time.observe(sent.elapsed());
                }
                return Ok(response);
            }
            Err(SendError {
                error,
                request: Some(unsent),
            }) => {
                count_failed_attempt(session, &error);
                let error = proxy.fail_to_connect(session, peer, ctx, error);
                request = unsent;
                error
            }
            Err(SendError { error, .. }) => {
                count_failed_attempt(session, &error);
                let Some(replay) = &replay else {
                    return Err(error);
                };
                let error = proxy.error_while_proxy(session, peer, ctx, error);
                match replay.again().filter(|_| error.retry()) {
                    Some(again) => request = again,
                    None => return Err(error),
                }
                error
            }
        };
        if !error.retry() || !session.attempts.may_retry() {
            return Err(error);
        }
        tracing::debug!(peer = %peer.addr(), error = %error, "upstream attempt failed; trying another peer");
        session.attempts.count_retry();
        *peer = proxy.upstream_peer(session, ctx).await?;
        session.upstream = Some(peer.addr());
        if host_from_peer {
            request.headers_mut().insert(HOST, peer.host_header());
        }
    }
}

/// Counts a failed attempt on the peer it went to.
fn count_failed_attempt(session: &mut Session, error: &Error) {
    if let Some(peer) = session.peer_stats.take() {
        peer.requests.inc();
        if error.kind().is_upstream_failure() {
            peer.errors.inc();
        }
    }
}

/// The response head for the client: hop-by-hop headers out, an agreed protocol switch
/// tunnelled, `Via`, then the response filters.
pub(super) async fn response_head<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    response: Response<UpstreamBody<RequestBody>>,
    peer: &HttpPeer,
    upgrade: Option<http::HeaderValue>,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<ResponseSource>> {
    let (mut head, body) = response.into_parts();
    let switched_to = (head.status == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| head.headers.get(http::header::UPGRADE).cloned());
    headers::strip_response_hop_by_hop(&mut head.headers)?;
    if let Some(switched_to) = switched_to {
        // Tunnel only what was asked for, once the upstream agreed.
        let upstream_upgrade = head.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let (down, up, protocol) =
            tunnel::agreed_switch(upgrade, downstream_upgrade, upstream_upgrade, switched_to)?;
        tunnel::restore_upgrade(&mut head.headers, protocol);
        tunnel::spawn(
            down,
            up,
            shared.options.tunnel_idle_timeout,
            session.conn().info.enter_tunnel(),
            peer.addr(),
        );
    }
    if let Some(via) = &shared.options.via {
        headers::append_via(&mut head.headers, via);
    }
    session.status = Some(head.status);
    shared
        .proxy
        .upstream_response_filter(session, &mut head, ctx)?;
    shared
        .proxy
        .response_filter(session, &mut head, ctx)
        .await?;
    Ok(Response::from_parts(head, ResponseSource::Upstream(body)))
}

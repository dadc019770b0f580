//! Forwarding a request that passed the request filters: the upstream request built from it (hop-by-hop headers out, forwarding headers in, the filters'
//! edits, a copy kept for a resend when the proxy asks), the exchange with the peer (a
//! failed connect, or a broken connection of a replayable request, tried again on the next
//! peer within the request's [`Attempts`](crate::lb::Attempts)), and the response head
//! shaped for the client (a protocol switch tunnelled, the response filters).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, EXPECT, HOST};
use http::{HeaderMap, Method, Request, StatusCode, Uri};

use super::body::{Recording, RequestBody};
use super::{headers, session, tunnel, ProxyHttp, Session, Shared};
use crate::error::{Error, Result};
use crate::upstream::{HttpPeer, SendError};

/// What a resend of the request needs besides the request itself.
pub(super) struct Attempt {
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

/// Makes the session's head (`up`, moved out of it, not copied) the upstream request's
/// head: hop-by-hop headers out, the allowed `upgrade` restored, forwarding headers and the
/// request id in. Returns hyper's handle on the client connection, if the request may
/// switch protocols. `upstream_request_filter` runs on it next, then [`attempt`] completes
/// it. (The head is edited in place: moving it through a return value costs copies on
/// every request.)
pub(super) fn prepare_head<P>(
    shared: &Shared<P>,
    session: &Session,
    up: &mut http::request::Parts,
    upgrade: &Option<http::HeaderValue>,
) -> Result<Option<hyper::upgrade::OnUpgrade>> {
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
    Ok(downstream_upgrade)
}

/// Completes the filtered head `up` for `peer` (its `Host` if the client sent none) and
/// takes the session's body as the upstream request's, noting what a resend needs (a copy
/// when the proxy asks for one).
pub(super) fn attempt<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &P::Ctx,
    up: &mut http::request::Parts,
    peer: &HttpPeer,
) -> (RequestBody, Attempt) {
    // An HTTP/1.0 client may omit Host; HTTP/1.1 upstreams require one: the peer's.
    let host_from_peer = !up.headers.contains_key(HOST);
    if host_from_peer {
        up.headers.insert(HOST, peer.host_header());
    }
    let mut body = request_body(shared, session, &mut up.headers);
    session.forwarded = true;
    // A copy for a resend after a broken connection, only when the proxy asks (it costs a
    // header-map clone; body chunks are kept by reference count, not copied).
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
    let attempt = Attempt {
        host_from_peer,
        replay,
    };
    (body, attempt)
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
    if let Some(max) = session.body_limit {
        body.cap(max);
    }
    if !http_body::Body::is_end_stream(&body) {
        let stats = session
            .route_stats
            .as_ref()
            .unwrap_or(&shared.stats.unrouted);
        body.count_into(stats.clone());
    }
    body
}

/// What to do after a failed send of `attempt`: `Ok` with the request to send next
/// (to the peer `upstream_peer` picks then), or the error to answer with. A failed connect
/// (nothing sent, `unsent` given back) or a broken connection of a replayable request
/// is retried when the proxy marks it so and the request's attempts allow.
pub(super) fn after_failure<P: ProxyHttp>(
    shared: &Shared<P>,
    session: &mut Session,
    ctx: &mut P::Ctx,
    peer: &HttpPeer,
    attempt: &Attempt,
    failed: SendError<RequestBody>,
) -> std::result::Result<Request<RequestBody>, Error> {
    let proxy = &*shared.proxy;
    count_failed_attempt(session, &failed.error);
    let (error, next) = match failed.request {
        Some(unsent) => (
            proxy.fail_to_connect(session, peer, ctx, failed.error),
            Some(unsent),
        ),
        None => {
            let Some(replay) = &attempt.replay else {
                return Err(failed.error);
            };
            let error = proxy.error_while_proxy(session, peer, ctx, failed.error);
            let again = replay.again().filter(|_| error.retry());
            (error, again)
        }
    };
    match next {
        Some(request) if error.retry() && session.attempts.may_retry() => {
            tracing::debug!(peer = %peer.addr(), error = %error, "upstream attempt failed; trying another peer");
            session.attempts.count_retry();
            Ok(request)
        }
        _ => Err(error),
    }
}

/// Gives the request for the next attempt the new `peer`'s `Host` where the client sent
/// none.
pub(super) fn retarget(attempt: &Attempt, request: &mut Request<RequestBody>, peer: &HttpPeer) {
    if attempt.host_from_peer {
        request.headers_mut().insert(HOST, peer.host_header());
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

/// Shapes the response `head` for the client, before the response filters: hop-by-hop
/// headers out, an agreed protocol switch tunnelled, `Via`. (Edited in place, like the
/// request's head.)
pub(super) fn shape_response_head<P>(
    shared: &Shared<P>,
    session: &mut Session,
    head: &mut http::response::Parts,
    peer: &HttpPeer,
    upgrade: Option<http::HeaderValue>,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<()> {
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
    Ok(())
}

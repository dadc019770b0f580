//! [`Session`]: one downstream request as the phases see it, and what became of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::downstream::body::DownstreamBody;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use tokio::time::Instant;

use crate::downstream::ConnInfo;
use crate::lb::{Attempts, PoolId};
use crate::metrics::{PeerStats, RouteStats};

/// The request head sent upstream; `upstream_request_filter` edits it.
pub type RequestHeader = http::request::Parts;
/// A response head; `upstream_response_filter` and `response_filter` edit it.
pub type ResponseHeader = http::response::Parts;

/// What the proxy knows about a downstream connection, computed once per connection.
pub(crate) struct ConnCtx {
    pub(crate) info: ConnInfo,
    /// The client's IP as a header value, for `X-Forwarded-For`.
    pub(crate) client_ip: HeaderValue,
}

/// One downstream request on its way through the proxy.
///
/// Before `upstream_peer` the session owns the whole request head ([`Session::req_header`]).
/// When the request is forwarded, its headers *move* into the upstream request (no copy on
/// the hot path); the method, URI, version, `Host` and client address stay readable here for
/// the later phases and `logging`. Keep anything else a later phase needs in the context.
pub struct Session {
    head: http::request::Parts,
    body: Option<DownstreamBody>,
    host: Option<HeaderValue>,
    conn: Arc<ConnCtx>,
    started: Instant,
    pub(crate) status: Option<StatusCode>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) body_bytes_sent: u64,
    /// Of those, the bytes spliced from the upstream's socket.
    pub(crate) body_bytes_spliced: u64,
    pub(crate) forwarded: bool,
    /// The most request body bytes forwarded; more fails the request with 413.
    pub(crate) body_limit: Option<u64>,
    /// The declared pool code chose for the request, over its route's.
    pub(crate) chosen_pool: Option<PoolId>,
    /// Its retry state: retries so far, peers tried, the key hashed first.
    pub(crate) attempts: Attempts,
    request_id: HeaderValue,
    /// The request came without a usable `x-request-id`: ours is added upstream.
    pub(crate) request_id_generated: bool,
    /// The route's counters (set by the router), else the proxy's own.
    pub(crate) route_stats: Option<Arc<RouteStats>>,
    /// The label of the route the router matched, for error reports.
    pub(crate) route_label: Option<&'static str>,
    /// The pool the router chose a peer from, for error reports.
    pub(crate) pool: Option<&'static str>,
    /// The counters of the peer the request went to last.
    pub(crate) peer_stats: Option<Arc<PeerStats>>,
    /// `Referer` and `User-Agent`, kept past forwarding when an access log needs them.
    pub(crate) logged: Option<Box<LoggedHeaders>>,
    /// What only requests under some policies have (boxed: the others' sessions, moved
    /// with their futures, stay as small as before).
    extras: Option<Box<Extras>>,
}

/// A request's state that only some policies give it.
#[derive(Default)]
struct Extras {
    /// The client a trusted proxy in front named, in place of the connection's peer.
    real_client: Option<std::net::IpAddr>,
    /// Who the request authenticated as.
    identity: Option<crate::proxy::auth::Identity>,
    /// The encoder of the response body, when the router's compression chose one.
    compress: Option<crate::proxy::route::Encoder>,
    /// Stores the response body as it streams, when the cache may keep it.
    cache_fill: Option<crate::proxy::cache::CacheFill>,
    /// A body from the cache sent in place of the origin's (a revalidated or stale answer).
    replacement: Option<bytes::Bytes>,
    /// The stale answer to give if the upstream fails (`stale-if-error`).
    stale_fallback: Option<crate::proxy::cache::StaleFallback>,
}

/// The request fields an access log line shows that forwarding moves away.
#[derive(Debug, Default)]
pub(crate) struct LoggedHeaders {
    pub(crate) referer: Option<HeaderValue>,
    pub(crate) user_agent: Option<HeaderValue>,
}

/// The header a request id travels in.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// The client's `x-request-id` if it is one visible-ASCII token of sane length, else a
/// fresh random 128-bit id in hex.
fn request_id_of(headers: &HeaderMap) -> (HeaderValue, bool) {
    if let Some(v) = headers.get(REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x21..0x7f).contains(c))
        {
            return (v.clone(), false);
        }
    }
    (generate_request_id(), true)
}

/// Request ids made at once: one allocation serves this many requests.
const IDS_PER_BATCH: usize = 64;
/// The length of a generated id: 128 bits in hex.
const ID_LEN: usize = 32;

thread_local! {
    /// Ids generated ahead on this thread, taken from the front. Each id is a slice of the
    /// shared batch, so making it and cloning it into the upstream request allocate nothing.
    static ID_BATCH: std::cell::RefCell<bytes::Bytes> =
        const { std::cell::RefCell::new(bytes::Bytes::new()) };
}

fn generate_request_id() -> HeaderValue {
    ID_BATCH.with(|batch| {
        let mut batch = batch.borrow_mut();
        if batch.len() < ID_LEN {
            let mut fresh = bytes::BytesMut::with_capacity(ID_LEN * IDS_PER_BATCH);
            for _ in 0..IDS_PER_BATCH {
                for byte in fastrand::u128(..).to_le_bytes() {
                    fresh.extend_from_slice(&HEX_PAIRS[usize::from(byte)]);
                }
            }
            *batch = fresh.freeze();
        }
        let id = batch.split_to(ID_LEN);
        HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
    })
}

/// Every byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    table
};

impl Session {
    pub(crate) fn new(request: Request<DownstreamBody>, conn: Arc<ConnCtx>) -> Self {
        let (head, body) = request.into_parts();
        let host = head.headers.get(header::HOST).cloned();
        let (request_id, request_id_generated) = request_id_of(&head.headers);
        Session {
            head,
            body: Some(body),
            host,
            conn,
            started: Instant::now(),
            status: None,
            upstream: None,
            body_bytes_sent: 0,
            body_bytes_spliced: 0,
            forwarded: false,
            body_limit: None,
            chosen_pool: None,
            attempts: Attempts::default(),
            request_id,
            request_id_generated,
            route_stats: None,
            route_label: None,
            pool: None,
            peer_stats: None,
            logged: None,
            extras: None,
        }
    }

    /// The request id: the client's `x-request-id` if it sent a usable one, else one made
    /// here. It is forwarded upstream in `x-request-id` and written to the access log.
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    pub(crate) fn request_id_value(&self) -> &HeaderValue {
        &self.request_id
    }

    /// Counts this request in `stats` (a route's) instead of the proxy's own counters.
    /// The router does it for the route it matched.
    pub fn set_route_stats(&mut self, stats: &Arc<RouteStats>) {
        self.route_stats = Some(stats.clone());
    }

    /// Keeps `Referer` and `User-Agent` for the access log.
    pub(crate) fn keep_logged_headers(&mut self) {
        self.logged = Some(Box::new(LoggedHeaders {
            referer: self.head.headers.get(header::REFERER).cloned(),
            user_agent: self.head.headers.get(header::USER_AGENT).cloned(),
        }));
    }

    /// The downstream request head. Its headers are empty once the request was forwarded.
    pub fn req_header(&self) -> &http::request::Parts {
        &self.head
    }

    /// Mutable access to the downstream request head (for the request phases).
    pub fn req_header_mut(&mut self) -> &mut http::request::Parts {
        &mut self.head
    }

    /// The request's headers (empty once forwarded).
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    /// The request target as received.
    pub fn uri(&self) -> &Uri {
        &self.head.uri
    }

    /// The request path (without the query).
    pub fn path(&self) -> &str {
        self.head.uri.path()
    }

    /// The HTTP version of the downstream request.
    pub fn version(&self) -> Version {
        self.head.version
    }

    /// The `Host` the client asked for: the authority of an absolute-form target, else the
    /// `Host` field. Stays available after forwarding.
    pub fn host(&self) -> Option<&str> {
        if let Some(a) = self.head.uri.authority() {
            return Some(a.as_str());
        }
        self.host.as_ref().and_then(|h| h.to_str().ok())
    }

    /// The scheme the client used: `https` on a TLS listener, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.conn.info.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The client's address: the connection's peer, or the client a trusted proxy in front
    /// of it named (then with port 0: the hop recorded no port the proxy could use).
    pub fn client_addr(&self) -> SocketAddr {
        match self.extras.as_ref().and_then(|e| e.real_client) {
            Some(ip) => SocketAddr::new(ip, 0),
            None => self.conn.info.client_addr,
        }
    }

    /// Who the request authenticated as, once the declared authentication accepted it (or
    /// code set it with [`set_identity`](Session::set_identity)).
    pub fn identity(&self) -> Option<&crate::proxy::auth::Identity> {
        self.extras.as_ref()?.identity.as_ref()
    }

    /// Records who the request authenticated as: later phases, header edits (`${user}`,
    /// `${claim.NAME}`) and the access log see it.
    pub fn set_identity(&mut self, identity: crate::proxy::auth::Identity) {
        self.extras_mut().identity = Some(identity);
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Compresses the response body with `encoder`.
    pub(crate) fn set_encoder(&mut self, encoder: crate::proxy::route::Encoder) {
        self.extras_mut().compress = Some(encoder);
    }

    /// Whether the response body will be compressed.
    pub(crate) fn compresses(&self) -> bool {
        self.extras.as_ref().is_some_and(|e| e.compress.is_some())
    }

    /// The response body's encoder, if the router chose one (taken once).
    pub(crate) fn take_encoder(&mut self) -> Option<crate::proxy::route::Encoder> {
        self.extras.as_mut()?.compress.take()
    }

    /// Stores the response body in the cache as it streams.
    pub(crate) fn set_cache_fill(&mut self, fill: crate::proxy::cache::CacheFill) {
        self.extras_mut().cache_fill = Some(fill);
    }

    /// Whether the response body is being stored in the cache.
    pub(crate) fn caches(&self) -> bool {
        self.extras.as_ref().is_some_and(|e| e.cache_fill.is_some())
    }

    /// The cache fill of the response body, if any (taken once).
    pub(crate) fn take_cache_fill(&mut self) -> Option<crate::proxy::cache::CacheFill> {
        self.extras.as_mut()?.cache_fill.take()
    }

    /// Sends `body` (from the cache) instead of the upstream's response body.
    pub(crate) fn replace_body(&mut self, body: bytes::Bytes) {
        self.extras_mut().replacement = Some(body);
    }

    /// The body that replaces the upstream's, if any (taken once).
    pub(crate) fn take_replacement_body(&mut self) -> Option<bytes::Bytes> {
        self.extras.as_mut()?.replacement.take()
    }

    /// Keeps a stale answer for the case the upstream fails.
    pub(crate) fn set_stale_fallback(&mut self, fallback: crate::proxy::cache::StaleFallback) {
        self.extras_mut().stale_fallback = Some(fallback);
    }

    /// The stale answer kept for an upstream failure, if any (taken once).
    pub(crate) fn take_stale_fallback(&mut self) -> Option<crate::proxy::cache::StaleFallback> {
        self.extras.as_mut()?.stale_fallback.take()
    }

    /// The connection's peer, which is the client unless a trusted proxy stands between.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.info.client_addr
    }

    /// Takes the client's address from `Forwarded`/`X-Forwarded-For` when the peer is one
    /// of `trusted`.
    pub(crate) fn find_real_client(&mut self, trusted: &crate::proxy::TrustedProxies) {
        if let Some(client) = trusted.client_of(self.conn.info.client_addr, &self.head.headers) {
            self.extras_mut().real_client = Some(client);
        }
    }

    /// The label of the route the router matched (`/api`, `GET api.example.com/v1`), if
    /// one did.
    pub fn route_label(&self) -> Option<&'static str> {
        self.route_label
    }

    /// The declared pool the router chose the peer from, if it did.
    pub fn pool(&self) -> Option<&'static str> {
        self.pool
    }

    /// The key-exchange group the client's TLS handshake agreed on (`X25519MLKEM768`,
    /// `X25519`, `P-256`, ...), for a request over TLS.
    pub fn tls_group(&self) -> Option<&'static str> {
        self.conn.info.tls_group
    }

    /// The request head and client address (what a hashing strategy reads) beside the
    /// retry state (which picking a peer updates), borrowed at once.
    pub(crate) fn head_and_attempts(
        &mut self,
    ) -> (&http::request::Parts, SocketAddr, &mut Attempts) {
        let client = self.client_addr();
        (&self.head, client, &mut self.attempts)
    }

    /// The local address the request arrived on.
    pub fn local_addr(&self) -> SocketAddr {
        self.conn.info.local_addr
    }

    /// The status sent to the client, once a response head exists.
    pub fn response_status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The peer the request was forwarded to, if it got that far.
    pub fn upstream_addr(&self) -> Option<SocketAddr> {
        self.upstream
    }

    /// Response body bytes handed to the client so far.
    pub fn body_bytes_sent(&self) -> u64 {
        self.body_bytes_sent
    }

    /// Time since the request head arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the request was sent upstream.
    pub fn was_forwarded(&self) -> bool {
        self.forwarded
    }

    /// How many times the request went to another peer after a failed connect.
    pub fn retries(&self) -> u32 {
        self.attempts.retries()
    }

    pub(crate) fn conn(&self) -> &ConnCtx {
        &self.conn
    }

    /// Takes the downstream request body, e.g. to inspect it in `request_filter` and answer
    /// early. A request whose body was taken is forwarded with an empty body.
    pub fn take_body(&mut self) -> Option<DownstreamBody> {
        self.body.take()
    }

    /// Sends the request to a declared pool (`Self::POOL_NAME` in `proxy!`) instead of the
    /// one its route names: from `early_request_filter` or `request_filter`, so that
    /// routing decided in code keeps the pool's strategy, health checks, retries and
    /// metrics.
    pub fn use_pool(&mut self, pool: PoolId) {
        self.chosen_pool = Some(pool);
    }

    /// Caps the request body forwarded upstream at `max` bytes: a body that grows past it
    /// (a chunked one, whose size is not known in advance) fails the request with 413
    /// and closes the client's connection. A declared route's `max_body` sets it.
    pub fn limit_body(&mut self, max: u64) {
        self.body_limit = Some(max);
    }

    /// Moves the head into a request head for the upstream (origin-form target, HTTP/1.1),
    /// leaving method, URI and version readable here.
    pub(crate) fn take_upstream_head(&mut self) -> RequestHeader {
        let (mut up, ()) = Request::new(()).into_parts();
        up.method = self.head.method.clone();
        up.uri = origin_form(&self.head.uri);
        up.version = Version::HTTP_11;
        up.headers = std::mem::take(&mut self.head.headers);
        up.extensions = std::mem::take(&mut self.head.extensions);
        if let Some(authority) = self.head.uri.authority() {
            // RFC 9112 §3.2.2: an absolute-form target's authority replaces Host.
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                up.headers.insert(header::HOST, v);
            }
        }
        up
    }
}

/// The origin-form (`/path?query`) of a request target.
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_drops_scheme_and_authority() {
        let u: Uri = "http://example.org:8080/a/b?c=d".parse().expect("uri");
        assert_eq!(origin_form(&u), "/a/b?c=d");
        let u: Uri = "/x?y".parse().expect("uri");
        assert_eq!(origin_form(&u), "/x?y");
        let u: Uri = "http://example.org".parse().expect("uri");
        assert_eq!(origin_form(&u), "/");
    }

    #[test]
    fn generated_ids_are_distinct_hex_across_batches() {
        let ids: Vec<HeaderValue> = (0..IDS_PER_BATCH * 2 + 3)
            .map(|_| generate_request_id())
            .collect();
        for id in &ids {
            assert_eq!(id.len(), ID_LEN);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}

//! [`Session`]: one downstream request as the phases see it, and what became of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::http::ConnInfo;

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
    body: Option<Incoming>,
    host: Option<HeaderValue>,
    conn: Arc<ConnCtx>,
    started: Instant,
    pub(crate) status: Option<StatusCode>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) body_bytes_sent: u64,
    pub(crate) forwarded: bool,
    pub(crate) retries: u32,
}

impl Session {
    pub(crate) fn new(request: Request<Incoming>, conn: Arc<ConnCtx>) -> Self {
        let (head, body) = request.into_parts();
        let host = head.headers.get(header::HOST).cloned();
        Session {
            head,
            body: Some(body),
            host,
            conn,
            started: Instant::now(),
            status: None,
            upstream: None,
            body_bytes_sent: 0,
            forwarded: false,
            retries: 0,
        }
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

    /// The client's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.conn.info.client_addr
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
        self.retries
    }

    pub(crate) fn conn(&self) -> &ConnCtx {
        &self.conn
    }

    /// Takes the downstream request body, e.g. to inspect it in `request_filter` and answer
    /// early. A request whose body was taken is forwarded with an empty body.
    pub fn take_body(&mut self) -> Option<Incoming> {
        self.body.take()
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
}

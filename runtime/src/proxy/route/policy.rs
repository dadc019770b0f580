//! What a route may set for its own requests instead of its group's or the proxy's:
//! upstream timeouts, the number of resends, rate limits that count only its requests, the
//! largest request body it accepts, its own CORS policy, IP access list, authentication, compression and cache. A route without a policy pays
//! one pointer test.

use std::sync::Arc;
use std::time::Duration;

use super::access::AccessList;
use super::compress::Compress;
use super::cors::Cors;
use super::rate::RateLimit;
use crate::proxy::auth::Auth;
use crate::proxy::cache::HttpCache;
use crate::upstream::{HttpPeer, PeerTimeouts};

/// A route's own limits; an unset one is its group's (or the proxy's).
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// Time to connect to a peer.
    pub connect_timeout: Option<Duration>,
    /// Time the peer may send nothing while the request is in flight.
    pub read_timeout: Option<Duration>,
    /// Time a write to the peer may make no progress.
    pub write_timeout: Option<Duration>,
    /// Resends after a broken connection (the group's `retry N`).
    pub retries: Option<u32>,
    /// Rate limits counting this route's requests only.
    pub rate_limits: Vec<Arc<RateLimit>>,
    /// The largest request body, in bytes: a `Content-Length` over it is answered 413
    /// before anything goes upstream.
    pub max_body: Option<u64>,
    /// The route's CORS policy instead of the proxy's (or none).
    pub cors: Override<Arc<Cors>>,
    /// The route's client address blocks instead of the proxy's.
    pub access: Override<Arc<AccessList>>,
    /// The route's authentication instead of the proxy's (or none).
    pub auth: Override<Arc<Auth>>,
    /// The route's response compression instead of the proxy's (or none).
    pub compress: Override<Arc<Compress>>,
    /// The route's cache instead of the proxy's (or none).
    pub cache: Override<Arc<HttpCache>>,
}

/// A proxy-wide policy as one route sees it: the proxy's, one of its own, or none at all.
#[derive(Debug, Clone, Default)]
pub enum Override<T> {
    /// The proxy's policy (if it has one).
    #[default]
    Inherit,
    /// The route's own, in place of the proxy's.
    Own(T),
    /// None for this route, whatever the proxy has.
    Off,
}

/// The policy in force for a request: its route's own choice (`route`, read with `choice`)
/// over the proxy's (`proxy`).
pub(crate) fn in_force<'a, T>(
    route: Option<&'a RoutePolicy>,
    choice: impl FnOnce(&'a RoutePolicy) -> &'a Override<Arc<T>>,
    proxy: Option<&'a Arc<T>>,
) -> Option<&'a T> {
    match route {
        Some(policy) => choice(policy).resolve(proxy),
        None => proxy,
    }
    .map(|p| &**p)
}

impl<T> Override<T> {
    /// The policy in force: the route's own, else `inherited` unless turned off.
    pub fn resolve<'a>(&'a self, inherited: Option<&'a T>) -> Option<&'a T> {
        match self {
            Override::Inherit => inherited,
            Override::Own(own) => Some(own),
            Override::Off => None,
        }
    }
}

impl RoutePolicy {
    /// `peer` with the route's timeouts in place of its group's.
    pub fn apply_timeouts(&self, peer: HttpPeer) -> HttpPeer {
        if self.connect_timeout.is_none()
            && self.read_timeout.is_none()
            && self.write_timeout.is_none()
        {
            return peer;
        }
        let t = peer.timeouts();
        let timeouts = PeerTimeouts {
            connect: self.connect_timeout.unwrap_or(t.connect),
            read: self.read_timeout.unwrap_or(t.read),
            write: self.write_timeout.unwrap_or(t.write),
            idle: t.idle,
        };
        peer.with_timeouts(timeouts)
    }

    /// Whether a request declaring `content_length` bytes of body is over the limit.
    pub fn body_too_large(&self, content_length: Option<u64>) -> bool {
        matches!((self.max_body, content_length), (Some(max), Some(n)) if n > max)
    }
}

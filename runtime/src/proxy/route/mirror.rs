//! Request mirroring (Envoy's `request_mirror_policies`, nginx's `mirror`): a copy of a
//! route's requests goes to a shadow pool, fire-and-forget. The copy is sent by a task of
//! its own, so it never delays or fails the real request; its answer is read and dropped.
//! At most [`MAX_IN_FLIGHT`] copies per route are under way at once, more are dropped and
//! counted. Requests with a body are not copied (their body streams once, to the real
//! upstream), and counted as skipped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};

use crate::lb::{Attempts, UpstreamGroup};
use crate::metrics::MirrorOutcomes;
use crate::proxy::Session;
use crate::upstream::{ClientOptions, HttpClient};

/// The most copies of one route's requests under way at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// Where a route's requests are copied, how many of them, and what became of the copies.
pub struct Mirror {
    /// The shadow pool's index among the router's groups.
    pub group: usize,
    /// The share of requests copied, in percent (1..=100).
    percent: u64,
    seen: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    /// What became of the copies: sent (answered), failed, dropped (over the in-flight
    /// cap), skipped (the request had a body).
    pub outcomes: Arc<MirrorOutcomes>,
    /// The mirror's own upstream client, made with its first copy.
    client: OnceLock<HttpClient<Empty<Bytes>>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("group", &self.group)
            .field("percent", &self.percent)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Copies `percent` of the requests (spread evenly) to the group at `group`.
    pub fn new(group: usize, percent: u32) -> Self {
        Mirror {
            group,
            percent: u64::from(percent.clamp(1, 100)),
            seen: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            outcomes: Arc::default(),
            client: OnceLock::new(),
        }
    }

    /// Sends a copy of the request in `session` to `group` if it is one of the share to
    /// copy, bodiless, and under the in-flight cap. Returns at once.
    pub(crate) fn copy(&self, session: &Session, group: &UpstreamGroup) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        // `percent` of every 100 requests, spread over them.
        if (n % 100) * self.percent % 100 >= self.percent {
            return;
        }
        if has_body(session.headers()) {
            self.outcomes.skipped.inc();
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.outcomes.dropped.inc();
            return;
        }
        let Some(request) = copy_of(session) else {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.outcomes.failed.inc();
            return;
        };
        let peer = group.http_peer(
            |_| std::borrow::Cow::Borrowed(&[]),
            &mut Attempts::default(),
            None,
        );
        let client = self
            .client
            .get_or_init(|| HttpClient::new(ClientOptions::default()))
            .clone();
        let (in_flight, outcomes) = (self.in_flight.clone(), self.outcomes.clone());
        tokio::spawn(async move {
            let answered = match peer {
                Ok((peer, _counted)) => match client.send(&peer, request).await {
                    // Read the answer (each frame within the peer's read timeout), so the
                    // connection can serve the next copy.
                    Ok(response) => response.into_body().collect().await.is_ok(),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if answered {
                outcomes.sent.inc();
            } else {
                outcomes.failed.inc();
            }
        });
    }
}

/// Whether a request announces a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The request as the client sent it (original target), without a body and without
/// connection-level fields.
fn copy_of(session: &Session) -> Option<Request<Empty<Bytes>>> {
    let target = session.uri().path_and_query()?.as_str().to_owned();
    let mut request = Request::builder()
        .method(session.method().clone())
        .uri(target)
        .body(Empty::new())
        .ok()?;
    let headers = request.headers_mut();
    headers.clone_from(session.headers());
    for name in [CONNECTION, UPGRADE, CONTENT_LENGTH, TRANSFER_ENCODING] {
        headers.remove(name);
    }
    if !headers.contains_key(HOST) {
        // An HTTP/2 request names its host in the target, not in a header.
        if let Some(host) = session.host().and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(HOST, host);
        }
    }
    Some(request)
}

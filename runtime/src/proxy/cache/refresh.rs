//! `stale-while-revalidate`: the stale answer goes to the client at once, and a request
//! of the proxy's own refreshes the stored response in the background.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};

use super::fill::FillGuard;
use super::rules::{self, Directives};
use super::store::Stored;
use super::HttpCache;
use crate::lb::{Attempts, UpstreamGroup};
use crate::proxy::RequestHeader;

/// The longest a background refresh may take, answer and body.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

/// A refresh to send once the router knows where the request would go.
pub(crate) struct Refresh {
    stored: Arc<Stored>,
    key: String,
    /// No other request fills or refreshes the key meanwhile.
    guard: FillGuard,
}

impl Refresh {
    /// A refresh of `stored` under `key`.
    pub(crate) fn pending((stored, key, guard): (Arc<Stored>, String, FillGuard)) -> Refresh {
        Refresh { stored, key, guard }
    }

    /// Sends `head` (the request as it would go upstream) to a peer of `group` in the
    /// background, conditional on the stored validators, and stores what comes back.
    pub(crate) fn start(
        self,
        cache: Arc<HttpCache>,
        group: UpstreamGroup,
        mut head: RequestHeader,
    ) {
        for name in [
            http::header::RANGE,
            http::header::IF_RANGE,
            http::header::IF_MATCH,
            http::header::IF_UNMODIFIED_SINCE,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
        ] {
            head.headers.remove(name);
        }
        if let Some(etag) = self.stored.etag() {
            head.headers.insert(IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = self.stored.last_modified() {
            head.headers.insert(IF_MODIFIED_SINCE, modified.clone());
        }
        tokio::spawn(async move {
            let key = self.key.clone();
            match tokio::time::timeout(REFRESH_TIMEOUT, self.run(&cache, &group, head)).await {
                Ok(Ok(outcome)) => tracing::debug!(%key, outcome, "background refresh"),
                Ok(Err(why)) => {
                    tracing::warn!(%key, why, pool = group.name(), "background refresh failed")
                }
                Err(_) => tracing::warn!(%key, pool = group.name(), "background refresh timed out"),
            }
        });
    }

    async fn run(
        self,
        cache: &Arc<HttpCache>,
        group: &UpstreamGroup,
        head: RequestHeader,
    ) -> Result<&'static str, &'static str> {
        let (peer, _in_flight) = group
            .http_peer(
                |_| std::borrow::Cow::Borrowed(&[]),
                &mut Attempts::default(),
                None,
            )
            .map_err(|_| "no peer")?;
        let request_headers = head.headers.clone();
        let requested = SystemTime::now();
        let response = cache
            .client()
            .send(&peer, Request::from_parts(head, Empty::new()))
            .await
            .map_err(|_| "the request failed")?;
        let received = SystemTime::now();
        let (mut head, body) = response.into_parts();
        crate::proxy::headers::strip_response_hop_by_hop(&mut head.headers)
            .map_err(|_| "a transfer coding that cannot be stored")?;
        if head.status == StatusCode::NOT_MODIFIED {
            let refreshed = self.stored.refreshed(&head.headers, requested, received);
            cache.keep(&self.key, Arc::new(refreshed));
            cache.stats.revalidated.inc();
            return Ok("revalidated");
        }
        let directives = Directives::of(&head.headers);
        let settings = &cache.settings;
        if rules::not_storable(
            &http::Method::GET,
            &request_headers,
            head.status,
            &head.headers,
            &directives,
            settings.default_ttl,
        )
        .is_some()
        {
            return Ok("the new response is not storable");
        }
        let limit = usize::try_from(settings.max_object).unwrap_or(usize::MAX);
        let body: Bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|_| "the body failed or is over max_object")?
            .to_bytes();
        let mut stored = Stored::arriving(
            &head,
            &request_headers,
            &directives,
            settings,
            requested,
            received,
        );
        stored.body = super::owned_body(std::slice::from_ref(&body), body.len() as u64);
        cache.store_filled(&self.key, stored);
        drop(self.guard);
        Ok("stored")
    }
}

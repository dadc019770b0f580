//! The rate limits in force on a request, checked in order: the proxy's, then its route's
//! own. A shared limit that must ask Redis suspends the check; it resumes after the answer
//! (or the fallback) with the limits that follow.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use super::rate::shared::SharedSettings;
use super::rate::store::RedisStore;
use super::rate::{RateLimit, Verdict};
use super::Router;
use crate::proxy::{Flow, Session};
use crate::service::SharedLimitView;

/// A shared limit waiting for Redis: its place in the order, and the request's key.
pub(super) struct Pending {
    position: usize,
    key: Vec<u8>,
}

/// What the limits say without waiting.
pub(super) enum LimitCheck {
    /// Every limit lets the request through.
    Pass,
    /// One refused: its 429.
    Refused(Flow),
    /// A shared limit must ask Redis before the others are checked.
    Ask(Pending),
}

impl Router {
    /// The limit at `position` in the order in force on `route`.
    fn limit_at(&self, route: Option<usize>, position: usize) -> Option<&Arc<RateLimit>> {
        if let Some(limit) = self.rate_limits.get(position) {
            return Some(limit);
        }
        let own = route.and_then(|i| self.routes[i].policy.as_deref())?;
        own.rate_limits.get(position - self.rate_limits.len())
    }

    /// Counts the request against each limit from `from` on, in order.
    pub(super) fn check_limits(
        &self,
        session: &Session,
        route: Option<usize>,
        from: usize,
    ) -> LimitCheck {
        let mut position = from;
        while let Some(limit) = self.limit_at(route, position) {
            let mut buf = [0u8; 16];
            let client = session.client_addr().ip();
            let key = limit.key_of(client, session.headers(), route, &mut buf);
            // A request without the header a limit counts by is not counted (as nginx
            // does for an empty key): a missing API key is for authentication to refuse.
            if !key.is_empty() {
                match limit.check(key) {
                    Verdict::Admit => {}
                    Verdict::Refuse => {
                        return LimitCheck::Refused(self.too_many(session, route, limit))
                    }
                    Verdict::Ask => {
                        let key = key.to_vec();
                        return LimitCheck::Ask(Pending { position, key });
                    }
                }
            }
            position += 1;
        }
        LimitCheck::Pass
    }

    /// Waits for the shared limit `pending` names, then checks the limits after it: the
    /// 429 of the first that refuses, if one does.
    pub(super) async fn check_limits_later(
        &self,
        session: &Session,
        route: Option<usize>,
        mut pending: Pending,
    ) -> Option<Flow> {
        loop {
            let limit = self.limit_at(route, pending.position)?;
            if limit.ask(&pending.key).await {
                return Some(self.too_many(session, route, limit));
            }
            match self.check_limits(session, route, pending.position + 1) {
                LimitCheck::Pass => return None,
                LimitCheck::Refused(flow) => return Some(flow),
                LimitCheck::Ask(next) => pending = next,
            }
        }
    }

    /// The 429 for a request over `limit`, with its `Retry-After`.
    fn too_many(&self, session: &Session, route: Option<usize>, limit: &RateLimit) -> Flow {
        let mut flow = self.answer(
            session,
            route.map(|i| &self.routes[i]),
            StatusCode::TOO_MANY_REQUESTS,
            Bytes::from_static(b"429 Too Many Requests\n"),
        );
        if let Flow::Respond(response) = &mut flow {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(limit.retry_after_secs()),
            );
        }
        flow
    }
}

impl Router {
    /// Every rate limit of the router with what it serves: `proxy`, or the label of the
    /// route that declares it.
    fn labelled_limits(&self) -> impl Iterator<Item = (&str, &Arc<RateLimit>)> {
        let own = self.routes.iter().flat_map(|r| {
            let limits = r.policy.as_deref().map_or(&[][..], |p| &p.rate_limits[..]);
            limits.iter().map(move |l| (r.label, l))
        });
        self.rate_limits.iter().map(|l| ("proxy", l)).chain(own)
    }

    /// The shared rate limits, for the admin listener.
    pub fn observed_shared_limits(&self) -> Vec<SharedLimitView> {
        self.labelled_limits()
            .filter_map(|(label, limit)| {
                let shared = limit.shared_part()?;
                Some(SharedLimitView {
                    label: label.to_owned(),
                    limit: limit.limit(),
                    window: limit.window(),
                    redis: shared.settings().url.clone(),
                    counts: shared.counts().clone(),
                })
            })
            .collect()
    }

    /// The settings of every shared rate limit (the first is in force for the whole
    /// proxy when a config file sets them), if there is one.
    pub fn shared_settings(&self) -> Option<&SharedSettings> {
        self.labelled_limits()
            .find_map(|(_, l)| Some(l.shared_part()?.settings()))
    }

    /// Moves every shared rate limit to the store `settings` (a config file's) gives from
    /// its current ones, before the router serves: how many there are, or an error if one
    /// is already in use.
    pub fn set_shared_settings(
        &mut self,
        settings: impl Fn(&SharedSettings) -> SharedSettings,
    ) -> Result<usize, &'static str> {
        let own = self
            .routes
            .iter_mut()
            .filter_map(|r| r.policy.as_deref_mut())
            .flat_map(|p| p.rate_limits.iter_mut());
        let mut changed = 0;
        for limit in self.rate_limits.iter_mut().chain(own) {
            let Some(current) = limit.shared_part().map(|s| s.settings().clone()) else {
                continue;
            };
            let limit = Arc::get_mut(limit).ok_or("a shared rate limit is already in use")?;
            limit.set_shared_settings(settings(&current));
            changed += 1;
        }
        Ok(changed)
    }

    /// Checks every shared rate limit's Redis URL (the start and `-t` stop on an error).
    pub fn check_shared_limits(&self) -> std::io::Result<()> {
        for (label, limit) in self.labelled_limits() {
            if let Some(shared) = limit.shared_part() {
                RedisStore::check_url(&shared.settings().url).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("the shared rate limit of {label}: {e}"),
                    )
                })?;
            }
        }
        Ok(())
    }
}

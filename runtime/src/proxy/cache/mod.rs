//! The HTTP cache of a proxy or a route (`cache { ... }` in `proxy!`): RFC 9111 for a
//! shared cache over a memory tier with a byte budget.
//!
//! Per request, the router consults it after every policy let the request through:
//!
//! - a fresh stored response is the answer (`x-cache: HIT`), with its `Age`; a client's
//!   `If-None-Match`/`If-Modified-Since` that matches gets 304, a single `Range` of a
//!   stored 200 gets 206 (or 416), HEAD gets the stored GET's head;
//! - a stale one within `stale-while-revalidate` is the answer (`STALE`) while a
//!   background request refreshes it;
//! - otherwise the request goes upstream: conditionally (`If-None-Match`/`If-Modified-Since`
//!   of the stored response) when one is stored, and a 304 refreshes it (`REVALIDATED`); a
//!   5xx or a failure within `stale-if-error` is answered with the stale one (`STALE`);
//! - concurrent misses for a key send one request upstream (the others wait, bounded by
//!   `lock_timeout`, then are served from it or go upstream themselves);
//! - a storable response is stored as it streams to the client (`MISS`); one over
//!   `max_object`, cut off, or with trailers is not; unsafe methods invalidate the key.
//!
//! A request's `Cache-Control` is not obeyed (as nginx and Varnish by default): a client
//! cannot make the proxy bypass its cache. Responses with `Set-Cookie`, `private`,
//! `no-store` or `Vary: *` are never stored; `Authorization` requests only share responses
//! that allow it (`public`, `s-maxage`, `must-revalidate`).

mod answer;
mod disk;
mod fill;
mod refresh;
pub mod rules;
mod store;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderName, CONTENT_LENGTH, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE, TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Empty;

use crate::metrics::Counter;
use crate::proxy::{ResponseHeader, Session};
use crate::upstream::HttpClient;
pub use answer::{Asks, CacheStatus};
pub use disk::DiskStore;
use fill::{FillGuard, FillWait, Fills, Joined};
pub(crate) use refresh::Refresh;
use rules::Directives;
use store::Variants;
pub use store::{MemoryStore, Stored};

/// Counters of one cache, for the metrics and the status page.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Answers from a fresh stored response.
    pub hits: Counter,
    /// Requests that went upstream without a usable stored response.
    pub misses: Counter,
    /// Stale answers (while revalidating, or for an origin's error).
    pub stale: Counter,
    /// Stored responses an origin's 304 refreshed.
    pub revalidated: Counter,
    /// Requests the cache does not take (methods other than GET/HEAD, ranges on a miss).
    pub bypass: Counter,
    /// Requests that waited for another's fill of their key.
    pub coalesced: Counter,
    /// Responses stored.
    pub stored: Counter,
    /// Stored responses removed to stay within the byte budget.
    pub evictions: Arc<Counter>,
    /// Keys removed by a purge or an unsafe method.
    pub purged: Counter,
    /// Responses read back from the disk tier.
    pub disk_loads: Counter,
    /// Responses not written to disk because its writers were all busy.
    pub disk_skipped: Counter,
}

/// The sizes and times of a cache, as declared (or set by the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// The memory budget in bytes.
    pub memory: u64,
    /// The largest body stored.
    pub max_object: u64,
    /// Freshness for responses that give none (`None`: such responses are not stored).
    pub ttl: Option<Duration>,
    /// How long past fresh an answer is served while refreshed.
    pub stale_while_revalidate: Duration,
    /// How long past fresh an answer is served when the origin fails.
    pub stale_if_error: Duration,
    /// How long a miss waits for another request fetching the same key.
    pub lock_timeout: Duration,
}

/// The declared settings of a cache.
#[derive(Debug, Clone)]
struct Settings {
    default_ttl: Option<Duration>,
    max_object: u64,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    lock_timeout: Duration,
    status_header: HeaderName,
    key_headers: Vec<HeaderName>,
    key_cookies: Vec<String>,
    key_with: Option<KeyFn>,
}

/// A key part computed from the request (a declared template of variables).
#[derive(Clone)]
struct KeyFn(Arc<dyn Fn(&Session) -> String + Send + Sync>);

impl std::fmt::Debug for KeyFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFn")
    }
}

/// An HTTP cache: the memory tier, the fills in progress and the counters. Shared (in an
/// `Arc`) by every request and worker of the routes it serves.
pub struct HttpCache {
    store: MemoryStore,
    disk: Option<Arc<DiskStore>>,
    fills: Arc<Fills>,
    stats: Arc<CacheStats>,
    settings: Settings,
    /// Sends background refreshes (made on first use).
    client: OnceLock<HttpClient<Empty<Bytes>>>,
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("store", &self.store)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The default byte budget of the memory tier: 64 MiB.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// The default largest object stored: 8 MiB.
pub const DEFAULT_MAX_OBJECT: u64 = 8 << 20;
/// The default longest wait for another request's fill of the same key.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for HttpCache {
    fn default() -> Self {
        HttpCache::new(DEFAULT_MEMORY)
    }
}

impl HttpCache {
    /// A cache holding up to `memory` bytes, storing only responses with their own
    /// freshness, up to [`DEFAULT_MAX_OBJECT`] each, marking answers `x-cache`.
    pub fn new(memory: u64) -> HttpCache {
        let stats = Arc::new(CacheStats::default());
        HttpCache {
            store: MemoryStore::new(memory, stats.evictions.clone()),
            disk: None,
            fills: Arc::default(),
            stats,
            settings: Settings {
                default_ttl: None,
                max_object: DEFAULT_MAX_OBJECT,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                lock_timeout: DEFAULT_LOCK_TIMEOUT,
                status_header: HeaderName::from_static("x-cache"),
                key_headers: Vec::new(),
                key_cookies: Vec::new(),
                key_with: None,
            },
            client: OnceLock::new(),
        }
    }

    /// A new, empty memory tier of `bytes` (for settings changed before the cache serves).
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.store = MemoryStore::new(bytes, self.stats.evictions.clone());
        self
    }

    /// A disk tier in `dir` of at most `budget` bytes beside the memory tier: every
    /// stored response is written there too, and read back on a memory miss (after a
    /// restart, or once memory evicted it).
    pub fn disk(mut self, dir: impl Into<std::path::PathBuf>, budget: u64) -> Self {
        self.disk = Some(Arc::new(DiskStore::new(dir, budget)));
        self
    }

    /// The disk tier, if it has one.
    pub fn disk_store(&self) -> Option<&DiskStore> {
        self.disk.as_deref()
    }

    /// Opens the disk tier (creates its directory, deletes what a crash left half
    /// written, rebuilds its index): the start and `-t` stop on an error.
    pub fn check_disk(&self) -> std::io::Result<()> {
        match &self.disk {
            Some(disk) => disk.open().map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cache disk {}: {e}", disk.dir().display()),
                )
            }),
            None => Ok(()),
        }
    }

    /// Freshness for responses that carry none (no `Cache-Control` max-age, no `Expires`)
    /// and whose status is cacheable by default (200, 301, 404, ...). Without it, such
    /// responses are not stored.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_ttl = Some(ttl);
        self
    }

    /// The largest body stored; a larger one passes through uncached.
    pub fn max_object(mut self, bytes: u64) -> Self {
        self.settings.max_object = bytes;
        self
    }

    /// How long past fresh a response is served while a background request refreshes it,
    /// when the response itself does not say (`stale-while-revalidate`).
    pub fn stale_while_revalidate(mut self, limit: Duration) -> Self {
        self.settings.stale_while_revalidate = limit;
        self
    }

    /// How long past fresh a response is served when the origin fails (5xx, refused,
    /// timed out), when the response itself does not say (`stale-if-error`).
    pub fn stale_if_error(mut self, limit: Duration) -> Self {
        self.settings.stale_if_error = limit;
        self
    }

    /// The longest a miss waits for another request's fill of the same key before going
    /// upstream itself.
    pub fn lock_timeout(mut self, limit: Duration) -> Self {
        self.settings.lock_timeout = limit;
        self
    }

    /// The response header that tells how the cache answered (default `x-cache`).
    pub fn status_header(mut self, name: HeaderName) -> Self {
        self.settings.status_header = name;
        self
    }

    /// Adds a request header's value to the key (e.g. a tenant header).
    pub fn key_header(mut self, name: HeaderName) -> Self {
        self.settings.key_headers.push(name);
        self
    }

    /// Adds `part` of the request to the key: what `proxy!`'s `key "TEMPLATE";` makes of a
    /// template of variables (`"${user}"`, `"${cookie.theme}-${header.x-device}"`). An
    /// empty part adds nothing.
    pub fn key_with(mut self, part: impl Fn(&Session) -> String + Send + Sync + 'static) -> Self {
        self.settings.key_with = Some(KeyFn(Arc::new(part)));
        self
    }

    /// Adds a request cookie's value to the key.
    pub fn key_cookie(mut self, name: &str) -> Self {
        self.settings.key_cookies.push(name.to_owned());
        self
    }

    /// Its sizes and times.
    pub fn limits(&self) -> CacheLimits {
        let s = &self.settings;
        CacheLimits {
            memory: self.store.budget(),
            max_object: s.max_object,
            ttl: s.default_ttl,
            stale_while_revalidate: s.stale_while_revalidate,
            stale_if_error: s.stale_if_error,
            lock_timeout: s.lock_timeout,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// The memory tier (its size and budget).
    pub fn memory(&self) -> &MemoryStore {
        &self.store
    }

    /// Removes the stored responses of `key` (as [`HttpCache::key_of`] makes it: e.g.
    /// `http://example.com/a?b`); whether there were some.
    pub fn purge(&self, key: &str) -> bool {
        let on_disk = self.disk.as_ref().is_some_and(|d| d.remove(key));
        let removed = self.store.remove(key) | on_disk;
        if removed {
            self.stats.purged.inc();
        }
        removed
    }

    /// Removes every stored response whose key starts with `prefix`; how many keys.
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        let on_disk = self.disk.as_ref().map_or(0, |d| d.remove_prefix(prefix));
        let removed = self.store.remove_prefix(prefix).max(on_disk);
        self.stats.purged.add(removed);
        removed
    }

    /// The key of the request in `session`: scheme, host and target
    /// (`http://example.com/a?b`), then each declared header and cookie the request has
    /// (as `\u{1f}NAME=VALUE`).
    pub fn key_of(&self, session: &Session) -> String {
        let target = session.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let host = session.host().unwrap_or("");
        let mut key = String::with_capacity(16 + host.len() + target.len());
        key.push_str(session.scheme());
        key.push_str("://");
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            key.push_str(&host.to_ascii_lowercase());
        } else {
            key.push_str(host);
        }
        key.push_str(target);
        let headers = session.headers();
        let parts = self
            .settings
            .key_headers
            .iter()
            .map(|name| (name.as_str(), headers.get(name).map(|v| v.as_bytes())));
        let cookies = self
            .settings
            .key_cookies
            .iter()
            .map(|name| (name.as_str(), crate::lb::cookie(headers, name)));
        // A part the request lacks adds nothing: `http://host/a` is then the whole key.
        for (name, value) in parts.chain(cookies) {
            if let Some(value) = value {
                key.push('\u{1f}');
                key.push_str(name);
                key.push('=');
                key.push_str(&String::from_utf8_lossy(value));
            }
        }
        if let Some(KeyFn(part)) = &self.settings.key_with {
            let part = part(session);
            if !part.is_empty() {
                key.push('\u{1f}');
                key.push_str(&part);
            }
        }
        key
    }

    /// What to do with the request in `session`: answer it, wait for another fill of its
    /// key, or forward it (keeping what the response phases need).
    pub(crate) fn consult(self: &Arc<Self>, session: &Session, tier: Tier) -> Consulted {
        let method = session.method();
        let key = self.key_of(session);
        if method != Method::GET && method != Method::HEAD {
            self.stats.bypass.inc();
            let invalidates = !method.is_safe();
            return Consulted::Forward(self.state(session, key, Mode::Bypass { invalidates }));
        }
        let now = Instant::now();
        let asks = Asks::of(session.headers());
        let variants = match tier {
            Tier::Loaded(loaded) => loaded.map(Variants::one),
            Tier::Any => {
                let variants = self.store.get(&key);
                if variants.is_none() && self.disk.as_ref().is_some_and(|d| d.contains(&key)) {
                    return Consulted::Disk(key);
                }
                variants
            }
        };
        let stored = variants
            .and_then(|v| v.for_request(session.headers()).cloned())
            .filter(|s| !asks.authorization || s.shared_with_auth);
        if let Some(stored) = &stored {
            match stored.staleness(now) {
                None => {
                    self.stats.hits.inc();
                    return Consulted::Serve(
                        self.answer(stored, &asks, CacheStatus::Hit, now),
                        None,
                    );
                }
                Some(late) if late < stored.stale_while_revalidate => {
                    self.stats.stale.inc();
                    let answer = self.answer(stored, &asks, CacheStatus::Stale, now);
                    let refresh = match self.fills.join(&key) {
                        Joined::Lead(guard) => Some((stored.clone(), key, guard)),
                        // Someone refreshes it already.
                        Joined::Wait(_) => None,
                    };
                    return Consulted::Serve(answer, refresh.map(Refresh::pending));
                }
                Some(_) => {}
            }
        }
        if asks.range.is_some() && stored.is_none() {
            // A part is not stored: it goes upstream as asked; the next whole GET fills.
            self.stats.bypass.inc();
            return Consulted::Forward(self.state(
                session,
                key,
                Mode::Bypass { invalidates: false },
            ));
        }
        let mode = Mode::Fill { stale: stored };
        if method == Method::HEAD {
            // A HEAD's answer has no body to store: it neither fills nor waits (a 304 to
            // its revalidation still refreshes the stored GET).
            return Consulted::Forward(self.state(session, key, mode));
        }
        match self.fills.join(&key) {
            Joined::Lead(guard) => {
                let mut state = self.state(session, key, mode);
                state.fill = Some(guard);
                Consulted::Forward(state)
            }
            Joined::Wait(wait) => {
                self.stats.coalesced.inc();
                Consulted::Wait(wait, self.state(session, key, mode))
            }
        }
    }

    /// Reads `key`'s object from the disk tier (off the serving threads), and keeps it in
    /// memory too.
    pub(crate) async fn load_from_disk(self: &Arc<Self>, key: String) -> Tier {
        let Some(disk) = self.disk.clone() else {
            return Tier::Loaded(None);
        };
        let cache = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let stored = Arc::new(disk.load(&key)?);
            cache.store.insert(&key, stored.clone());
            cache.stats.disk_loads.inc();
            Some(stored)
        })
        .await;
        Tier::Loaded(loaded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading a cache object from disk failed");
            None
        }))
    }

    /// After waiting for another request's fill: its stored response, or upstream.
    pub(crate) async fn after_wait(
        self: &Arc<Self>,
        wait: FillWait,
        state: Box<CacheState>,
        session: &Session,
    ) -> Consulted {
        wait.ended_within(self.settings.lock_timeout).await;
        let now = Instant::now();
        let asks = Asks::of(session.headers());
        let fresh = self
            .store
            .get(&state.key)
            .and_then(|v| v.for_request(session.headers()).cloned())
            .filter(|s| s.staleness(now).is_none())
            .filter(|s| !asks.authorization || s.shared_with_auth);
        match fresh {
            Some(stored) => {
                self.stats.hits.inc();
                Consulted::Serve(self.answer(&stored, &asks, CacheStatus::Hit, now), None)
            }
            None => Consulted::Forward(state),
        }
    }

    fn state(&self, session: &Session, key: String, mode: Mode) -> Box<CacheState> {
        let stale_fallback = match &mode {
            Mode::Fill {
                stale: Some(stored),
            } => {
                let now = Instant::now();
                stored
                    .staleness(now)
                    .filter(|late| *late < stored.stale_if_error)
                    .map(|_| stored.clone())
            }
            _ => None,
        };
        Box::new(CacheState {
            key,
            request: session.headers().clone(),
            requested: SystemTime::now(),
            mode,
            stale_fallback,
            fill: None,
        })
    }

    /// The answer to a request with `request` headers from `stored`.
    fn answer(
        &self,
        stored: &Stored,
        request: &Asks<'_>,
        status: CacheStatus,
        now: Instant,
    ) -> Response<Bytes> {
        answer::from_stored(stored, request, now, (&self.settings.status_header, status))
    }

    /// The stale answer for a request whose upstream failed, if one may be served.
    fn stale_answer(&self, state: &CacheState) -> Option<Response<Bytes>> {
        let stored = state.stale_fallback.as_ref()?;
        self.stats.stale.inc();
        Some(self.answer(
            stored,
            &Asks::of(&state.request),
            CacheStatus::Stale,
            Instant::now(),
        ))
    }

    /// The stale answer to keep in case the upstream fails (refused, timed out, no
    /// peer), if `stale-if-error` allows one; counted only when given.
    pub(crate) fn stale_fallback(&self, state: &CacheState) -> Option<StaleFallback> {
        let stored = state.stale_fallback.as_ref()?;
        Some(StaleFallback {
            answer: self.answer(
                stored,
                &Asks::of(&state.request),
                CacheStatus::Stale,
                Instant::now(),
            ),
            stats: self.stats.clone(),
        })
    }

    /// For `upstream_request_filter`: a revalidation asks with the stored validators
    /// (replacing the client's own); a fill asks unconditionally for the whole response.
    pub(crate) fn shape_request(&self, state: &CacheState, headers: &mut HeaderMap) {
        let Mode::Fill { stale } = &state.mode else {
            return;
        };
        for name in [
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_MATCH,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
        ] {
            headers.remove(name);
        }
        if let Some(stored) = stale {
            if let Some(etag) = stored.etag() {
                headers.insert(IF_NONE_MATCH, etag.clone());
            }
            if let Some(modified) = stored.last_modified() {
                headers.insert(IF_MODIFIED_SINCE, modified.clone());
            }
        }
    }

    /// For `upstream_response_filter`: what the cache makes of the origin's response head.
    /// A 304 to a revalidation, or a 5xx within `stale-if-error`, becomes the stored
    /// response (its body then comes from the cache, set in `session`); a storable
    /// response gets a fill that stores it as it streams.
    pub(crate) fn on_response(
        self: &Arc<Self>,
        mut state: Box<CacheState>,
        session: &mut Session,
        response: &mut ResponseHeader,
    ) {
        let label = &self.settings.status_header;
        let status = response.status;
        let stale = match &mut state.mode {
            Mode::Bypass { invalidates } => {
                if *invalidates && (status.is_success() || status.is_redirection()) {
                    self.invalidate(&state.key);
                }
                response
                    .headers
                    .insert(label.clone(), CacheStatus::Bypass.value());
                return;
            }
            Mode::Fill { stale } => stale.take(),
        };
        if let Some(stored) = stale {
            if status == StatusCode::NOT_MODIFIED {
                let refreshed = Arc::new(stored.refreshed(
                    &response.headers,
                    state.requested,
                    SystemTime::now(),
                ));
                self.keep(&state.key, refreshed.clone());
                self.stats.revalidated.inc();
                let answer = self.answer(
                    &refreshed,
                    &Asks::of(&state.request),
                    CacheStatus::Revalidated,
                    Instant::now(),
                );
                replace(session, response, answer);
                return;
            }
            if status.is_server_error() {
                if let Some(answer) = self.stale_answer(&state) {
                    replace(session, response, answer);
                    return;
                }
            }
        }
        self.stats.misses.inc();
        response
            .headers
            .insert(label.clone(), CacheStatus::Miss.value());
        let Some(guard) = state.fill.take() else {
            return;
        };
        if let Some(fill) = self.fill_for(&state, response, guard) {
            session.set_cache_fill(fill);
        }
    }

    /// A fill storing `response` under the state's key, if it may be stored.
    fn fill_for(
        self: &Arc<Self>,
        state: &CacheState,
        response: &ResponseHeader,
        guard: FillGuard,
    ) -> Option<CacheFill> {
        let directives = Directives::of(&response.headers);
        let settings = &self.settings;
        if let Some(why) = rules::not_storable(
            &Method::GET,
            &state.request,
            response.status,
            &response.headers,
            &directives,
            settings.default_ttl,
        ) {
            tracing::debug!(key = %state.key, why, "response not stored");
            return None;
        }
        let length = response
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|n| n > settings.max_object) {
            tracing::debug!(key = %state.key, "response over max_object: not stored");
            return None;
        }
        let received = SystemTime::now();
        let stored = Stored::arriving(
            response,
            &state.request,
            &directives,
            settings,
            state.requested,
            received,
        );
        Some(CacheFill {
            cache: self.clone(),
            key: state.key.clone(),
            template: Some(stored),
            chunks: Vec::new(),
            size: 0,
            _guard: guard,
        })
    }

    /// Stores a filled response.
    fn store_filled(&self, key: &str, stored: Stored) {
        self.keep(key, Arc::new(stored));
        self.stats.stored.inc();
    }

    /// Puts `stored` in memory, and writes it to the disk tier in the background.
    fn keep(&self, key: &str, stored: Arc<Stored>) {
        self.store.insert(key, stored.clone());
        let Some(disk) = self.disk.clone() else {
            return;
        };
        if !disk.begin_write() {
            self.stats.disk_skipped.inc();
            return;
        }
        let key = key.to_owned();
        off_thread(move || {
            if let Err(e) = disk.save(&key, &stored) {
                tracing::warn!(%key, error = %e, "a cache object was not written to disk");
            }
            disk.end_write();
        });
    }

    /// Removes `key` after an unsafe method changed what it names.
    fn invalidate(&self, key: &str) {
        if self.store.remove(key) {
            self.stats.purged.inc();
        }
        if let Some(disk) = self.disk.clone() {
            let key = key.to_owned();
            off_thread(move || {
                disk.remove(&key);
            });
        }
    }

    /// Sends background refreshes.
    fn client(&self) -> HttpClient<Empty<Bytes>> {
        self.client
            .get_or_init(|| HttpClient::new(crate::upstream::ClientOptions::default()))
            .clone()
    }
}

impl crate::service::CacheHandle for HttpCache {
    fn counts(&self) -> crate::service::CacheCounts {
        let s = &self.stats;
        crate::service::CacheCounts {
            hits: s.hits.get(),
            misses: s.misses.get(),
            stale: s.stale.get(),
            revalidated: s.revalidated.get(),
            bypass: s.bypass.get(),
            coalesced: s.coalesced.get(),
            stored: s.stored.get(),
            evictions: s.evictions.get(),
            purged: s.purged.get(),
            bytes: self.store.bytes(),
            objects: self.store.len() as u64,
            budget: self.store.budget(),
            disk_loads: s.disk_loads.get(),
            disk_skipped: s.disk_skipped.get(),
            disk_bytes: self.disk.as_ref().map_or(0, |d| d.usage().0),
            disk_objects: self.disk.as_ref().map_or(0, |d| d.usage().1),
        }
    }

    fn purge(&self, key: &str) -> bool {
        HttpCache::purge(self, key)
    }

    fn purge_prefix(&self, prefix: &str) -> u64 {
        HttpCache::purge_prefix(self, prefix)
    }
}

/// Replaces the origin's response head with a cached `answer`, whose body the session
/// then sends instead of the origin's.
fn replace(session: &mut Session, response: &mut ResponseHeader, answer: Response<Bytes>) {
    let (head, body) = answer.into_parts();
    response.status = head.status;
    response.headers = head.headers;
    session.replace_body(body);
}

impl Stored {
    /// A response arriving from the origin (without its body yet).
    fn arriving(
        response: &ResponseHeader,
        request: &HeaderMap,
        directives: &Directives,
        settings: &Settings,
        requested: SystemTime,
        received: SystemTime,
    ) -> Stored {
        let mut headers = owned_headers(&response.headers);
        for name in [CONTENT_LENGTH, TRANSFER_ENCODING, http::header::AGE] {
            headers.remove(name);
        }
        headers.remove(&settings.status_header);
        if response.status == StatusCode::OK {
            // Ranges of it are answered from the cache.
            headers.insert(
                http::header::ACCEPT_RANGES,
                http::HeaderValue::from_static("bytes"),
            );
        }
        let vary = store::vary_values(request, rules::vary_names(&response.headers));
        let (swr, sie) = if directives.must_revalidate || directives.no_cache {
            (Duration::ZERO, Duration::ZERO)
        } else {
            let secs = |d: Option<u64>, declared| d.map_or(declared, Duration::from_secs);
            (
                secs(
                    directives.stale_while_revalidate,
                    settings.stale_while_revalidate,
                ),
                secs(directives.stale_if_error, settings.stale_if_error),
            )
        };
        Stored {
            status: response.status,
            fresh_for: rules::freshness_lifetime(
                &response.headers,
                directives,
                settings.default_ttl,
                received,
            ),
            initial_age: rules::initial_age(&response.headers, requested, received),
            headers,
            body: Bytes::new(),
            vary,
            arrived: Instant::now(),
            stale_while_revalidate: swr,
            stale_if_error: sie,
            shared_with_auth: directives.public
                || directives.s_maxage.is_some()
                || directives.must_revalidate,
            default_ttl: settings.default_ttl,
        }
    }

    /// This response refreshed by a 304's `headers` (RFC 9111 §4.3.4): their fields
    /// replace the stored ones (framing excepted), and its freshness starts again.
    fn refreshed(&self, update: &HeaderMap, requested: SystemTime, received: SystemTime) -> Stored {
        let mut headers = self.headers.clone();
        let mut replaced: Vec<&HeaderName> = Vec::new();
        for (name, value) in update {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == http::header::AGE {
                continue;
            }
            if !replaced.contains(&name) {
                headers.remove(name);
                replaced.push(name);
            }
            headers.append(name.clone(), value.clone());
        }
        let headers = owned_headers(&headers);
        let directives = Directives::of(&headers);
        Stored {
            status: self.status,
            fresh_for: rules::freshness_lifetime(&headers, &directives, self.default_ttl, received),
            initial_age: rules::initial_age(update, requested, received),
            headers,
            body: self.body.clone(),
            vary: self.vary.clone(),
            arrived: Instant::now(),
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            shared_with_auth: self.shared_with_auth,
            default_ttl: self.default_ttl,
        }
    }
}

/// What a request under a cache does.
pub(crate) enum Consulted {
    /// Answer with this (and refresh the stored response in the background).
    Serve(Response<Bytes>, Option<Refresh>),
    /// Wait for another request's fill of the key, then consult again.
    Wait(FillWait, Box<CacheState>),
    /// Go upstream, keeping this for the response phases.
    Forward(Box<CacheState>),
    /// Read the key's object from the disk tier, then consult again.
    Disk(String),
}

/// A body made of `chunks` (`size` bytes in all) in one buffer of its own. The chunks are
/// views into the connection's read buffers: kept as they are, a 13-byte body would hold a
/// whole buffer in the cache (measured: 5.7 KB per small object instead of 0.5 KB). One copy
/// per stored response; hits share the buffer.
fn owned_body(chunks: &[Bytes], size: u64) -> Bytes {
    let mut body = bytes::BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
    for chunk in chunks {
        body.extend_from_slice(chunk);
    }
    body.freeze()
}

/// `headers` with values of their own (not views into a read buffer; see `owned_body`).
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy =
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

/// Where a consultation looks.
pub(crate) enum Tier {
    /// Memory, then (on a miss there) the disk tier.
    Any,
    /// What the disk tier had for the key.
    Loaded(Option<Arc<Stored>>),
}

/// Runs file work on the blocking pool (inline outside a runtime).
fn off_thread(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(work)),
        Err(_) => work(),
    }
}

/// What the cache does with a forwarded request.
#[derive(Debug)]
enum Mode {
    /// Not cached (an unsafe method invalidates the key on success).
    Bypass { invalidates: bool },
    /// A miss or a revalidation of `stale`: the response may be stored.
    Fill { stale: Option<Arc<Stored>> },
}

/// The cache's part of a forwarded request's state.
#[derive(Debug)]
pub struct CacheState {
    key: String,
    /// The client's request headers (sent upstream by then): for `Vary`, and to answer
    /// its conditionals and ranges from a refreshed response.
    request: HeaderMap,
    requested: SystemTime,
    mode: Mode,
    /// A stale response to answer with if the upstream fails.
    stale_fallback: Option<Arc<Stored>>,
    /// This request fills the key: others wait until it is dropped.
    fill: Option<FillGuard>,
}

/// A response on its way into the cache: its head, and its body gathered as it streams
/// to the client. Dropped before the end (cut off, over `max_object`), nothing is stored.
pub(crate) struct CacheFill {
    cache: Arc<HttpCache>,
    key: String,
    template: Option<Stored>,
    chunks: Vec<Bytes>,
    size: u64,
    /// Released once the response is stored or given up: waiters look again.
    _guard: FillGuard,
}

impl CacheFill {
    /// Gathers `data` (shared, not copied); false once the body is over `max_object`.
    pub(crate) fn push(&mut self, data: &Bytes) -> bool {
        self.size += data.len() as u64;
        if self.size > self.cache.settings.max_object {
            tracing::debug!(key = %self.key, "body over max_object: not stored");
            return false;
        }
        if !data.is_empty() {
            self.chunks.push(data.clone());
        }
        true
    }

    /// The body ended whole: stores the response.
    pub(crate) fn finish(mut self) {
        let Some(mut stored) = self.template.take() else {
            return;
        };
        stored.body = owned_body(&self.chunks, self.size);
        self.cache.store_filled(&self.key, stored);
    }
}

/// A stale answer kept for an upstream failure (`stale-if-error`).
pub(crate) struct StaleFallback {
    answer: Response<Bytes>,
    stats: Arc<CacheStats>,
}

impl StaleFallback {
    /// The answer, counted as a stale one.
    pub(crate) fn give(self) -> Response<Bytes> {
        self.stats.stale.inc();
        self.answer
    }
}

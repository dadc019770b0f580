//! The memory tier: stored responses by key, each key holding the variants its `Vary`
//! header tells apart, evicted by byte weight (S3-FIFO, from `quick_cache`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ETAG, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};
use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, Weighter};

use crate::metrics::Counter;

/// A stored response and what its freshness was computed from.
#[derive(Debug)]
pub struct Stored {
    /// The origin's status.
    pub status: StatusCode,
    /// The origin's headers, without framing (`Content-Length`, `Transfer-Encoding`) and
    /// `Age`, which are set per answer.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The request's values of the fields the response varies by (`None`: absent).
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// When the response arrived.
    pub arrived: Instant,
    /// Its age when it arrived (RFC 9111 §4.2.3).
    pub initial_age: Duration,
    /// How long it is fresh, counted in age.
    pub fresh_for: Duration,
    /// How long past fresh it may be served while a refresh runs.
    pub stale_while_revalidate: Duration,
    /// How long past fresh it may be served when the origin fails.
    pub stale_if_error: Duration,
    /// It may answer requests with `Authorization` (`public`, `s-maxage`,
    /// `must-revalidate`).
    pub shared_with_auth: bool,
    /// The declared freshness for responses without their own, kept for revalidations.
    pub default_ttl: Option<Duration>,
}

impl Stored {
    /// Its current age (RFC 9111 §4.2.3).
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.arrived)
    }

    /// How long past its freshness it is (`None` while fresh).
    pub fn staleness(&self, now: Instant) -> Option<Duration> {
        let age = self.age(now);
        (age >= self.fresh_for).then(|| age - self.fresh_for)
    }

    /// Whether a request with `headers` may be served this variant: each field the
    /// response varies by has the same value (compared as stored bytes, trimmed).
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| {
            let theirs = joined(headers, name);
            match (value, theirs) {
                (None, None) => true,
                (Some(ours), Some(theirs)) => ours.as_bytes() == theirs.as_bytes(),
                _ => false,
            }
        })
    }

    /// Its `ETag`.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(ETAG)
    }

    /// Its `Last-Modified`.
    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(LAST_MODIFIED)
    }

    /// Bytes it takes in memory, roughly: body, headers (each value its own allocation),
    /// and the entry's own structures (measured: about 1.7 KB of RSS per small response
    /// with six headers, the disk tier's index included).
    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 96)
            .sum();
        (self.body.len() + headers + 640) as u64
    }
}

/// A request's values of the fields `names`, several lines joined by `, ` (for `Vary`).
pub fn vary_values(
    headers: &HeaderMap,
    names: impl Iterator<Item = String>,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    names
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .map(|name| {
            let value = joined(headers, &name);
            (name, value)
        })
        .collect()
}

/// Every value of `name` in `headers` as one (`a, b`), or `None` without one.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let rest: Vec<&HeaderValue> = values.collect();
    if rest.is_empty() {
        return Some(first.clone());
    }
    let mut all = first.as_bytes().to_vec();
    for v in rest {
        all.extend_from_slice(b", ");
        all.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&all).ok()
}

/// The variants stored under one key (most responses have one).
#[derive(Debug, Clone, Default)]
pub struct Variants(Arc<[Arc<Stored>]>);

impl Variants {
    /// `stored` alone.
    pub fn one(stored: Arc<Stored>) -> Variants {
        Variants(Arc::new([stored]))
    }

    /// The variant a request with `headers` may be served.
    pub fn for_request(&self, headers: &HeaderMap) -> Option<&Arc<Stored>> {
        self.0.iter().find(|s| s.matches(headers))
    }

    /// These variants with `stored` in place of the one for the same request values.
    fn with(&self, stored: Arc<Stored>) -> Variants {
        let mut list: Vec<Arc<Stored>> = self
            .0
            .iter()
            .filter(|s| s.vary != stored.vary)
            .cloned()
            .collect();
        list.push(stored);
        Variants(list.into())
    }
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Variants> for ByBytes {
    fn weight(&self, key: &String, value: &Variants) -> u64 {
        key.len() as u64 + value.0.iter().map(|s| s.weight()).sum::<u64>()
    }
}

/// Counts what the memory tier evicts to stay in its budget.
#[derive(Clone)]
struct CountEvictions(Arc<Counter>);

impl Lifecycle<String, Variants> for CountEvictions {
    type RequestState = ();

    fn begin_request(&self) {}

    fn on_evict(&self, _state: &mut (), _key: String, _value: Variants) {
        self.0.inc();
    }
}

/// The memory tier: a byte budget, shared by every worker.
pub struct MemoryStore {
    entries: Cache<String, Variants, ByBytes, quick_cache::DefaultHashBuilder, CountEvictions>,
    budget: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("budget", &self.budget)
            .field("bytes", &self.entries.weight())
            .finish()
    }
}

impl MemoryStore {
    /// A store of at most `budget` bytes, counting evictions into `evictions`.
    pub fn new(budget: u64, evictions: Arc<Counter>) -> MemoryStore {
        // Sized for objects of ~16 KiB on average; the table grows past it if need be.
        let estimated = (budget / 16_384).clamp(64, 1 << 20) as usize;
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated)
            .weight_capacity(budget.max(1))
            .build();
        let entries = match options {
            Ok(options) => Cache::with_options(
                options,
                ByBytes,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions(evictions),
            ),
            // (The builder fails only without a capacity, which is set above.)
            Err(_) => Cache::with(
                estimated,
                budget.max(1),
                ByBytes,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions(evictions),
            ),
        };
        MemoryStore { entries, budget }
    }

    /// The variants stored under `key`.
    pub fn get(&self, key: &str) -> Option<Variants> {
        self.entries.get(key)
    }

    /// Stores `stored` under `key`, beside its other variants.
    pub fn insert(&self, key: &str, stored: Arc<Stored>) {
        let variants = self.entries.get(key).unwrap_or_default().with(stored);
        self.entries.insert(key.to_owned(), variants);
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Removes every key starting with `prefix`; how many.
    pub fn remove_prefix(&self, prefix: &str) -> u64 {
        let removed = AtomicU64::new(0);
        self.entries.retain(|key, _| {
            let keep = !key.starts_with(prefix);
            if !keep {
                removed.fetch_add(1, Ordering::Relaxed);
            }
            keep
        });
        removed.into_inner()
    }

    /// Keys stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Bytes stored (by the weight above).
    pub fn bytes(&self) -> u64 {
        self.entries.weight()
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(vary: Vec<(HeaderName, Option<HeaderValue>)>, body: &'static [u8]) -> Arc<Stored> {
        Arc::new(Stored {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
            vary,
            arrived: Instant::now(),
            initial_age: Duration::ZERO,
            fresh_for: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            shared_with_auth: false,
            default_ttl: None,
        })
    }

    #[test]
    fn variants_are_told_apart_by_the_vary_values() {
        let store = MemoryStore::new(1 << 20, Arc::default());
        let lang = HeaderName::from_static("accept-language");
        let en = vec![(lang.clone(), Some(HeaderValue::from_static("en")))];
        let none = vec![(lang.clone(), None)];
        store.insert("k", stored(en, b"hello"));
        store.insert("k", stored(none, b"plain"));
        let variants = store.get("k").expect("stored");
        let mut request = HeaderMap::new();
        assert_eq!(
            &variants.for_request(&request).expect("none").body[..],
            b"plain"
        );
        request.insert(lang.clone(), HeaderValue::from_static("en"));
        assert_eq!(
            &variants.for_request(&request).expect("en").body[..],
            b"hello"
        );
        request.insert(lang, HeaderValue::from_static("fr"));
        assert!(variants.for_request(&request).is_none());
    }

    #[test]
    fn the_budget_evicts_and_counts() {
        let evictions = Arc::new(Counter::default());
        let store = MemoryStore::new(64 * 1024, evictions.clone());
        static BODY: [u8; 4096] = [b'x'; 4096];
        for i in 0..64 {
            store.insert(&format!("k{i}"), stored(Vec::new(), &BODY));
        }
        assert!(store.bytes() <= 64 * 1024, "{} bytes", store.bytes());
        assert!(evictions.get() > 0);
    }

    #[test]
    fn purges_by_key_and_prefix() {
        let store = MemoryStore::new(1 << 20, Arc::default());
        for key in ["http://a/x/1", "http://a/x/2", "http://a/y"] {
            store.insert(key, stored(Vec::new(), b"b"));
        }
        assert!(store.remove("http://a/y"));
        assert!(!store.remove("http://a/y"));
        assert_eq!(store.remove_prefix("http://a/x/"), 2);
        assert!(store.is_empty());
    }
}

//! A rate limit whose budget every instance shares, counted in Redis ([`SharedLimit`]).
//!
//! A request does not pay a round trip each: Redis grants an instance a **lease** of a
//! key's budget (up to 1/16 of the room left in the window, at least one request; see
//! [`store`](super::store)), and the instance admits from it locally until it is spent or
//! the window ends. A key far under its limit costs one round trip per lease; a key near it
//! one per request; a key over it one per 1/16 of a window (the refusal is remembered that
//! long).
//!
//! Bounds, while Redis answers: the requests admitted over all instances never exceed the
//! limit (leases are counted in Redis when granted, atomically); an instance may refuse
//! early by at most its unspent lease (at most 1/16 of the room). When Redis fails, is
//! slower than the limit's timeout, or is being reconnected to, the declared [`Fallback`]
//! decides, and every instance's local limiter keeps counting so that `local` has the
//! recent past.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::store::{Grant, RedisStore};
pub use crate::metrics::SharedLimitCounts;

/// Keys with a lease or a remembered refusal held per limit; past it the least used are
/// forgotten (their next request asks Redis again).
const LEASED_KEYS: usize = 65_536;
/// The decision timeout when none is declared.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5);

/// What decides when Redis cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// This instance's own count against the whole limit (each instance admits up to the
    /// limit: N instances admit up to N times it).
    #[default]
    Local,
    /// Admit every request.
    Open,
    /// Refuse every request (429).
    Closed,
}

impl Fallback {
    /// `local`, `open` or `closed`.
    pub fn parse(text: &str) -> Result<Fallback, String> {
        match text {
            "local" => Ok(Fallback::Local),
            "open" => Ok(Fallback::Open),
            "closed" => Ok(Fallback::Closed),
            other => Err(format!(
                "unknown fallback {other:?}: write \"local\", \"open\" or \"closed\""
            )),
        }
    }

    /// The name [`parse`](Fallback::parse) reads.
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Local => "local",
            Fallback::Open => "open",
            Fallback::Closed => "closed",
        }
    }
}

/// Where a shared limit's counts live and what happens when they cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSettings {
    /// `redis://HOST:PORT/DB`.
    pub url: String,
    /// The longest a request waits for Redis's answer.
    pub timeout: Duration,
    /// What decides when Redis does not answer in time.
    pub fallback: Fallback,
}

impl SharedSettings {
    /// Counts in the Redis at `url`, with the default timeout (5 ms) and fallback (local).
    pub fn new(url: impl Into<String>) -> Self {
        SharedSettings {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            fallback: Fallback::Local,
        }
    }
}

/// What an instance holds of one key's budget: requests left to admit, or a refusal to
/// repeat, until `until` (milliseconds on the limit's clock).
struct Lease {
    left: AtomicU64,
    until: u64,
    /// Granted nothing: the key's requests are refused until `until`.
    refused: bool,
}

/// The shared part of a rate limit: its key space in Redis and this instance's leases.
pub struct SharedLimit {
    settings: SharedSettings,
    store: Arc<RedisStore>,
    /// `pingora-dsl:rl:SCOPE:`, before each key.
    prefix: Vec<u8>,
    leases: quick_cache::sync::Cache<Box<[u8]>, Arc<Lease>>,
    epoch: Instant,
    counts: Arc<SharedLimitCounts>,
}

impl std::fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimit")
            .field("settings", &self.settings)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish_non_exhaustive()
    }
}

/// What the leases say of a request without asking Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Admitted from a lease.
    Admit,
    /// Refused: the budget was spent when last asked.
    Refuse,
    /// Redis cannot be asked now: the fallback decides.
    Fallback,
    /// Unknown: ask Redis.
    Ask,
}

impl SharedLimit {
    /// Counts under `scope` (the same on every instance for the same declared limit, e.g.
    /// `api:proxy:0`) in the Redis `settings` name.
    pub fn new(settings: SharedSettings, scope: &str) -> Self {
        SharedLimit {
            store: RedisStore::for_url(&settings.url),
            settings,
            prefix: format!("pingora-dsl:rl:{scope}:").into_bytes(),
            leases: quick_cache::sync::Cache::new(LEASED_KEYS),
            epoch: Instant::now(),
            counts: Arc::default(),
        }
    }

    /// Where the counts live and the fallback.
    pub fn settings(&self) -> &SharedSettings {
        &self.settings
    }

    /// The decisions so far.
    pub fn counts(&self) -> &Arc<SharedLimitCounts> {
        &self.counts
    }

    /// The same limit counting in the store `settings` name (a config file's), keeping
    /// its scope.
    pub fn with_settings(&self, settings: SharedSettings) -> SharedLimit {
        let prefix = String::from_utf8_lossy(&self.prefix);
        let scope = prefix
            .trim_start_matches("pingora-dsl:rl:")
            .trim_end_matches(':');
        SharedLimit::new(settings, scope)
    }

    /// The decision for `key` if this instance knows it without a round trip.
    pub fn known(&self, key: &[u8]) -> Known {
        if let Some(lease) = self.leases.get(key).filter(|l| l.until > self.millis()) {
            if lease.refused {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                return Known::Refuse;
            }
            let taken = lease
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if taken.is_ok() {
                self.counts.leased.fetch_add(1, Ordering::Relaxed);
                return Known::Admit;
            }
        }
        if self.store.available() {
            Known::Ask
        } else {
            self.counts.fallback.fetch_add(1, Ordering::Relaxed);
            Known::Fallback
        }
    }

    /// Asks Redis for `key` (waiting at most the timeout): `Some(over)`, or `None` when
    /// Redis gave no answer and the fallback decides.
    pub async fn ask(&self, key: &[u8], limit: u64, window: Duration) -> Option<bool> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        match self
            .store
            .lease(&full, limit, window, self.settings.timeout)
            .await
        {
            Ok(grant) => {
                self.counts.asked.fetch_add(1, Ordering::Relaxed);
                Some(self.take(key, grant, window))
            }
            Err(_) => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                self.counts.fallback.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps what Redis granted (one request of it for this one): whether it is over.
    fn take(&self, key: &[u8], grant: Grant, window: Duration) -> bool {
        let now = self.millis();
        if grant.requests == 0 {
            // Remembered for 1/16 of the window (or what is left of it): the estimate
            // slides, so room comes back before the window ends.
            let remember = grant.expires_in.min(window / 16).as_millis() as u64;
            self.leases.insert(
                key.into(),
                Arc::new(Lease {
                    left: AtomicU64::new(0),
                    until: now + remember.max(1),
                    refused: true,
                }),
            );
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.leases.insert(
            key.into(),
            Arc::new(Lease {
                left: AtomicU64::new(grant.requests - 1),
                until: now + grant.expires_in.as_millis() as u64,
                refused: false,
            }),
        );
        false
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The fallback's verdict, given the local limiter's (`local_over`).
    pub fn fallback_over(&self, local_over: bool) -> bool {
        match self.settings.fallback {
            Fallback::Local => local_over,
            Fallback::Open => false,
            Fallback::Closed => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable(fallback: Fallback) -> SharedLimit {
        let mut settings = SharedSettings::new("redis://127.0.0.1:1/0");
        settings.fallback = fallback;
        SharedLimit::new(settings, "test:proxy:0")
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_admits_locally_until_spent_then_redis_is_asked_again() {
        let limit = unreachable(Fallback::Local);
        assert_eq!(limit.known(b"k"), Known::Fallback, "no connection yet");
        let grant = Grant {
            requests: 3,
            expires_in: Duration::from_secs(10),
        };
        assert!(
            !limit.take(b"k", grant, Duration::from_secs(60)),
            "one of three"
        );
        assert_eq!(limit.known(b"k"), Known::Admit);
        assert_eq!(limit.known(b"k"), Known::Admit);
        assert_eq!(limit.known(b"k"), Known::Fallback, "spent: Redis is asked");
        assert_eq!(limit.known(b"other"), Known::Fallback, "keys are apart");
        assert_eq!(limit.counts().leased.load(Ordering::Relaxed), 2);

        // A lease ends with its window.
        assert!(!limit.take(b"w", grant, Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(limit.known(b"w"), Known::Fallback);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_remembered_for_a_sixteenth_of_the_window() {
        let limit = unreachable(Fallback::Open);
        let spent = Grant {
            requests: 0,
            expires_in: Duration::from_secs(30),
        };
        assert!(limit.take(b"k", spent, Duration::from_secs(16)), "over");
        assert_eq!(limit.known(b"k"), Known::Refuse);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(limit.known(b"k"), Known::Refuse);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(limit.known(b"k"), Known::Fallback, "asked again after 1 s");
    }

    #[test]
    fn fallbacks_decide_as_declared() {
        assert!(unreachable(Fallback::Local).fallback_over(true));
        assert!(!unreachable(Fallback::Local).fallback_over(false));
        assert!(!unreachable(Fallback::Open).fallback_over(true));
        assert!(unreachable(Fallback::Closed).fallback_over(false));
        assert_eq!(Fallback::parse("closed"), Ok(Fallback::Closed));
        assert!(Fallback::parse("maybe").is_err());
    }
}

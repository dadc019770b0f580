//! The Redis a shared rate limit keeps its counts in ([`RedisStore`]): a few multiplexed
//! connections made in the background (never on a request's path), remade after a failure
//! with backoff, and a breaker that stops asking a Redis that failed or was slow until the
//! backoff has passed.
//!
//! One store per Redis URL in a process, whatever the number of limits using it
//! ([`RedisStore::for_url`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

/// Multiplexed connections per store: requests on one are pipelined, so two are enough for
/// one core's decisions; the second keeps decisions going while the first reconnects.
const CONNECTIONS: usize = 2;
/// The time a connection may take to open (the decisions meanwhile use the fallback).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The first wait after a failure, doubled after each failure in a row up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two attempts on a Redis that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The script that decides: on Redis's clock (so instances' clocks do not matter), the
/// sliding-window estimate of the key's requests (`previous * (1 - elapsed) + current`, as
/// the local limiter counts), and if there is room, a lease of up to 1/16 of it (at least
/// one request) added to the current window's count. Returns the lease (0: no room) and
/// the milliseconds left in the window, when the lease expires.
const LEASE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local w = math.floor(now / window)
local elapsed = (now % window) / window
local current_key = KEYS[1] .. ':' .. w
local current = tonumber(redis.call('GET', current_key) or '0')
local previous = tonumber(redis.call('GET', KEYS[1] .. ':' .. (w - 1)) or '0')
local room = limit - (math.floor(previous * (1 - elapsed) + 0.5) + current)
local left = window - (now % window)
if room <= 0 then
  return {0, left}
end
local lease = math.max(1, math.floor(room / 16))
redis.call('INCRBY', current_key, lease)
redis.call('PEXPIRE', current_key, window * 2 + 1000)
return {lease, left}
";

/// What Redis granted a key: requests it may admit, until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Requests admitted (0: the key is at its limit).
    pub requests: u64,
    /// Time until the window ends (and the grant with it).
    pub expires_in: Duration,
}

/// Why Redis gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No connection yet, or the breaker is open after a failure.
    Unavailable,
    /// No answer within the limit's timeout.
    Timeout,
    /// The command failed (connection lost, a Redis error).
    Failed,
}

/// Connections to one Redis, shared by every limit of the process that uses it.
pub struct RedisStore {
    url: String,
    connections: Box<[ArcSwapOption<ConnectionManager>]>,
    next: AtomicUsize,
    connecting: AtomicBool,
    /// Consecutive failures, for the backoff.
    failures: AtomicU32,
    /// Milliseconds since `epoch` before which requests do not ask (the breaker).
    open_until: AtomicU64,
    epoch: Instant,
    script: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The process's store for `url`, made on first use.
    pub fn for_url(url: &str) -> Arc<RedisStore> {
        static STORES: OnceLock<Mutex<HashMap<String, Weak<RedisStore>>>> = OnceLock::new();
        let mut stores = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = stores.get(url).and_then(Weak::upgrade) {
            return store;
        }
        let store = Arc::new(RedisStore::new(url));
        stores.insert(url.to_owned(), Arc::downgrade(&store));
        store
    }

    fn new(url: &str) -> Self {
        RedisStore {
            url: url.to_owned(),
            connections: (0..CONNECTIONS).map(|_| ArcSwapOption::empty()).collect(),
            next: AtomicUsize::new(0),
            connecting: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            epoch: Instant::now(),
            script: redis::Script::new(LEASE_SCRIPT),
        }
    }

    /// Whether `url` is one this store can use: `redis://HOST[:PORT][/DB]` or
    /// `redis+unix:///PATH` (TLS, `rediss://`, is not built in).
    pub fn check_url(url: &str) -> Result<(), String> {
        use redis::IntoConnectionInfo;
        if url.starts_with("rediss://") {
            return Err(format!(
                "{url:?}: TLS to Redis (`rediss://`) is not built in; use `redis://` on a private network or a local TLS tunnel"
            ));
        }
        url.into_connection_info()
            .map(|_| ())
            .map_err(|e| format!("{url:?} is not a Redis URL ({e}): write `redis://HOST:PORT/DB`"))
    }

    /// The URL it connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks for a lease of `key`'s budget of `limit` requests per `window`, waiting at most
    /// `timeout`. A failure or a timeout opens the breaker for the backoff.
    pub async fn lease(
        self: &Arc<Self>,
        key: &[u8],
        limit: u64,
        window: Duration,
        timeout: Duration,
    ) -> Result<Grant, StoreError> {
        let Some(mut connection) = self.connection() else {
            return Err(StoreError::Unavailable);
        };
        let window_ms = window.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut invocation = self.script.key(key);
        invocation.arg(limit).arg(window_ms);
        match tokio::time::timeout(timeout, invocation.invoke_async(&mut connection)).await {
            Ok(Ok((requests, left_ms))) => {
                self.failures.store(0, Ordering::Relaxed);
                Ok(Grant {
                    requests,
                    expires_in: Duration::from_millis(left_ms),
                })
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                Err(StoreError::Failed)
            }
            Err(_) => {
                self.failed(&format!("no answer within {timeout:?}"));
                Err(StoreError::Timeout)
            }
        }
    }

    /// Whether a request may ask now: the breaker is closed and a connection is open.
    /// Without one, starts connecting (in the background) and says no.
    pub fn available(self: &Arc<Self>) -> bool {
        if self.millis() < self.open_until.load(Ordering::Relaxed) {
            return false;
        }
        if self.connections.iter().any(|c| c.load().is_some()) {
            return true;
        }
        self.start_connecting();
        false
    }

    /// A connection to ask on, if the breaker is closed and one is open; else starts
    /// connecting (once) in the background.
    fn connection(self: &Arc<Self>) -> Option<ConnectionManager> {
        if self.millis() < self.open_until.load(Ordering::Relaxed) {
            return None;
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.connections.len();
        let open = (0..n).find_map(|i| self.connections[(first + i) % n].load_full());
        if open.is_none() {
            self.start_connecting();
        }
        open.map(|connection| (*connection).clone())
    }

    /// Opens the breaker for the backoff after a failure, and logs it.
    fn failed(&self, why: &str) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let backoff = backoff(failures);
        self.open_until.store(
            self.millis() + backoff.as_millis() as u64,
            Ordering::Relaxed,
        );
        // One line per failure in a row up to 3, then one in 64: a Redis that is down
        // does not flood the log.
        if failures <= 3 || failures.is_multiple_of(64) {
            tracing::warn!(redis = %self.url, failures, error = %why, next_try_in = ?backoff, "shared rate limit: Redis failed; deciding by the fallback meanwhile");
        }
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Connects every slot in a background task (on the current runtime), retrying with
    /// backoff until each has a connection. The connections reconnect by themselves
    /// afterwards.
    fn start_connecting(self: &Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.connecting.store(false, Ordering::Release);
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            let mut attempt: u32 = 0;
            for slot in store.connections.iter() {
                while slot.load().is_none() {
                    match connect(&store.url).await {
                        Ok(connection) => {
                            slot.store(Some(Arc::new(connection)));
                            tracing::info!(redis = %store.url, "shared rate limit: connected to Redis");
                        }
                        Err(e) => {
                            attempt += 1;
                            if attempt <= 3 || attempt.is_multiple_of(64) {
                                tracing::warn!(redis = %store.url, error = %e, "shared rate limit: cannot connect to Redis; retrying");
                            }
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                    }
                }
            }
            store.connecting.store(false, Ordering::Release);
        });
    }
}

/// One multiplexed connection that reconnects by itself after a failure.
async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_number_of_retries(1)
        .set_max_delay(MAX_BACKOFF.as_millis() as u64);
    match tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(connection) => connection,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no connection within 2s",
        ))),
    }
}

/// The wait after `failures` failures in a row: 50 ms doubled each time, at most 2 s.
fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(10));
    doubled.min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u128> = (1..=8).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn urls_are_checked_with_clear_errors() {
        assert!(RedisStore::check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(RedisStore::check_url("redis+unix:///run/redis.sock").is_ok());
        let e = RedisStore::check_url("rediss://cache:6380").expect_err("no TLS");
        assert!(e.contains("not built in"), "{e}");
        let e = RedisStore::check_url("http://cache:6379").expect_err("not redis");
        assert!(e.contains("redis://HOST:PORT/DB"), "{e}");
    }

    #[test]
    fn one_store_per_url() {
        let a = RedisStore::for_url("redis://127.0.0.1:1/0");
        let b = RedisStore::for_url("redis://127.0.0.1:1/0");
        let c = RedisStore::for_url("redis://127.0.0.1:2/0");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}

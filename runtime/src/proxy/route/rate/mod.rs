//! Counting events per key over a sliding window, lock-free: the basis of rate limits.
//!
//! [`Rate`] keeps, per key, the count of the current window and of the previous one, and
//! estimates the events of the last full window as `previous * (1 - elapsed) + current`
//! (elapsed: the fraction of the current window gone by) — the sliding-window estimate.
//! Keys are hashed into a fixed table of atomic counters, two rows with independent hashes
//! (a count-min sketch): memory stays fixed whatever the number of clients, and a key's
//! estimate is the smaller of its two counters, so a collision can only overcount, and
//! only when both rows collide.
//!
//! [`RateLimit`] applies a limit to a key taken from the request: the client's IP, a
//! header's value, or the route. A limit may be shared by every instance, counted in Redis
//! ([`shared`]): its local count then serves as the fallback when Redis cannot answer.

pub mod shared;
pub mod store;

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use shared::{Known, SharedLimit, SharedSettings};

/// Counters per row of the sketch.
const SLOTS: usize = 4096;
/// Rows of the sketch.
const ROWS: usize = 2;

/// One counter: which window it counts, and the counts of that window and the one before.
#[derive(Default)]
struct Slot {
    window: AtomicU64,
    current: AtomicU64,
    previous: AtomicU64,
}

/// Events per key over a sliding window of fixed length.
pub struct Rate {
    window: Duration,
    start: Instant,
    rows: Box<[Slot]>,
    seeds: [rustc_hash::FxBuildHasher; ROWS],
}

impl std::fmt::Debug for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rate")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Rate {
    /// A rate over windows of `window` (at least 1 ms).
    pub fn new(window: Duration) -> Self {
        Rate {
            window: window.max(Duration::from_millis(1)),
            start: Instant::now(),
            rows: (0..SLOTS * ROWS).map(|_| Slot::default()).collect(),
            seeds: Default::default(),
        }
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts one event for `key` and returns the estimated events of the last window,
    /// this one included.
    pub fn observe(&self, key: &[u8]) -> u64 {
        let (window, elapsed) = self.now();
        let mut estimate = u64::MAX;
        for row in 0..ROWS {
            let slot = self.slot(row, key);
            rotate(slot, window);
            let current = slot.current.fetch_add(1, Ordering::Relaxed) + 1;
            let previous = slot.previous.load(Ordering::Relaxed);
            estimate = estimate.min(sliding(previous, current, elapsed));
        }
        estimate
    }

    /// The estimated events of the last window for `key`, without counting one.
    pub fn estimate(&self, key: &[u8]) -> u64 {
        let (window, elapsed) = self.now();
        let mut estimate = u64::MAX;
        for row in 0..ROWS {
            let slot = self.slot(row, key);
            rotate(slot, window);
            let current = slot.current.load(Ordering::Relaxed);
            let previous = slot.previous.load(Ordering::Relaxed);
            estimate = estimate.min(sliding(previous, current, elapsed));
        }
        estimate
    }

    /// The current window's number and the fraction of it gone by.
    fn now(&self) -> (u64, f64) {
        let since = self.start.elapsed().as_nanos();
        let len = self.window.as_nanos().max(1);
        let window = (since / len) as u64;
        let elapsed = (since % len) as f64 / len as f64;
        (window, elapsed)
    }

    fn slot(&self, row: usize, key: &[u8]) -> &Slot {
        let mut h = self.seeds[row].build_hasher();
        h.write_usize(row.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        h.write(key);
        &self.rows[row * SLOTS + (h.finish() as usize % SLOTS)]
    }
}

/// Moves `slot` to `window`: the current count becomes the previous one if it was the
/// window just before, else both start from zero. Racing rotations may lose a few counts
/// at a window's edge, which an estimate tolerates.
fn rotate(slot: &Slot, window: u64) {
    let seen = slot.window.load(Ordering::Acquire);
    if seen == window {
        return;
    }
    if slot
        .window
        .compare_exchange(seen, window, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let carried = if seen + 1 == window {
            slot.current.swap(0, Ordering::AcqRel)
        } else {
            slot.current.store(0, Ordering::Release);
            0
        };
        slot.previous.store(carried, Ordering::Release);
    }
}

fn verdict(over: bool) -> Verdict {
    if over {
        Verdict::Refuse
    } else {
        Verdict::Admit
    }
}

fn sliding(previous: u64, current: u64, elapsed: f64) -> u64 {
    (previous as f64 * (1.0 - elapsed)).round() as u64 + current
}

/// What a [`RateLimit`] counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's IP address.
    ClientIp,
    /// A request header's value (requests without it share one budget).
    Header(http::HeaderName),
    /// The matched route: each route has its own budget.
    Route,
}

/// A limit of `limit` requests per window per key: requests over it are answered with
/// 429 and a `Retry-After`.
#[derive(Debug)]
pub struct RateLimit {
    rate: Rate,
    limit: u64,
    key: RateKey,
    shared: Option<SharedLimit>,
}

/// A rate limit's verdict on a request, as far as it can tell without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit.
    Admit,
    /// Over it.
    Refuse,
    /// A shared limit that must ask Redis: [`RateLimit::ask`].
    Ask,
}

impl RateLimit {
    /// At most `limit` requests per `window` for each value of `key`.
    pub fn new(limit: u64, window: Duration, key: RateKey) -> Self {
        RateLimit {
            rate: Rate::new(window),
            limit,
            key,
            shared: None,
        }
    }

    /// The same limit with its budget shared by every instance counting under `scope`
    /// in the Redis of `settings` (see [`shared`]).
    pub fn shared(mut self, settings: SharedSettings, scope: &str) -> Self {
        self.shared = Some(SharedLimit::new(settings, scope));
        self
    }

    /// Its shared part, if it is shared.
    pub fn shared_part(&self) -> Option<&SharedLimit> {
        self.shared.as_ref()
    }

    /// Moves a shared limit to the store `settings` names (a config file's); `false` if
    /// the limit is not shared.
    pub fn set_shared_settings(&mut self, settings: SharedSettings) -> bool {
        match &mut self.shared {
            Some(shared) => {
                *shared = shared.with_settings(settings);
                true
            }
            None => false,
        }
    }

    /// The most requests per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window the limit counts over.
    pub fn window(&self) -> Duration {
        self.rate.window()
    }

    /// Counts a request with key `value` and gives the verdict if it needs no wait.
    pub fn check(&self, value: &[u8]) -> Verdict {
        let local_over = self.rate.observe(value) > self.limit;
        let Some(shared) = &self.shared else {
            return verdict(local_over);
        };
        match shared.known(value) {
            Known::Admit => Verdict::Admit,
            Known::Refuse => Verdict::Refuse,
            Known::Fallback => verdict(shared.fallback_over(local_over)),
            Known::Ask => Verdict::Ask,
        }
    }

    /// For a [`Verdict::Ask`]: asks Redis (within the limit's timeout) whether the request
    /// with key `value` is over; the fallback decides when Redis does not answer.
    pub async fn ask(&self, value: &[u8]) -> bool {
        let Some(shared) = &self.shared else {
            return self.rate.estimate(value) > self.limit;
        };
        match shared.ask(value, self.limit, self.rate.window()).await {
            Some(over) => over,
            None => shared.fallback_over(self.rate.estimate(value) > self.limit),
        }
    }

    /// What requests are counted by.
    pub fn key(&self) -> &RateKey {
        &self.key
    }

    /// Counts a request with key `value` and says whether it is over the local limit (a
    /// shared limit's count on this instance alone).
    pub fn over(&self, value: &[u8]) -> bool {
        self.rate.observe(value) > self.limit
    }

    /// The `Retry-After` seconds to send with a refusal: the window, rounded up.
    pub fn retry_after_secs(&self) -> u64 {
        self.rate.window().as_millis().div_ceil(1000).max(1) as u64
    }

    /// The key bytes of a request from `client`, with `headers`, on route `route`.
    pub fn key_of<'a>(
        &self,
        client: IpAddr,
        headers: &'a http::HeaderMap,
        route: Option<usize>,
        buf: &'a mut [u8; 16],
    ) -> &'a [u8] {
        match &self.key {
            RateKey::ClientIp => match client {
                IpAddr::V4(ip) => {
                    buf[..4].copy_from_slice(&ip.octets());
                    &buf[..4]
                }
                IpAddr::V6(ip) => {
                    buf.copy_from_slice(&ip.octets());
                    &buf[..]
                }
            },
            RateKey::Header(name) => headers.get(name).map_or(&[][..], |v| v.as_bytes()),
            RateKey::Route => {
                let index = route.map_or(u64::MAX, |r| r as u64);
                buf[..8].copy_from_slice(&index.to_le_bytes());
                &buf[..8]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_estimate_slides_from_one_window_to_the_next() {
        let rate = Rate::new(Duration::from_secs(1));
        for _ in 0..100 {
            rate.observe(b"a");
        }
        assert_eq!(rate.estimate(b"a"), 100);
        assert_eq!(rate.estimate(b"b"), 0, "other keys are apart");
        // A quarter into the next window: 75% of the previous count still weighs.
        tokio::time::advance(Duration::from_millis(1250)).await;
        let e = rate.estimate(b"a");
        assert!((74..=76).contains(&e), "{e}");
        // Two windows later nothing is left.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(rate.estimate(b"a"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_refuses_over_it_and_forgives_after_the_window() {
        let limit = RateLimit::new(3, Duration::from_secs(2), RateKey::ClientIp);
        let verdicts: Vec<bool> = (0..5).map(|_| limit.over(b"10.0.0.1")).collect();
        assert_eq!(verdicts, [false, false, false, true, true]);
        assert!(!limit.over(b"10.0.0.2"));
        assert_eq!(limit.retry_after_secs(), 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!limit.over(b"10.0.0.1"));
    }
}

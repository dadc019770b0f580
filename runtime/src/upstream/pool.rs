//! The upstream connection pool: idle HTTP/1.1 connections kept per peer, reused LIFO.
//!
//! A connection enters the pool when its response body has been read to the end, and leaves
//! it when a request checks it out, when it stayed idle longer than its idle timeout (a
//! background sweep closes it), when the peer's idle list is over the cap (the oldest goes),
//! or when the origin closed it (such a connection is skipped at checkout, never used).
//! Connections driven by hyper and those of the direct path ([`H1Conn`]) are kept apart:
//! each kind can only carry its own requests.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::http2::SendRequest as Http2Sender;
use rustc_hash::FxHashMap;
use tokio::time::Instant;

use crate::io_timeout::BusyFlag;
use crate::upstream::h1::H1Conn;
use crate::upstream::peer::PoolKey;

/// How often idle connections are checked for expiry.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// One upstream HTTP/1.1 connection: hyper's request sender and the flag arming its read
/// timeout while a request is in flight.
pub(crate) struct Conn<B> {
    pub(crate) sender: SendRequest<B>,
    pub(crate) busy: BusyFlag,
}

/// A connection that can wait in the pool.
pub(crate) trait Pooled {
    /// Whether the connection can still take a request (the origin has not closed it).
    fn is_open(&self) -> bool;
}

impl<B> Pooled for Conn<B> {
    fn is_open(&self) -> bool {
        // hyper's connection task notices a close while idle.
        !self.sender.is_closed()
    }
}

impl Pooled for Box<H1Conn> {
    fn is_open(&self) -> bool {
        self.is_clean()
    }
}

struct IdleConn<C> {
    conn: C,
    expires: Instant,
}

impl<C: Pooled> IdleConn<C> {
    fn usable(&self, now: Instant) -> bool {
        self.expires > now && self.conn.is_open()
    }
}

/// Idle connections of one kind, per peer, oldest first: checkout takes from the back (LIFO
/// keeps the warmest connections busy), eviction from the front. Keyed with a fast
/// non-cryptographic hash: keys are our own peers, not client input.
struct IdleLists<C>(Mutex<FxHashMap<PoolKey, VecDeque<IdleConn<C>>>>);

impl<C: Pooled> IdleLists<C> {
    fn new() -> Self {
        IdleLists(Mutex::new(FxHashMap::default()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<PoolKey, VecDeque<IdleConn<C>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the most recently used live connection to `key`, if any.
    fn checkout(&self, key: &PoolKey) -> Option<C> {
        let now = Instant::now();
        let mut dead = Vec::new();
        let found = {
            let mut idle = self.lock();
            let list = idle.get_mut(key)?;
            let mut found = None;
            while let Some(c) = list.pop_back() {
                if c.usable(now) {
                    found = Some(c.conn);
                    break;
                }
                dead.push(c);
            }
            found
        };
        // Dead connections are dropped outside the lock.
        drop(dead);
        found
    }

    /// Keeps `conn` for `idle_timeout`, evicting the oldest beyond `max` per peer.
    fn checkin(&self, key: PoolKey, conn: C, idle_timeout: Duration, max: usize) {
        let evicted = {
            let mut idle = self.lock();
            let list = idle.entry(key).or_default();
            list.push_back(IdleConn {
                conn,
                expires: Instant::now() + idle_timeout,
            });
            if list.len() > max {
                list.pop_front()
            } else {
                None
            }
        };
        drop(evicted);
    }

    fn count(&self, key: &PoolKey) -> usize {
        self.lock().get(key).map_or(0, VecDeque::len)
    }

    /// Closes expired and dead connections.
    fn sweep(&self) {
        let now = Instant::now();
        let mut dead = Vec::new();
        {
            let mut idle = self.lock();
            idle.retain(|_, list| {
                let (live, expired): (VecDeque<_>, VecDeque<_>) =
                    list.drain(..).partition(|c| c.usable(now));
                *list = live;
                dead.extend(expired);
                !list.is_empty()
            });
        }
        drop(dead);
    }
}

/// Idle connections per peer. Shared by every request of a client or proxy.
pub(crate) struct Pool<B> {
    /// Idle connections driven by hyper.
    idle: IdleLists<Conn<B>>,
    /// Idle connections of the direct path.
    direct: IdleLists<Box<H1Conn>>,
    /// One multiplexed HTTP/2 connection per peer, shared by all its requests.
    h2: Mutex<FxHashMap<PoolKey, Http2Sender<B>>>,
    /// Serialises connection attempts to peers that may speak HTTP/2.
    h2_gates: Mutex<FxHashMap<PoolKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Peers whose ALPN answer was HTTP/1.1.
    h1_negotiated: Mutex<rustc_hash::FxHashSet<PoolKey>>,
    max_idle_per_peer: usize,
    sweeper_started: AtomicBool,
}

impl<B: Send + 'static> Pool<B> {
    pub(crate) fn new(max_idle_per_peer: usize) -> Self {
        Pool {
            idle: IdleLists::new(),
            direct: IdleLists::new(),
            h2: Mutex::new(FxHashMap::default()),
            h2_gates: Mutex::new(FxHashMap::default()),
            h1_negotiated: Mutex::new(rustc_hash::FxHashSet::default()),
            max_idle_per_peer,
            sweeper_started: AtomicBool::new(false),
        }
    }

    /// Takes the most recently used live connection to `key`, if any.
    pub(crate) fn checkout(&self, key: &PoolKey) -> Option<Conn<B>> {
        self.idle.checkout(key)
    }

    /// Returns a connection whose last response is complete, to be reused for `idle_timeout`.
    pub(crate) fn checkin(self: &Arc<Self>, key: PoolKey, conn: Conn<B>, idle_timeout: Duration) {
        if self.max_idle_per_peer == 0 || conn.sender.is_closed() {
            return;
        }
        conn.busy.set(false);
        self.idle
            .checkin(key, conn, idle_timeout, self.max_idle_per_peer);
        self.start_sweeper();
    }

    /// Takes the most recently used clean direct-path connection to `key`, if any.
    pub(crate) fn checkout_direct(&self, key: &PoolKey) -> Option<Box<H1Conn>> {
        self.direct.checkout(key)
    }

    /// Returns a direct-path connection whose last response is complete.
    pub(crate) fn checkin_direct(
        self: &Arc<Self>,
        key: PoolKey,
        conn: Box<H1Conn>,
        idle_timeout: Duration,
    ) {
        if self.max_idle_per_peer == 0 {
            return;
        }
        conn.busy.set(false);
        self.direct
            .checkin(key, conn, idle_timeout, self.max_idle_per_peer);
        self.start_sweeper();
    }

    fn start_sweeper(self: &Arc<Self>) {
        if !self.sweeper_started.load(Ordering::Relaxed)
            && !self.sweeper_started.swap(true, Ordering::AcqRel)
        {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// The live HTTP/2 connection to `key`, if any (a handle to share it).
    pub(crate) fn h2_checkout(&self, key: &PoolKey) -> Option<Http2Sender<B>> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        match h2.get(key) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                h2.remove(key);
                None
            }
            None => None,
        }
    }

    /// The lock taken while connecting to `key` when it may speak HTTP/2.
    pub(crate) fn h2_gate(&self, key: &PoolKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.h2_gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.entry(*key).or_default().clone()
    }

    /// Remembers that `key` answered ALPN with HTTP/1.1.
    pub(crate) fn mark_h1(&self, key: PoolKey) {
        let mut h1 = self.h1_negotiated.lock().unwrap_or_else(|p| p.into_inner());
        h1.insert(key);
    }

    /// Whether `key` answered ALPN with HTTP/1.1 before.
    pub(crate) fn negotiated_h1(&self, key: &PoolKey) -> bool {
        let h1 = self.h1_negotiated.lock().unwrap_or_else(|p| p.into_inner());
        h1.contains(key)
    }

    /// Makes `sender` the HTTP/2 connection to `key`.
    pub(crate) fn h2_checkin(&self, key: PoolKey, sender: Http2Sender<B>) {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.insert(key, sender);
    }

    /// Forgets the HTTP/2 connection to `key` if it is still `dead`.
    pub(crate) fn h2_remove(&self, key: &PoolKey, dead: &Http2Sender<B>) {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        if h2
            .get(key)
            .is_some_and(|s| s.is_closed() || dead.is_closed())
        {
            h2.remove(key);
        }
    }

    /// Number of idle connections kept for `key`.
    pub(crate) fn idle_count(&self, key: &PoolKey) -> usize {
        self.idle.count(key) + self.direct.count(key)
    }

    fn sweep_once(&self) {
        self.idle.sweep();
        self.direct.sweep();
    }
}

/// Closes expired and dead idle connections until the pool is dropped.
async fn sweep<B: Send + 'static>(pool: Weak<Pool<B>>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep_once();
    }
}

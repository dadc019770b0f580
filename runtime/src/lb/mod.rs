//! Choosing a peer: weighted [`Backend`]s, their live state ([`PeerState`]: requests in flight,
//! health, ejection), and the selection [`Strategy`].
//!
//! Strategies:
//! - smooth weighted round robin (nginx's algorithm: a peer of weight 3 gets its turns
//!   spread out, not in a burst), as a precomputed cycle walked with one atomic counter;
//! - weighted random;
//! - least connections, as power-of-two-choices on in-flight requests per unit of weight;
//! - consistent hashing on a request key, Ketama-compatible (libketama's MD5 points, 160
//!   per unit of weight): when one of N peers goes, about 1/N of the keys move;
//! - a plain hash of the key (FNV-1a, weighted), for when reshuffling on change is fine;
//! - anything else through [`Selection`].
//!
//! A pick skips peers that are not [`available`](PeerState::is_available) (failed health
//! checks, or ejected after consecutive failures) by asking the strategy again for the
//! next candidate.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod attempts;
pub mod discovery;
pub mod etcd;
mod group;
mod health;
mod sticky;

pub use attempts::{Attempts, MAX_RETRIES};
pub use group::{GroupTask, PassiveHealth, RequestKey, UpstreamGroup};
pub use health::{HealthCheck, HealthChecker, HealthKind};
pub use sticky::{cookie, peer_id, PeerId, StickyCookie};

use crate::listen::resolve;
use crate::metrics::PeerStats;

/// The largest weight a backend may have (as in HAProxy). Keeps the round-robin schedule,
/// which has one slot per unit of weight, small.
pub const MAX_WEIGHT: u32 = pingora_dsl_rules::MAX_WEIGHT;

/// Ketama points per unit of weight (libketama: 40 MD5 digests of 4 points each).
const KETAMA_POINTS_PER_WEIGHT: u32 = 160;

/// One upstream server in a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Its share of the traffic relative to the pool's other backends, `1..=MAX_WEIGHT`.
    pub weight: u32,
}

impl Backend {
    /// A backend at `addr` with weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        Backend { addr, weight: 1 }
    }

    /// A backend at `addr` with `weight`, clamped to `1..=MAX_WEIGHT`.
    pub fn weighted(addr: SocketAddr, weight: u32) -> Self {
        Backend {
            addr,
            weight: weight.clamp(1, MAX_WEIGHT),
        }
    }
}

/// Milliseconds since the first call, as a cheap shared clock for ejection deadlines.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A backend and its live state, shared by every worker.
#[derive(Debug)]
pub struct PeerState {
    backend: Backend,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
    /// Consecutive failed requests (passive health).
    failures: AtomicU32,
    /// While `now_ms()` is below this, the peer is ejected (0: not ejected).
    ejected_until: AtomicU64,
    /// Consecutive active-check results, for the rise/fall thresholds.
    check_successes: AtomicU32,
    check_failures: AtomicU32,
    /// Counters for metrics and the status page.
    stats: Arc<PeerStats>,
    /// Its name in a stickiness cookie.
    sticky_id: PeerId,
}

impl PeerState {
    /// A healthy peer with nothing in flight.
    pub fn new(backend: Backend) -> Self {
        PeerState {
            sticky_id: peer_id(backend.addr),
            backend,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            check_successes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
            stats: Arc::default(),
        }
    }

    /// The peer's counters (requests, errors, connections, timings).
    pub fn stats(&self) -> &Arc<PeerStats> {
        &self.stats
    }

    /// The opaque id a stickiness cookie names this peer by.
    pub fn sticky_id(&self) -> &PeerId {
        &self.sticky_id
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    /// Requests currently in flight to this peer.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The active health checks' verdict (true until a check says otherwise).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the peer is ejected after consecutive failed requests.
    pub fn is_ejected(&self) -> bool {
        // The common case (never ejected) reads no clock.
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => false,
            until => until > now_ms(),
        }
    }

    /// A peer for `backend` (a new weight, say) that keeps this one's health verdict and
    /// ejection; requests in flight stay counted on this one.
    fn carried_over(&self, backend: Backend) -> PeerState {
        let mut peer = PeerState::new(backend);
        peer.stats = self.stats.clone();
        peer.healthy.store(self.is_healthy(), Ordering::Relaxed);
        peer.ejected_until.store(
            self.ejected_until.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        peer.failures
            .store(self.failures.load(Ordering::Relaxed), Ordering::Relaxed);
        peer
    }

    /// Whether requests may go to this peer: healthy and not ejected.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A request to this peer succeeded: the failure streak ends.
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request to this peer failed. After `threshold` failures in a row the peer is
    /// ejected for `eject_for`; returns true when this call ejected it.
    pub fn record_failure(&self, threshold: u32, eject_for: Duration) -> bool {
        if self.is_ejected() {
            // Failures of requests that were in flight when it was ejected do not count.
            return false;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        // Only the failure that reaches the threshold ejects (and reports it), even when
        // several fail at once.
        if threshold == 0 || n != threshold {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let until = now_ms() + eject_for.as_millis() as u64;
        self.ejected_until.store(until, Ordering::Relaxed);
        self.stats.ejections.inc();
        true
    }

    /// Records one active health-check result against the `rise`/`fall` thresholds.
    /// Returns `Some(new state)` when the verdict changed.
    pub fn record_check(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.check_failures.store(0, Ordering::Relaxed);
            let n = self.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.is_healthy() && n >= rise.max(1) {
                self.healthy.store(true, Ordering::Relaxed);
                // A peer that passed its checks gets a clean slate.
                self.ejected_until.store(0, Ordering::Relaxed);
                self.failures.store(0, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.check_successes.store(0, Ordering::Relaxed);
            let n = self.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if self.is_healthy() && n >= fall.max(1) {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

/// A request in flight to a peer; dropping it ends the count.
pub struct InFlight(Arc<PeerState>);

impl InFlight {
    /// The peer.
    pub fn peer(&self) -> &Arc<PeerState> {
        &self.0
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InFlight").field(&self.0.addr()).finish()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A user-implemented selection strategy.
pub trait Selection: Send + Sync + 'static {
    /// Index in `0..peers.len()` (never empty) of the peer to try for `key`, on try number
    /// `attempt` (0-based: a strategy should offer another peer when asked again).
    fn pick(&self, key: &[u8], attempt: usize, peers: &[Arc<PeerState>]) -> usize;
}

/// Wraps a user's [`Selection`] for [`Strategy::Custom`] (what `select custom(EXPR)`
/// expands to; a type error here names the missing trait).
pub fn custom_strategy(selection: impl Selection) -> Arc<dyn Selection> {
    Arc::new(selection)
}

/// How a pool picks its peer (the configuration; [`LoadBalancer`] keeps the state).
#[derive(Clone)]
pub enum Strategy {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power-of-two-choices on in-flight requests per unit of weight.
    LeastConnections,
    /// Ketama consistent hashing on the request key.
    ConsistentHash,
    /// FNV-1a hash of the request key, weighted.
    Hash,
    /// A user-implemented strategy.
    Custom(Arc<dyn Selection>),
}

impl fmt::Debug for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::RoundRobin => "RoundRobin",
            Strategy::Random => "Random",
            Strategy::LeastConnections => "LeastConnections",
            Strategy::ConsistentHash => "ConsistentHash",
            Strategy::Hash => "Hash",
            Strategy::Custom(_) => "Custom",
        })
    }
}

impl Strategy {
    /// Smooth weighted round robin.
    pub fn round_robin() -> Self {
        Strategy::RoundRobin
    }

    /// Weighted random.
    pub fn random() -> Self {
        Strategy::Random
    }

    /// Whether the strategy uses the request key (so callers compute one).
    pub fn uses_key(&self) -> bool {
        matches!(
            self,
            Strategy::ConsistentHash | Strategy::Hash | Strategy::Custom(_)
        )
    }

    fn build(&self, backends: &[Backend]) -> Selector {
        match self {
            Strategy::RoundRobin => Selector::RoundRobin {
                next: AtomicUsize::new(0),
                cycle: smooth_weighted_cycle(backends),
            },
            Strategy::Random => Selector::Random(Cumulative::new(backends)),
            Strategy::LeastConnections => Selector::LeastConnections,
            Strategy::ConsistentHash => Selector::Ketama(ketama_ring(backends)),
            Strategy::Hash => Selector::Hash(Cumulative::new(backends)),
            Strategy::Custom(s) => Selector::Custom(s.clone()),
        }
    }
}

/// A strategy's state for one list of backends.
enum Selector {
    RoundRobin {
        next: AtomicUsize,
        cycle: Box<[u32]>,
    },
    Random(Cumulative),
    LeastConnections,
    Ketama(Box<[(u32, u32)]>),
    Hash(Cumulative),
    Custom(Arc<dyn Selection>),
}

impl Selector {
    fn pick(&self, key: &[u8], attempt: usize, peers: &[Arc<PeerState>]) -> usize {
        let n = peers.len();
        match self {
            Selector::RoundRobin { next, cycle } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match cycle.len() {
                    0 => i % n,
                    len => cycle[i % len] as usize,
                }
            }
            Selector::Random(weights) => weights.index(fastrand::u32(..weights.total(n))),
            Selector::LeastConnections => {
                if n == 1 {
                    return 0;
                }
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let load = |i: usize| {
                    let p = &peers[i];
                    // In flight per unit of weight, compared without division.
                    (p.in_flight() as u64 + 1) * 1024 / u64::from(p.backend.weight.max(1))
                };
                let _ = attempt; // every attempt draws a fresh pair
                match (peers[a].is_available(), peers[b].is_available()) {
                    (true, false) => a,
                    (false, true) => b,
                    _ if load(a) <= load(b) => a,
                    _ => b,
                }
            }
            Selector::Ketama(ring) => ketama_pick(ring, ketama_key(key), attempt, n),
            Selector::Hash(weights) => {
                let h = fnv1a(key);
                let total = weights.total(n);
                let start = weights.index((h % u64::from(total)) as u32);
                (start + attempt) % n
            }
            Selector::Custom(s) => s.pick(key, attempt, peers).min(n - 1),
        }
    }
}

/// Running sums of the weights, for weighted random and hash picks.
struct Cumulative(Box<[u32]>);

impl Cumulative {
    fn new(backends: &[Backend]) -> Self {
        let first = backends.first().map_or(1, |b| b.weight);
        if backends.iter().all(|b| b.weight == first) {
            return Cumulative(Box::default());
        }
        Cumulative(
            backends
                .iter()
                .scan(0u32, |sum, b| {
                    *sum += b.weight.max(1);
                    Some(*sum)
                })
                .collect(),
        )
    }

    /// The sum of the weights (`n` when all are equal).
    fn total(&self, n: usize) -> u32 {
        self.0.last().copied().unwrap_or(n as u32).max(1)
    }

    /// The backend that `x` in `0..total` falls on.
    fn index(&self, x: u32) -> usize {
        if self.0.is_empty() {
            x as usize
        } else {
            self.0.partition_point(|&sum| sum <= x)
        }
    }
}

/// nginx's smooth weighted round robin, unrolled into one cycle of backend indices.
fn smooth_weighted_cycle(backends: &[Backend]) -> Box<[u32]> {
    if backends.iter().all(|b| b.weight <= 1) {
        return (0..backends.len() as u32).collect();
    }
    let total: i64 = backends.iter().map(|b| i64::from(b.weight.max(1))).sum();
    let mut current = vec![0i64; backends.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, b) in backends.iter().enumerate() {
            current[i] += i64::from(b.weight.max(1));
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle.into_boxed_slice()
}

/// libketama's ring: for each backend, `40 * weight` MD5 digests of `"ADDR-i"`, each
/// giving four little-endian points.
fn ketama_ring(backends: &[Backend]) -> Box<[(u32, u32)]> {
    use md5::{Digest, Md5};
    let mut ring = Vec::new();
    for (index, b) in backends.iter().enumerate() {
        for i in 0..(KETAMA_POINTS_PER_WEIGHT / 4) * b.weight.max(1) {
            let digest = Md5::digest(format!("{}-{}", b.addr, i).as_bytes());
            for h in 0..4 {
                let point = u32::from_le_bytes([
                    digest[h * 4],
                    digest[h * 4 + 1],
                    digest[h * 4 + 2],
                    digest[h * 4 + 3],
                ]);
                ring.push((point, index as u32));
            }
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

/// libketama's key hash: the first four bytes of the key's MD5, little-endian.
fn ketama_key(key: &[u8]) -> u32 {
    use md5::{Digest, Md5};
    let d = Md5::digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// The `attempt`-th distinct backend clockwise from `point`.
fn ketama_pick(ring: &[(u32, u32)], point: u32, attempt: usize, n: usize) -> usize {
    if ring.is_empty() {
        return 0;
    }
    let start = ring.partition_point(|&(p, _)| p < point);
    let mut seen: Vec<u32> = Vec::new();
    for k in 0..ring.len() {
        let (_, index) = ring[(start + k) % ring.len()];
        if !seen.contains(&index) {
            if seen.len() == attempt % n {
                return index as usize;
            }
            seen.push(index);
        }
    }
    ring[start % ring.len()].1 as usize
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A declared pool of a router, by position: what `proxy!` names `Self::POOL_NAME` for a
/// pool `NAME`, so that code picking a pool is checked by the compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(u32);

impl PoolId {
    /// The pool at `index` of the router's groups.
    pub const fn new(index: u32) -> Self {
        PoolId(index)
    }

    /// Its index among the router's groups.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Backends, their live state, and a strategy: picks a peer per request.
pub struct LoadBalancer {
    peers: Vec<Arc<PeerState>>,
    backends: Vec<Backend>,
    strategy: Strategy,
    selector: Selector,
    /// Counts the requests a hashing strategy got without a key, to spread them.
    keyless: AtomicU64,
}

impl fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("backends", &self.backends)
            .field("strategy", &self.strategy)
            .finish()
    }
}

/// Weights within `1..=MAX_WEIGHT`, whatever a discovery source or a caller set.
fn clamp_weights(mut backends: Vec<Backend>) -> Vec<Backend> {
    for b in &mut backends {
        b.weight = b.weight.clamp(1, MAX_WEIGHT);
    }
    backends
}

/// Parses and resolves `addrs` into weight-1 backends.
fn backends_from<I, A>(addrs: I) -> io::Result<Vec<Backend>>
where
    I: IntoIterator<Item = A>,
    A: AsRef<str>,
{
    let mut backends = Vec::new();
    for a in addrs {
        let a = a.as_ref();
        let resolved = resolve(a).map_err(|e| {
            io::Error::new(e.kind(), format!("invalid upstream address {a:?}: {e}"))
        })?;
        backends.extend(resolved.into_iter().map(Backend::new));
    }
    Ok(backends)
}

impl LoadBalancer {
    /// A round-robin balancer over `addrs` (`"127.0.0.1:8001"`, `"[::1]:80"`, or host names,
    /// resolved once, here). Errors if an address is invalid or the list is empty.
    pub fn try_from_iter<I, A>(addrs: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<str>,
    {
        let backends = backends_from(addrs)?;
        if backends.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a load balancer needs at least one backend",
            ));
        }
        Ok(LoadBalancer::new(backends, Strategy::RoundRobin))
    }

    /// A balancer over `backends` choosing with `strategy` (an empty list selects nothing).
    pub fn new(backends: Vec<Backend>, strategy: Strategy) -> Self {
        let backends = clamp_weights(backends);
        let selector = strategy.build(&backends);
        LoadBalancer {
            peers: backends
                .iter()
                .cloned()
                .map(|b| Arc::new(PeerState::new(b)))
                .collect(),
            backends,
            strategy,
            selector,
            keyless: AtomicU64::new(0),
        }
    }

    /// The same strategy over `backends`, keeping the live state (health, in-flight
    /// counts) of the peers that remain.
    pub fn with_backends(&self, backends: Vec<Backend>) -> Self {
        let backends = clamp_weights(backends);
        let selector = self.strategy.build(&backends);
        let peers = backends
            .iter()
            .map(|b| match self.peers.iter().find(|p| p.addr() == b.addr) {
                Some(p) if p.backend == *b => p.clone(),
                Some(p) => Arc::new(p.carried_over(b.clone())),
                None => Arc::new(PeerState::new(b.clone())),
            })
            .collect();
        LoadBalancer {
            peers,
            backends,
            strategy: self.strategy.clone(),
            selector,
            keyless: AtomicU64::new(0),
        }
    }

    /// Picks an available peer for `key`, asking the strategy at most `max_iterations`
    /// times. `None` if the list is empty or no candidate was available.
    pub fn select_peer(&self, key: &[u8], max_iterations: usize) -> Option<&Arc<PeerState>> {
        self.select_peer_where(key, max_iterations, |p| p.is_available())
    }

    /// Like [`select_peer`](LoadBalancer::select_peer) with the candidates filtered by
    /// `accept` instead of availability.
    pub fn select_peer_where(
        &self,
        key: &[u8],
        max_iterations: usize,
        accept: impl Fn(&PeerState) -> bool,
    ) -> Option<&Arc<PeerState>> {
        if self.peers.is_empty() {
            return None;
        }
        let spread;
        let key = match self.keyless_spread(key) {
            Some(k) => {
                spread = k;
                &spread[..]
            }
            None => key,
        };
        (0..max_iterations)
            .map(|attempt| self.selector.pick(key, attempt, &self.peers))
            .filter_map(|i| self.peers.get(i))
            .find(|p| accept(p))
    }

    /// Like [`select_peer`](LoadBalancer::select_peer), ignoring health: for pools that
    /// fail open when no peer is available.
    pub fn select_any(&self, key: &[u8]) -> Option<&Arc<PeerState>> {
        if self.peers.is_empty() {
            return None;
        }
        let spread = self.keyless_spread(key);
        let key = spread.as_ref().map_or(key, |k| &k[..]);
        self.peers.get(self.selector.pick(key, 0, &self.peers))
    }

    /// For a hashing strategy asked without a key (the header or cookie it hashes is
    /// absent): a stand-in key that changes with every such request, so keyless requests
    /// are spread over the peers in proportion to their weights instead of all landing on
    /// the peer of the empty key. `None` when the key is given or the strategy does not hash.
    #[inline]
    fn keyless_spread(&self, key: &[u8]) -> Option<[u8; 8]> {
        let hashes = matches!(self.strategy, Strategy::Hash | Strategy::ConsistentHash);
        (key.is_empty() && hashes).then(|| {
            let n = self.keyless.fetch_add(1, Ordering::Relaxed);
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes()
        })
    }

    /// Picks a backend for `key` (see [`select_peer`](LoadBalancer::select_peer)).
    pub fn select(&self, key: &[u8], max_iterations: usize) -> Option<&Backend> {
        self.select_peer(key, max_iterations).map(|p| p.backend())
    }

    /// All backends, in declaration order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// All peers with their live state, in declaration order.
    pub fn peers(&self) -> &[Arc<PeerState>] {
        &self.peers
    }

    /// The strategy.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn ports(lb: &LoadBalancer, n: usize, key: &[u8]) -> Vec<u16> {
        (0..n)
            .map(|_| lb.select(key, 1).expect("a backend").addr.port())
            .collect()
    }

    #[test]
    fn hashing_without_a_key_spreads_by_weight() {
        for strategy in [Strategy::Hash, Strategy::ConsistentHash] {
            let backends = [(1, 1), (2, 1), (3, 2)]
                .map(|(port, weight)| Backend::weighted(addr(port), weight));
            let lb = LoadBalancer::new(backends.to_vec(), strategy.clone());
            let mut counts = [0; 4];
            for port in ports(&lb, 4000, b"") {
                counts[port as usize] += 1;
            }
            // Shares 1/4, 1/4, 1/2, within a few percent.
            assert!((800..1200).contains(&counts[1]), "{strategy:?} {counts:?}");
            assert!((800..1200).contains(&counts[2]), "{strategy:?} {counts:?}");
            assert!((1800..2200).contains(&counts[3]), "{strategy:?} {counts:?}");
            // A key still picks one peer every time.
            let keyed = ports(&lb, 10, b"user-7");
            assert!(keyed.iter().all(|&p| p == keyed[0]), "{keyed:?}");
        }
    }

    #[test]
    fn round_robin_alternates() {
        let lb = LoadBalancer::try_from_iter(["127.0.0.1:1", "127.0.0.1:2"]).expect("valid");
        assert_eq!(ports(&lb, 4, b""), [1, 2, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_exact() {
        let backends = vec![Backend::weighted(addr(1), 1), Backend::weighted(addr(2), 3)];
        let lb = LoadBalancer::new(backends, Strategy::RoundRobin);
        // nginx's sequence for weights 1:3: the light peer's turn falls between heavy ones.
        assert_eq!(ports(&lb, 8, b""), [2, 1, 2, 2, 2, 1, 2, 2]);
        let backends = vec![
            Backend::weighted(addr(1), 5),
            Backend::weighted(addr(2), 1),
            Backend::weighted(addr(3), 1),
        ];
        let lb = LoadBalancer::new(backends, Strategy::RoundRobin);
        assert_eq!(ports(&lb, 7, b""), [1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn weighted_random_follows_weights() {
        let backends = vec![Backend::weighted(addr(1), 1), Backend::weighted(addr(2), 3)];
        let lb = LoadBalancer::new(backends, Strategy::Random);
        let heavy = ports(&lb, 40_000, b"").iter().filter(|&&p| p == 2).count();
        // Expect 30,000; six standard deviations (~520) either side.
        assert!((29_000..31_000).contains(&heavy), "{heavy}");
    }

    #[test]
    fn least_connections_avoids_the_busy_peer() {
        let lb = LoadBalancer::new(
            vec![Backend::new(addr(1)), Backend::new(addr(2))],
            Strategy::LeastConnections,
        );
        let busy = lb.peers()[0].clone();
        let _held: Vec<InFlight> = (0..5).map(|_| busy.start_request()).collect();
        assert_eq!(busy.in_flight(), 5);
        assert!(ports(&lb, 100, b"").iter().all(|&p| p == 2));
        drop(_held);
        assert_eq!(busy.in_flight(), 0);
    }

    #[test]
    fn consistent_hash_moves_about_one_nth_of_keys_when_a_peer_goes() {
        let backends: Vec<Backend> = (1..=10).map(|p| Backend::new(addr(p))).collect();
        let all = LoadBalancer::new(backends.clone(), Strategy::ConsistentHash);
        let fewer = all.with_backends(backends[..9].to_vec());
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let mut moved = 0;
        for key in &keys {
            let before = all.select(key.as_bytes(), 1).expect("peer").addr;
            let after = fewer.select(key.as_bytes(), 1).expect("peer").addr;
            if before != after {
                // Only keys of the removed peer may move.
                assert_eq!(before.port(), 10, "{key} moved off a peer that stayed");
                moved += 1;
            }
        }
        // 1/10 of 10,000 is 1,000; ketama's spread keeps it well within 1.5x.
        assert!((500..1_500).contains(&moved), "{moved} keys moved");
        // The same key always lands on the same peer.
        let first = ports(&all, 1, b"session-42");
        assert_eq!(ports(&all, 20, b"session-42"), vec![first[0]; 20]);
    }

    #[test]
    fn unavailable_peers_are_skipped_and_hash_retries_move_on() {
        let backends: Vec<Backend> = (1..=3).map(|p| Backend::new(addr(p))).collect();
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::LeastConnections,
            Strategy::ConsistentHash,
            Strategy::Hash,
        ] {
            let lb = LoadBalancer::new(backends.clone(), strategy.clone());
            let key = b"k";
            let first = lb.select(key, 1).expect("peer").addr.port();
            let peer = lb
                .peers()
                .iter()
                .find(|p| p.addr().port() == first)
                .expect("peer");
            assert!(peer.record_failure(1, Duration::from_secs(60)));
            assert!(peer.is_ejected());
            for _ in 0..50 {
                let p = lb.select(key, 16).expect("another peer").addr.port();
                assert_ne!(p, first, "{strategy:?} picked an ejected peer");
            }
        }
    }

    #[test]
    fn health_checks_flip_after_thresholds() {
        let peer = PeerState::new(Backend::new(addr(1)));
        assert_eq!(peer.record_check(false, 2, 3), None);
        assert_eq!(peer.record_check(false, 2, 3), None);
        assert_eq!(peer.record_check(false, 2, 3), Some(false));
        assert!(!peer.is_available());
        assert_eq!(peer.record_check(true, 2, 3), None);
        assert_eq!(peer.record_check(true, 2, 3), Some(true));
        assert!(peer.is_available());
    }

    #[test]
    fn rejects_empty_and_invalid_and_keeps_state_across_updates() {
        assert!(LoadBalancer::try_from_iter(Vec::<String>::new()).is_err());
        let e = LoadBalancer::try_from_iter(["nonsense"]).expect_err("invalid");
        assert!(e.to_string().contains("nonsense"));
        let lb = LoadBalancer::try_from_iter(["127.0.0.1:1", "127.0.0.1:2"]).expect("valid");
        assert!(lb.select(b"", 0).is_none());
        let _busy = lb.peers()[1].start_request();
        let next = lb.with_backends(vec![Backend::new(addr(2)), Backend::new(addr(3))]);
        assert_eq!(
            next.peers()[0].in_flight(),
            1,
            "peer 2's state carried over"
        );
        assert_eq!(next.peers()[1].in_flight(), 0);
        assert!(LoadBalancer::new(Vec::new(), Strategy::Random)
            .select(b"", 4)
            .is_none());
    }
}

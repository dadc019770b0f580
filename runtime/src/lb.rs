//! Choosing a peer: a [`LoadBalancer`] holds a pool's weighted [`Backend`]s and a
//! selection strategy.
//!
//! Strategies: smooth weighted round robin ([`RoundRobin`], nginx's algorithm, so a peer of
//! weight 3 gets its turns spread out rather than in a burst) and weighted random
//! ([`Random`]). [`Strategy`] is either, chosen at run time (what the `proxy!` macro's
//! `select` uses); anything else plugs in through [`Selection`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::listen::resolve;

/// The largest weight a backend may have (as in HAProxy). Keeps the round-robin schedule,
/// which has one slot per unit of weight, small.
pub const MAX_WEIGHT: u32 = 256;

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

/// A selection strategy: picks the index of the next backend.
pub trait Selection: Send + Sync + 'static {
    /// Rebuilds any state that depends on the backends; called with the initial list and
    /// whenever it changes.
    fn update(&mut self, backends: &[Backend]);

    /// Index in `0..backends.len()` (never empty) of the backend to try for `key`, on try
    /// number `attempt` (0-based, so a strategy can move on when a pick is skipped).
    fn pick(&self, key: &[u8], attempt: usize, backends: &[Backend]) -> usize;
}

/// Smooth weighted round robin: over a cycle of total-weight picks each backend gets its
/// weight's share, interleaved (weights 1 and 3 give `b a b b`, not `a b b b`). Lock-free:
/// the cycle is computed once per backend list and walked with an atomic counter.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
    cycle: Box<[u32]>,
}

impl Selection for RoundRobin {
    fn update(&mut self, backends: &[Backend]) {
        self.cycle = smooth_weighted_cycle(backends);
    }

    fn pick(&self, _key: &[u8], _attempt: usize, backends: &[Backend]) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match self.cycle.len() {
            0 => n % backends.len(),
            len => self.cycle[n % len] as usize,
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

/// Weighted random: each pick is independent, a backend's chance proportional to its weight.
#[derive(Debug, Default)]
pub struct Random {
    /// Running sums of the weights; empty when all weights are equal.
    cumulative: Box<[u32]>,
}

impl Selection for Random {
    fn update(&mut self, backends: &[Backend]) {
        let first = backends.first().map_or(1, |b| b.weight);
        self.cumulative = if backends.iter().all(|b| b.weight == first) {
            Box::default()
        } else {
            backends
                .iter()
                .scan(0u32, |sum, b| {
                    *sum += b.weight.max(1);
                    Some(*sum)
                })
                .collect()
        };
    }

    fn pick(&self, _key: &[u8], _attempt: usize, backends: &[Backend]) -> usize {
        match self.cumulative.last() {
            None => fastrand::usize(..backends.len()),
            Some(&total) => {
                let x = fastrand::u32(..total);
                self.cumulative.partition_point(|&sum| sum <= x)
            }
        }
    }
}

/// One of the built-in strategies, chosen at run time.
#[derive(Debug)]
pub enum Strategy {
    /// [`RoundRobin`].
    RoundRobin(RoundRobin),
    /// [`Random`].
    Random(Random),
}

impl Strategy {
    /// Smooth weighted round robin.
    pub fn round_robin() -> Self {
        Strategy::RoundRobin(RoundRobin::default())
    }

    /// Weighted random.
    pub fn random() -> Self {
        Strategy::Random(Random::default())
    }
}

impl Selection for Strategy {
    fn update(&mut self, backends: &[Backend]) {
        match self {
            Strategy::RoundRobin(s) => s.update(backends),
            Strategy::Random(s) => s.update(backends),
        }
    }

    fn pick(&self, key: &[u8], attempt: usize, backends: &[Backend]) -> usize {
        match self {
            Strategy::RoundRobin(s) => s.pick(key, attempt, backends),
            Strategy::Random(s) => s.pick(key, attempt, backends),
        }
    }
}

/// Backends plus a selection strategy.
#[derive(Debug)]
pub struct LoadBalancer<S = RoundRobin> {
    backends: Vec<Backend>,
    selection: S,
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

impl LoadBalancer<RoundRobin> {
    /// A round-robin balancer over `addrs` (`"127.0.0.1:8001"`, `"[::1]:80"`, or host names,
    /// resolved once, here). Errors if an address is invalid or the list is empty.
    pub fn try_from_iter<I, A>(addrs: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<str>,
    {
        LoadBalancer::with_selection(backends_from(addrs)?, RoundRobin::default())
    }
}

impl<S: Selection> LoadBalancer<S> {
    /// A balancer over `backends` choosing with `selection`. Errors if `backends` is empty.
    pub fn with_selection(backends: Vec<Backend>, mut selection: S) -> io::Result<Self> {
        check_backends(&backends)?;
        selection.update(&backends);
        Ok(LoadBalancer {
            backends,
            selection,
        })
    }

    /// Picks a backend for `key`, trying at most `max_iterations` candidates. Every backend
    /// is eligible today (health checks come with the health module), so the first pick wins
    /// unless `max_iterations` is zero.
    pub fn select(&self, key: &[u8], max_iterations: usize) -> Option<&Backend> {
        (0..max_iterations)
            .map(|attempt| self.selection.pick(key, attempt, &self.backends))
            .find_map(|i| self.backends.get(i))
    }

    /// All backends, in declaration order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Replaces the backends. Errors (and changes nothing) if `backends` is empty.
    pub fn set_backends(&mut self, backends: Vec<Backend>) -> io::Result<()> {
        check_backends(&backends)?;
        self.selection.update(&backends);
        self.backends = backends;
        Ok(())
    }
}

fn check_backends(backends: &[Backend]) -> io::Result<()> {
    if backends.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a load balancer needs at least one backend",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn round_robin_alternates() {
        let lb = LoadBalancer::try_from_iter(["127.0.0.1:1", "127.0.0.1:2"]).expect("valid");
        let picks: Vec<u16> = (0..4)
            .map(|_| lb.select(b"", 1).expect("a backend").addr.port())
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_exact() {
        let backends = vec![Backend::weighted(addr(1), 1), Backend::weighted(addr(2), 3)];
        let lb = LoadBalancer::with_selection(backends, RoundRobin::default()).expect("valid");
        let picks: Vec<u16> = (0..8)
            .map(|_| lb.select(b"", 1).expect("a backend").addr.port())
            .collect();
        // nginx's sequence for weights 1:3: the light peer's turn falls between heavy ones.
        assert_eq!(picks, [2, 1, 2, 2, 2, 1, 2, 2]);
        let backends = vec![
            Backend::weighted(addr(1), 5),
            Backend::weighted(addr(2), 1),
            Backend::weighted(addr(3), 1),
        ];
        let lb = LoadBalancer::with_selection(backends, RoundRobin::default()).expect("valid");
        let picks: Vec<u16> = (0..7)
            .map(|_| lb.select(b"", 1).expect("a backend").addr.port())
            .collect();
        assert_eq!(picks, [1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn weighted_random_follows_weights() {
        let backends = vec![Backend::weighted(addr(1), 1), Backend::weighted(addr(2), 3)];
        let lb = LoadBalancer::with_selection(backends, Random::default()).expect("valid");
        let heavy = (0..40_000)
            .filter(|_| lb.select(b"", 1).expect("a backend").addr.port() == 2)
            .count();
        // Expect 30,000; six standard deviations (~520) either side.
        assert!((29_000..31_000).contains(&heavy), "{heavy}");
    }

    #[test]
    fn rejects_empty_and_invalid() {
        assert!(LoadBalancer::try_from_iter(Vec::<String>::new()).is_err());
        let e = LoadBalancer::try_from_iter(["nonsense"]).expect_err("invalid");
        assert!(e.to_string().contains("nonsense"));
        let mut lb = LoadBalancer::try_from_iter(["127.0.0.1:1"]).expect("valid");
        assert!(lb.select(b"", 0).is_none());
        assert!(lb.set_backends(Vec::new()).is_err());
        assert_eq!(lb.backends().len(), 1);
    }
}

//! Choosing a peer: a [`LoadBalancer`] holds a pool's [`Backend`]s and a selection strategy.
//!
//! This module has round robin ([`RoundRobin`]); more strategies plug in through
//! [`Selection`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::listen::resolve;

/// One upstream server in a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Where the server listens.
    pub addr: SocketAddr,
}

impl Backend {
    /// A backend at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Backend { addr }
    }
}

/// A selection strategy: picks the index of the next backend among `len` (never zero).
pub trait Selection: Send + Sync + 'static {
    /// Index in `0..len` of the backend to try for `key`, on try number `attempt` (0-based,
    /// so a strategy can move on to another backend when the first one is skipped).
    fn pick(&self, key: &[u8], attempt: usize, len: usize) -> usize;
}

/// Round robin: each selection takes the next backend in order, ignoring the key.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Selection for RoundRobin {
    fn pick(&self, _key: &[u8], _attempt: usize, len: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % len
    }
}

/// Backends plus a selection strategy.
#[derive(Debug)]
pub struct LoadBalancer<S = RoundRobin> {
    backends: Vec<Backend>,
    selection: S,
}

impl LoadBalancer<RoundRobin> {
    /// A round-robin balancer over `addrs` (`"127.0.0.1:8001"`, `"[::1]:80"`, or host names,
    /// resolved once, here). Errors if an address is invalid or the list is empty.
    pub fn try_from_iter<I, A>(addrs: I) -> io::Result<Self>
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
        LoadBalancer::with_selection(backends, RoundRobin::default())
    }
}

impl<S: Selection> LoadBalancer<S> {
    /// A balancer over `backends` choosing with `selection`. Errors if `backends` is empty.
    pub fn with_selection(backends: Vec<Backend>, selection: S) -> io::Result<Self> {
        if backends.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a load balancer needs at least one backend",
            ));
        }
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
            .map(|attempt| self.selection.pick(key, attempt, self.backends.len()))
            .find_map(|i| self.backends.get(i))
    }

    /// All backends, in declaration order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_alternates() {
        let lb = LoadBalancer::try_from_iter(["127.0.0.1:1", "127.0.0.1:2"]).expect("valid");
        let picks: Vec<u16> = (0..4)
            .map(|_| lb.select(b"", 1).expect("a backend").addr.port())
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }

    #[test]
    fn rejects_empty_and_invalid() {
        assert!(LoadBalancer::try_from_iter(Vec::<String>::new()).is_err());
        let e = LoadBalancer::try_from_iter(["nonsense"]).expect_err("invalid");
        assert!(e.to_string().contains("nonsense"));
        let lb = LoadBalancer::try_from_iter(["127.0.0.1:1"]).expect("valid");
        assert!(lb.select(b"", 0).is_none());
    }
}

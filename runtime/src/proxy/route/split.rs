//! A weighted split of a route's traffic between upstream groups (`90% stable, 10%
//! canary`): sticky by a request key when one is declared and present (the same key always
//! lands in the same arm, in every process, across restarts), otherwise spread evenly in
//! the declared proportions. Each arm counts the requests it got.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::lb::RequestKey;
use crate::metrics::Counter;

/// One arm of a split: a group (by index in the router) and its weight.
#[derive(Debug)]
pub struct Arm {
    /// The group's index among the router's groups.
    pub group: usize,
    /// Its share, out of the split's total.
    pub weight: u32,
    /// Requests this arm got.
    pub requests: Arc<Counter>,
}

/// A weighted choice between groups.
#[derive(Debug)]
pub struct Split {
    arms: Vec<Arm>,
    total: u64,
    key: RequestKey,
    /// Requests without a key so far: spreads them.
    turn: AtomicU64,
}

impl Split {
    /// A split over `(group, weight)` arms, sticky by `key` (`RequestKey::None`: spread).
    /// Arms of weight 0 never get a request.
    pub fn new(arms: Vec<(usize, u32)>, key: RequestKey) -> Self {
        let total = arms.iter().map(|&(_, w)| u64::from(w)).sum();
        Split {
            arms: arms
                .into_iter()
                .map(|(group, weight)| Arm {
                    group,
                    weight,
                    requests: Arc::default(),
                })
                .collect(),
            total,
            key,
            turn: AtomicU64::new(0),
        }
    }

    /// The arms, in declaration order.
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// What the split is sticky by.
    pub fn key(&self) -> &RequestKey {
        &self.key
    }

    /// The group for a request whose key is `key` (empty: none), counted in its arm.
    pub fn choose(&self, key: &[u8]) -> usize {
        if self.total == 0 {
            return self.arms.first().map_or(0, |a| a.group);
        }
        let point = if key.is_empty() {
            // Consecutive requests land far apart on the circle: the arms interleave.
            let n = self.turn.fetch_add(1, Ordering::Relaxed);
            (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % self.total
        } else {
            stable_hash(key) % self.total
        };
        let mut below = 0;
        for arm in &self.arms {
            below += u64::from(arm.weight);
            if point < below {
                arm.requests.inc();
                return arm.group;
            }
        }
        // Unreachable: `point < total`, the sum of the weights.
        self.arms.last().map_or(0, |a| a.group)
    }
}

/// FNV-1a: the same key hashes the same in every process and version, so a key stays in
/// its arm across instances and restarts.
fn stable_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stick_and_spread_follows_the_weights() {
        let split = Split::new(vec![(0, 90), (1, 10)], RequestKey::None);
        let mut got = [0u32; 2];
        for _ in 0..10_000 {
            got[split.choose(b"")] += 1;
        }
        assert!((8_800..=9_200).contains(&got[0]), "{got:?}");
        for user in 0..100u32 {
            let key = format!("user-{user}");
            let first = split.choose(key.as_bytes());
            assert!((0..10).all(|_| split.choose(key.as_bytes()) == first));
        }
        assert_eq!(
            split.arms()[0].requests.get() + split.arms()[1].requests.get(),
            10_000 + 100 * 11
        );
    }
}

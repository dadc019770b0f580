//! A request's retry state in one place: how many times it went to another peer (capped at
//! [`MAX_RETRIES`]), the peers it tried (so a retry goes elsewhere), and the key its first
//! attempt hashed (the headers have moved upstream by a retry). The request's session owns
//! one; the group it is routed to says the budget (`retry N`) and the backoff step.

use std::net::SocketAddr;
use std::time::Duration;

/// Most retries of one request, whatever a group's budget says.
pub const MAX_RETRIES: u32 = pingora_dsl_rules::MAX_RETRIES;

/// What a request's earlier attempts left for its retries. Small in the session of a
/// request that never retries: the peers and key go to the heap only once noted.
#[derive(Debug, Default)]
pub struct Attempts {
    retries: u32,
    noted: Option<Box<Noted>>,
}

/// The peers tried and the key hashed first.
#[derive(Debug, Default)]
struct Noted {
    tried: Vec<SocketAddr>,
    key: Option<Box<[u8]>>,
}

impl Attempts {
    /// Times the request went to another peer so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Whether another retry stays within [`MAX_RETRIES`].
    pub fn may_retry(&self) -> bool {
        self.retries < MAX_RETRIES
    }

    /// Counts one more retry.
    pub fn count_retry(&mut self) {
        self.retries += 1;
    }

    /// Whether the retries so far leave room in a group's `budget` (its `retry N`).
    pub fn within(&self, budget: u32) -> bool {
        self.retries < budget
    }

    /// How long to wait before the next attempt with a backoff `step` per retry (zero for
    /// the first attempt, or with no step).
    pub fn backoff(&self, step: Duration) -> Duration {
        step * self.retries
    }

    /// Notes that `addr` was tried, so that the next choice avoids it.
    pub fn note_tried(&mut self, addr: SocketAddr) {
        let tried = &mut self.noted.get_or_insert_with(Box::default).tried;
        if !tried.contains(&addr) {
            tried.push(addr);
        }
    }

    /// How many different peers were tried.
    pub fn tried(&self) -> usize {
        self.tried_peers().len()
    }

    /// The peers tried, for the next choice to avoid.
    pub fn tried_peers(&self) -> &[SocketAddr] {
        self.noted.as_ref().map_or(&[], |n| &n.tried)
    }

    /// The key the first attempt hashed, once saved.
    pub fn saved_key(&self) -> Option<&[u8]> {
        self.noted.as_ref()?.key.as_deref()
    }

    /// Keeps `key` for the retries to hash (the first one saved stays).
    pub fn save_key(&mut self, key: &[u8]) {
        let noted = self.noted.get_or_insert_with(Box::default);
        if noted.key.is_none() {
            noted.key = Some(key.into());
        }
    }
}

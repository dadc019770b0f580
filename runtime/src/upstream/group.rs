//! [`UpstreamGroup`]: a named pool of weighted peers with a strategy, timeouts and a retry
//! budget — what a `proxy!` `upstream NAME { ... }` block declares.

use crate::error::{Error, ErrorKind, Result};
use crate::lb::{Backend, Selection, Strategy};
use crate::upstream::{HttpPeer, PeerTimeouts};

/// A named pool of peers. [`peer`](UpstreamGroup::peer) picks the next one with the
/// group's strategy and stamps the group's timeouts on it.
#[derive(Debug)]
pub struct UpstreamGroup {
    name: String,
    backends: Vec<Backend>,
    strategy: Strategy,
    timeouts: PeerTimeouts,
    retries: u32,
}

impl UpstreamGroup {
    /// A group named `name` over `backends`, choosing with `strategy`, with default
    /// timeouts and no retries. An empty group answers every request with 503.
    pub fn new(name: impl Into<String>, backends: Vec<Backend>, mut strategy: Strategy) -> Self {
        strategy.update(&backends);
        UpstreamGroup {
            name: name.into(),
            backends,
            strategy,
            timeouts: PeerTimeouts::default(),
            retries: 0,
        }
    }

    /// Sets the timeouts of every peer of the group.
    pub fn with_timeouts(mut self, timeouts: PeerTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets how many other peers a request may try after failed connects.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The peers, in declaration order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The timeouts given to every peer.
    pub fn timeouts(&self) -> &PeerTimeouts {
        &self.timeouts
    }

    /// The retry budget after failed connects.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Replaces the peers (e.g. from a command-line override).
    pub fn set_backends(&mut self, backends: Vec<Backend>) {
        self.strategy.update(&backends);
        self.backends = backends;
    }

    /// Replaces the timeouts.
    pub fn set_timeouts(&mut self, timeouts: PeerTimeouts) {
        self.timeouts = timeouts;
    }

    /// The peer for the next request (`key` feeds key-based strategies). Errors with
    /// [`ErrorKind::NoPeer`] (503) when the group is empty.
    pub fn peer(&self, key: &[u8]) -> Result<HttpPeer> {
        if self.backends.is_empty() {
            return Err(Error::new(ErrorKind::NoPeer, "upstream group has no peers"));
        }
        let i = self.strategy.pick(key, 0, &self.backends);
        let backend = self
            .backends
            .get(i)
            .ok_or(Error::new(ErrorKind::Internal, "strategy picked no peer"))?;
        Ok(HttpPeer::new(backend.addr).with_timeouts(self.timeouts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    #[test]
    fn peers_carry_the_group_timeouts_and_empty_groups_say_503() {
        let timeouts = PeerTimeouts {
            connect: Duration::from_millis(250),
            ..PeerTimeouts::default()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let group = UpstreamGroup::new("g", vec![Backend::new(addr)], Strategy::round_robin())
            .with_timeouts(timeouts)
            .with_retries(2);
        let peer = group.peer(b"").expect("a peer");
        assert_eq!(peer.addr(), addr);
        assert_eq!(peer.timeouts().connect, Duration::from_millis(250));
        assert_eq!(group.retries(), 2);

        let mut group = UpstreamGroup::new("e", Vec::new(), Strategy::random());
        let e = group.peer(b"").expect_err("empty");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        group.set_backends(vec![Backend::new(addr)]);
        assert!(group.peer(b"").is_ok());
    }
}

//! Layer 4: proxies that relay connections (TCP, optionally TLS-terminated) or datagrams
//! (UDP) to the peers of one upstream group, and the byte relay they (and HTTP tunnels)
//! use.

pub mod relay;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// How many connections (TCP) or client mappings (UDP) are open, and a wake-up when the
/// last one closes: what a stop waits on before cutting the rest.
#[derive(Debug, Default)]
pub(crate) struct OpenCount {
    open: AtomicUsize,
    drained: Notify,
}

impl OpenCount {
    /// One more is open.
    pub(crate) fn enter(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// One closed; the last wakes whoever waits in [`OpenCount::drained`].
    pub(crate) fn leave(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Resolves once none is open.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

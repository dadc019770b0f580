//! Layer 4: proxies that relay connections (TCP, optionally TLS-terminated) or datagrams
//! (UDP) to the peers of one upstream group, and the byte relay they (and HTTP tunnels)
//! use.

pub mod relay;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::lb::UpstreamGroup;
use crate::observe::access_log::AccessLog;

/// What the relays of one layer-4 service share: the group their peers come from, how
/// long one may carry nothing, the access log, how many are open, and what the protocol
/// adds (`own`).
pub(crate) struct Relays<T> {
    pub(crate) group: UpstreamGroup,
    pub(crate) idle_timeout: Duration,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) open: OpenCount,
    pub(crate) own: T,
}

impl<T> Relays<T> {
    /// Relays to `group`'s peers, with no access log.
    pub(crate) fn new(group: UpstreamGroup, idle_timeout: Duration, own: T) -> Self {
        Relays {
            group,
            idle_timeout,
            access_log: None,
            open: OpenCount::default(),
            own,
        }
    }

    /// The same settings for another worker, with its own count of open relays.
    pub(crate) fn for_worker(&self, own: T) -> Self {
        Relays {
            group: self.group.clone(),
            idle_timeout: self.idle_timeout,
            access_log: self.access_log.clone(),
            open: OpenCount::default(),
            own,
        }
    }

    /// Sets the idle timeout; only before the service starts (then `this` is not shared).
    pub(crate) fn set_idle_timeout(this: &mut Arc<Self>, idle: Duration) {
        if let Some(relays) = Arc::get_mut(this) {
            relays.idle_timeout = idle;
        }
    }

    /// Sets the access log; only before the service starts (then `this` is not shared).
    pub(crate) fn set_access_log(this: &mut Arc<Self>, log: Option<AccessLog>) {
        if let Some(relays) = Arc::get_mut(this) {
            relays.access_log = log;
        }
    }
}

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

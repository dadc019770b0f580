//! Shutdown as a value: a [`ShutdownTrigger`] asks every [`ShutdownWatch`] cloned from its
//! channel to stop, gracefully (stop accepting, let work in flight finish) or at once.
//! Accept loops, connections, health checks and discovery hold a watch; the process (or a
//! test) holds the trigger. A leaf: it knows nothing of what stops.

use tokio::sync::watch;

/// Shutdown states carried by the watch channel.
const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const IMMEDIATE: u8 = 2;

/// How a server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, let requests in flight finish within the grace period (SIGTERM).
    Graceful,
    /// Stop accepting and close every connection now (SIGINT).
    Immediate,
}

/// Tells services to stop: cloned into every accept loop and connection.
#[derive(Debug, Clone)]
pub struct ShutdownWatch(watch::Receiver<u8>);

impl ShutdownWatch {
    /// Resolves once shutdown has been requested (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which also means: stop.
        let _ = self.0.wait_for(|state| *state >= GRACEFUL).await;
    }

    /// Resolves once an immediate shutdown has been requested: the end of any grace.
    pub async fn wait_immediate(&mut self) {
        if self.0.wait_for(|state| *state >= IMMEDIATE).await.is_err() {
            // The trigger is gone without asking for it: never.
            std::future::pending::<()>().await;
        }
    }

    /// Whether shutdown has been requested.
    pub fn is_shutting_down(&self) -> bool {
        *self.0.borrow() >= GRACEFUL
    }

    /// Whether the shutdown state may have changed since this watch was created or last
    /// waited on: one atomic load, no lock (true if the trigger is gone).
    pub fn has_changed(&self) -> bool {
        self.0.has_changed().unwrap_or(true)
    }
}

/// The sending half of a [`ShutdownWatch`]: request shutdown with [`ShutdownTrigger::trigger`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<u8>);

impl ShutdownTrigger {
    /// Requests a graceful shutdown of everything watching.
    pub fn trigger(&self) {
        self.0.send_if_modified(|state| {
            let changed = *state < GRACEFUL;
            *state = (*state).max(GRACEFUL);
            changed
        });
    }

    /// Requests an immediate shutdown (also ends a graceful one's grace period).
    pub fn trigger_immediate(&self) {
        self.0.send_replace(IMMEDIATE);
    }

    /// Requests the shutdown `stop` says.
    pub fn stop(&self, stop: Stop) {
        match stop {
            Stop::Graceful => self.trigger(),
            Stop::Immediate => self.trigger_immediate(),
        }
    }
}

/// A new pair of shutdown trigger and watch.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownWatch) {
    let (tx, rx) = watch::channel(RUNNING);
    (ShutdownTrigger(tx), ShutdownWatch(rx))
}

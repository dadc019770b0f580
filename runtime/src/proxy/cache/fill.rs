//! Request coalescing: of the concurrent misses for one key, one request (the leader)
//! goes upstream; the others wait, bounded, until its response is stored or it gives up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

/// The fills in progress, by key.
#[derive(Debug, Default)]
pub struct Fills {
    // A semaphore with no permits, closed when its fill ends: every waiter, whether it
    // began to wait before or after, wakes at once.
    running: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// What a miss does: fill the key itself, or wait for the request that does.
pub enum Joined {
    /// This request fills the key; others wait until the guard is dropped.
    Lead(FillGuard),
    /// Another request fills the key.
    Wait(FillWait),
}

/// Held by the request filling a key (then by its response body while it is stored);
/// dropping it lets the waiters look again.
#[derive(Debug)]
pub struct FillGuard {
    fills: Arc<Fills>,
    key: String,
    done: Arc<Semaphore>,
}

/// A wait for another request's fill.
#[derive(Debug)]
pub struct FillWait(Arc<Semaphore>);

impl Fills {
    /// Joins the fill of `key`: leads it if none runs.
    pub fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = running.get(key).filter(|d| !d.is_closed()) {
            return Joined::Wait(FillWait(done.clone()));
        }
        let done = Arc::new(Semaphore::new(0));
        running.insert(key.to_owned(), done.clone());
        Joined::Lead(FillGuard {
            fills: self.clone(),
            key: key.to_owned(),
            done,
        })
    }

    /// Whether no key is being filled.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.running.lock().map_or(true, |r| r.is_empty())
    }
}

impl FillWait {
    /// Waits until the fill ends, at most `limit`; whether it ended in time.
    pub async fn ended_within(self, limit: Duration) -> bool {
        // `acquire` fails (closed) once the fill ends; it never succeeds (no permits).
        tokio::time::timeout(limit, self.0.acquire()).await.is_ok()
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut running = self.fills.running.lock().unwrap_or_else(|e| e.into_inner());
        if running
            .get(&self.key)
            .is_some_and(|d| Arc::ptr_eq(d, &self.done))
        {
            running.remove(&self.key);
        }
        drop(running);
        self.done.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leads_the_others_wait_until_it_ends() {
        let fills = Arc::new(Fills::default());
        let Joined::Lead(guard) = fills.join("k") else {
            panic!("the first request leads");
        };
        let Joined::Wait(early) = fills.join("k") else {
            panic!("the second waits");
        };
        assert!(matches!(fills.join("other"), Joined::Lead(_)));
        let waiter = tokio::spawn(early.ended_within(Duration::from_secs(10)));
        drop(guard);
        assert!(
            waiter.await.expect("joined"),
            "woken by the end of the fill"
        );
        assert!(fills.is_empty());
        assert!(
            matches!(fills.join("k"), Joined::Lead(_)),
            "a new fill may start"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_bounded() {
        let fills = Arc::new(Fills::default());
        let _guard = fills.join("k");
        let Joined::Wait(wait) = fills.join("k") else {
            panic!("waits");
        };
        assert!(!wait.ended_within(Duration::from_millis(20)).await);
    }
}

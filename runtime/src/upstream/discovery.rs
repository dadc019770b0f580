//! Service discovery: where a group's peers come from when they are not a fixed list.
//!
//! A [`Discovery`] source is asked on an interval by a [`DiscoveryTask`] (a background
//! service); a changed, non-empty answer replaces the group's peers atomically (requests in
//! flight are untouched, peers that remain keep their state and pooled connections). A
//! failed or empty answer keeps the last good list and is logged, never fatal.
//!
//! Built in: [`DnsDiscovery`] (a name resolved with tokio's resolver, off the runtime
//! threads) and [`FileDiscovery`] (a file of `IP:PORT [weight N]` lines, re-read when it
//! changes). Anything else implements [`Discovery`].

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::lb::{Backend, LoadBalancer};
use crate::server::ShutdownWatch;

/// The future a [`Discovery`] returns: the current peers, or why they are unknown.
pub type DiscoveryFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<Backend>>> + Send + 'a>>;

/// A source of peers.
pub trait Discovery: Send + Sync + 'static {
    /// The peers now. Called once per interval, never on a request's path.
    fn discover(&self) -> DiscoveryFuture<'_>;

    /// A short description for logs (`dns backend.internal:8080`).
    fn describe(&self) -> String;
}

/// Peers from DNS: every address `name` resolves to, with `port` and weight 1.
#[derive(Debug, Clone)]
pub struct DnsDiscovery {
    name: String,
    port: u16,
}

impl DnsDiscovery {
    /// Resolves `name` and uses `port` for every address.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        DnsDiscovery {
            name: name.into(),
            port,
        }
    }
}

impl Discovery for DnsDiscovery {
    fn discover(&self) -> DiscoveryFuture<'_> {
        Box::pin(async move {
            // tokio resolves on its blocking pool: no runtime thread waits on DNS.
            let mut backends: Vec<Backend> =
                tokio::net::lookup_host((self.name.as_str(), self.port))
                    .await?
                    .map(Backend::new)
                    .collect();
            backends.sort_by_key(|b| b.addr);
            backends.dedup();
            Ok(backends)
        })
    }

    fn describe(&self) -> String {
        format!("dns {}:{}", self.name, self.port)
    }
}

/// Peers from a file: one `IP:PORT` per line, optionally followed by `weight N`; blank
/// lines and `#` comments are ignored. Re-read only when its modification time changes.
#[derive(Debug)]
pub struct FileDiscovery {
    path: PathBuf,
    /// The last list read, with the file's modification time and length then.
    seen: Mutex<Option<(SystemTime, u64, Vec<Backend>)>>,
}

impl FileDiscovery {
    /// Reads peers from `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileDiscovery {
            path: path.into(),
            seen: Mutex::new(None),
        }
    }
}

/// Parses a peers file; errors name the line.
pub fn parse_peer_file(text: &str) -> io::Result<Vec<Backend>> {
    let mut backends = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line {}: {why}: {raw:?}", n + 1),
            )
        };
        let mut words = line.split_whitespace();
        let addr = words
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| bad("expected IP:PORT"))?;
        let weight = match (words.next(), words.next(), words.next()) {
            (None, _, _) => 1,
            (Some("weight"), Some(w), None) => match w.parse::<u32>() {
                Ok(w @ 1..=256) => w,
                _ => return Err(bad("a weight goes from 1 to 256")),
            },
            _ => return Err(bad("expected `IP:PORT` or `IP:PORT weight N`")),
        };
        backends.push(Backend::weighted(addr, weight));
    }
    Ok(backends)
}

impl Discovery for FileDiscovery {
    fn discover(&self) -> DiscoveryFuture<'_> {
        Box::pin(async move {
            let meta = tokio::fs::metadata(&self.path).await?;
            let (modified, len) = (meta.modified()?, meta.len());
            if let Ok(seen) = self.seen.lock() {
                if let Some((when, size, list)) = seen.as_ref() {
                    if *when == modified && *size == len {
                        return Ok(list.clone());
                    }
                }
            }
            let text = tokio::fs::read_to_string(&self.path).await?;
            let list = parse_peer_file(&text)?;
            if let Ok(mut seen) = self.seen.lock() {
                *seen = Some((modified, text.len() as u64, list.clone()));
            }
            Ok(list)
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// Asks a [`Discovery`] source on an interval and swaps in the peers it finds.
pub struct DiscoveryTask {
    pub(crate) group: Arc<str>,
    pub(crate) lb: Arc<ArcSwap<LoadBalancer>>,
    pub(crate) source: Arc<dyn Discovery>,
    pub(crate) interval: Duration,
}

impl DiscoveryTask {
    /// The group updated.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Asks the source once and applies a changed, non-empty answer. Returns whether the
    /// peers changed.
    pub async fn refresh(&self) -> bool {
        match self.source.discover().await {
            Ok(list) if list.is_empty() => {
                tracing::warn!(group = %self.group, source = %self.source.describe(), "discovery found no peers; keeping the current ones");
                false
            }
            Ok(list) => {
                let current = self.lb.load();
                if current.backends() == list.as_slice() {
                    return false;
                }
                tracing::info!(group = %self.group, source = %self.source.describe(), peers = ?list.iter().map(|b| b.addr).collect::<Vec<_>>(), "discovery updated the peers");
                self.lb.store(Arc::new(current.with_backends(list)));
                true
            }
            Err(e) => {
                tracing::warn!(group = %self.group, source = %self.source.describe(), error = %e, "discovery failed; keeping the current peers");
                false
            }
        }
    }

    /// Refreshes every interval until `shutdown`.
    pub async fn run(self, mut shutdown: ShutdownWatch) {
        loop {
            self.refresh().await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Refreshes every interval, forever (for embedding; abort the task to stop).
    pub async fn run_forever(self) {
        loop {
            self.refresh().await;
            tokio::time::sleep(self.interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_files_parse_with_weights_comments_and_clear_errors() {
        let list =
            parse_peer_file("# peers\n127.0.0.1:8001\n\n[::1]:8002 weight 3  # the big one\n")
                .expect("valid");
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].weight, 3);
        let e = parse_peer_file("127.0.0.1:8001\nnot-an-address\n").expect_err("bad line");
        assert!(e.to_string().starts_with("line 2:"), "{e}");
        assert!(parse_peer_file("127.0.0.1:1 weight 0").is_err());
        assert!(parse_peer_file("127.0.0.1:1 heavy").is_err());
    }

    #[tokio::test]
    async fn dns_discovery_resolves_localhost_and_fails_softly() {
        let found = DnsDiscovery::new("localhost", 8080)
            .discover()
            .await
            .expect("localhost resolves");
        assert!(found
            .iter()
            .any(|b| b.addr.ip().is_loopback() && b.addr.port() == 8080));
        assert!(DnsDiscovery::new("no-such-host.invalid", 1)
            .discover()
            .await
            .is_err());
    }
}

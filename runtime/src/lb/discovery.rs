//! Service discovery: where a group's peers come from when they are not a fixed list.
//!
//! A [`Discovery`] source is asked on an interval by a [`DiscoveryTask`] (a background
//! service); a changed, non-empty answer replaces the group's peers atomically (requests in
//! flight are untouched, peers that remain keep their state and pooled connections). A
//! failed or empty answer keeps the last good list and is logged, never fatal.
//!
//! Built in: [`DnsDiscovery`] (a name resolved by the system's resolver off the runtime
//! threads, or by any [`Resolve`]) and [`FileDiscovery`] (a file of `IP:PORT [weight N]`
//! lines, re-read when it changes). Anything else implements [`Discovery`].
//!
//! `-t` asks each source once ([`discover_once`]): there, a failed or empty answer fails
//! the check.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::lb::{Backend, LoadBalancer};
use crate::shutdown::ShutdownWatch;

/// The future a [`Discovery`] returns: the current peers, or why they are unknown.
pub type DiscoveryFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<Backend>>> + Send + 'a>>;

/// The future [`Discovery::changed`] returns: done when the peers may have changed.
pub type ChangedFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of peers.
pub trait Discovery: Send + Sync + 'static {
    /// The peers now. Called once per interval (or per change), never on a request's path.
    fn discover(&self) -> DiscoveryFuture<'_>;

    /// Waits until the peers may have changed, then the task asks [`discover`] again. By
    /// default the task's `interval`; a source told of changes (etcd's watch) returns as
    /// soon as one happens.
    ///
    /// [`discover`]: Discovery::discover
    fn changed(&self, interval: Duration) -> ChangedFuture<'_> {
        Box::pin(tokio::time::sleep(interval))
    }

    /// A short description for logs (`dns backend.internal:8080`).
    fn describe(&self) -> String;
}

/// The future a [`Resolve`] returns: every address the name has, or why there is none.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a name into addresses for [`DnsDiscovery`]: the system's resolver
/// ([`SystemResolver`]) unless another is given (a DNS client, a table in a test).
pub trait Resolve: Send + Sync + 'static {
    /// Every address `name` has now.
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a>;
}

/// The system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS), run on tokio's blocking
/// pool so that no runtime thread waits on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name, 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// Peers from DNS: every address `name` resolves to, with `port` and weight 1.
#[derive(Clone)]
pub struct DnsDiscovery {
    name: String,
    port: u16,
    resolver: Arc<dyn Resolve>,
}

impl std::fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("name", &self.name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl DnsDiscovery {
    /// How often a declared `discover dns` asks unless told otherwise.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

    /// Resolves `name` with the system's resolver and uses `port` for every address.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        DnsDiscovery::with_resolver(name, port, SystemResolver)
    }

    /// Resolves `name` with `resolver` and uses `port` for every address.
    pub fn with_resolver(name: impl Into<String>, port: u16, resolver: impl Resolve) -> Self {
        DnsDiscovery {
            name: name.into(),
            port,
            resolver: Arc::new(resolver),
        }
    }
}

impl Discovery for DnsDiscovery {
    fn discover(&self) -> DiscoveryFuture<'_> {
        Box::pin(async move {
            let mut backends: Vec<Backend> = self
                .resolver
                .resolve(&self.name)
                .await?
                .into_iter()
                .map(|ip| Backend::new((ip, self.port).into()))
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

/// Peers listed by host name (`"api.internal:8080"`, IP literals allowed beside them):
/// every address each name resolves to, with the name's port and weight. A group whose
/// declared peers include host names takes them from here, resolved before it serves
/// and again every [`DEFAULT_INTERVAL`](NamedPeers::DEFAULT_INTERVAL). A name that fails
/// to resolve fails the whole answer, so the group keeps its current peers rather than
/// dropping that name's.
#[derive(Clone)]
pub struct NamedPeers {
    names: Vec<(String, u16, u32)>,
    resolver: Arc<dyn Resolve>,
}

impl std::fmt::Debug for NamedPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedPeers")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl NamedPeers {
    /// How often the names are resolved again (the system resolver reports no TTL).
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

    /// `(host, port, weight)` for each peer, resolved by the system's resolver.
    pub fn new(names: Vec<(String, u16, u32)>) -> Self {
        NamedPeers::with_resolver(names, SystemResolver)
    }

    /// `(host, port, weight)` for each peer, resolved by `resolver`.
    pub fn with_resolver(names: Vec<(String, u16, u32)>, resolver: impl Resolve) -> Self {
        NamedPeers {
            names,
            resolver: Arc::new(resolver),
        }
    }
}

impl Discovery for NamedPeers {
    fn discover(&self) -> DiscoveryFuture<'_> {
        Box::pin(async move {
            let mut backends = Vec::new();
            for (host, port, weight) in &self.names {
                let ips =
                    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
                        Ok(ip) => vec![ip],
                        Err(_) => self.resolver.resolve(host).await.map_err(|e| {
                            io::Error::new(e.kind(), format!("resolving {host}: {e}"))
                        })?,
                    };
                backends.extend(
                    ips.into_iter()
                        .map(|ip| Backend::weighted((ip, *port).into(), *weight)),
                );
            }
            backends.sort_by_key(|b| b.addr);
            backends.dedup_by_key(|b| b.addr);
            Ok(backends)
        })
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self
            .names
            .iter()
            .map(|(h, p, _)| format!("{h}:{p}"))
            .collect();
        format!("names {}", names.join(", "))
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
    /// How often a declared `discover file` reads unless told otherwise.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

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
        let (addr, weight) = pingora_dsl_rules::parse_peer(line).map_err(|e| match e {
            pingora_dsl_rules::PeerError::Address => bad("expected IP:PORT"),
            pingora_dsl_rules::PeerError::Weight => bad("a weight goes from 1 to 256"),
            pingora_dsl_rules::PeerError::Shape => bad("expected `IP:PORT` or `IP:PORT weight N`"),
        })?;
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

/// Asks `source` once, as `-t` does, on a thread and runtime of its own (so it may be called
/// from anywhere, a runtime's thread included), waiting at most `timeout`: the peers it
/// found, or why none (a failure, no answer in time, or an empty answer).
pub fn discover_once(source: Arc<dyn Discovery>, timeout: Duration) -> io::Result<Vec<Backend>> {
    let asking = std::thread::Builder::new()
        .name("discovery check".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let answer =
                runtime.block_on(async { tokio::time::timeout(timeout, source.discover()).await });
            // A resolver stuck past the timeout is left behind, not waited for.
            runtime.shutdown_background();
            match answer {
                Ok(Ok(list)) if list.is_empty() => {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "found no peers"))
                }
                Ok(found) => found,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                )),
            }
        })?;
    asking
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the discovery check panicked")))
}

/// Asks a [`Discovery`] source on an interval (or at each change it reports) and swaps in
/// the peers it finds.
pub struct DiscoveryTask {
    pub(crate) group: Arc<str>,
    pub(crate) lb: Arc<ArcSwap<LoadBalancer>>,
    pub(crate) source: Arc<dyn Discovery>,
    pub(crate) interval: Duration,
    /// Failed answers so far (the admin listener's `discovery_failures_total`).
    pub(crate) failures: Arc<AtomicU64>,
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
                self.failures.fetch_add(1, Ordering::Relaxed);
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
                _ = self.source.changed(self.interval) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Refreshes every interval, forever (for embedding; abort the task to stop).
    pub async fn run_forever(self) {
        loop {
            self.refresh().await;
            self.source.changed(self.interval).await;
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

    /// A resolver under the test's control: answers what `answer` holds now (`None`: fails).
    #[derive(Clone, Default)]
    struct Table {
        answer: Arc<Mutex<Option<Vec<IpAddr>>>>,
        asked: Arc<Mutex<Vec<String>>>,
    }

    impl Table {
        fn answer(&self, ips: Option<&[&str]>) {
            let ips = ips.map(|ips| ips.iter().map(|ip| ip.parse().expect("ip")).collect());
            *self.answer.lock().expect("lock") = ips;
        }
    }

    impl Resolve for Table {
        fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
            self.asked.lock().expect("lock").push(name.to_owned());
            let answer = self.answer.lock().expect("lock").clone();
            Box::pin(async move {
                answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
            })
        }
    }

    fn addrs(list: &[Backend]) -> Vec<String> {
        list.iter().map(|b| b.addr.to_string()).collect()
    }

    #[tokio::test]
    async fn dns_discovery_asks_its_resolver_and_gives_each_address_the_port_once() {
        let table = Table::default();
        table.answer(Some(&["127.0.0.3", "::1", "127.0.0.1", "127.0.0.3"]));
        let dns = DnsDiscovery::with_resolver("backend.test", 8080, table.clone());
        let found = dns.discover().await.expect("resolves");
        assert_eq!(
            addrs(&found),
            ["127.0.0.1:8080", "127.0.0.3:8080", "[::1]:8080"],
            "sorted, deduplicated, each with the port"
        );
        assert!(found.iter().all(|b| b.weight == 1));
        assert_eq!(*table.asked.lock().expect("lock"), ["backend.test"]);
        assert_eq!(dns.describe(), "dns backend.test:8080");

        table.answer(None);
        let e = dns.discover().await.expect_err("the resolver failed");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn named_peers_resolve_names_keep_ip_literals_and_their_weights() {
        let table = Table::default();
        table.answer(Some(&["127.0.0.5", "127.0.0.6"]));
        let names = NamedPeers::with_resolver(
            vec![
                ("api.test".into(), 8080, 3),
                ("127.0.0.9".into(), 9000, 1),
                ("[::1]".into(), 9001, 2),
            ],
            table.clone(),
        );
        let found = names.discover().await.expect("resolves");
        assert_eq!(
            addrs(&found),
            [
                "127.0.0.5:8080",
                "127.0.0.6:8080",
                "127.0.0.9:9000",
                "[::1]:9001"
            ]
        );
        let weights: Vec<u32> = found.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [3, 3, 1, 2]);
        assert_eq!(
            *table.asked.lock().expect("lock"),
            ["api.test"],
            "IP literals need no lookup"
        );
        table.answer(None);
        let e = names.discover().await.expect_err("a name failed");
        assert!(e.to_string().contains("api.test"), "{e}");
    }

    #[tokio::test]
    async fn a_failed_or_empty_answer_keeps_the_peers_and_a_changed_one_replaces_them() {
        let table = Table::default();
        table.answer(Some(&["127.0.0.1"]));
        let task = DiscoveryTask {
            group: "pool".into(),
            lb: Arc::new(ArcSwap::from_pointee(LoadBalancer::new(
                Vec::new(),
                crate::lb::Strategy::round_robin(),
            ))),
            source: Arc::new(DnsDiscovery::with_resolver(
                "pool.test",
                9000,
                table.clone(),
            )),
            interval: Duration::from_secs(3600),
            failures: Arc::default(),
        };
        let peers = || addrs(task.lb.load().backends());
        assert!(task.refresh().await, "the first answer is taken");
        assert_eq!(peers(), ["127.0.0.1:9000"]);
        assert!(!task.refresh().await, "the same answer changes nothing");

        table.answer(None);
        assert!(!task.refresh().await);
        assert_eq!(
            peers(),
            ["127.0.0.1:9000"],
            "a failure keeps the last good list"
        );
        table.answer(Some(&[]));
        assert!(!task.refresh().await);
        assert_eq!(peers(), ["127.0.0.1:9000"], "an empty answer keeps it too");

        table.answer(Some(&["127.0.0.2", "127.0.0.1"]));
        assert!(task.refresh().await, "a changed answer is taken");
        assert_eq!(peers(), ["127.0.0.1:9000", "127.0.0.2:9000"]);
        assert_eq!(table.asked.lock().expect("lock").len(), 5);
    }

    #[tokio::test]
    async fn the_system_resolver_takes_address_literals_without_a_lookup() {
        // A literal needs no lookup (no /etc/hosts, no DNS): this checks the system path
        // and its port handling without depending on the machine's resolver.
        let v4 = DnsDiscovery::new("127.0.0.1", 8080)
            .discover()
            .await
            .expect("a literal resolves");
        assert_eq!(addrs(&v4), ["127.0.0.1:8080"]);
        let v6 = DnsDiscovery::new("::1", 8081)
            .discover()
            .await
            .expect("a literal resolves");
        assert_eq!(addrs(&v6), ["[::1]:8081"]);
    }
}

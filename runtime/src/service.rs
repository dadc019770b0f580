//! The contracts between the process and what it runs: a [`Service`] is bound before the
//! runtime starts and then run until shutdown; a [`Listening`] service can also be checked
//! (`-t`) and announced; an [`Observable`] one can be watched by the admin listener. Each
//! service implements them in its own module.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use std::sync::Arc;

use crate::lb::UpstreamGroup;
use crate::listen::{ListenAddr, Sockets};
use crate::metrics::{ListenerStats, ProxyStats, RouteStats};
use crate::shutdown::ShutdownWatch;

/// A boxed `Send` future, the unit a [`Service`] hands to the runtime.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Something the server runs: a listening service or a background task.
pub trait Service: Send + 'static {
    /// A name for logs.
    fn name(&self) -> &str;

    /// Binds the service's sockets, taking them from `sockets` (which adopts those an old
    /// process handed over); called before the runtime starts. The default binds nothing.
    fn bind(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        let _ = sockets;
        Ok(())
    }

    /// Runs the service on the current runtime until `shutdown` fires and its work drained
    /// (or the grace period ran out).
    fn start(self: Box<Self>, shutdown: ShutdownWatch, grace_period: Duration) -> BoxFuture<()>;

    /// A copy of this (bound) service for another worker of a per-core
    /// server: same listening sockets, its own per-worker state. `None` (the default): the
    /// service runs on the first worker only.
    fn worker_copy(&self) -> io::Result<Option<Box<dyn Service>>> {
        Ok(None)
    }
}

/// A background task run as a [`Service`]: health checkers, reloaders, anything periodic.
pub struct BackgroundService<F> {
    name: String,
    task: F,
}

/// Wraps `task` (given the shutdown watch, returns the future to run) as a service.
pub fn background_service<F, Fut>(name: impl Into<String>, task: F) -> BackgroundService<F>
where
    F: FnOnce(ShutdownWatch) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    BackgroundService {
        name: name.into(),
        task,
    }
}

impl<F, Fut> Service for BackgroundService<F>
where
    F: FnOnce(ShutdownWatch) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn start(self: Box<Self>, shutdown: ShutdownWatch, _grace: Duration) -> BoxFuture<()> {
        Box::pin((self.task)(shutdown))
    }
}

/// A listening service the process (`crate::server::cli::run`) can check, bind, and announce: an HTTP proxy or a
/// layer-4 (TCP, UDP) one.
pub trait Listening: Service + Observable {
    /// Checks what binding needs besides the sockets (addresses, certificates, groups).
    fn check(&self) -> io::Result<()>;
    /// Binds, adopting sockets inherited in an upgrade where the service can.
    fn bind_with(&mut self, sockets: &mut Sockets) -> io::Result<()>;
    /// The listening addresses as configured.
    fn addrs(&self) -> Vec<String>;
    /// The bound addresses, each with the URL scheme clients use (`http`, `https`,
    /// `tcp`, `tls`, `udp`).
    fn bound(&self) -> Vec<(SocketAddr, &'static str)>;
    /// The TLS listeners with their settings, which `--print-config` shows as
    /// `tls_listen`, `[[certificate]]` and `client_ca`; `None` (the default) for a
    /// service that takes no TLS listener settings.
    fn tls_listeners(&self) -> Option<Vec<ListenAddr>> {
        None
    }
    /// The QUIC (HTTP/3) listening addresses, which `--print-config` shows as
    /// `quic_listen`; `None` (the default) for a service without QUIC listeners.
    fn quic_listeners(&self) -> Option<Vec<String>> {
        None
    }
    /// The bound addresses with the name of the proxy each belongs to (one proxy's, or
    /// those of each proxy of a set).
    fn bound_named(&self) -> Vec<(String, SocketAddr, &'static str)> {
        let name = self.name().to_owned();
        self.bound()
            .into_iter()
            .map(|(addr, scheme)| (name.clone(), addr, scheme))
            .collect()
    }
    /// [`tls_listeners`](Listening::tls_listeners) by proxy name.
    fn tls_listeners_named(&self) -> Vec<(String, Vec<ListenAddr>)> {
        self.tls_listeners()
            .map(|tls| vec![(self.name().to_owned(), tls)])
            .unwrap_or_default()
    }
    /// What the admin listener watches: this service (or each proxy of a set).
    fn observers(&self) -> Vec<Observer> {
        vec![self.observer()]
    }
}

/// One service as the admin listener sees it at a moment: handles to its live counters,
/// routes and upstream groups.
pub struct ServiceView {
    /// The service's name (the `proxy` label).
    pub name: String,
    /// `http`, `tcp` or `udp`.
    pub kind: &'static str,
    /// Its downstream connections, if it counts them.
    pub listener: Option<Arc<ListenerStats>>,
    /// Its requests outside any route, and in flight (HTTP proxies).
    pub proxy: Option<Arc<ProxyStats>>,
    /// Its routes, in match order.
    pub routes: Vec<RouteView>,
    /// Its upstream groups (handles to the live peers).
    pub groups: Vec<UpstreamGroup>,
    /// Its HTTP caches.
    pub caches: Vec<CacheView>,
    /// Its rate limits shared through Redis.
    pub shared_limits: Vec<SharedLimitView>,
}

/// A rate limit shared through Redis as the admin listener sees it.
#[derive(Debug, Clone)]
pub struct SharedLimitView {
    /// `proxy`, or the label of the route that declares it.
    pub label: String,
    /// Requests per window.
    pub limit: u64,
    /// The window.
    pub window: std::time::Duration,
    /// The Redis it counts in.
    pub redis: String,
    /// Its decisions.
    pub counts: Arc<crate::metrics::SharedLimitCounts>,
}

/// An HTTP cache as the admin listener sees it: its counters, and purges.
pub trait CacheHandle: Send + Sync {
    /// Its counters and size now.
    fn counts(&self) -> CacheCounts;
    /// Removes the responses stored under `key`; whether there were some.
    fn purge(&self, key: &str) -> bool;
    /// Removes every response whose key starts with `prefix`; how many keys.
    fn purge_prefix(&self, prefix: &str) -> u64;
}

/// A cache's counters and size at one moment.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CacheCounts {
    /// Answers from a fresh stored response.
    pub hits: u64,
    /// Requests that went upstream without a usable stored response.
    pub misses: u64,
    /// Stale answers (while revalidating, or for an origin's error).
    pub stale: u64,
    /// Stored responses an origin's 304 refreshed.
    pub revalidated: u64,
    /// Requests the cache does not take.
    pub bypass: u64,
    /// Requests that waited for another's fill of their key.
    pub coalesced: u64,
    /// Responses stored.
    pub stored: u64,
    /// Stored responses removed to stay within the byte budget.
    pub evictions: u64,
    /// Keys removed by purges and unsafe methods.
    pub purged: u64,
    /// Bytes held in memory.
    pub bytes: u64,
    /// Keys held.
    pub objects: u64,
    /// The memory budget in bytes.
    pub budget: u64,
    /// Responses read back from the disk tier.
    pub disk_loads: u64,
    /// Responses not written to disk because its writers were all busy.
    pub disk_skipped: u64,
    /// Bytes the disk tier holds.
    pub disk_bytes: u64,
    /// Objects the disk tier holds.
    pub disk_objects: u64,
}

/// A cache of a service: what it serves (`proxy`, or a route's label) and a handle.
#[derive(Clone)]
pub struct CacheView {
    /// `proxy` for the proxy-wide cache, else the label of the route that declares it.
    pub label: String,
    /// The cache.
    pub cache: Arc<dyn CacheHandle>,
}

/// A route as the admin listener shows it.
pub struct RouteView {
    /// The route's label.
    pub label: String,
    /// What it does: `upstream api`, `respond 200`, `redirect 301`, `split 90% a, 10% b`.
    pub target: String,
    /// For a split: each arm's pool and the requests it got.
    pub arms: Vec<(String, Arc<crate::metrics::Counter>)>,
    /// For a mirroring route: the shadow pool and what became of the copies.
    pub mirror: Option<(String, Arc<crate::metrics::MirrorOutcomes>)>,
    /// Its counters.
    pub stats: Arc<RouteStats>,
}

/// What gives the admin listener a service's current [`ServiceView`].
pub type Observer = Box<dyn Fn() -> ServiceView + Send + Sync>;

/// A service the admin listener can watch.
pub trait Observable {
    /// The function the admin listener calls at each scrape.
    fn observer(&self) -> Observer;
}

/// A service whose TLS listeners the command line and the config file may replace
/// (`ProxyCli::apply_tls`): an HTTP proxy, a TCP one.
pub trait TlsListeners {
    /// The proxy's name (its `[proxy.NAME]` in the config file).
    fn proxy_name(&self) -> &str;
    /// Every listening address, cleartext and TLS, as configured so far.
    fn listen_addrs(&self) -> &[ListenAddr];
    /// Removes the TLS listening addresses (not yet bound ones).
    fn clear_tls(&mut self);
    /// Adds a listening address terminating TLS with `tls`.
    fn add_tls(&mut self, addr: &str, tls: crate::listen::tls::TlsSettings);
}

/// A service started on the current runtime by its `spawn` (for tests and embedding): its
/// bound addresses and a way to stop it.
pub struct Running {
    addrs: Vec<SocketAddr>,
    trigger: crate::shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Spawns `run` with a new shutdown watch, for a service bound to `addrs`.
    pub fn spawn<F>(addrs: Vec<SocketAddr>, run: impl FnOnce(ShutdownWatch) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (trigger, watch) = crate::shutdown::shutdown_channel();
        let task = tokio::spawn(run(watch));
        Running {
            addrs,
            trigger,
            task,
        }
    }

    /// The first bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every bound address.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops the service (it stops accepting and lets open connections finish, up to one
    /// second) and waits for it.
    pub async fn shutdown(self) {
        self.trigger.trigger();
        let _ = self.task.await;
    }
}

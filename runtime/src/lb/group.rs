//! [`UpstreamGroup`]: a named pool of weighted peers with a strategy, timeouts, a retry
//! budget, health checks and passive ejection — what a `proxy!` `upstream NAME { ... }`
//! block declares.
//!
//! The peer list sits behind an atomic pointer: replacing it (command line, discovery)
//! never blocks a request, requests in flight keep the list they started with, and peers
//! that remain keep their health and in-flight counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderName;

use crate::error::{Error, ErrorKind, Result};
use crate::lb::discovery::{discover_once, Discovery, DiscoveryTask, NamedPeers};
use crate::lb::{Backend, InFlight, LoadBalancer, PeerState, StickyCookie, Strategy};
use crate::shutdown::ShutdownWatch;

/// How long [`UpstreamGroup::check_discovery`] (`-t`) waits for a discovery source's answer.
pub const DISCOVERY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
use crate::lb::health::{HealthCheck, HealthChecker, PeerAccess};
use crate::lb::Attempts;
use crate::upstream::{HttpPeer, PeerTimeouts, TlsConnector, UpstreamHttp, UpstreamTls};

/// Body bytes kept for a resend unless a group says otherwise (as Pingora's default).
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// What part of a request key-based strategies (consistent hash, hash) hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequestKey {
    /// Nothing: every request has the same (empty) key.
    #[default]
    None,
    /// The value of a request header (empty if absent).
    Header(HeaderName),
    /// The value of a cookie (empty if absent).
    Cookie(String),
    /// The request path.
    Path,
    /// The client's IP address.
    ClientIp,
}

/// Passive health: a peer whose requests fail `failures` times in a row (connect errors,
/// resets, timeouts, invalid responses) is ejected for `eject_for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Consecutive failures that eject the peer.
    pub failures: u32,
    /// How long an ejected peer is skipped.
    pub eject_for: Duration,
}

/// The settings of a group that a reload may change while requests flow.
#[derive(Debug, Clone, Copy, Default)]
struct Tunables {
    timeouts: PeerTimeouts,
    retries: u32,
}

/// A named pool of peers. [`http_peer`](UpstreamGroup::http_peer) picks the next available one with
/// the group's strategy and stamps the group's timeouts on it. A clone is a handle to the
/// same live peers and tunables (what a config reload updates).
#[derive(Debug, Clone)]
pub struct UpstreamGroup {
    name: &'static str,
    lb: Arc<ArcSwap<LoadBalancer>>,
    tunables: Arc<ArcSwap<Tunables>>,
    retry_backoff: Duration,
    replay_limit: usize,
    retry_any_method: bool,
    key: RequestKey,
    health: Option<HealthCheck>,
    passive: Option<PassiveHealth>,
    fail_open: bool,
    discovery: Option<DiscoverySource>,
    /// TLS to the peers: the built connector, or why it could not be built.
    tls: Option<Result<TlsConnector, Arc<str>>>,
    http: UpstreamHttp,
    sticky: Option<StickyCookie>,
    /// Connections to the peers start with a PROXY protocol v2 header.
    proxy_protocol: bool,
}

/// A group's discovery source and how often to ask it.
#[derive(Clone)]
struct DiscoverySource {
    source: Arc<dyn Discovery>,
    interval: Duration,
    failures: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for DiscoverySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoverySource")
            .field("source", &self.source.describe())
            .field("interval", &self.interval)
            .finish()
    }
}

impl UpstreamGroup {
    /// A group named `name` over `backends`, choosing with `strategy`, with default
    /// timeouts, no retries and no health checks. An empty group answers 503.
    pub fn new(name: impl Into<String>, backends: Vec<Backend>, strategy: Strategy) -> Self {
        UpstreamGroup {
            name: crate::metrics::label(&name.into()),
            lb: Arc::new(ArcSwap::from_pointee(LoadBalancer::new(backends, strategy))),
            tunables: Arc::new(ArcSwap::from_pointee(Tunables::default())),
            retry_backoff: Duration::ZERO,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            retry_any_method: false,
            key: RequestKey::None,
            health: None,
            passive: None,
            fail_open: false,
            discovery: None,
            tls: None,
            http: UpstreamHttp::Http1,
            sticky: None,
            proxy_protocol: false,
        }
    }

    /// Speaks `http` to the peers (HTTP/1.1 by default).
    pub fn with_http(mut self, http: UpstreamHttp) -> Self {
        self.http = http;
        self
    }

    /// Reaches the peers over TLS as `tls` says. Its files are loaded now; if that fails,
    /// [`UpstreamGroup::check`] reports it (a declared proxy's `run` does, at startup) and
    /// requests to the group fail with [`ErrorKind::UpstreamTls`].
    pub fn with_tls(mut self, tls: &UpstreamTls) -> Self {
        self.tls = Some(
            tls.build()
                .map_err(|e| Arc::from(format!("upstream {}: tls: {e}", self.name))),
        );
        self
    }

    /// The TLS connector to the peers, if the group uses TLS and its files loaded.
    pub fn tls(&self) -> Option<&TlsConnector> {
        match &self.tls {
            Some(Ok(tls)) => Some(tls),
            _ => None,
        }
    }

    /// Whether the group's settings are usable: today, that its TLS files loaded.
    pub fn check(&self) -> std::io::Result<()> {
        match &self.tls {
            Some(Err(e)) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                e.to_string(),
            )),
            _ => Ok(()),
        }
    }

    /// Asks the group's discovery source once, as `-t` does, waiting at most
    /// `DISCOVERY_CHECK_TIMEOUT` (5 s): a `discover file` must exist and parse into at least one
    /// peer, a `discover dns` name must resolve (through the source's resolver) to at least
    /// one address. Returns a line saying what it found (`None`: the group has no source);
    /// an error names the group and the source.
    pub fn check_discovery(&self) -> std::io::Result<Option<String>> {
        self.check_discovery_within(DISCOVERY_CHECK_TIMEOUT)
    }

    /// [`UpstreamGroup::check_discovery`], waiting at most `timeout`.
    pub fn check_discovery_within(&self, timeout: Duration) -> std::io::Result<Option<String>> {
        let Some(discovery) = &self.discovery else {
            return Ok(None);
        };
        let what = format!(
            "upstream {}: discover {}",
            self.name,
            discovery.source.describe()
        );
        let found = discover_once(discovery.source.clone(), timeout)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{what}: {e}")))?;
        const SHOWN: usize = 8;
        let mut peers: Vec<String> = found
            .iter()
            .take(SHOWN)
            .map(|b| b.addr.to_string())
            .collect();
        if found.len() > SHOWN {
            peers.push(format!("and {} more", found.len() - SHOWN));
        }
        let noun = if found.len() == 1 { "peer" } else { "peers" };
        Ok(Some(format!(
            "{what}: {} {noun} ({})",
            found.len(),
            peers.join(", ")
        )))
    }

    /// Peers given by host name (`(host, port, weight)`, IP literals allowed): resolved
    /// by [`prime`](UpstreamGroup::prime) before serving, and again every 30 s (see
    /// [`NamedPeers`]).
    pub fn with_host_peers(self, names: Vec<(String, u16, u32)>) -> Self {
        self.with_discovery(NamedPeers::new(names), NamedPeers::DEFAULT_INTERVAL)
    }

    /// For a group with a discovery source and no peers yet (peers given by host name):
    /// asks the source once, waiting at most 5 s, and takes its peers, so that the group
    /// serves from its first request. Errors name the group and the source.
    pub fn prime(&self) -> std::io::Result<()> {
        let Some(discovery) = &self.discovery else {
            return Ok(());
        };
        if !self.lb.load().peers().is_empty() {
            return Ok(());
        }
        let found =
            discover_once(discovery.source.clone(), DISCOVERY_CHECK_TIMEOUT).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "upstream {}: discover {}: {e}",
                        self.name,
                        discovery.source.describe()
                    ),
                )
            })?;
        self.set_backends(found);
        Ok(())
    }

    /// Takes the peers from `source`, asked every `interval` by a [`DiscoveryTask`]; the
    /// peers given to [`new`](UpstreamGroup::new) serve until the first answer.
    pub fn with_discovery(mut self, source: impl Discovery, interval: Duration) -> Self {
        self.set_discovery(source, interval);
        self
    }

    /// Replaces the discovery source (a config file's replacing the declared one, or in
    /// tests), before the group serves.
    pub fn set_discovery(&mut self, source: impl Discovery, interval: Duration) {
        self.discovery = Some(DiscoverySource {
            source: Arc::new(source),
            interval,
            failures: Arc::default(),
        });
    }

    /// How many times the group's discovery source failed to answer (`None` without one).
    pub fn discovery_failures(&self) -> Option<u64> {
        let d = self.discovery.as_ref()?;
        Some(d.failures.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sets the timeouts of every peer of the group.
    pub fn with_timeouts(self, timeouts: PeerTimeouts) -> Self {
        self.set_timeouts(timeouts);
        self
    }

    /// Sets how many other peers a request may try after failed connects.
    pub fn with_retries(self, retries: u32) -> Self {
        self.set_retries(retries);
        self
    }

    /// Waits `backoff` times the retry number before each retry.
    pub fn with_retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Sets how many request body bytes are kept for a resend after the upstream broke
    /// before answering (default 64 KiB); a larger body is never resent.
    pub fn with_replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// Allows resending requests whose method is not idempotent (POST, PATCH) after the
    /// upstream broke before answering. Off by default: the upstream may have acted on it.
    pub fn with_retry_any_method(mut self, allowed: bool) -> Self {
        self.retry_any_method = allowed;
        self
    }

    /// How many body bytes a request to this group may be resent with, if it may be
    /// resent at all (a retry budget, and an idempotent method or explicit permission).
    pub fn replay_limit(&self, method: &http::Method) -> Option<usize> {
        self.replay_limit_with(method, self.retries())
    }

    /// Like [`replay_limit`](UpstreamGroup::replay_limit), for `retries` resends (a route's
    /// own count instead of the group's).
    pub fn replay_limit_with(&self, method: &http::Method, retries: u32) -> Option<usize> {
        (retries > 0 && (method.is_idempotent() || self.retry_any_method))
            .then_some(self.replay_limit)
    }

    /// Sets what key-based strategies hash.
    pub fn with_key(mut self, key: RequestKey) -> Self {
        self.key = key;
        self
    }

    /// Adds an active health check (run by [`HealthChecker`]).
    pub fn with_health_check(mut self, check: HealthCheck) -> Self {
        self.health = Some(check);
        self
    }

    /// Ejects peers after consecutive failed requests.
    pub fn with_passive_health(mut self, passive: PassiveHealth) -> Self {
        self.passive = Some(passive);
        self
    }

    /// Pins clients to peers with a cookie called `name`: an answer from a peer the
    /// request did not name sets it (see [`StickyCookie`]), and a request naming an
    /// available peer goes there.
    pub fn with_sticky_cookie(mut self, name: impl Into<String>) -> Self {
        self.sticky = Some(StickyCookie::new(name));
        self
    }

    /// Starts every connection to the group's peers with a PROXY protocol v2 header naming
    /// the client (a connection is then reused only for requests of that client).
    pub fn with_proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// Whether connections to the peers carry a PROXY protocol header.
    pub fn proxy_protocol(&self) -> bool {
        self.proxy_protocol
    }

    /// The group's stickiness cookie, if it has one.
    pub fn sticky_cookie(&self) -> Option<&StickyCookie> {
        self.sticky.as_ref()
    }

    /// When no peer is available, use all of them rather than answer 503.
    pub fn with_fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// Whether the peers come from a discovery source.
    pub fn has_discovery(&self) -> bool {
        self.discovery.is_some()
    }

    /// Stops discovery: the peers set now stay (what `--upstream` does to a group).
    pub fn clear_discovery(&mut self) {
        self.discovery = None;
    }

    /// The group's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The peers now, in declaration order.
    pub fn backends(&self) -> Vec<Backend> {
        self.lb.load().backends().to_vec()
    }

    /// The peers with their live state.
    pub fn peers(&self) -> Vec<Arc<PeerState>> {
        self.lb.load().peers().to_vec()
    }

    /// How many peers the group has now.
    pub fn peer_count(&self) -> usize {
        self.lb.load().peers().len()
    }

    /// The timeouts given to every peer.
    pub fn timeouts(&self) -> PeerTimeouts {
        self.tunables.load().timeouts
    }

    /// The retry budget after failed connects.
    pub fn retries(&self) -> u32 {
        self.tunables.load().retries
    }

    /// The passive health settings, if any.
    pub fn passive_health(&self) -> Option<PassiveHealth> {
        self.passive
    }

    /// Replaces the peers atomically (command line, discovery). Requests in flight are not
    /// disturbed; peers that remain keep their state and pooled connections.
    pub fn set_backends(&self, backends: Vec<Backend>) {
        let next = self.lb.load().with_backends(backends);
        self.lb.store(Arc::new(next));
    }

    /// Replaces the retry budget.
    pub fn set_retries(&self, retries: u32) {
        let mut t = **self.tunables.load();
        t.retries = retries;
        self.tunables.store(Arc::new(t));
    }

    /// Replaces the timeouts (requests already sent keep theirs).
    pub fn set_timeouts(&self, timeouts: PeerTimeouts) {
        let mut t = **self.tunables.load();
        t.timeouts = timeouts;
        self.tunables.store(Arc::new(t));
    }

    /// How long a request waits before its next attempt here, after `attempts`.
    pub fn backoff(&self, attempts: &Attempts) -> Duration {
        if attempts.retries() == 0 {
            return Duration::ZERO;
        }
        attempts.backoff(self.retry_backoff)
    }

    /// The peer for a request, avoiding the peers its `attempts` tried when another is
    /// available, as an [`HttpPeer`] with the group's timeouts and TLS, and a guard counting
    /// the request in flight there. `key_of` gives the part of the request this group's
    /// strategy hashes (asked only when it hashes; a retry hashes the first attempt's key).
    /// With `retry N`, the peer and the key are noted in `attempts`. Errors with
    /// [`ErrorKind::NoPeer`] (503) when no peer is available and the group does not fail
    /// open. A `preferred` peer (named by a stickiness cookie) is taken when it is
    /// available and was not tried.
    pub fn http_peer<'a>(
        &self,
        key_of: impl FnOnce(&RequestKey) -> std::borrow::Cow<'a, [u8]>,
        attempts: &mut Attempts,
        preferred: Option<&[u8]>,
    ) -> Result<(HttpPeer, InFlight)> {
        let lb = self.lb.load();
        let tunables = **self.tunables.load();
        let keep = tunables.retries > 0;
        let fresh;
        let key: &[u8] = match (lb.strategy().uses_key(), attempts.saved_key()) {
            (false, _) => &[],
            (true, Some(saved)) => saved,
            (true, None) => {
                fresh = key_of(&self.key);
                &fresh
            }
        };
        let tried = attempts.tried_peers();
        let chosen = preferred
            .and_then(|id| {
                lb.peers().iter().find(|p| {
                    p.sticky_id()[..] == *id && p.is_available() && !tried.contains(&p.addr())
                })
            })
            .or_else(|| self.choose(&lb, key, tried));
        if keep && lb.strategy().uses_key() && attempts.saved_key().is_none() {
            let owned = key.to_vec();
            attempts.save_key(&owned);
        }
        let peer = chosen.ok_or_else(|| {
            Error::new(
                ErrorKind::NoPeer,
                if lb.peers().is_empty() {
                    "upstream group has no peers"
                } else {
                    "no healthy peer in the upstream group"
                },
            )
        })?;
        if keep {
            attempts.note_tried(peer.addr());
        }
        let mut http_peer = HttpPeer::new(peer.addr())
            .with_timeouts(tunables.timeouts)
            .with_http(self.http)
            .with_stats(peer.stats().clone());
        match &self.tls {
            None => {}
            Some(Ok(tls)) => http_peer = http_peer.with_tls(tls.clone()),
            Some(Err(_)) => {
                return Err(Error::new(
                    ErrorKind::UpstreamTls,
                    "the upstream group's TLS settings could not be loaded",
                ))
            }
        }
        Ok((http_peer, peer.start_request()))
    }

    /// Picks a peer for `key` (ignored by strategies that do not hash) with the group's
    /// strategy — for an HTTP request and a layer-4 connection alike: an available peer
    /// not in `tried`, else any available peer, else (when the group fails open) any peer.
    /// Returns the peer, counted in flight.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<(Arc<PeerState>, InFlight)> {
        let lb = self.lb.load();
        let chosen = self.choose(&lb, key, tried)?.clone();
        let in_flight = chosen.start_request();
        Some((chosen, in_flight))
    }

    /// The one choice behind [`select`](Self::select) and [`http_peer`](Self::http_peer).
    #[inline]
    fn choose<'l>(
        &self,
        lb: &'l LoadBalancer,
        key: &[u8],
        tried: &[SocketAddr],
    ) -> Option<&'l Arc<PeerState>> {
        let key = if lb.strategy().uses_key() { key } else { &[] };
        let tries = lb.peers().len() * 2 + 1;
        lb.select_peer_where(key, tries, |p| {
            p.is_available() && !tried.contains(&p.addr())
        })
        .or_else(|| lb.select_peer(key, tries))
        .or_else(|| self.fail_open.then(|| lb.select_any(key)).flatten())
    }

    /// The connect timeout of the group's peers.
    pub fn connect_timeout(&self) -> Duration {
        self.tunables.load().timeouts.connect
    }

    /// Records how a request to `peer` ended, for passive health; logs an ejection.
    pub fn record_outcome(&self, peer: &PeerState, error: Option<&Error>) {
        let Some(passive) = self.passive else { return };
        match error.map(Error::kind) {
            Some(kind) if kind.is_upstream_failure() => {
                if peer.record_failure(passive.failures, passive.eject_for) {
                    tracing::warn!(
                        group = %self.name,
                        peer = %peer.addr(),
                        failures = passive.failures,
                        eject_for = ?passive.eject_for,
                        "peer ejected after failed requests in a row"
                    );
                }
            }
            // Failures on the client's side or in filters say nothing about the peer.
            Some(_) => {}
            None => peer.record_success(),
        }
    }

    /// The background task that runs this group's active health check, if it has one. Its
    /// probes reach the peers as the group's requests do: over the group's TLS connector
    /// and in its HTTP version (see [`HealthChecker`]).
    pub fn health_checker(&self) -> Option<HealthChecker> {
        Some(HealthChecker::new(
            self.name.into(),
            self.lb.clone(),
            self.health.clone()?,
            PeerAccess {
                tls: self.tls.clone(),
                http: self.http,
                proxy_protocol: self.proxy_protocol,
            },
        ))
    }

    /// The background task that keeps this group's peers discovered, if it has a source.
    pub fn discovery_task(&self) -> Option<DiscoveryTask> {
        let d = self.discovery.clone()?;
        Some(DiscoveryTask {
            group: self.name.into(),
            lb: self.lb.clone(),
            source: d.source,
            interval: d.interval,
            failures: d.failures,
        })
    }

    /// Every background task the group needs: discovery, then health checks.
    pub fn background_tasks(&self) -> Vec<GroupTask> {
        let discovery = self.discovery_task().map(GroupTask::Discovery);
        let health = self.health_checker().map(GroupTask::Health);
        discovery.into_iter().chain(health).collect()
    }
}

/// A background task of an upstream group, to run as a server background service (or
/// spawned, when embedding).
pub enum GroupTask {
    /// Active health checks.
    Health(HealthChecker),
    /// Peer discovery.
    Discovery(DiscoveryTask),
}

impl GroupTask {
    /// A name for the server's service list.
    pub fn name(&self) -> String {
        match self {
            GroupTask::Health(h) => format!("health checks of {}", h.group()),
            GroupTask::Discovery(d) => format!("discovery of {}", d.group()),
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: ShutdownWatch) {
        match self {
            GroupTask::Health(h) => h.run(shutdown).await,
            GroupTask::Discovery(d) => d.run(shutdown).await,
        }
    }

    /// Runs forever (abort the task to stop).
    pub async fn run_forever(self) {
        match self {
            GroupTask::Health(h) => h.run_forever().await,
            GroupTask::Discovery(d) => d.run_forever().await,
        }
    }
}

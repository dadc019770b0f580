//! A UDP (layer 4) proxy service: each client address gets its own upstream socket,
//! connected to a peer picked from an [`UpstreamGroup`]; datagrams from the client go to
//! that peer, replies come back to that client, and a mapping unused for the idle timeout
//! is dropped (its socket closed).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;

use crate::lb::InFlight;
use crate::lb::UpstreamGroup;
use crate::listen::{self, Sockets};
use crate::observe::access_log::{AccessLog, ConnectionEntry};
use crate::service::{self as server, BoxFuture};
use crate::shutdown::ShutdownWatch;

/// Default time a client mapping may see no datagram either way before it is dropped.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// A listening UDP proxy to the peers of one group.
pub struct UdpProxyService {
    name: String,
    addrs: Vec<String>,
    sockets: Vec<std::net::UdpSocket>,
    shared: Arc<Shared>,
}

/// What the relays of every listening socket share.
type Shared = crate::l4::Relays<()>;

/// One client's mapping: the upstream socket (connected to its peer).
struct Mapping {
    upstream: Arc<UdpSocket>,
    peer: SocketAddr,
    /// Datagrams sent upstream so far: activity from the client's side.
    sent: AtomicU64,
    /// Bytes sent upstream so far.
    sent_bytes: AtomicU64,
    time: SystemTime,
    started: Instant,
    _in_flight: InFlight,
}

type Mappings = Arc<Mutex<HashMap<SocketAddr, Arc<Mapping>>>>;

impl UdpProxyService {
    /// A proxy named `name` to `group`'s peers, with no listener yet.
    pub fn new(name: impl Into<String>, group: UpstreamGroup) -> Self {
        UdpProxyService {
            name: name.into(),
            addrs: Vec::new(),
            sockets: Vec::new(),
            shared: Arc::new(Shared::new(group, DEFAULT_IDLE_TIMEOUT, ())),
        }
    }

    /// Adds a listening address.
    pub fn add_udp(&mut self, addr: &str) {
        self.addrs.push(addr.to_owned());
    }

    /// Sets how long a client mapping may be unused before it is dropped (before start).
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        Shared::set_idle_timeout(&mut self.shared, idle);
    }

    /// Writes a line per client mapping to `log` when it closes (before start): client,
    /// peer, bytes each way, duration and why it ended.
    pub fn set_access_log(&mut self, log: Option<AccessLog>) {
        Shared::set_access_log(&mut self.shared, log);
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Removes the listening addresses added so far (not yet bound ones).
    pub fn clear_listen(&mut self) {
        self.addrs.clear();
    }

    /// The group the peers come from.
    pub fn group(&self) -> &UpstreamGroup {
        &self.shared.group
    }

    /// Checks what binding needs besides the sockets: addresses and the group.
    pub fn check(&self) -> io::Result<()> {
        if self.addrs.is_empty() {
            return Err(listen::no_listener());
        }
        self.shared.group.check()?;
        for addr in &self.addrs {
            listen::resolve(addr)?;
        }
        Ok(())
    }

    /// Binds every address now (idempotent).
    pub fn bind(&mut self) -> io::Result<()> {
        self.bind_with(&mut Sockets::new())
    }

    /// Like [`UdpProxyService::bind`], adopting sockets inherited in an upgrade.
    pub fn bind_with(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        if !self.sockets.is_empty() {
            return Ok(());
        }
        if self.addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listening address: call add_udp(\"127.0.0.1:5353\") first",
            ));
        }
        for addr in &self.addrs {
            for resolved in listen::resolve(addr)? {
                self.sockets.push(sockets.udp(resolved)?);
            }
        }
        Ok(())
    }

    /// Binds and starts on the current runtime; for tests and embedding.
    pub fn spawn(mut self) -> io::Result<RunningUdpProxy> {
        self.bind()?;
        let addrs = self.local_addrs();
        Ok(RunningUdpProxy::spawn(addrs, |watch| {
            self.run(watch, Duration::from_secs(1))
        }))
    }

    /// Relays until shutdown; then stops reading new datagrams (a new process of an
    /// upgrade reads them) and keeps relaying replies of open mappings until they are
    /// idle or the grace period is over.
    async fn run(self, shutdown: ShutdownWatch, grace: Duration) {
        let mut loops = Vec::new();
        for socket in self.sockets {
            let socket = match UdpSocket::from_std(socket) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::error!(service = %self.name, error = %e, "cannot adopt socket");
                    continue;
                }
            };
            loops.push(tokio::spawn(serve(
                socket,
                self.shared.clone(),
                shutdown.clone(),
            )));
        }
        for l in loops {
            let _ = l.await;
        }
        let mut immediate = shutdown.clone();
        tokio::select! {
            _ = tokio::time::timeout(grace, self.shared.open.drained()) => {}
            _ = immediate.wait_immediate() => {}
        }
    }
}

/// Relays the datagrams arriving on `listener` until shutdown.
async fn serve(listener: Arc<UdpSocket>, shared: Arc<Shared>, mut shutdown: ShutdownWatch) {
    let mappings: Mappings = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            _ = shutdown.wait() => return,
            got = listener.recv_from(&mut buf) => match got {
                Ok(got) => got,
                Err(e) => {
                    // ICMP errors of earlier sends surface here; the socket stays usable.
                    tracing::debug!(error = %e, "UDP receive failed");
                    continue;
                }
            },
        };
        let existing = mappings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&client)
            .cloned();
        let mapping = match existing {
            Some(m) => m,
            None => match open_mapping(&shared.group, client).await {
                Ok(m) => {
                    let m = Arc::new(m);
                    mappings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(client, m.clone());
                    shared.open.enter();
                    tokio::spawn(replies(
                        listener.clone(),
                        m.clone(),
                        client,
                        mappings.clone(),
                        shared.clone(),
                        shutdown.clone(),
                    ));
                    m
                }
                Err(e) => {
                    tracing::debug!(%client, error = %e, "no upstream for a UDP client; datagram dropped");
                    continue;
                }
            },
        };
        mapping.sent.fetch_add(1, Ordering::Relaxed);
        mapping.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Err(e) = mapping.upstream.send(&buf[..n]).await {
            tracing::debug!(%client, error = %e, "UDP send upstream failed");
        }
    }
}

/// A new upstream socket for `client`, connected to a peer of `group`.
async fn open_mapping(group: &UpstreamGroup, client: SocketAddr) -> io::Result<Mapping> {
    let key = match client.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let (peer, in_flight) = group
        .select(&key, &[])
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no peer available"))?;
    let local: SocketAddr = if peer.addr().is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // A mapping is what a UDP proxy counts as a request to the peer.
    let stats = peer.stats();
    stats.requests.inc();
    let opened = async {
        let upstream = UdpSocket::bind(local).await?;
        upstream.connect(peer.addr()).await?;
        Ok::<_, io::Error>(upstream)
    };
    let upstream = opened.await.inspect_err(|_| stats.errors.inc())?;
    stats.connections_new.inc();
    Ok(Mapping {
        upstream: Arc::new(upstream),
        peer: peer.addr(),
        sent: AtomicU64::new(0),
        sent_bytes: AtomicU64::new(0),
        time: SystemTime::now(),
        started: Instant::now(),
        _in_flight: in_flight,
    })
}

/// Sends the peer's replies back to `client` until the mapping is idle (both directions
/// count) or the grace period of a shutdown is over; then forgets it and logs it.
async fn replies(
    listener: Arc<UdpSocket>,
    mapping: Arc<Mapping>,
    client: SocketAddr,
    mappings: Mappings,
    shared: Arc<Shared>,
    mut shutdown: ShutdownWatch,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_sent = mapping.sent.load(Ordering::Relaxed);
    let mut to_client = 0u64;
    let end = loop {
        tokio::select! {
            _ = shutdown.wait_immediate() => break "shutdown",
            got = tokio::time::timeout(shared.idle_timeout, mapping.upstream.recv(&mut buf)) => match got {
                Ok(Ok(n)) => {
                    match listener.send_to(&buf[..n], client).await {
                        Ok(_) => to_client += n as u64,
                        Err(e) => tracing::debug!(%client, error = %e, "UDP reply to client failed"),
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "UDP receive from upstream failed");
                }
                Err(_) => {
                    // Nothing came back for `idle`; the client may still be sending.
                    let now = mapping.sent.load(Ordering::Relaxed);
                    if now == last_sent {
                        break "idle";
                    }
                    last_sent = now;
                }
            },
        }
    };
    mappings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&client);
    if let Some(log) = &shared.access_log {
        log.write(&ConnectionEntry {
            time: mapping.time,
            client,
            protocol: "UDP",
            upstream: Some(mapping.peer),
            retries: 0,
            bytes_to_upstream: mapping.sent_bytes.load(Ordering::Relaxed),
            bytes_to_client: to_client,
            duration: mapping.started.elapsed(),
            end,
            tls_group: None,
            error: None,
        });
    }
    shared.open.leave();
}

impl server::Service for UdpProxyService {
    fn name(&self) -> &str {
        &self.name
    }

    fn bind(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        self.bind_with(sockets)
    }

    fn start(self: Box<Self>, shutdown: ShutdownWatch, grace: Duration) -> BoxFuture<()> {
        Box::pin(self.run(shutdown, grace))
    }
}

/// A UDP proxy started with [`UdpProxyService::spawn`].
pub type RunningUdpProxy = crate::service::Running;

impl crate::service::Listening for UdpProxyService {
    fn check(&self) -> io::Result<()> {
        UdpProxyService::check(self)
    }

    fn bind_with(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        UdpProxyService::bind_with(self, sockets)
    }

    fn addrs(&self) -> Vec<String> {
        self.addrs.clone()
    }

    fn bound(&self) -> Vec<(SocketAddr, &'static str)> {
        self.local_addrs().into_iter().map(|a| (a, "udp")).collect()
    }
}

impl crate::service::Observable for UdpProxyService {
    fn observer(&self) -> crate::service::Observer {
        let name = self.name.clone();
        let group = self.group().clone();
        Box::new(move || crate::service::ServiceView {
            name: name.clone(),
            kind: "udp",
            listener: None,
            proxy: None,
            routes: Vec::new(),
            groups: vec![group.clone()],
            caches: Vec::new(),
            shared_limits: Vec::new(),
        })
    }
}

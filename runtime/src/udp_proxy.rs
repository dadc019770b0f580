//! A UDP (layer 4) proxy service: each client address gets its own upstream socket,
//! connected to a peer picked from an [`UpstreamGroup`]; datagrams from the client go to
//! that peer, replies come back to that client, and a mapping unused for the idle timeout
//! is dropped (its socket closed).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::lb::InFlight;
use crate::listen;
use crate::server::{self, shutdown_channel, BoxFuture, ShutdownTrigger, ShutdownWatch};
use crate::upstream::UpstreamGroup;

/// Default time a client mapping may see no datagram either way before it is dropped.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// A listening UDP proxy to the peers of one group.
pub struct UdpProxyService {
    name: String,
    addrs: Vec<String>,
    sockets: Vec<std::net::UdpSocket>,
    group: UpstreamGroup,
    idle_timeout: Duration,
}

/// One client's mapping: the upstream socket (connected to its peer).
struct Mapping {
    upstream: Arc<UdpSocket>,
    /// Datagrams sent upstream so far: activity from the client's side.
    sent: AtomicU64,
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
            group,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Adds a listening address.
    pub fn add_udp(&mut self, addr: &str) {
        self.addrs.push(addr.to_owned());
    }

    /// Sets how long a client mapping may be unused before it is dropped.
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle_timeout = idle;
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
        &self.group
    }

    /// Checks what binding needs besides the sockets: addresses and the group.
    pub fn check(&self) -> io::Result<()> {
        if self.addrs.is_empty() {
            return Err(listen::no_listener());
        }
        self.group.check()?;
        for addr in &self.addrs {
            listen::resolve(addr)?;
        }
        Ok(())
    }

    /// Binds every address now (idempotent).
    pub fn bind(&mut self) -> io::Result<()> {
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
                let socket = std::net::UdpSocket::bind(resolved).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot bind {resolved}: {e}"))
                })?;
                socket.set_nonblocking(true)?;
                self.sockets.push(socket);
            }
        }
        Ok(())
    }

    /// Binds and starts on the current runtime; for tests and embedding.
    pub fn spawn(mut self) -> io::Result<RunningUdpProxy> {
        self.bind()?;
        let addrs = self.local_addrs();
        let (trigger, watch) = shutdown_channel();
        let task = tokio::spawn(self.run(watch));
        Ok(RunningUdpProxy {
            addrs,
            trigger,
            task,
        })
    }

    async fn run(self, shutdown: ShutdownWatch) {
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
                self.group.clone(),
                self.idle_timeout,
                shutdown.clone(),
            )));
        }
        for l in loops {
            let _ = l.await;
        }
    }
}

/// Relays the datagrams arriving on `listener` until shutdown.
async fn serve(
    listener: Arc<UdpSocket>,
    group: UpstreamGroup,
    idle: Duration,
    mut shutdown: ShutdownWatch,
) {
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
            None => match open_mapping(&group, client).await {
                Ok(m) => {
                    let m = Arc::new(m);
                    mappings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(client, m.clone());
                    tokio::spawn(replies(
                        listener.clone(),
                        m.clone(),
                        client,
                        mappings.clone(),
                        idle,
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
        .select_for(&key, &[])
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
        sent: AtomicU64::new(0),
        _in_flight: in_flight,
    })
}

/// Sends the peer's replies back to `client` until the mapping is idle for `idle` (both
/// directions count) or shutdown; then forgets it.
async fn replies(
    listener: Arc<UdpSocket>,
    mapping: Arc<Mapping>,
    client: SocketAddr,
    mappings: Mappings,
    idle: Duration,
    mut shutdown: ShutdownWatch,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_sent = mapping.sent.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            got = tokio::time::timeout(idle, mapping.upstream.recv(&mut buf)) => match got {
                Ok(Ok(n)) => {
                    if let Err(e) = listener.send_to(&buf[..n], client).await {
                        tracing::debug!(%client, error = %e, "UDP reply to client failed");
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "UDP receive from upstream failed");
                }
                Err(_) => {
                    // Nothing came back for `idle`; the client may still be sending.
                    let now = mapping.sent.load(Ordering::Relaxed);
                    if now == last_sent {
                        break;
                    }
                    last_sent = now;
                }
            },
        }
    }
    mappings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&client);
}

impl server::Service for UdpProxyService {
    fn name(&self) -> &str {
        &self.name
    }

    fn bind(&mut self, _sockets: &mut crate::listen::Sockets) -> io::Result<()> {
        UdpProxyService::bind(self)
    }

    fn start(self: Box<Self>, shutdown: ShutdownWatch, _grace: Duration) -> BoxFuture<()> {
        Box::pin(self.run(shutdown))
    }
}

/// A UDP proxy started with [`UdpProxyService::spawn`].
pub struct RunningUdpProxy {
    addrs: Vec<SocketAddr>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl RunningUdpProxy {
    /// The first bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Stops relaying and waits.
    pub async fn shutdown(self) {
        self.trigger.trigger();
        let _ = self.task.await;
    }
}

impl crate::cli::Listening for UdpProxyService {
    fn check(&self) -> io::Result<()> {
        UdpProxyService::check(self)
    }

    /// UDP sockets are bound afresh (they are not handed over in an upgrade).
    fn bind_with(&mut self, _sockets: &mut crate::listen::Sockets) -> io::Result<()> {
        UdpProxyService::bind(self)
    }

    fn addrs(&self) -> Vec<String> {
        self.addrs.clone()
    }

    fn bound(&self) -> Vec<(SocketAddr, &'static str)> {
        self.local_addrs().into_iter().map(|a| (a, "udp")).collect()
    }
}

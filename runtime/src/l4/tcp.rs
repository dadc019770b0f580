//! A TCP (layer 4) proxy service: accept (optionally terminating TLS), pick a peer from an
//! [`UpstreamGroup`] with the same strategies, health and passive ejection as HTTP, and
//! relay bytes both ways (half-closes passed on) until either side closes or the
//! connection is idle for the idle timeout. A listener may expect a PROXY protocol header
//! (the client is then the address it carries), and a group may send one to its peers.
//!
//! ```no_run
//! use pingora_dsl_runtime::lb::{Backend, Strategy};
//! use pingora_dsl_runtime::server::{Server, ServerConf};
//! use pingora_dsl_runtime::l4::tcp::TcpProxyService;
//! use pingora_dsl_runtime::lb::UpstreamGroup;
//!
//! let peers = vec![Backend::new("127.0.0.1:5432".parse().unwrap())];
//! let mut service =
//!     TcpProxyService::new("postgres", UpstreamGroup::new("db", peers, Strategy::LeastConnections));
//! service.add_tcp("127.0.0.1:6432");
//! let mut server = Server::new(ServerConf::default());
//! server.add_service(service);
//! server.run_forever();
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::error::{Error, ErrorKind};
use crate::l4::relay::{relay_until, RelayEnd};
use crate::lb::UpstreamGroup;
use crate::listen::proxy_protocol::{read_header, v2_header, ProxyProtocol};
use crate::listen::set::{AdoptedListener, ListenerSet};
use crate::listen::tls::{TlsAcceptor, TlsSettings};
use crate::listen::ListenAddr;
use crate::listen::{self, AcceptStats, Sockets};
use crate::metrics::ListenerStats;
use crate::observe::access_log::{AccessLog, ConnectionEntry};
use crate::service::{self as server, BoxFuture};
use crate::shutdown::ShutdownWatch;

/// Default time a proxied TCP connection may carry nothing before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How long connections cut at the end of a shutdown's grace period get to write their
/// log lines.
const STOP_WAIT: Duration = Duration::from_millis(200);

/// A listening TCP proxy to the peers of one group.
pub struct TcpProxyService {
    name: String,
    listeners: ListenerSet,
    shared: Arc<Shared>,
    stats: Arc<AcceptStats>,
    /// The PROXY protocol mode of listeners without one of their own.
    proxy_protocol: ProxyProtocol,
}

/// How long a connection may take to send the PROXY header its listener expects.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a connection came in: its listener's TLS, its PROXY protocol mode and address.
#[derive(Clone)]
struct Entry {
    tls: Option<Arc<TlsAcceptor>>,
    proxy_protocol: ProxyProtocol,
    local: SocketAddr,
}

/// What the TCP relays of a service share.
type Shared = crate::l4::Relays<TcpOwn>;

/// What TCP adds to what every layer-4 relay shares.
struct TcpOwn {
    listener: Arc<ListenerStats>,
    /// Set when the grace period of a shutdown is over: open relays end.
    stop: watch::Sender<bool>,
}

impl TcpOwn {
    /// Fresh state, counting into `listener`.
    fn new(listener: Arc<ListenerStats>) -> Self {
        TcpOwn {
            listener,
            stop: watch::Sender::new(false),
        }
    }
}

impl TcpProxyService {
    /// A proxy named `name` to `group`'s peers, with no listener yet.
    pub fn new(name: impl Into<String>, group: UpstreamGroup) -> Self {
        TcpProxyService {
            name: name.into(),
            listeners: ListenerSet::default(),
            shared: Arc::new(Shared::new(
                group,
                DEFAULT_IDLE_TIMEOUT,
                TcpOwn::new(Arc::default()),
            )),
            stats: Arc::default(),
            proxy_protocol: ProxyProtocol::Off,
        }
    }

    /// Sets the PROXY protocol mode of every listener, theirs included (the declared
    /// `proxy_protocol`, or the config file's).
    pub fn set_proxy_protocol(&mut self, mode: ProxyProtocol) {
        self.listeners.clear_proxy_protocol();
        self.proxy_protocol = mode;
    }

    /// Sets the PROXY protocol mode of the listener on `addr` (TLS or not), added already
    /// or later.
    pub fn set_listener_proxy_protocol(&mut self, addr: &str, tls: bool, mode: ProxyProtocol) {
        self.listeners.set_proxy_protocol_of(addr, tls, mode);
    }

    /// Counters of the client connections: accepted, open, failed TLS handshakes.
    pub fn listener_stats(&self) -> &Arc<ListenerStats> {
        &self.shared.own.listener
    }

    /// Sets how long a connection may carry nothing before it is closed (before start).
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        Shared::set_idle_timeout(&mut self.shared, idle);
    }

    /// Writes a line per connection to `log` (before start): client, peer, bytes each
    /// way, duration and why it ended.
    pub fn set_access_log(&mut self, log: Option<AccessLog>) {
        Shared::set_access_log(&mut self.shared, log);
    }

    /// The listening addresses as added, with their TLS and PROXY protocol settings.
    pub fn listen_addrs(&self) -> &[ListenAddr] {
        self.listeners.addrs()
    }

    /// Adds a cleartext listening address.
    pub fn add_tcp(&mut self, addr: &str) {
        self.listeners.add_tcp(addr);
    }

    /// Adds a listening address terminating TLS with `tls`.
    pub fn add_tls(&mut self, addr: &str, tls: TlsSettings) {
        self.listeners.add_tls(addr, tls);
    }

    /// The group the peers come from.
    pub fn group(&self) -> &UpstreamGroup {
        &self.shared.group
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.local_addrs()
    }

    /// Removes the cleartext listening addresses added so far (not yet bound ones), e.g.
    /// to replace the declared ones with those given on the command line.
    pub fn clear_tcp(&mut self) {
        self.listeners.clear_tcp();
    }

    /// Checks what binding needs besides the sockets: addresses, certificates, the group.
    pub fn check(&self) -> io::Result<()> {
        self.listeners.check(false)?;
        self.shared.group.check()
    }

    /// Binds every address now (idempotent).
    pub fn bind(&mut self) -> io::Result<()> {
        self.bind_with(&mut Sockets::new())
    }

    /// Like [`TcpProxyService::bind`], adopting sockets inherited in an upgrade.
    pub fn bind_with(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        self.shared.group.check()?;
        self.listeners.bind_with(sockets, false)
    }

    /// Binds and starts on the current runtime; for tests and embedding.
    pub fn spawn(mut self) -> io::Result<RunningTcpProxy> {
        self.bind()?;
        let addrs = self.local_addrs();
        Ok(RunningTcpProxy::spawn(addrs, |watch| {
            self.run(watch, Duration::from_secs(1))
        }))
    }

    async fn run(self, shutdown: ShutdownWatch, grace: Duration) {
        let mut loops = Vec::new();
        for adopted in self.listeners.adopt(&self.name) {
            let AdoptedListener { listener, .. } = adopted;
            let entry = Entry {
                tls: adopted.tls,
                proxy_protocol: adopted.proxy_protocol.unwrap_or(self.proxy_protocol),
                local: adopted.local_addr,
            };
            let shared = self.shared.clone();
            loops.push(tokio::spawn(listen::accept_loop(
                listener,
                self.stats.clone(),
                shutdown.clone(),
                move |stream, client| {
                    shared.open.enter();
                    shared.own.listener.accepted.inc();
                    shared.own.listener.open.inc();
                    let shared = shared.clone();
                    let entry = entry.clone();
                    tokio::spawn(async move {
                        serve(&shared, stream, client, entry).await;
                        shared.own.listener.open.dec();
                        shared.open.leave();
                    });
                },
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
        // Grace is over: the connections still open end now, each logged as such.
        self.shared.own.stop.send_replace(true);
        let _ = tokio::time::timeout(STOP_WAIT, self.shared.open.drained()).await;
    }
}

/// Serves one client connection, then writes its access log line.
async fn serve(shared: &Shared, mut stream: TcpStream, mut client: SocketAddr, entry: Entry) {
    let time = SystemTime::now();
    let started = Instant::now();
    let mut outcome = Outcome {
        protocol: if entry.tls.is_some() { "TLS" } else { "TCP" },
        ..Outcome::default()
    };
    match read_header(&mut stream, entry.proxy_protocol, PROXY_HEADER_TIMEOUT).await {
        Ok(carried) => {
            client = carried.unwrap_or(client);
            proxy_connection(shared, stream, (client, entry), &mut outcome).await;
        }
        Err(e) => {
            tracing::debug!(%client, error = %e, "connection closed: PROXY protocol");
            outcome.ended("proxy_protocol", Some(e.to_string()));
        }
    }
    if let Some(log) = &shared.access_log {
        log.write(&ConnectionEntry {
            time,
            client,
            protocol: outcome.protocol,
            upstream: outcome.upstream,
            retries: outcome.retries,
            bytes_to_upstream: outcome.to_upstream,
            bytes_to_client: outcome.to_client,
            duration: started.elapsed(),
            end: outcome.end,
            tls_group: outcome.tls_group,
            error: outcome.error.as_deref(),
        });
    }
}

/// What became of one connection, for its access log line.
#[derive(Default)]
struct Outcome {
    protocol: &'static str,
    upstream: Option<SocketAddr>,
    retries: u32,
    to_upstream: u64,
    to_client: u64,
    end: &'static str,
    tls_group: Option<&'static str>,
    error: Option<String>,
}

impl Outcome {
    fn ended(&mut self, end: &'static str, error: Option<String>) {
        self.end = end;
        self.error = error;
    }
}

/// Terminates TLS if asked, connects to a peer (the next one when a connect fails, up to
/// the group's retries) and relays until either side closes, the idle timeout, or the end
/// of the grace period of a shutdown.
async fn proxy_connection(
    shared: &Shared,
    stream: TcpStream,
    (client, entry): (SocketAddr, Entry),
    outcome: &mut Outcome,
) {
    let _ = stream.set_nodelay(true);
    // Terminate TLS first: a failed handshake opens nothing upstream.
    let client_io: Box<dyn Io> = match entry.tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(accepted) => {
                shared.own.listener.count_tls_group(accepted.group);
                outcome.tls_group = Some(accepted.group);
                Box::new(accepted.stream)
            }
            Err(e) => {
                shared.own.listener.tls_failures.inc();
                crate::listen::tls::log_handshake_failure(client, &e);
                return outcome.ended("handshake_failed", Some(e.to_string()));
            }
        },
        None => Box::new(stream),
    };
    let group = &shared.group;
    let (peer, _in_flight, upstream) =
        match connect_peer(group, (client, entry.local), outcome).await {
            Some(connected) => connected,
            None => return,
        };
    outcome.upstream = Some(peer.addr());
    group.record_outcome(&peer, None);
    let mut stop = shared.own.stop.subscribe();
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let relayed = relay_until(client_io, upstream, shared.idle_timeout, stopped).await;
    outcome.to_upstream = relayed.a_to_b;
    outcome.to_client = relayed.b_to_a;
    match relayed.end {
        RelayEnd::Closed => outcome.ended("closed", None),
        RelayEnd::Idle => outcome.ended("idle", None),
        RelayEnd::Stopped => outcome.ended("shutdown", None),
        RelayEnd::Failed(e) => {
            tracing::debug!(%client, peer = %peer.addr(), error = %e, "ended with an error");
            outcome.ended("error", Some(e.to_string()));
        }
    }
}

/// Connects to a peer of `group` for `client`, trying the next one after a failed
/// connect up to the group's retries; `None` (with `outcome` saying why) if none answered.
async fn connect_peer(
    group: &UpstreamGroup,
    (client, local): (SocketAddr, SocketAddr),
    outcome: &mut Outcome,
) -> Option<(Arc<crate::lb::PeerState>, crate::lb::InFlight, Box<dyn Io>)> {
    let key = match client.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let mut tried = Vec::new();
    loop {
        let Some((peer, in_flight)) = group.select(&key, &tried) else {
            tracing::warn!(%client, group = group.name(), "no peer to connect to; closing");
            outcome.ended("no_peer", None);
            return None;
        };
        let stats = peer.stats().clone();
        stats.requests.inc();
        let started = Instant::now();
        let connected = tokio::time::timeout(
            group.connect_timeout(),
            connect(group, peer.addr(), (client, local)),
        )
        .await;
        let error = match connected {
            Ok(Ok(upstream)) => {
                stats.connect_time.observe(started.elapsed());
                stats.connections_new.inc();
                return Some((peer, in_flight, upstream));
            }
            Ok(Err(e)) => e,
            Err(_) => Error::new(ErrorKind::ConnectTimeout, "connecting to peer"),
        };
        stats.errors.inc();
        group.record_outcome(&peer, Some(&error));
        tracing::debug!(%client, peer = %peer.addr(), error = %error, "connect failed");
        outcome.upstream = Some(peer.addr());
        tried.push(peer.addr());
        if tried.len() > group.retries() as usize {
            tracing::warn!(%client, group = group.name(), "every connect failed; closing");
            outcome.ended("connect_failed", Some(error.to_string()));
            return None;
        }
        outcome.retries += 1;
    }
}

/// Either side of a relay: a plain or a TLS stream.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `addr`, over TLS when the group says so.
async fn connect(
    group: &UpstreamGroup,
    addr: SocketAddr,
    (client, local): (SocketAddr, SocketAddr),
) -> Result<Box<dyn Io>, Error> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| Error::with_source(ErrorKind::ConnectRefused, "connecting to peer", e))?;
    let _ = tcp.set_nodelay(true);
    if group.proxy_protocol() {
        // The header first, before TLS: the peer learns the client as the proxy saw it.
        let sent = match v2_header(client, local) {
            Ok(header) => tokio::io::AsyncWriteExt::write_all(&mut tcp, &header).await,
            Err(e) => Err(e),
        };
        sent.map_err(|e| {
            Error::with_source(ErrorKind::ConnectRefused, "sending the PROXY header", e)
        })?;
    }
    match group.tls() {
        None => Ok(Box::new(tcp)),
        Some(tls) => {
            let (stream, _) = tls.connect(tcp, addr.ip(), false).await?;
            Ok(Box::new(stream))
        }
    }
}

impl server::Service for TcpProxyService {
    fn name(&self) -> &str {
        &self.name
    }

    fn bind(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        self.bind_with(sockets)
    }

    fn start(self: Box<Self>, shutdown: ShutdownWatch, grace: Duration) -> BoxFuture<()> {
        Box::pin(self.run(shutdown, grace))
    }

    fn worker_copy(&self) -> io::Result<Option<Box<dyn server::Service>>> {
        Ok(Some(Box::new(TcpProxyService {
            name: self.name.clone(),
            listeners: self.listeners.try_clone()?,
            shared: Arc::new(
                self.shared
                    .for_worker(TcpOwn::new(self.shared.own.listener.clone())),
            ),
            stats: self.stats.clone(),
            proxy_protocol: self.proxy_protocol,
        })))
    }
}

/// A TCP proxy started with [`TcpProxyService::spawn`].
pub type RunningTcpProxy = crate::service::Running;

impl crate::service::TlsListeners for TcpProxyService {
    fn proxy_name(&self) -> &str {
        &self.name
    }

    fn listen_addrs(&self) -> &[ListenAddr] {
        TcpProxyService::listen_addrs(self)
    }

    fn clear_tls(&mut self) {
        self.listeners.clear_tls();
    }

    fn add_tls(&mut self, addr: &str, tls: TlsSettings) {
        TcpProxyService::add_tls(self, addr, tls)
    }
}

impl crate::service::Listening for TcpProxyService {
    fn check(&self) -> io::Result<()> {
        TcpProxyService::check(self)
    }

    fn bind_with(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        TcpProxyService::bind_with(self, sockets)
    }

    fn addrs(&self) -> Vec<String> {
        self.listeners.addr_texts()
    }

    fn tls_listeners(&self) -> Option<Vec<ListenAddr>> {
        Some(self.listeners.tls_addrs())
    }

    fn bound(&self) -> Vec<(SocketAddr, &'static str)> {
        self.listeners.bound_kinds("tcp", "tls")
    }
}

impl crate::service::Observable for TcpProxyService {
    fn observer(&self) -> crate::service::Observer {
        let name = self.name.clone();
        let listener = self.listener_stats().clone();
        let group = self.group().clone();
        Box::new(move || crate::service::ServiceView {
            name: name.clone(),
            kind: "tcp",
            listener: Some(listener.clone()),
            proxy: None,
            routes: Vec::new(),
            groups: vec![group.clone()],
            caches: Vec::new(),
            shared_limits: Vec::new(),
        })
    }
}

//! Listening sockets and the accept loop.
//!
//! Sockets are bound before the runtime starts (so a bad address fails the process at
//! startup, not later) with `SO_REUSEADDR`, `IPV6_V6ONLY` for IPv6 addresses (so `[::]:p`
//! and `0.0.0.0:p` can coexist) and a deep backlog. The accept loop survives errors: errors
//! about one connection (aborted, reset) are skipped, and resource exhaustion (`EMFILE`,
//! `ENFILE`, `ENOBUFS`, `ENOMEM`) backs off exponentially instead of spinning, then retries.
//!
//! [`Sockets`] is the process's register of listening sockets: services ask it for a socket
//! per address, and it hands out one inherited from an old process in a graceful upgrade
//! (see [`crate::server::handover`]) or binds a fresh one, keeping a copy of each to hand over in turn.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

use crate::shutdown::ShutdownWatch;

pub mod proxy_protocol;
pub mod quic;
pub mod reload;
pub mod set;
pub mod sniff;
pub mod tls;

/// One listening address of a service (HTTP or TCP): plain TCP, or TLS with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// `"127.0.0.1:6188"`, `"[::]:443"`, `"localhost:8080"`.
    pub addr: String,
    /// TLS termination on this address; `None`: cleartext.
    pub tls: Option<tls::TlsSettings>,
    /// Whether connections to this address start with a PROXY protocol header; `None`:
    /// as the service's options say.
    pub proxy_protocol: Option<proxy_protocol::ProxyProtocol>,
}

/// Backlog of listening sockets: deep enough for bursts of new connections.
const BACKLOG: i32 = 4096;
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The error for a service with no listening address at all.
pub fn no_listener() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "no listening address: declare `listen \"ADDR\";`, set `listen = [\"ADDR\"]` (or `tls_listen`) under `[proxy.NAME]` in the config file, or pass --listen ADDR (or --tls-listen)",
    )
}

/// Resolves `addr` (`"127.0.0.1:6188"`, `"[::1]:6188"`, `"localhost:80"`) to socket addresses.
pub fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("address {addr:?} resolved to nothing"),
        ));
    }
    Ok(addrs)
}

/// Binds a TCP listening socket on `addr`, ready to be adopted by a runtime.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_tcp_shared(addr, false)
}

/// [`bind_tcp`], with `SO_REUSEPORT` when `reuse_port`: several processes may then listen
/// on the same address, and the kernel spreads new connections among them.
pub fn bind_tcp_shared(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds a UDP socket on `addr` (`IPV6_V6ONLY` for IPv6, like [`bind_tcp`]), ready to be
/// adopted by a runtime.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_udp_shared(addr, false)
}

/// [`bind_udp`], with `SO_REUSEPORT` when `reuse_port` (datagrams spread among the
/// processes bound to the address, by their source).
pub fn bind_udp_shared(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr} (UDP): {e}")))?;
    Ok(socket.into())
}

/// The transport of a socket in the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// A listening TCP socket.
    Tcp,
    /// A bound UDP socket.
    Udp,
}

/// The process's listening sockets: inherited ones waiting to be adopted, and a copy of
/// every socket handed out (to give them all to a new process in an upgrade).
#[derive(Debug, Default)]
pub struct Sockets {
    inherited: Vec<(Transport, SocketAddr, Socket)>,
    handed_out: Vec<OwnedFd>,
    reuse_port: bool,
}

impl Sockets {
    /// No inherited sockets: every address is bound fresh.
    pub fn new() -> Self {
        Sockets::default()
    }

    /// Sockets received from an old process. Each must be a listening TCP socket or a
    /// bound UDP one; its transport and bound address are what [`Sockets::tcp`] and
    /// [`Sockets::udp`] match requests against.
    pub fn inherit(fds: Vec<OwnedFd>) -> io::Result<Self> {
        let mut inherited = Vec::with_capacity(fds.len());
        for fd in fds {
            let socket = Socket::from(fd);
            let transport = match socket.r#type()? {
                Type::STREAM if socket.is_listener()? => Some(Transport::Tcp),
                Type::DGRAM => Some(Transport::Udp),
                _ => None,
            };
            let (Some(transport), Some(addr)) = (transport, socket.local_addr()?.as_socket())
            else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "upgrade: a socket handed over is neither a listening TCP socket nor a bound UDP one",
                ));
            };
            socket.set_nonblocking(true)?;
            inherited.push((transport, addr, socket));
        }
        Ok(Sockets {
            inherited,
            handed_out: Vec::new(),
            reuse_port: false,
        })
    }

    /// Binds new sockets with `SO_REUSEPORT` (`reuse_port` in the config file): other
    /// processes with the same setting (and user) may listen on the same addresses.
    pub fn set_reuse_port(&mut self, reuse_port: bool) {
        self.reuse_port = reuse_port;
    }

    /// The inherited socket of `transport` bound to `addr`, if any.
    fn adopt(&mut self, transport: Transport, addr: SocketAddr) -> Option<Socket> {
        let i = self
            .inherited
            .iter()
            .position(|(t, a, _)| *t == transport && *a == addr)?;
        tracing::info!(%addr, ?transport, "adopting the socket handed over");
        Some(self.inherited.swap_remove(i).2)
    }

    /// A listening socket on `addr`: the inherited one bound there if any, else a new one.
    pub fn tcp(&mut self, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        let listener = match self.adopt(Transport::Tcp, addr) {
            Some(socket) => socket.into(),
            None => bind_tcp_shared(addr, self.reuse_port)?,
        };
        self.handed_out.push(listener.as_fd().try_clone_to_owned()?);
        Ok(listener)
    }

    /// A UDP socket on `addr`: the inherited one bound there if any, else a new one.
    pub fn udp(&mut self, addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let socket = match self.adopt(Transport::Udp, addr) {
            Some(socket) => socket.into(),
            None => bind_udp_shared(addr, self.reuse_port)?,
        };
        self.handed_out.push(socket.as_fd().try_clone_to_owned()?);
        Ok(socket)
    }

    /// Closes the inherited sockets no service asked for, returning their addresses
    /// (connections waiting on them are lost: the new configuration dropped the address).
    pub fn close_unclaimed(&mut self) -> Vec<SocketAddr> {
        self.inherited.drain(..).map(|(_, addr, _)| addr).collect()
    }

    /// Every socket handed out so far, to give to a new process.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.handed_out.iter().map(|fd| fd.as_fd()).collect()
    }

    /// Copies of every socket handed out so far, that outlive this register.
    pub fn try_clone_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.handed_out.iter().map(|fd| fd.try_clone()).collect()
    }
}

/// Counters of one listener's accept loop, shared with whoever wants to watch it.
#[derive(Debug, Default)]
pub struct AcceptStats {
    accepted: AtomicU64,
    errors: AtomicU64,
}

impl AcceptStats {
    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Accept calls that failed so far (each failure counted once, backoffs included).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Whether an accept error concerns only the connection being accepted (skip it at once),
/// as opposed to a resource problem of the process or system (back off before retrying).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::PermissionDenied
    )
}

/// Accepts connections on `listener` until `shutdown` fires, calling `on_conn` for each.
pub async fn accept_loop<F>(
    listener: tokio::net::TcpListener,
    stats: Arc<AcceptStats>,
    mut shutdown: ShutdownWatch,
    mut on_conn: F,
) where
    F: FnMut(TcpStream, SocketAddr),
{
    let local = listener.local_addr().ok();
    let mut backoff = MIN_BACKOFF;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                backoff = MIN_BACKOFF;
                on_conn(stream, peer);
            }
            Err(e) if is_connection_error(&e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = ?local, error = %e, "accept failed for one connection");
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    listener = ?local,
                    error = %e,
                    backoff_ms = backoff.as_millis() as u64,
                    "accept failed; backing off"
                );
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_v4_and_v6_on_the_same_port() {
        let v4 = bind_tcp("127.0.0.1:0".parse().expect("addr")).expect("bind v4");
        let port = v4.local_addr().expect("addr").port();
        // ::1 may be missing in some sandboxes; only assert when it exists.
        if let Ok(v6) = bind_tcp(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))) {
            assert_eq!(v6.local_addr().expect("addr").port(), port);
        }
    }

    #[test]
    fn bad_addresses_are_errors() {
        assert!(resolve("not an address").is_err());
        assert!(resolve("127.0.0.1:99999").is_err());
    }
}

//! [`HttpPeer`]: where a request goes, and the timeouts of talking to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::PeerStats;

use crate::upstream::tls::TlsConnector;

/// Timeouts of one upstream peer. Every one is finite by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTimeouts {
    /// Time to establish the TCP connection. Default 5 s.
    pub connect: Duration,
    /// Time the upstream may send nothing (and accept nothing) while a request is in
    /// flight: bounds the wait for the response head and every gap in the response body.
    /// Default 60 s.
    pub read: Duration,
    /// Time a write to the upstream may make no progress. Default 60 s.
    pub write: Duration,
    /// Time an unused pooled connection is kept before it is closed. Default 60 s.
    pub idle: Duration,
}

impl Default for PeerTimeouts {
    fn default() -> Self {
        PeerTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// An upstream HTTP/1.1 peer: its address, timeouts and, for TLS origins, its connector. Returned by the `upstream_peer`
/// phase to say where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPeer {
    addr: SocketAddr,
    timeouts: PeerTimeouts,
    tls: Option<TlsConnector>,
    http: UpstreamHttp,
    stats: StatsHandle,
    /// The PROXY protocol v2 header each connection starts with, if any (boxed: peers
    /// are returned and moved per request, and most have none).
    proxy_header: Option<Box<ProxyHeader>>,
}

/// What a PROXY protocol header toward a peer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyHeader {
    /// The connection carries requests of `client`, which reached the proxy at `proxy`.
    For {
        client: SocketAddr,
        proxy: SocketAddr,
    },
    /// The proxy's own connection (a health check): `LOCAL`.
    Local,
}

/// The counters of the group peer an [`HttpPeer`] was chosen from; two handles are equal
/// when they count into the same place.
#[derive(Debug, Clone, Default)]
struct StatsHandle(Option<Arc<PeerStats>>);

impl PartialEq for StatsHandle {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for StatsHandle {}

/// Which HTTP version requests to a peer use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamHttp {
    /// HTTP/1.1 (the default), over pooled connections, one request at a time each.
    #[default]
    Http1,
    /// HTTP/2 over TLS if ALPN agrees, else HTTP/1.1; on cleartext peers, HTTP/1.1.
    Negotiate,
    /// HTTP/2 always: over TLS by ALPN, in cleartext with prior knowledge (h2c). All
    /// requests to the peer share one multiplexed connection.
    Http2,
}

impl HttpPeer {
    /// A plain-text HTTP/1.1 peer at `addr` with default timeouts.
    pub fn new(addr: SocketAddr) -> Self {
        HttpPeer {
            addr,
            timeouts: PeerTimeouts::default(),
            tls: None,
            http: UpstreamHttp::Http1,
            stats: StatsHandle(None),
            proxy_header: None,
        }
    }

    /// Counts this peer's requests, connections and timings into `stats` (a group's
    /// [`crate::lb::PeerState::stats`]), for metrics and the status page.
    pub fn with_stats(mut self, stats: Arc<PeerStats>) -> Self {
        self.stats = StatsHandle(Some(stats));
        self
    }

    /// The counters this peer's requests are recorded in, if any.
    pub fn stats(&self) -> Option<&Arc<PeerStats>> {
        self.stats.0.as_ref()
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reaches the peer over TLS with `tls` (see [`super::UpstreamTls`]).
    pub fn with_tls(mut self, tls: TlsConnector) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Speaks `http` to the peer.
    pub fn with_http(mut self, http: UpstreamHttp) -> Self {
        self.http = http;
        self
    }

    /// Which HTTP version the peer gets.
    pub fn http(&self) -> UpstreamHttp {
        self.http
    }

    /// The TLS connector, if the peer is reached over TLS.
    pub fn tls(&self) -> Option<&TlsConnector> {
        self.tls.as_ref()
    }

    /// The peer's timeouts.
    pub fn timeouts(&self) -> &PeerTimeouts {
        &self.timeouts
    }

    /// Replaces all timeouts.
    pub fn with_timeouts(mut self, timeouts: PeerTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.timeouts.connect = d;
        self
    }

    /// Sets the read timeout.
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.timeouts.read = d;
        self
    }

    /// Sets the write timeout.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.timeouts.write = d;
        self
    }

    /// Sets how long an idle pooled connection to this peer is kept.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.timeouts.idle = d;
        self
    }

    /// The peer's address as a `Host` value, for requests that arrive without one.
    pub fn host_header(&self) -> http::HeaderValue {
        http::HeaderValue::from_str(&self.addr.to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"))
    }

    /// Starts each connection with a PROXY protocol v2 header saying it is for `client`,
    /// which reached the proxy at `proxy`; such connections serve that client only.
    pub fn with_proxy_protocol(mut self, client: SocketAddr, proxy: SocketAddr) -> Self {
        self.proxy_header = Some(Box::new(ProxyHeader::For { client, proxy }));
        self
    }

    /// Starts each connection with a PROXY protocol v2 `LOCAL` header: the proxy's own
    /// connection, for peers that require a header (health checks).
    pub fn with_proxy_protocol_local(mut self) -> Self {
        self.proxy_header = Some(Box::new(ProxyHeader::Local));
        self
    }

    /// The PROXY protocol v2 header a new connection starts with, if any.
    pub(crate) fn proxy_header(&self) -> Option<std::io::Result<Vec<u8>>> {
        Some(match *self.proxy_header.as_deref()? {
            ProxyHeader::For { client, proxy } => {
                crate::listen::proxy_protocol::v2_header(client, proxy)
            }
            ProxyHeader::Local => Ok(crate::listen::proxy_protocol::local_header()),
        })
    }

    /// The key connections to this peer are pooled under.
    pub(crate) fn pool_key(&self) -> PoolKey {
        PoolKey {
            addr: self.addr,
            read: self.timeouts.read,
            write: self.timeouts.write,
            tls: self.tls.as_ref().map_or(0, TlsConnector::id),
            http: self.http,
            client: match self.proxy_header.as_deref() {
                Some(ProxyHeader::For { client, .. }) => Some(*client),
                _ => None,
            },
        }
    }
}

/// What makes two peers share pooled connections: the address, and the read and write
/// timeouts, which a connection carries from its creation (so a peer with a short read
/// timeout never reuses a connection made for the same address with a long one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    addr: SocketAddr,
    read: Duration,
    write: Duration,
    /// The TLS connector's id (0: cleartext): TLS connections are reused only for the
    /// same name and trust settings.
    tls: u64,
    http: UpstreamHttp,
    /// The client a PROXY protocol header named: such a connection serves it alone.
    client: Option<SocketAddr>,
}

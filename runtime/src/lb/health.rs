//! Active health checks: a [`HealthCheck`] says how a group's peers are probed; a
//! [`HealthChecker`] probes every peer each interval, marks a peer down after `fall`
//! failed probes in a row and back up after `rise` good ones.
//!
//! A probe reaches a peer the way the group's traffic does, so a peer is healthy only if
//! it could serve a request:
//! - over TLS when the group has `tls`, with the group's own connector (its SNI name, its
//!   trust — CA file, or none with `insecure` — and its client certificate);
//! - an HTTP check speaks the group's HTTP version: HTTP/2 with prior knowledge (h2c) in
//!   cleartext, HTTP/2 by ALPN over TLS (with `http2`, a peer whose ALPN refuses h2 fails;
//!   with `http2 negotiate`, it is probed with HTTP/1.1 as its traffic would be), HTTP/1.1
//!   otherwise. It goes through an [`HttpClient`] of its own: a probe neither takes nor
//!   leaves a pooled connection, and its connection closes when it ends;
//! - a TCP check of a TLS group completes the TLS handshake (a port that accepts
//!   connections but fails TLS serves nothing), and of an `http2` TLS group also needs ALPN
//!   to agree on h2. Over TLS 1.3 the client side finishes its handshake before the server
//!   has checked a client certificate, so only an HTTP check sees an origin refuse it.
//!
//! Every wait of a probe (connect, handshake, request, response head) is bounded by the
//! check's timeout; the probe does not read the response body.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::Request;
use http_body_util::Empty;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind, Result};
use crate::lb::LoadBalancer;
use crate::shutdown::ShutdownWatch;
use crate::upstream::{
    ClientOptions, HttpClient, HttpPeer, PeerTimeouts, TlsConnector, UpstreamHttp,
};

/// The `User-Agent` of HTTP probes.
const USER_AGENT_VALUE: &str = "pingora-dsl-health-check";

/// How an active health check probes a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A connection as the group's traffic opens it: TCP, and the TLS handshake for a TLS
    /// group.
    Tcp,
    /// `GET path`, in the group's HTTP version and over its TLS, answers with a status in
    /// `status`.
    Http {
        /// The path requested.
        path: String,
        /// The `Host` (HTTP/2: `:authority`) sent. Default: the group's SNI name, or the
        /// peer's address.
        host: Option<String>,
        /// Statuses that count as healthy.
        status: RangeInclusive<u16>,
    },
}

/// An active health check, run as a background service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The probe.
    pub kind: HealthKind,
    /// Time between two probes of a peer.
    pub interval: Duration,
    /// Time a probe may take, from connecting to the response's head.
    pub timeout: Duration,
    /// Consecutive successes that bring a down peer back.
    pub rise: u32,
    /// Consecutive failures that take a peer down.
    pub fall: u32,
}

impl HealthKind {
    /// The statuses an HTTP check counts as healthy unless told otherwise: 2xx and 3xx.
    pub const DEFAULT_STATUS: RangeInclusive<u16> = 200..=399;
}

impl HealthCheck {
    /// Time between two probes of a peer unless told otherwise.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    /// Time a probe may take unless told otherwise (and never more than the interval).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Consecutive successes that bring a down peer back, unless told otherwise.
    pub const DEFAULT_RISE: u32 = 2;
    /// Consecutive failures that take a peer down, unless told otherwise.
    pub const DEFAULT_FALL: u32 = 3;

    /// A check probing with `kind` at the default interval, timeout, rise and fall (what a
    /// declared `health` leaves unsaid).
    pub fn new(kind: HealthKind) -> Self {
        HealthCheck {
            kind,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
        }
    }

    /// Probes every `interval`. The timeout set so far is shortened to `interval` if
    /// longer, so probes never overlap: set an explicit timeout after this.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self.timeout = self.timeout.min(interval);
        self
    }

    /// Lets a probe take `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Brings a down peer back after `rise` consecutive successes.
    pub fn with_rise(mut self, rise: u32) -> Self {
        self.rise = rise;
        self
    }

    /// Takes a peer down after `fall` consecutive failures.
    pub fn with_fall(mut self, fall: u32) -> Self {
        self.fall = fall;
        self
    }
}

/// How the group's traffic reaches its peers, and so its probes: TLS and HTTP version.
#[derive(Debug, Clone)]
pub(crate) struct PeerAccess {
    /// TLS to the peers: the group's connector, or why it could not be built.
    pub(crate) tls: Option<Result<TlsConnector, Arc<str>>>,
    /// The HTTP version the group speaks.
    pub(crate) http: UpstreamHttp,
    /// The peers read a PROXY protocol header: probes send a `LOCAL` one (a check made
    /// by the proxy itself, on behalf of no client).
    pub(crate) proxy_protocol: bool,
}

/// Runs a group's active health check: probes every peer each interval and marks peers
/// down after `fall` failures, back up after `rise` successes (logging both, with the last
/// failure's reason).
pub struct HealthChecker {
    group: Arc<str>,
    lb: Arc<ArcSwap<LoadBalancer>>,
    prober: Arc<Prober>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("group", &self.group)
            .field("check", &self.prober.check)
            .finish_non_exhaustive()
    }
}

impl HealthChecker {
    /// A checker of the peers in `lb` (group `group`), reached as `access` says.
    pub(crate) fn new(
        group: Arc<str>,
        lb: Arc<ArcSwap<LoadBalancer>>,
        check: HealthCheck,
        access: PeerAccess,
    ) -> Self {
        HealthChecker {
            group,
            lb,
            prober: Arc::new(Prober { check, access }),
        }
    }

    /// The group checked.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Probes every peer once, concurrently, and applies the results.
    pub async fn check_once(&self) {
        let peers = self.lb.load().peers().to_vec();
        let mut probes = tokio::task::JoinSet::new();
        for peer in peers {
            let prober = self.prober.clone();
            probes.spawn(async move {
                let result = prober.probe(peer.addr()).await;
                (peer, result)
            });
        }
        let (rise, fall) = (self.prober.check.rise, self.prober.check.fall);
        while let Some(joined) = probes.join_next().await {
            let Ok((peer, result)) = joined else { continue };
            if let Err(e) = &result {
                tracing::debug!(group = %self.group, peer = %peer.addr(), error = %e, "health probe failed");
            }
            match (peer.record_check(result.is_ok(), rise, fall), result) {
                (Some(false), Err(e)) => tracing::warn!(
                    group = %self.group,
                    peer = %peer.addr(),
                    error = %e,
                    "peer failed its health checks: marked down"
                ),
                (Some(true), _) => tracing::info!(
                    group = %self.group,
                    peer = %peer.addr(),
                    "peer passed its health checks: back in service"
                ),
                _ => {}
            }
        }
    }

    /// Checks every interval until `shutdown`.
    pub async fn run(self, mut shutdown: ShutdownWatch) {
        loop {
            self.check_once().await;
            tokio::select! {
                _ = tokio::time::sleep(self.prober.check.interval) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Checks every interval, forever (for embedding; abort the task to stop).
    pub async fn run_forever(self) {
        loop {
            self.check_once().await;
            tokio::time::sleep(self.prober.check.interval).await;
        }
    }
}

/// One check and how to reach the peers: probes one peer at a time.
#[derive(Debug)]
struct Prober {
    check: HealthCheck,
    access: PeerAccess,
}

impl Prober {
    /// One probe of `addr`, bounded by the check's timeout: `Ok` if the peer is healthy.
    async fn probe(&self, addr: SocketAddr) -> Result<()> {
        let attempt = async {
            match &self.check.kind {
                HealthKind::Tcp => self.connect(addr).await,
                HealthKind::Http { path, host, status } => {
                    self.request(addr, path, host.as_deref(), status).await
                }
            }
        };
        tokio::time::timeout(self.check.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::ReadTimeout,
                    "no health check verdict within the check's timeout",
                ))
            })
    }

    /// The group's TLS connector, if it has TLS; an error if its settings did not load
    /// (the group's requests fail too).
    fn tls(&self) -> Result<Option<&TlsConnector>> {
        match &self.access.tls {
            None => Ok(None),
            Some(Ok(tls)) => Ok(Some(tls)),
            Some(Err(_)) => Err(Error::new(
                ErrorKind::UpstreamTls,
                "the upstream group's TLS settings could not be loaded",
            )),
        }
    }

    /// A TCP check: connect, and for a TLS group complete the handshake (agreeing on h2
    /// for an `http2` group).
    async fn connect(&self, addr: SocketAddr) -> Result<()> {
        let tls = self.tls()?;
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| {
            Error::with_source(ErrorKind::ConnectRefused, "connecting to the peer", e)
        })?;
        if self.access.proxy_protocol {
            let header = crate::listen::proxy_protocol::local_header();
            tcp.write_all(&header).await.map_err(|e| {
                Error::with_source(
                    ErrorKind::ConnectRefused,
                    "sending the PROXY protocol header",
                    e,
                )
            })?;
        }
        let Some(tls) = tls else { return Ok(()) };
        let (mut stream, h2) = tls
            .connect(tcp, addr.ip(), self.access.http != UpstreamHttp::Http1)
            .await?;
        // A polite close (close_notify), within the probe's timeout like the rest.
        let _ = stream.shutdown().await;
        if self.access.http == UpstreamHttp::Http2 && !h2 {
            return Err(Error::new(
                ErrorKind::UpstreamTls,
                "upstream did not agree to HTTP/2 (ALPN)",
            ));
        }
        Ok(())
    }

    /// An HTTP check: `GET path` to `addr` as the group's requests go, judged by the
    /// response's status.
    async fn request(
        &self,
        addr: SocketAddr,
        path: &str,
        host: Option<&str>,
        status: &RangeInclusive<u16>,
    ) -> Result<()> {
        let tls = self.tls()?;
        let t = self.check.timeout;
        let mut peer = HttpPeer::new(addr)
            .with_http(self.access.http)
            .with_timeouts(PeerTimeouts {
                connect: t,
                read: t,
                write: t,
                idle: t,
            });
        if let Some(tls) = tls {
            peer = peer.with_tls(tls.clone());
        }
        if self.access.proxy_protocol {
            peer = peer.with_proxy_protocol_local();
        }
        let host = match host.or_else(|| tls.and_then(TlsConnector::sni)) {
            Some(name) => name.to_owned(),
            None => addr.to_string(),
        };
        let request = Request::get(path)
            .header(HOST, host)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(Empty::<Bytes>::new())
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Internal,
                    "the health check's path or host is not valid in a request",
                    e,
                )
            })?;
        // A client of its own: the probe's connection is new, and closes with it.
        let client = HttpClient::new(ClientOptions::default());
        let response = client.send(&peer, request).await?;
        let code = response.status().as_u16();
        if status.contains(&code) {
            Ok(())
        } else {
            Err(Error::with_source(
                ErrorKind::InvalidResponse,
                "the health check was answered with a status outside the healthy range",
                format!("status {code}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn prober(kind: HealthKind) -> Prober {
        Prober {
            check: HealthCheck {
                kind,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                rise: 1,
                fall: 1,
            },
            access: PeerAccess {
                tls: None,
                http: UpstreamHttp::Http1,
                proxy_protocol: false,
            },
        }
    }

    fn http(path: &str) -> HealthKind {
        HealthKind::Http {
            path: path.into(),
            host: None,
            status: 200..=299,
        }
    }

    #[tokio::test]
    async fn probes_tell_listening_and_answering_peers_apart() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let reply: &[u8] = if buf[..n].starts_with(b"GET /ok ") {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    } else if buf[..n].starts_with(b"GET /garbage ") {
                        b"SMTP ready\r\n\r\n"
                    } else {
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                    };
                    let _ = s.write_all(reply).await;
                });
            }
        });
        assert!(prober(http("/ok")).probe(addr).await.is_ok());
        let down = prober(http("/down")).probe(addr).await.expect_err("503");
        assert_eq!(down.kind(), ErrorKind::InvalidResponse);
        assert!(prober(http("/garbage")).probe(addr).await.is_err());
        assert!(prober(HealthKind::Tcp).probe(addr).await.is_ok());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        assert!(prober(HealthKind::Tcp).probe(closed).await.is_err());
        assert!(prober(http("/ok")).probe(closed).await.is_err());
    }

    #[tokio::test]
    async fn a_group_whose_tls_did_not_load_fails_its_probes_without_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        for kind in [HealthKind::Tcp, http("/ok")] {
            let mut p = prober(kind);
            p.access.tls = Some(Err(Arc::from("upstream x: tls: no such file")));
            let e = p.probe(addr).await.expect_err("no TLS settings");
            assert_eq!(e.kind(), ErrorKind::UpstreamTls);
        }
        listener.set_nonblocking(true).expect("nonblocking");
        assert!(listener.accept().is_err(), "nothing connected");
    }

    #[tokio::test]
    async fn an_invalid_path_fails_the_probe_without_a_panic() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let e = prober(http("/a b"))
            .probe(addr)
            .await
            .expect_err("no valid request");
        assert_eq!(e.kind(), ErrorKind::Internal);
    }
}

//! QUIC listeners (HTTP/3): the TLS 1.3 configuration made from a TLS listener's
//! certificates (chosen by SNI as there), the transport's limits, and the endpoint on a UDP
//! socket from the process's register (so an upgrade hands it over like the TCP ones).
//!
//! QUIC's TLS is rustls (ring), which quinn speaks natively; the certificates and keys are
//! the same PEM files the TCP listeners serve with OpenSSL or BoringSSL.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use arc_swap::ArcSwap;

use super::reload;
use super::tls::{certificate_names, name_matches, CertKey, TlsSettings};

/// The ALPN token of HTTP/3.
const H3_ALPN: &[u8] = b"h3";

/// The limits of an HTTP/3 listener's connections.
#[derive(Debug, Clone)]
pub struct QuicOptions {
    /// Requests open at once on one connection (bidirectional streams).
    pub max_concurrent_streams: u32,
    /// Bytes a client may send on one request before the proxy reads them.
    pub stream_window: u32,
    /// Bytes a client may send on all of a connection's requests before the proxy reads
    /// them.
    pub connection_window: u32,
    /// A connection with nothing to send or receive for this long is closed.
    pub idle_timeout: Duration,
    /// QUIC connections open at once on the listener; past it new ones are refused (the
    /// client falls back to TCP).
    pub max_connections: usize,
    /// QUIC connections open on the listener past which a new client's address is
    /// validated first (a Retry round trip) before the proxy keeps any state for it: 0
    /// validates every one.
    pub validate_over: usize,
}

impl Default for QuicOptions {
    fn default() -> Self {
        QuicOptions {
            max_concurrent_streams: 100,
            stream_window: 1 << 20,
            connection_window: 8 << 20,
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            validate_over: 1_000,
        }
    }
}

/// The QUIC server configuration for `tls`'s certificates with `options`' limits: TLS 1.3,
/// ALPN `h3`, no 0-RTT (early data could be replayed), the certificate chosen by SNI.
pub fn server_config(tls: &TlsSettings, options: &QuicOptions) -> io::Result<quinn::ServerConfig> {
    // ring: a small build (a C compiler). Its key exchange has no post-quantum group (the
    // deprecation says so); QUIC clients get X25519 or P-256.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = SniCertificates::load(tls, provider.clone())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| io::Error::other(format!("QUIC TLS: {e}")))?;
    // A TLS listener that requires client certificates (mTLS) requires them here too.
    let builder = match &tls.client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut crypto = builder.with_cert_resolver(resolver);
    crypto.alpn_protocols = vec![H3_ALPN.to_vec()];
    // No 0-RTT: rustls's default, said here because quinn's own helpers turn it on.
    crypto.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| io::Error::other(format!("QUIC TLS: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport(options)?));
    Ok(config)
}

/// The transport limits: streams, flow-control windows, idle timeout; no datagrams.
fn transport(options: &QuicOptions) -> io::Result<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(options.idle_timeout).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("QUIC idle timeout: {e}"),
        )
    })?;
    transport
        .max_concurrent_bidi_streams(options.max_concurrent_streams.into())
        // A client's control and QPACK streams, and one of grease.
        .max_concurrent_uni_streams(8u32.into())
        .stream_receive_window(options.stream_window.into())
        .receive_window(options.connection_window.into())
        .max_idle_timeout(Some(idle))
        .datagram_receive_buffer_size(None);
    Ok(transport)
}

/// Client certificates required, verified against the CA certificates in `ca` (PEM).
fn client_verifier(
    ca: &std::path::Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> io::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let at = |e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("client CA {}: {e}", ca.display()),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| at(&e))? {
        roots.add(cert.map_err(|e| at(&e))?).map_err(|e| at(&e))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| at(&e))
}

/// A QUIC endpoint serving `config` on `socket` (bound, or handed over by an old process).
/// Called on the runtime that will drive it.
pub fn endpoint(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// The certificates of a listener, chosen by the name a client asks for (SNI) as the TCP
/// listeners choose: an exact or one-label wildcard name, else the first certificate.
/// Registered for reloads (SIGHUP, `tls_watch`) like the TCP listeners' contexts.
struct SniCertificates {
    settings: TlsSettings,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Each certificate with the names it carries, in declared order.
    loaded: ArcSwap<Vec<(Vec<String>, Arc<CertifiedKey>)>>,
    read: std::sync::Mutex<reload::Stamp>,
}

impl std::fmt::Debug for SniCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniCertificates").finish_non_exhaustive()
    }
}

impl SniCertificates {
    fn load(
        settings: &TlsSettings,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> io::Result<Arc<Self>> {
        if settings.certs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a QUIC listener needs a certificate (those of the proxy's TLS listener)",
            ));
        }
        let live = Arc::new(SniCertificates {
            read: std::sync::Mutex::new(reload::stamp(settings)),
            loaded: ArcSwap::from_pointee(read_all(&settings.certs, &provider)?),
            settings: settings.clone(),
            provider,
        });
        let weak: std::sync::Weak<SniCertificates> = Arc::downgrade(&live);
        reload::register(weak);
        Ok(live)
    }
}

/// Every certificate of `certs` with its names.
fn read_all(
    certs: &[CertKey],
    provider: &rustls::crypto::CryptoProvider,
) -> io::Result<Vec<(Vec<String>, Arc<CertifiedKey>)>> {
    certs
        .iter()
        .map(|c| {
            Ok((
                certificate_names(&c.cert)?,
                Arc::new(certified_key(c, provider)?),
            ))
        })
        .collect()
}

impl reload::Reloadable for SniCertificates {
    fn reload(&self) -> io::Result<()> {
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = reload::stamp(&self.settings);
        self.loaded
            .store(Arc::new(read_all(&self.settings.certs, &self.provider)?));
        Ok(())
    }

    fn changed(&self) -> bool {
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) != reload::stamp(&self.settings)
    }
}

impl rustls::server::ResolvesServerCert for SniCertificates {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.load();
        let chosen = hello.server_name().and_then(|wanted| {
            loaded
                .iter()
                .find(|(names, _)| names.iter().any(|n| name_matches(n, wanted)))
        });
        chosen.or(loaded.first()).map(|(_, key)| key.clone())
    }
}

/// A certificate chain and its key, read from their PEM files.
fn certified_key(
    files: &CertKey,
    provider: &rustls::crypto::CryptoProvider,
) -> io::Result<CertifiedKey> {
    let at = |path: &std::path::Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| at(&files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&files.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| at(&files.key, &e))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| at(&files.key, &e))
}

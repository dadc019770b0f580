//! TLS to origins: SNI, certificate and hostname verification (on by default, against the
//! system's CAs or a CA file), an explicit opt-out for testing, and client certificates
//! (mTLS to the origin).
//!
//! An [`UpstreamTls`] is the declaration; [`UpstreamTls::build`] loads its files once and
//! gives the [`TlsConnector`] that [`super::HttpPeer::with_tls`] attaches to peers. Pooled
//! connections are keyed by connector too, so a TLS connection is only reused for the same
//! name and trust settings.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::tls::lib::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use crate::tls::TlsStream as SslStream;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, ErrorKind, Result};
use crate::listen::tls::CertKey;

/// How a group of peers is reached over TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the origin's certificate. `None`: no SNI,
    /// and the certificate must be for the peer's IP address.
    pub sni: Option<String>,
    /// CA certificates (PEM) to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate and name verification. For tests against self-signed origins only:
    /// anyone on the path can then read and change the traffic.
    pub insecure: bool,
    /// A client certificate and key to present (mTLS to the origin).
    pub client_cert: Option<CertKey>,
}

/// Distinguishes connectors in pool keys.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A built [`UpstreamTls`]: performs client handshakes. Cheap to clone.
#[derive(Clone)]
pub struct TlsConnector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    id: u64,
    connector: SslConnector,
    sni: Option<String>,
    insecure: bool,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("sni", &self.inner.sni)
            .field("insecure", &self.inner.insecure)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsConnector {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

impl Eq for TlsConnector {}

impl UpstreamTls {
    /// TLS with SNI and verification for `name`.
    pub fn with_sni(name: impl Into<String>) -> Self {
        UpstreamTls {
            sni: Some(name.into()),
            ..UpstreamTls::default()
        }
    }

    /// Loads the CA file and client certificate and builds the connector. Errors name the
    /// file.
    pub fn build(&self) -> io::Result<TlsConnector> {
        let mut b = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| crate::tls::library_error("cannot create a TLS client context", e))?;
        crate::tls::apply_policy(&mut b)?;
        if let Some(ca) = &self.ca_file {
            std::fs::File::open(ca).map_err(|e| {
                io::Error::new(e.kind(), format!("upstream CA file {}: {e}", ca.display()))
            })?;
            // Only this CA: a private origin's trust must not widen to every public CA.
            let mut store = crate::tls::lib::x509::store::X509StoreBuilder::new()
                .map_err(|e| crate::tls::library_error("cannot create a certificate store", e))?;
            let pem = std::fs::read(ca)?;
            let certs = crate::tls::lib::x509::X509::stack_from_pem(&pem).map_err(|e| {
                crate::tls::library_error(
                    &format!("upstream CA file {}: not PEM certificates", ca.display()),
                    e,
                )
            })?;
            if certs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("upstream CA file {}: no certificate in it", ca.display()),
                ));
            }
            for cert in certs {
                store.add_cert(cert).map_err(|e| {
                    crate::tls::library_error(&format!("upstream CA file {}", ca.display()), e)
                })?;
            }
            b.set_verify_cert_store(store.build())
                .map_err(|e| crate::tls::library_error("cannot use the CA file", e))?;
        }
        if let Some(pair) = &self.client_cert {
            b.set_certificate_chain_file(&pair.cert).map_err(|e| {
                crate::tls::library_error(
                    &format!("upstream client certificate {}", pair.cert.display()),
                    e,
                )
            })?;
            b.set_private_key_file(&pair.key, SslFiletype::PEM)
                .map_err(|e| {
                    crate::tls::library_error(
                        &format!("upstream client key {}", pair.key.display()),
                        e,
                    )
                })?;
            b.check_private_key().map_err(|e| {
                crate::tls::library_error(
                    &format!(
                        "upstream client key {} does not match {}",
                        pair.key.display(),
                        pair.cert.display()
                    ),
                    e,
                )
            })?;
        }
        if self.insecure {
            b.set_verify(SslVerifyMode::NONE);
        }
        b.set_alpn_protos(b"\x08http/1.1")
            .map_err(|e| crate::tls::library_error("cannot set ALPN", e))?;
        Ok(TlsConnector {
            inner: Arc::new(ConnectorInner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                connector: b.build(),
                sni: self.sni.clone(),
                insecure: self.insecure,
            }),
        })
    }
}

impl TlsConnector {
    /// Identifies the connector in pool keys.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// The name sent as SNI (and verified, unless `insecure`), if any.
    pub fn sni(&self) -> Option<&str> {
        self.inner.sni.as_deref()
    }

    /// Runs the client handshake over `stream` to the peer at `ip`, offering HTTP/2 by
    /// ALPN when `offer_h2`. Returns the stream and whether HTTP/2 was agreed.
    pub(crate) async fn connect<S>(
        &self,
        stream: S,
        ip: IpAddr,
        offer_h2: bool,
    ) -> Result<(SslStream<S>, bool)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let inner = &self.inner;
        let setup = || -> std::result::Result<crate::tls::lib::ssl::Ssl, crate::tls::lib::error::ErrorStack> {
            let mut config = inner.connector.configure()?;
            if inner.insecure {
                config.set_verify_hostname(false);
                config.set_use_server_name_indication(inner.sni.is_some());
                return config.into_ssl(inner.sni.as_deref().unwrap_or("invalid"));
            }
            match &inner.sni {
                Some(name) => config.into_ssl(name),
                None => {
                    // No name: no SNI, and the certificate must carry the peer's IP.
                    config.set_use_server_name_indication(false);
                    config.set_verify_hostname(false);
                    let mut ssl = config.into_ssl("ip")?;
                    ssl.param_mut().set_ip(ip)?;
                    Ok(ssl)
                }
            }
        };
        let ssl = setup()
            .and_then(|mut ssl| {
                if offer_h2 {
                    ssl.set_alpn_protos(b"\x02h2\x08http/1.1")?;
                }
                Ok(ssl)
            })
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::UpstreamTls,
                    "preparing the upstream TLS session",
                    e,
                )
            })?;
        let mut stream = SslStream::new(ssl, stream).map_err(|e| {
            Error::with_source(
                ErrorKind::UpstreamTls,
                "preparing the upstream TLS session",
                e,
            )
        })?;
        Pin::new(&mut stream).connect().await.map_err(|e| {
            let kind = match e.io_error() {
                Some(io) if io.kind() == io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                _ => ErrorKind::UpstreamTls,
            };
            Error::with_source(kind, "TLS handshake with upstream", e)
        })?;
        let h2 = stream.ssl().selected_alpn_protocol() == Some(b"h2".as_slice());
        Ok((stream, h2))
    }
}

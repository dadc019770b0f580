//! TLS termination for listeners: certificates chosen by SNI (exact and wildcard names,
//! read from each certificate), TLS 1.2 and 1.3 only with Mozilla's "intermediate" cipher
//! list and the process's key-exchange groups ([`crate::tls`]: post-quantum first where the
//! library has it), ALPN (`h2`, `http/1.1`), and optional client-certificate verification
//! (mTLS).
//!
//! Everything is loaded and checked when the listener is built, so a missing file, a key
//! that does not match its certificate or an unreadable CA is a startup error naming the
//! file, never a failure at the first handshake.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::lib::nid::Nid;
use crate::tls::lib::pkey::PKey;
use crate::tls::lib::ssl::{
    AlpnError, NameType, Ssl, SslAcceptor, SslAcceptorBuilder, SslMethod, SslVerifyMode,
};
use crate::tls::lib::x509::{X509Name, X509};
use crate::tls::TlsStream as SslStream;
use tokio::io::{AsyncRead, AsyncWrite};

/// ALPN protocol list offered when HTTP/2 is on: `h2` first, then `http/1.1`.
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";
/// ALPN protocol list with HTTP/2 off.
const ALPN_H1: &[u8] = b"\x08http/1.1";

/// Default time a client gets to complete the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    /// The certificate chain: the leaf first, then intermediates.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

/// What a TLS listener serves: one or more certificates (the first is the default when
/// the client sends no SNI or an unknown name) and, for mTLS, the CA client certificates
/// must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificates, chosen by the names they carry (subject alternative names, else the
    /// common name); the first is the default.
    pub certs: Vec<CertKey>,
    /// With a CA file, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
    /// Time a client gets to complete the handshake.
    pub handshake_timeout: Option<Duration>,
}

impl TlsSettings {
    /// One certificate and key.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsSettings {
            certs: vec![CertKey {
                cert: cert.into(),
                key: key.into(),
            }],
            client_ca: None,
            handshake_timeout: None,
        }
    }

    /// Adds a certificate served to clients asking (SNI) for one of its names.
    pub fn with_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.certs.push(CertKey {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Requires client certificates signed by the CA in `ca` (PEM).
    pub fn with_client_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(ca.into());
        self
    }

    /// Loads and checks everything: the acceptor for a listener. `http2` decides whether
    /// ALPN offers `h2`. The acceptor re-reads the files on
    /// [`reload_certificates`](super::reload::reload_certificates) (SIGHUP).
    pub fn build(&self, http2: bool) -> io::Result<TlsAcceptor> {
        let live = super::reload::LiveContext::new(self.contexts(http2)?, self.clone(), http2);
        Ok(TlsAcceptor {
            live,
            handshake_timeout: self.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
        })
    }

    /// The context handshakes start from, with the SNI callback that switches to the
    /// context of the certificate asked for.
    pub(crate) fn contexts(&self, http2: bool) -> io::Result<SslAcceptor> {
        let Some(first) = self.certs.first() else {
            return Err(invalid(
                "a TLS listener needs at least one certificate and key",
            ));
        };
        let alpn = if http2 { ALPN_H2_H1 } else { ALPN_H1 };
        let mut named = Vec::new();
        for pair in &self.certs {
            let names = certificate_names(&pair.cert)?;
            let acceptor = self.context(pair, alpn)?.build();
            for name in names {
                named.push((name, acceptor.clone()));
            }
        }
        let named = Arc::new(named);
        let mut default = self.context(first, alpn)?;
        let lookup = named.clone();
        default.set_servername_callback(move |ssl, _alert| {
            let Some(wanted) = ssl.servername(NameType::HOST_NAME).map(str::to_owned) else {
                return Ok(());
            };
            if let Some((_, acceptor)) = lookup
                .iter()
                .find(|(pattern, _)| name_matches(pattern, &wanted))
            {
                // A context with the same settings and another certificate.
                let _ = ssl.set_ssl_context(acceptor.context());
            }
            Ok(())
        });
        Ok(default.build())
    }

    /// A context with `pair` and the shared settings.
    fn context(&self, pair: &CertKey, alpn: &'static [u8]) -> io::Result<SslAcceptorBuilder> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(|e| crate::tls::library_error("cannot create a TLS context", e))?;
        crate::tls::apply_policy(&mut b)?;
        readable(&pair.cert, "certificate")?;
        readable(&pair.key, "key")?;
        b.set_certificate_chain_file(&pair.cert).map_err(|e| {
            crate::tls::library_error(
                &format!(
                    "certificate {}: not a PEM certificate chain",
                    pair.cert.display()
                ),
                e,
            )
        })?;
        let key = std::fs::read(&pair.key).map_err(|e| {
            io::Error::new(e.kind(), format!("TLS key {}: {e}", pair.key.display()))
        })?;
        let key = PKey::private_key_from_pem(&key).map_err(|e| {
            crate::tls::library_error(
                &format!("key {}: not a PEM private key", pair.key.display()),
                e,
            )
        })?;
        let leaf = leaf_certificate(&pair.cert)?;
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(invalid(&format!(
                "key {} does not match certificate {}",
                pair.key.display(),
                pair.cert.display()
            )));
        }
        b.set_private_key(&key)
            .map_err(|e| crate::tls::library_error(&format!("key {}", pair.key.display()), e))?;
        b.set_alpn_select_callback(move |_ssl, client| {
            crate::tls::lib::ssl::select_next_proto(alpn, client).ok_or(AlpnError::NOACK)
        });
        if let Some(ca) = &self.client_ca {
            readable(ca, "client CA")?;
            b.set_ca_file(ca).map_err(|e| {
                crate::tls::library_error(
                    &format!("client CA {}: not PEM certificates", ca.display()),
                    e,
                )
            })?;
            let names = X509Name::load_client_ca_file(ca).map_err(|e| {
                crate::tls::library_error(&format!("client CA {}", ca.display()), e)
            })?;
            b.set_client_ca_list(names);
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        Ok(b)
    }
}

/// A built TLS configuration: performs server handshakes.
#[derive(Clone)]
pub struct TlsAcceptor {
    live: Arc<super::reload::LiveContext>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// A TLS connection after the handshake, and what was negotiated.
pub struct Accepted<S> {
    /// The decrypted stream.
    pub stream: SslStream<S>,
    /// Whether ALPN chose HTTP/2.
    pub h2: bool,
    /// The key-exchange group agreed on, as [`crate::tls::GROUP_NAMES`] spells it.
    pub group: &'static str,
}

impl<S> Accepted<S> {
    /// The name the client asked for by SNI, if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.stream.ssl().servername(NameType::HOST_NAME)
    }

    /// The common name of the certificate the client presented (mTLS), if it did.
    pub fn client_common_name(&self) -> Option<String> {
        let cert = self.stream.ssl().peer_certificate()?;
        let entry = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next()?;
        crate::tls::text_of(entry.data())
    }
}

impl TlsAcceptor {
    /// Runs the server handshake on `stream`, within the handshake timeout.
    pub async fn accept<S>(&self, stream: S) -> io::Result<Accepted<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ssl = Ssl::new(self.live.current().context())
            .map_err(|e| crate::tls::library_error("cannot start a TLS session", e))?;
        let mut stream = SslStream::new(ssl, stream)
            .map_err(|e| crate::tls::library_error("cannot start a TLS session", e))?;
        match tokio::time::timeout(self.handshake_timeout, Pin::new(&mut stream).accept()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(handshake_error(&e.to_string())),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            }
        }
        let h2 = stream.ssl().selected_alpn_protocol() == Some(b"h2".as_slice());
        let group = crate::tls::negotiated_group(stream.ssl());
        Ok(Accepted { stream, h2, group })
    }
}

/// A failed handshake as an error: `Unsupported` when the client offered no key-exchange
/// group this process accepts (e.g. post-quantum only against a library without it), with
/// the groups it does accept; `InvalidData` otherwise.
fn handshake_error(library_says: &str) -> io::Error {
    // OpenSSL says `no suitable key share`, BoringSSL `NO_SHARED_GROUP`.
    let said = library_says.to_ascii_lowercase().replace('_', " ");
    let no_group = ["no suitable key share", "no shared group"]
        .iter()
        .any(|s| said.contains(s));
    if no_group {
        return io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "TLS handshake failed: the client offers no key-exchange group this server \
                 accepts ({}): {library_says}",
                crate::tls::groups().join(", ")
            ),
        );
    }
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TLS handshake failed: {library_says}"),
    )
}

/// Logs a failed client handshake: at info when no key-exchange group was shared (a
/// mismatch of configurations an operator needs to see), else at debug (scanners, resets).
pub(crate) fn log_handshake_failure(client: std::net::SocketAddr, e: &io::Error) {
    if e.kind() == io::ErrorKind::Unsupported {
        tracing::info!(%client, error = %e, "TLS handshake failed");
    } else {
        tracing::debug!(%client, error = %e, "TLS handshake failed");
    }
}

/// The first (leaf) certificate of the chain in `path`.
fn leaf_certificate(path: &Path) -> io::Result<X509> {
    let pem = std::fs::read(path).map_err(|e| {
        io::Error::new(e.kind(), format!("TLS certificate {}: {e}", path.display()))
    })?;
    X509::from_pem(&pem).map_err(|e| {
        crate::tls::library_error(
            &format!("certificate {}: not a PEM certificate", path.display()),
            e,
        )
    })
}

/// The DNS names a certificate is for: its subject alternative names, else its common
/// name, lowercased.
pub(crate) fn certificate_names(path: &Path) -> io::Result<Vec<String>> {
    let cert = leaf_certificate(path)?;
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .filter_map(|e| crate::tls::text_of(e.data()).map(|s| s.to_ascii_lowercase())),
        );
    }
    Ok(names)
}

/// Whether the SNI name `wanted` matches the certificate name `pattern`: equal ignoring
/// case, or `*.example.com` for exactly one more label.
pub(crate) fn name_matches(pattern: &str, wanted: &str) -> bool {
    let wanted = wanted.trim_end_matches('.');
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return match wanted.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
            None => false,
        };
    }
    pattern.eq_ignore_ascii_case(wanted)
}

fn readable(path: &Path, what: &str) -> io::Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("TLS {what} {}: {e}", path.display())))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_or_by_one_wildcard_label() {
        assert!(name_matches("example.com", "EXAMPLE.com"));
        assert!(name_matches("*.example.com", "api.example.com"));
        assert!(name_matches("*.example.com", "api.example.com."));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("example.com", "other.com"));
    }

    #[test]
    fn missing_files_and_no_certificate_are_clear_errors() {
        let e = TlsSettings::default().build(true).expect_err("no cert");
        assert!(e.to_string().contains("at least one certificate"), "{e}");
        let e = TlsSettings::new("/nonexistent/a.crt", "/nonexistent/a.key")
            .build(true)
            .expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/a.crt"), "{e}");
    }
}

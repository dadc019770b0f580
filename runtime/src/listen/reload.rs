//! TLS certificates re-read without a restart: every acceptor built by
//! [`TlsSettings::build`] is registered here, and [`reload_certificates`] (which a declared
//! proxy calls on SIGHUP) loads each one's certificate and key files again. New handshakes
//! get the new certificates; connections already open keep theirs; a file that no longer
//! loads (missing, not PEM, a key that does not match) keeps the acceptor on what it had,
//! and the error names the file. [`reload_changed_certificates`] does the same for the
//! acceptors whose files changed on disk since they were last read (the config file's
//! `[server] tls_watch`). QUIC listeners' certificates ([`super::quic`]) are registered
//! and reloaded the same way.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::tls::TlsSettings;
use crate::tls::lib::ssl::SslAcceptor;

/// An acceptor's current contexts and what rebuilds them.
pub(crate) struct LiveContext {
    current: ArcSwap<SslAcceptor>,
    settings: TlsSettings,
    http2: bool,
    /// How the files looked when last read (loaded or not): a change is a reason to read
    /// them again.
    read: Mutex<Stamp>,
}

/// Each file's modification time and length (`None`: it could not be seen).
pub(crate) type Stamp = Vec<Option<(SystemTime, u64)>>;

/// How the certificate, key and client CA files of `settings` look now.
pub(crate) fn stamp(settings: &TlsSettings) -> Stamp {
    let files = settings
        .certs
        .iter()
        .flat_map(|c| [&c.cert, &c.key])
        .chain(settings.client_ca.as_ref());
    files.map(|path: &PathBuf| seen(path)).collect()
}

/// Something a reload reads again: a TLS listener's contexts, a QUIC listener's
/// certificates.
pub(crate) trait Reloadable: Send + Sync {
    /// Reads the files again; on an error keeps what it had.
    fn reload(&self) -> io::Result<()>;
    /// Whether a file changed since it was last read.
    fn changed(&self) -> bool;
}

/// Registers `live` for reloads (for as long as it lives).
pub(crate) fn register(live: Weak<dyn Reloadable>) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(live);
}

fn seen(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Every live acceptor of the process (dropped ones are pruned as reloads pass).
static LIVE: Mutex<Vec<Weak<dyn Reloadable>>> = Mutex::new(Vec::new());

impl LiveContext {
    /// `built` from `settings`, registered for reloads.
    pub(crate) fn new(built: SslAcceptor, settings: TlsSettings, http2: bool) -> Arc<Self> {
        let live = Arc::new(LiveContext {
            current: ArcSwap::from_pointee(built),
            read: Mutex::new(stamp(&settings)),
            settings,
            http2,
        });
        let weak: Weak<LiveContext> = Arc::downgrade(&live);
        register(weak);
        live
    }

    /// The contexts new handshakes start from.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<SslAcceptor>> {
        self.current.load()
    }
}

impl Reloadable for LiveContext {
    fn reload(&self) -> io::Result<()> {
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = stamp(&self.settings);
        let fresh = self.settings.contexts(self.http2)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    fn changed(&self) -> bool {
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) != stamp(&self.settings)
    }
}

/// What a reload did: acceptors that now serve the files as they are, and the errors of
/// those that kept their previous certificates.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Acceptors reloaded.
    pub reloaded: usize,
    /// One error per acceptor whose files no longer load (it keeps what it had).
    pub failed: Vec<io::Error>,
}

/// Loads the certificate and key files of every TLS listener of the process again.
pub fn reload_certificates() -> Reloaded {
    reload(live())
}

/// Loads again the files of the TLS listeners whose certificate, key or CA file changed
/// (modification time or length) since they were last read. A file that fails to load is
/// read again only once it changes again.
pub fn reload_changed_certificates() -> Reloaded {
    reload(live().into_iter().filter(|l| l.changed()).collect())
}

/// The acceptors still in use.
fn live() -> Vec<Arc<dyn Reloadable>> {
    let mut registered = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    registered.retain(|w| w.strong_count() > 0);
    registered.iter().filter_map(Weak::upgrade).collect()
}

fn reload(live: Vec<Arc<dyn Reloadable>>) -> Reloaded {
    let mut outcome = Reloaded::default();
    for acceptor in live {
        match acceptor.reload() {
            Ok(()) => outcome.reloaded += 1,
            Err(e) => outcome.failed.push(e),
        }
    }
    outcome
}

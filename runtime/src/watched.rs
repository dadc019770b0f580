//! Files a proxy reads at start and again on SIGHUP: password files, token lists, key
//! sets. A [`Watched`] file is parsed when it is opened; [`reload_files`] (which a declared
//! proxy calls on SIGHUP) parses every open one again and swaps the new contents in at
//! once, so a request sees the old contents or the new, never a mix. A file that no longer
//! parses keeps what was loaded before, and the error names the file.
//!
//! A file that cannot be read when it is first opened leaves an empty value (which refuses
//! every credential: failing closed) and an error that [`Watched::check`] returns, so the
//! start (and `-t`) stops, naming the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

/// A parsed file, reloadable.
pub struct Watched<T> {
    path: PathBuf,
    parse: fn(&str) -> Result<T, String>,
    current: ArcSwap<T>,
    /// Why the first load failed, until a load succeeds.
    error: Mutex<Option<String>>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a reload needs of a watched file, whatever it holds.
trait Reload: Send + Sync {
    fn reload(&self) -> Result<(), String>;
}

/// Every open file of the process (dropped ones are pruned as reloads pass).
static OPEN: Mutex<Vec<Weak<dyn Reload>>> = Mutex::new(Vec::new());

impl<T: Default + Send + Sync + 'static> Watched<T> {
    /// Reads and parses `path` with `parse`, and registers it for [`reload_files`].
    pub fn open(path: impl Into<PathBuf>, parse: fn(&str) -> Result<T, String>) -> Arc<Self> {
        let path = path.into();
        let (value, error) = match load(&path, parse) {
            Ok(value) => (value, None),
            Err(e) => (T::default(), Some(e)),
        };
        let watched = Arc::new(Watched {
            path,
            parse,
            current: ArcSwap::from_pointee(value),
            error: Mutex::new(error),
        });
        let weak: Weak<dyn Reload> = Arc::downgrade(&(watched.clone() as Arc<dyn Reload>));
        OPEN.lock().unwrap_or_else(|e| e.into_inner()).push(weak);
        watched
    }

    /// The contents as last loaded.
    pub fn current(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the file could not be loaded, if it never was.
    pub fn check(&self) -> std::io::Result<()> {
        match &*self.error.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(e) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.clone(),
            )),
        }
    }
}

impl<T: Send + Sync + 'static> Reload for Watched<T> {
    fn reload(&self) -> Result<(), String> {
        let value = load(&self.path, self.parse)?;
        self.current.store(Arc::new(value));
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

/// `path` read and parsed; the error names the file.
fn load<T>(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What a reload did: files now loaded as they are, and the errors of those that kept
/// their previous contents.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Files reloaded.
    pub reloaded: usize,
    /// One error per file that no longer loads (it keeps what it had).
    pub failed: Vec<String>,
}

/// Reads every open [`Watched`] file of the process again.
pub fn reload_files() -> Reloaded {
    let open: Vec<Arc<dyn Reload>> = {
        let mut registered = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        registered.retain(|w| w.strong_count() > 0);
        registered.iter().filter_map(Weak::upgrade).collect()
    };
    let mut outcome = Reloaded::default();
    for file in open {
        match file.reload() {
            Ok(()) => outcome.reloaded += 1,
            Err(e) => outcome.failed.push(e),
        }
    }
    outcome
}

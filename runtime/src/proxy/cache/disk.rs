//! The disk tier: every stored response is also written to a directory (the latest variant
//! of each key), so that a restarted proxy starts warm and the cache can hold more than
//! memory. A byte budget, least recently used out first.
//!
//! Crash safety: an object is written to `tmp/` and synced, then renamed into `objects/`
//! (a rename is atomic), so a file in `objects/` is always whole; what a crash or a
//! `kill -9` leaves in `tmp/` is deleted at start. The index is rebuilt at start from the
//! objects' headers; a file whose length does not match its header is deleted, never
//! served. Responses whose header values are not visible ASCII stay in memory only.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::store::Stored;

/// The first bytes of every object file (the format's version is in it).
const MAGIC: &[u8; 11] = b"PDSLCACHE1\n";

/// What the tier knows of its objects, rebuilt at start.
#[derive(Debug, Default)]
struct Index {
    /// Key to its file's use stamp and size.
    by_key: HashMap<String, (u64, u64)>,
    /// Use stamps, oldest first, to the key.
    by_use: BTreeMap<u64, String>,
    bytes: u64,
    next_use: u64,
}

impl Index {
    fn insert(&mut self, key: &str, size: u64) {
        self.remove(key);
        self.next_use += 1;
        self.by_key.insert(key.to_owned(), (self.next_use, size));
        self.by_use.insert(self.next_use, key.to_owned());
        self.bytes += size;
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some((stamp, size)) = self.by_key.remove(key) else {
            return false;
        };
        self.by_use.remove(&stamp);
        self.bytes -= size;
        true
    }

    /// Marks `key` used now.
    fn touch(&mut self, key: &str) {
        if let Some((_, size)) = self.by_key.get(key).copied() {
            self.insert(key, size);
        }
    }
}

/// The most objects written at once: beyond it, a response stays in memory only (a burst
/// of misses must not fill the blocking pool with threads waiting on `fsync`).
const MAX_WRITES: usize = 8;

/// The disk tier of one cache.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    budget: u64,
    index: OnceLock<Mutex<Index>>,
    writing: std::sync::atomic::AtomicUsize,
}

/// The object file's header, before the body.
#[derive(Serialize, Deserialize)]
struct Meta {
    key: String,
    status: u16,
    headers: Vec<(String, String)>,
    vary: Vec<(String, Option<String>)>,
    /// When it arrived, in ms since the epoch.
    arrived_ms: u64,
    initial_age_ms: u64,
    fresh_for_ms: u64,
    stale_while_revalidate_ms: u64,
    stale_if_error_ms: u64,
    shared_with_auth: bool,
    default_ttl_ms: Option<u64>,
    body_len: u64,
}

impl DiskStore {
    /// A tier in `dir` of at most `budget` bytes (opened on first use, or by
    /// [`open`](DiskStore::open)).
    pub fn new(dir: impl Into<PathBuf>, budget: u64) -> DiskStore {
        DiskStore {
            dir: dir.into(),
            budget,
            index: OnceLock::new(),
            writing: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Takes one of the [`MAX_WRITES`] write slots; `false` when all are taken.
    pub fn begin_write(&self) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.writing
            .fetch_update(AcqRel, Acquire, |n| (n < MAX_WRITES).then_some(n + 1))
            .is_ok()
    }

    /// Gives a write slot back.
    pub fn end_write(&self) {
        self.writing
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Creates the directory, deletes what a crash left half-written and rebuilds the
    /// index; an error says why the directory cannot serve. (Blocking.)
    pub fn open(&self) -> io::Result<()> {
        if self.index.get().is_some() {
            return Ok(());
        }
        let index = self.scan()?;
        let _ = self.index.set(Mutex::new(index));
        self.evict_over_budget();
        Ok(())
    }

    fn index(&self) -> &Mutex<Index> {
        self.index.get_or_init(|| {
            Mutex::new(self.scan().unwrap_or_else(|e| {
                tracing::error!(dir = %self.dir.display(), error = %e, "the cache's disk tier cannot be read; it starts empty");
                Index::default()
            }))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index().lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the objects' headers into an index, oldest modified first.
    fn scan(&self) -> io::Result<Index> {
        let (objects, tmp) = (self.dir.join("objects"), self.dir.join("tmp"));
        fs::create_dir_all(&objects)?;
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(&objects)? {
            let path = entry?.path();
            match read_meta(&path) {
                Ok((meta, size))
                    if file_name(&meta.key)
                        == path.file_name().and_then(|n| n.to_str()).unwrap_or("") =>
                {
                    let modified = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .unwrap_or(UNIX_EPOCH);
                    found.push((modified, meta.key, size));
                }
                _ => {
                    tracing::warn!(file = %path.display(), "a cache object that is not whole: deleted");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|(modified, _, _)| *modified);
        let mut index = Index::default();
        for (_, key, size) in found {
            index.insert(&key, size);
        }
        Ok(index)
    }

    /// Whether `key` has an object.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().by_key.contains_key(key)
    }

    /// Bytes and objects held.
    pub fn usage(&self) -> (u64, u64) {
        let index = self.lock();
        (index.bytes, index.by_key.len() as u64)
    }

    /// The object of `key`, if it is whole. (Blocking.)
    pub fn load(&self, key: &str) -> Option<Stored> {
        let path = self.object_path(key);
        let loaded = read_object(&path).filter(|(meta, _)| meta.key == key);
        let mut index = self.lock();
        match loaded {
            Some((meta, body)) => {
                index.touch(key);
                drop(index);
                stored_of(meta, body)
            }
            None => {
                index.remove(key);
                drop(index);
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes `stored` as the object of `key`: whole or not at all. (Blocking.)
    pub fn save(&self, key: &str, stored: &Stored) -> io::Result<()> {
        let Some(meta) = meta_of(key, stored) else {
            return Ok(());
        };
        let header = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        let size = (MAGIC.len() + 4 + header.len() + stored.body.len()) as u64;
        if size > self.budget {
            return Ok(());
        }
        let name = file_name(key);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{name}.{}", fastrand::u64(..)));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&(header.len() as u32).to_be_bytes())?;
            file.write_all(&header)?;
            file.write_all(&stored.body)?;
            file.sync_all()?;
            fs::rename(&tmp, self.dir.join("objects").join(&name))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.lock().insert(key, size);
        self.evict_over_budget();
        Ok(())
    }

    /// Deletes the object of `key`; whether there was one.
    pub fn remove(&self, key: &str) -> bool {
        let removed = self.lock().remove(key);
        if removed {
            let _ = fs::remove_file(self.object_path(key));
        }
        removed
    }

    /// Deletes every object whose key starts with `prefix`; how many.
    pub fn remove_prefix(&self, prefix: &str) -> u64 {
        let keys: Vec<String> = {
            let index = self.lock();
            index
                .by_key
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        };
        keys.iter().filter(|k| self.remove(k)).count() as u64
    }

    /// Deletes the least recently used objects until the tier fits its budget.
    fn evict_over_budget(&self) {
        loop {
            let victim = {
                let mut index = self.lock();
                if index.bytes <= self.budget {
                    return;
                }
                let Some((_, key)) = index.by_use.iter().next().map(|(s, k)| (*s, k.clone()))
                else {
                    return;
                };
                index.remove(&key);
                key
            };
            let _ = fs::remove_file(self.object_path(&victim));
        }
    }

    fn object_path(&self, key: &str) -> PathBuf {
        self.dir.join("objects").join(file_name(key))
    }
}

/// An object's file name: the hex MD5 of its key (not a secret, only a spread).
fn file_name(key: &str) -> String {
    Md5::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An object file's header and total length, if the file is as long as it says.
fn read_meta(path: &Path) -> io::Result<(Meta, u64)> {
    let mut file = fs::File::open(path)?;
    let length = file.metadata()?.len();
    let meta = read_header(&mut file)?;
    let header_end = file.stream_position()?;
    if header_end + meta.body_len != length {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "length"));
    }
    Ok((meta, length))
}

fn read_header(file: &mut fs::File) -> io::Result<Meta> {
    let mut magic = [0u8; MAGIC.len()];
    file.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "magic"));
    }
    let mut len = [0u8; 4];
    file.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "header size"));
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header)?;
    serde_json::from_slice(&header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// An object's header and body, if whole.
fn read_object(path: &Path) -> Option<(Meta, Bytes)> {
    let mut file = fs::File::open(path).ok()?;
    let meta = read_header(&mut file).ok()?;
    let mut body = Vec::with_capacity(usize::try_from(meta.body_len).ok()?);
    file.read_to_end(&mut body).ok()?;
    (body.len() as u64 == meta.body_len).then(|| (meta, Bytes::from(body)))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The header of `stored`, or `None` if a header value is not text (kept in memory only).
fn meta_of(key: &str, stored: &Stored) -> Option<Meta> {
    let text = |v: &HeaderValue| v.to_str().ok().map(str::to_owned);
    let headers = stored
        .headers
        .iter()
        .map(|(n, v)| Some((n.as_str().to_owned(), text(v)?)))
        .collect::<Option<Vec<_>>>()?;
    let vary = stored
        .vary
        .iter()
        .map(|(n, v)| match v {
            Some(v) => Some((n.as_str().to_owned(), Some(text(v)?))),
            None => Some((n.as_str().to_owned(), None)),
        })
        .collect::<Option<Vec<_>>>()?;
    let arrived = SystemTime::now()
        .checked_sub(stored.arrived.elapsed())
        .unwrap_or(UNIX_EPOCH);
    Some(Meta {
        key: key.to_owned(),
        status: stored.status.as_u16(),
        headers,
        vary,
        arrived_ms: ms(arrived.duration_since(UNIX_EPOCH).unwrap_or_default()),
        initial_age_ms: ms(stored.initial_age),
        fresh_for_ms: ms(stored.fresh_for),
        stale_while_revalidate_ms: ms(stored.stale_while_revalidate),
        stale_if_error_ms: ms(stored.stale_if_error),
        shared_with_auth: stored.shared_with_auth,
        default_ttl_ms: stored.default_ttl.map(ms),
        body_len: stored.body.len() as u64,
    })
}

/// The response an object holds.
fn stored_of(meta: Meta, body: Bytes) -> Option<Stored> {
    let mut headers = HeaderMap::with_capacity(meta.headers.len());
    for (name, value) in meta.headers {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(&value).ok()?,
        );
    }
    let vary = meta
        .vary
        .into_iter()
        .map(|(n, v)| {
            let value = match v {
                Some(v) => Some(HeaderValue::from_str(&v).ok()?),
                None => None,
            };
            Some((HeaderName::from_bytes(n.as_bytes()).ok()?, value))
        })
        .collect::<Option<Vec<_>>>()?;
    let arrived_at = UNIX_EPOCH + Duration::from_millis(meta.arrived_ms);
    let since = SystemTime::now()
        .duration_since(arrived_at)
        .unwrap_or_default();
    let millis = Duration::from_millis;
    Some(Stored {
        status: StatusCode::from_u16(meta.status).ok()?,
        headers,
        body,
        vary,
        arrived: Instant::now()
            .checked_sub(since)
            .unwrap_or_else(Instant::now),
        initial_age: millis(meta.initial_age_ms),
        fresh_for: millis(meta.fresh_for_ms),
        stale_while_revalidate: millis(meta.stale_while_revalidate_ms),
        stale_if_error: millis(meta.stale_if_error_ms),
        shared_with_auth: meta.shared_with_auth,
        default_ttl: meta.default_ttl_ms.map(millis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pdsl-disk-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn stored(body: &'static [u8]) -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"x\""));
        Stored {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            vary: vec![(HeaderName::from_static("accept-language"), None)],
            arrived: Instant::now(),
            initial_age: Duration::from_secs(2),
            fresh_for: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::from_secs(5),
            shared_with_auth: false,
            default_ttl: None,
        }
    }

    #[test]
    fn objects_survive_a_restart_and_half_written_ones_do_not() {
        let dir = dir("restart");
        let disk = DiskStore::new(&dir, 1 << 20);
        disk.open().expect("open");
        disk.save("http://a/1", &stored(b"one")).expect("save");
        disk.save("http://a/2", &stored(b"two")).expect("save");
        // What a kill during a write leaves: a partial temporary file, and an object cut
        // short (as a disk that lost its tail would).
        fs::write(dir.join("tmp").join("partial"), b"PDSLCACHE1\n\0\0").expect("tmp");
        let cut = dir.join("objects").join(file_name("http://a/2"));
        let whole = fs::read(&cut).expect("read");
        fs::write(&cut, &whole[..whole.len() - 1]).expect("cut");
        let again = DiskStore::new(&dir, 1 << 20);
        again.open().expect("reopen");
        let one = again.load("http://a/1").expect("whole object");
        assert_eq!(&one.body[..], b"one");
        assert_eq!(one.headers["etag"], "\"x\"");
        assert_eq!(one.vary.len(), 1);
        assert!(one.age(Instant::now()) >= Duration::from_secs(2));
        assert!(!again.contains("http://a/2"), "a cut object is not indexed");
        assert!(again.load("http://a/2").is_none());
        assert_eq!(fs::read_dir(dir.join("tmp")).expect("tmp").count(), 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        static BODY: [u8; 1000] = [b'x'; 1000];
        let probe = DiskStore::new(dir("probe"), 1 << 20);
        probe.save_after_open("k0", &stored(&BODY));
        let size = probe.usage().0;
        let _ = fs::remove_dir_all(probe.dir());
        let dir = dir("budget");
        let disk = DiskStore::new(&dir, 3 * size + size / 2);
        for key in ["k1", "k2", "k3"] {
            disk.save_after_open(key, &stored(&BODY));
        }
        assert!(disk.load("k1").is_some(), "k1 used: k2 is now the oldest");
        disk.save_after_open("k4", &stored(&BODY));
        assert!(!disk.contains("k2"));
        assert!(disk.contains("k1") && disk.contains("k3") && disk.contains("k4"));
        assert!(disk.usage().0 <= 3 * size + size / 2);
        assert_eq!(disk.remove_prefix("k"), 3);
        assert_eq!(disk.usage(), (0, 0));
        let _ = fs::remove_dir_all(&dir);
    }

    impl DiskStore {
        fn save_after_open(&self, key: &str, stored: &Stored) {
            self.open().expect("open");
            self.save(key, stored).expect("save");
        }
    }
}

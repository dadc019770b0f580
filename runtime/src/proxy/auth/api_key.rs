//! `auth api_key header "NAME" file "FILE" [rate N per D];` (or `query "NAME"`): API keys,
//! from a file of `KEY NAME [N/DURATION]` lines (re-read on SIGHUP). The identity is the
//! key's name; a key with a rate (its own, or the declared default) gets at most N requests
//! per DURATION, answered 429 with `Retry-After` beyond — each key its own budget, counted
//! exactly (GCRA: one atomic per key, no window boundary to burst across).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::StatusCode;

use super::{digest, Identity, Refusal, Verdict};
use crate::proxy::Session;
use crate::watched::Watched;

/// Where a request carries its key.
#[derive(Debug, Clone)]
pub enum KeyIn {
    /// In this header.
    Header(HeaderName),
    /// In this query parameter.
    Query(String),
}

/// API keys and their rates.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    source: KeyIn,
    keys: Arc<Watched<KeyFile>>,
    /// The rate of keys without their own: (requests, per).
    default_rate: Option<(u64, Duration)>,
}

/// A key file: keys by digest.
#[derive(Debug, Default)]
pub struct KeyFile {
    keys: HashMap<[u8; 32], Key>,
}

/// One key: its name and rate state.
#[derive(Debug)]
struct Key {
    name: String,
    /// `(N, per)`: at most N per `per`.
    rate: Option<(u64, Duration)>,
    /// GCRA's theoretical arrival time, in nanoseconds since [`epoch`].
    next: AtomicU64,
}

/// The process's time origin for rates.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl KeyFile {
    /// `KEY NAME [N/DURATION]` lines (`k_live_1 acme 100/1m`); blank lines and `#`
    /// comments skipped.
    pub fn parse(text: &str) -> Result<KeyFile, String> {
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let (key, name) = match words.as_slice() {
                [key, name, ..] => (*key, *name),
                _ => return Err(format!("line {}: expected KEY NAME [N/DURATION]", n + 1)),
            };
            let rate = match words.get(2) {
                None => None,
                Some(rate) => Some(parse_rate(rate).map_err(|e| format!("line {}: {e}", n + 1))?),
            };
            if words.len() > 3 {
                return Err(format!("line {}: expected KEY NAME [N/DURATION]", n + 1));
            }
            let entry = Key {
                name: name.to_owned(),
                rate,
                next: AtomicU64::new(0),
            };
            if keys.insert(digest(key.as_bytes()), entry).is_some() {
                return Err(format!("line {}: a key is listed twice", n + 1));
            }
        }
        Ok(KeyFile { keys })
    }
}

/// `100/1m`: at most 100 per minute.
fn parse_rate(text: &str) -> Result<(u64, Duration), String> {
    let bad = || format!("{text:?} is not a rate: write N/DURATION, e.g. 100/1m");
    let (n, per) = text.split_once('/').ok_or_else(bad)?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    let (number, unit) = pingora_dsl_rules::split_duration(per);
    let per = pingora_dsl_rules::duration(number, unit).map_err(|_| bad())?;
    Ok((n, per))
}

impl ApiKeys {
    /// Keys read from `source` in requests, checked against the file at `path`; keys
    /// without a rate of their own get `default_rate` (if any).
    pub fn new(source: KeyIn, path: &str, default_rate: Option<(u64, Duration)>) -> Self {
        ApiKeys {
            source,
            keys: Watched::open(path, KeyFile::parse),
            default_rate,
        }
    }

    /// The file's load error, if it never loaded.
    pub fn check_files(&self) -> std::io::Result<()> {
        self.keys.check()
    }

    /// Whether the request's key is known and within its rate.
    pub fn check(&self, session: &Session) -> Verdict {
        let given = match &self.source {
            KeyIn::Header(name) => session.headers().get(name).and_then(|v| v.to_str().ok()),
            KeyIn::Query(name) => query_value(session.uri().query(), name),
        };
        let Some(given) = given.filter(|k| !k.is_empty()) else {
            return Err(self.refuse("an API key is required"));
        };
        let file = self.keys.current();
        let Some(key) = file.keys.get(&digest(given.as_bytes())) else {
            return Err(self.refuse("the API key is not valid"));
        };
        if let Some(wait) = key
            .rate
            .or(self.default_rate)
            .and_then(|r| over_rate(key, r))
        {
            let mut refusal = Refusal::status(
                StatusCode::TOO_MANY_REQUESTS,
                "this API key is over its rate",
            );
            refusal
                .headers
                .insert(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            return Err(refusal);
        }
        Ok(Identity::named(key.name.clone()))
    }

    fn refuse(&self, why: &str) -> Box<Refusal> {
        let scheme = match &self.source {
            KeyIn::Header(name) => format!("ApiKey header=\"{name}\""),
            KeyIn::Query(name) => format!("ApiKey query=\"{name}\""),
        };
        Refusal::unauthorized(super::challenge(&scheme, "ApiKey"), why)
    }
}

/// How long the key must wait, if a request now is over `(n, per)` (GCRA).
fn over_rate(key: &Key, (n, per): (u64, Duration)) -> Option<Duration> {
    let interval = (per.as_nanos() / u128::from(n)).max(1) as u64;
    let burst = per.as_nanos() as u64;
    let now = epoch().elapsed().as_nanos() as u64;
    let mut tat = key.next.load(Ordering::Relaxed);
    loop {
        let start = tat.max(now);
        if start.saturating_sub(now) + interval > burst {
            return Some(Duration::from_nanos(start + interval - burst - now));
        }
        match key.next.compare_exchange_weak(
            tat,
            start + interval,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return None,
            Err(actual) => tat = actual,
        }
    }
}

/// The value of query parameter `name` (as sent), if present.
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

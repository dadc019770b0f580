//! Peers from etcd ([`EtcdDiscovery`]): every key under a prefix is a peer, read with one
//! range request and then **watched**, so that a change reaches the pool as soon as etcd
//! reports it (no polling).
//!
//! Spoken over etcd's HTTP/JSON gateway (`/v3/kv/range`, `/v3/watch`, on the client port
//! since etcd 3.4) with the hyper client the proxy already has: the gRPC client crates
//! need `protoc` and a second HTTP/2 stack at build time, for two calls.
//!
//! A value is a peer: `{"addr": "10.0.0.1:8080", "weight": 2, "draining": false}`, or the
//! line of a peer file, `10.0.0.1:8080 [weight N] [draining]`. A draining peer gets no new
//! requests (the requests it has finish). A malformed value is skipped with a log line
//! naming its key; it never empties the pool. etcd unreachable: the pool keeps its peers,
//! the failure is logged and counted, and the source retries with backoff.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::lb::discovery::{ChangedFuture, Discovery, DiscoveryFuture};
use crate::lb::Backend;

/// The time to connect to an etcd endpoint and get a range's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one watch stays open: then the peers are read again and a new watch starts
/// (a dead etcd that sends nothing is noticed at most this late).
const WATCH_LIMIT: Duration = Duration::from_secs(60);
/// The first wait after a failure, doubled after each in a row up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between attempts on an etcd that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Peers under a key prefix in etcd, watched.
pub struct EtcdDiscovery {
    /// `HOST:PORT` of each endpoint, or why one is not valid (every answer is then that
    /// error).
    endpoints: Result<Vec<String>, String>,
    prefix: String,
    /// The endpoint asked next (moved on after a failure).
    current: AtomicUsize,
    /// The etcd revision of the last range read (0: none yet).
    revision: AtomicI64,
    /// Failures in a row, for the backoff.
    failures: AtomicU32,
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdDiscovery {
    /// The interval a discovery task is given for it; unused, as etcd is watched (each
    /// watch ends after 60 s at most, and the peers are read again).
    pub const DEFAULT_INTERVAL: Duration = WATCH_LIMIT;

    /// Peers under `prefix` in the etcd cluster at `endpoints` (`"http://HOST:PORT"`,
    /// several tried in turn after failures). What [`check`](EtcdDiscovery::check)
    /// refuses makes every answer an error saying why.
    pub fn new(endpoints: &[&str], prefix: &str) -> Self {
        let endpoints = EtcdDiscovery::check(endpoints, prefix)
            .and_then(|()| endpoints.iter().map(|e| endpoint_authority(e)).collect());
        EtcdDiscovery {
            endpoints,
            prefix: prefix.to_owned(),
            current: AtomicUsize::new(0),
            revision: AtomicI64::new(0),
            failures: AtomicU32::new(0),
        }
    }

    /// Whether `endpoints` (at least one, each `http://HOST:PORT`) and `prefix` (not
    /// empty) can be watched, or why not.
    pub fn check(endpoints: &[&str], prefix: &str) -> Result<(), String> {
        if endpoints.is_empty() {
            return Err("no etcd endpoint: write \"http://HOST:2379\"".into());
        }
        for endpoint in endpoints {
            endpoint_authority(endpoint)?;
        }
        if prefix.is_empty() {
            return Err(
                "an empty prefix would take every key of etcd: write e.g. \"/services/api/\""
                    .into(),
            );
        }
        Ok(())
    }

    /// The prefix's key range, as the gateway takes it (base64).
    fn range(&self) -> (String, String) {
        let b64 = base64::engine::general_purpose::STANDARD;
        (
            b64.encode(&self.prefix),
            b64.encode(range_end(self.prefix.as_bytes())),
        )
    }

    /// The endpoint to ask now.
    fn endpoint(&self) -> Result<&str, String> {
        let endpoints = self.endpoints.as_ref().map_err(Clone::clone)?;
        Ok(&endpoints[self.current.load(Ordering::Relaxed) % endpoints.len()])
    }

    /// Counts a failure, moves to the next endpoint, and says how long to wait.
    fn failed(&self, what: &str, error: &str) -> Duration {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.current.fetch_add(1, Ordering::Relaxed);
        let wait = backoff(n);
        if n <= 3 || n.is_multiple_of(64) {
            let etcd = self.endpoint().unwrap_or("(none)");
            tracing::warn!(etcd, prefix = %self.prefix, failures = n, error, next_try_in = ?wait, "etcd discovery: {what} failed; keeping the current peers");
        }
        wait
    }

    /// Reads every peer under the prefix, and the revision they are at.
    async fn read(&self) -> Result<(Vec<Backend>, i64), String> {
        let (key, end) = self.range();
        let body = json!({ "key": key, "range_end": end }).to_string();
        let answer = tokio::time::timeout(ASK_TIMEOUT, async {
            let response = post(self.endpoint()?, "/v3/kv/range", body).await?;
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(bytes.to_bytes())
        })
        .await
        .map_err(|_| format!("no answer within {ASK_TIMEOUT:?}"))??;
        let value: Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        if let Some(error) = value.get("error").or_else(|| value.get("message")) {
            return Err(format!("etcd answered an error: {error}"));
        }
        let revision = int(&value["header"]["revision"]).ok_or("no revision in the answer")?;
        let mut peers = Vec::new();
        for kv in value["kvs"].as_array().into_iter().flatten() {
            let key = decode(&kv["key"]).unwrap_or_default();
            let text = decode(&kv["value"]).unwrap_or_default();
            match parse_peer(&text) {
                Ok(Some(peer)) => peers.push(peer),
                Ok(None) => {} // draining
                Err(e) => {
                    tracing::warn!(key = %key, value = %text, error = %e, "etcd discovery: skipping a malformed peer")
                }
            }
        }
        peers.sort_by_key(|b| b.addr);
        peers.dedup_by_key(|b| b.addr);
        Ok((peers, revision))
    }

    /// Watches the prefix from the revision after the last read until an event (or the
    /// end of the watch: compaction, cancellation, [`WATCH_LIMIT`]).
    async fn watch(&self, from: i64) -> Result<(), String> {
        let (key, end) = self.range();
        let body = json!({
            "create_request": { "key": key, "range_end": end, "start_revision": from.to_string() }
        })
        .to_string();
        let response = tokio::time::timeout(ASK_TIMEOUT, post(self.endpoint()?, "/v3/watch", body))
            .await
            .map_err(|_| format!("no answer within {ASK_TIMEOUT:?}"))??;
        let mut body = response.into_body();
        let mut buf = BytesMut::new();
        let watching = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(message) = next_message(&mut buf)? {
                    let result = &message["result"];
                    if message.get("error").is_some() {
                        return Err(format!("etcd ended the watch: {}", message["error"]));
                    }
                    let changed = result["events"].as_array().is_some_and(|e| !e.is_empty());
                    let ended = result["canceled"].as_bool() == Some(true)
                        || int(&result["compact_revision"]).is_some_and(|r| r > 0);
                    if changed || ended {
                        return Ok(());
                    }
                }
            }
            Err("etcd closed the watch".to_owned())
        };
        match tokio::time::timeout(WATCH_LIMIT, watching).await {
            Ok(outcome) => outcome,
            Err(_) => Ok(()),
        }
    }
}

impl Discovery for EtcdDiscovery {
    fn discover(&self) -> DiscoveryFuture<'_> {
        Box::pin(async move {
            match self.read().await {
                Ok((peers, revision)) => {
                    self.failures.store(0, Ordering::Relaxed);
                    self.revision.store(revision, Ordering::Relaxed);
                    Ok(peers)
                }
                Err(e) => {
                    self.failed("reading the peers", &e);
                    Err(std::io::Error::other(e))
                }
            }
        })
    }

    fn changed(&self, _interval: Duration) -> ChangedFuture<'_> {
        Box::pin(async move {
            let failures = self.failures.load(Ordering::Relaxed);
            let revision = self.revision.load(Ordering::Relaxed);
            if failures > 0 || revision == 0 {
                tokio::time::sleep(backoff(failures.max(1))).await;
                return;
            }
            if let Err(e) = self.watch(revision + 1).await {
                let wait = self.failed("the watch", &e);
                tokio::time::sleep(wait).await;
            }
        })
    }

    fn describe(&self) -> String {
        match &self.endpoints {
            Ok(endpoints) => format!("etcd {} prefix {}", endpoints.join(","), self.prefix),
            Err(_) => format!("etcd (invalid endpoint) prefix {}", self.prefix),
        }
    }
}

/// `HOST:PORT` of an `http://HOST:PORT` endpoint.
fn endpoint_authority(endpoint: &str) -> Result<String, String> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        format!(
            "etcd endpoint {endpoint:?}: write \"http://HOST:PORT\" (TLS to etcd is not built in)"
        )
    })?;
    let authority = rest.trim_end_matches('/');
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || authority.contains('/') {
        return Err(format!(
            "etcd endpoint {endpoint:?}: write \"http://HOST:PORT\", e.g. \"http://127.0.0.1:2379\""
        ));
    }
    Ok(authority.to_owned())
}

/// The end of the key range of every key starting with `prefix` (etcd's `--prefix`): the
/// prefix with its last byte that is not 0xff incremented.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// POSTs `body` (JSON) to `path` of the etcd at `authority`, over a new HTTP/1.1
/// connection: the response, its body still to read.
async fn post(
    authority: &str,
    path: &str,
    body: String,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{path} answered {}", response.status()));
    }
    Ok(response)
}

/// The next whole JSON message of a watch's stream, if `buf` holds one (the gateway writes
/// one object per message, newline-separated).
fn next_message(buf: &mut BytesMut) -> Result<Option<Value>, String> {
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    match stream.next() {
        Some(Ok(value)) => {
            let used = stream.byte_offset();
            buf.advance(used);
            Ok(Some(value))
        }
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(format!("a watch message is not JSON: {e}")),
        None => Ok(None),
    }
}

/// An etcd int64, which the gateway writes as a string.
fn int(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A base64 field as text.
fn decode(value: &Value) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str()?)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// A peer from a value: `Some` to serve, `None` when it is draining.
pub fn parse_peer(text: &str) -> Result<Option<Backend>, String> {
    let text = text.trim();
    if text.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let addr: SocketAddr = value["addr"]
            .as_str()
            .ok_or("no \"addr\": write {\"addr\": \"IP:PORT\"}")?
            .parse()
            .map_err(|e| format!("\"addr\" is not IP:PORT ({e})"))?;
        let weight = match &value["weight"] {
            Value::Null => 1,
            w => w
                .as_u64()
                .filter(|w| (1..=u64::from(crate::lb::MAX_WEIGHT)).contains(w))
                .ok_or("\"weight\" is a whole number from 1 to 256")? as u32,
        };
        let draining = match &value["draining"] {
            Value::Null => false,
            d => d.as_bool().ok_or("\"draining\" is true or false")?,
        };
        return Ok((!draining).then(|| Backend::weighted(addr, weight)));
    }
    let (line, draining) = match text.strip_suffix("draining") {
        Some(rest) => (rest.trim_end(), true),
        None => (text, false),
    };
    let mut peers = crate::lb::discovery::parse_peer_file(line).map_err(|e| e.to_string())?;
    match (peers.pop(), peers.is_empty()) {
        (Some(peer), true) => Ok((!draining).then_some(peer)),
        _ => Err("one peer per key: write \"IP:PORT [weight N] [draining]\"".into()),
    }
}

/// The wait after `failures` failures in a row: 100 ms doubled each time, at most 5 s.
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_peers_in_json_or_peer_file_lines() {
        let p = parse_peer(r#"{"addr":"127.0.0.1:8001","weight":3}"#).expect("json");
        assert_eq!(
            p,
            Some(Backend::weighted(
                "127.0.0.1:8001".parse().expect("addr"),
                3
            ))
        );
        assert_eq!(
            parse_peer(r#"{"addr":"127.0.0.1:8001","draining":true}"#),
            Ok(None)
        );
        let p = parse_peer("127.0.0.1:8002 weight 2").expect("line");
        assert_eq!(p.map(|b| b.weight), Some(2));
        assert_eq!(parse_peer("127.0.0.1:8002 draining"), Ok(None));
        assert!(parse_peer(r#"{"addr":"nowhere"}"#).is_err());
        assert!(parse_peer(r#"{"addr":"127.0.0.1:1","weight":0}"#).is_err());
        assert!(parse_peer("127.0.0.1:1\n127.0.0.1:2").is_err());
        assert!(parse_peer("garbage").is_err());
    }

    #[test]
    fn the_prefix_range_ends_after_every_key_under_it() {
        assert_eq!(range_end(b"/services/api/"), b"/services/api0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff"), b"\0");
    }

    #[test]
    fn endpoints_are_http_host_and_port() {
        assert_eq!(
            endpoint_authority("http://127.0.0.1:2379/").as_deref(),
            Ok("127.0.0.1:2379")
        );
        assert!(endpoint_authority("https://127.0.0.1:2379").is_err());
        assert!(endpoint_authority("http://127.0.0.1").is_err());
        assert!(EtcdDiscovery::check(&["http://127.0.0.1:2379"], "").is_err());
        assert!(EtcdDiscovery::check(&[], "/p/").is_err());
        assert!(
            EtcdDiscovery::check(&["http://127.0.0.1:2379", "http://[::1]:2379"], "/p/").is_ok()
        );
    }

    #[test]
    fn watch_messages_are_read_whole_across_frames() {
        let mut buf = BytesMut::from(
            &br#"{"result":{"created":true}}
{"result":{"events":[{"#[..],
        );
        let first = next_message(&mut buf).expect("json").expect("one message");
        assert_eq!(first["result"]["created"], true);
        assert!(next_message(&mut buf).expect("partial").is_none());
        buf.extend_from_slice(br#""type":"PUT"}]}}"#);
        let second = next_message(&mut buf).expect("json").expect("now whole");
        assert_eq!(second["result"]["events"][0]["type"], "PUT");
    }
}

//! Upstream groups: peers and weights, the strategy and its key, timeouts, retries, active
//! and passive health, discovery, TLS and HTTP/2.

use std::collections::HashSet;

use pingora_dsl_rules::{self as rules, MAX_RETRIES, MAX_WEIGHT};

use crate::diagnostic::{hint, Errors};
use crate::model;
use crate::syntax::{DiscoverDecl, KeyDecl, PeerLit, RetryDecl, SelectDecl, Upstream};

use super::values::{check_addr, check_duration, check_replay_bytes, check_timeouts};

const STRATEGIES: &[&str] = &[
    "round_robin",
    "random",
    "least_conn",
    "consistent_hash",
    "hash",
    "custom",
];
const KEYED_STRATEGIES: &[&str] = &["consistent_hash", "hash"];
const KEYS: &[&str] = &["header", "cookie", "path", "client_ip"];
const PEER_TIMEOUTS: &[&str] = &["connect", "read", "write", "idle"];

/// Every upstream of a proxy: each named once, each checked.
pub fn validate_upstreams(upstreams: &[Upstream], errors: &mut Errors) -> Vec<model::Upstream> {
    let mut names = HashSet::new();
    let mut checked = Vec::new();
    for up in upstreams {
        if !names.insert(up.name.to_string()) {
            errors.at(
                up.name.span(),
                format!(
                    "an upstream named `{}` is already declared: give each its own name",
                    up.name
                ),
            );
        }
        checked.push(validate_upstream(up, errors));
    }
    checked
}

fn validate_upstream(up: &Upstream, errors: &mut Errors) -> model::Upstream {
    let (peers, host_peers) = validate_peers(up, errors);
    let (strategy, key) = validate_select(&up.select, errors);
    let timeouts = check_timeouts(&up.timeouts, PEER_TIMEOUTS, "upstream timeout", errors);
    let retry = validate_retry(&up.retry, errors);
    let mut health = None;
    for (i, decl) in up.health.iter().enumerate() {
        if i > 0 {
            errors.at(
                decl.keyword.span(),
                "`health` is given twice in this upstream: one check per upstream",
            );
        }
        let checked = super::health::check_health(decl, errors);
        if i == 0 {
            health = checked;
        }
    }
    let passive = validate_passive(up, errors);
    let discover = validate_discover(&up.discover, errors);
    let (tls, http2) = validate_transport(up, errors);
    for keyword in up.fail_open.iter().skip(1) {
        errors.at(
            keyword.span(),
            "`fail_open` is given twice in this upstream",
        );
    }
    let sticky = validate_sticky(up, errors);
    for again in up.proxy_protocol.iter().skip(1) {
        errors.at(
            again.span(),
            "`proxy_protocol` is given twice in this upstream: keep one",
        );
    }
    model::Upstream {
        name: up.name.clone(),
        peers,
        strategy,
        key,
        timeouts,
        retry,
        health,
        passive,
        fail_open: !up.fail_open.is_empty(),
        host_peers,
        sticky,
        discover,
        tls,
        http2,
        proxy_protocol: !up.proxy_protocol.is_empty(),
    }
}

/// `sticky cookie "NAME"`: given once, a valid cookie name.
fn validate_sticky(up: &Upstream, errors: &mut Errors) -> Option<String> {
    for (again, _) in up.sticky.iter().skip(1) {
        errors.at(
            again.span(),
            "`sticky` is given twice in this upstream: keep one",
        );
    }
    let (_, name) = up.sticky.first()?;
    let value = name.value();
    if !rules::is_token(&value) {
        errors.at(
            name.span(),
            format!(
                "\"{value}\" is not a cookie name: use letters, digits and `-`/`_`, e.g. \"srv\""
            ),
        );
        return None;
    }
    Some(value)
}

/// The peers: some (unless discovered), valid addresses listed once, weights in range.
/// The peers given as IP literals, and (when any is a host name) every peer as
/// `(host, port, weight)` for DNS resolution instead.
#[allow(clippy::type_complexity)]
fn validate_peers(
    up: &Upstream,
    errors: &mut Errors,
) -> (Vec<(std::net::SocketAddr, u32)>, Vec<(String, u16, u32)>) {
    let (keyword, peers) = match &up.peers {
        None if up.had_errors || !up.discover.is_empty() => return (Vec::new(), Vec::new()),
        None => {
            errors.at(
                up.name.span(),
                format!(
                    "upstream `{}` has no peers: add `peers [\"127.0.0.1:8001\"];`",
                    up.name
                ),
            );
            return (Vec::new(), Vec::new());
        }
        Some(list) => list,
    };
    if peers.is_empty() {
        errors.at(
            keyword.span(),
            "an upstream needs at least one peer: `peers [\"127.0.0.1:8001\"];`",
        );
    }
    let mut seen = HashSet::new();
    let (mut checked, mut named) = (Vec::new(), Vec::new());
    for peer in peers {
        if let Some((host, port)) = host_peer(&peer.lit.value()) {
            if let Some(weight) = check_weight(peer, errors) {
                named.push((host, port, weight));
            }
            continue;
        }
        let addr = check_addr(&peer.lit, "peer", errors);
        if let Some(addr) = addr {
            if !seen.insert(addr) {
                errors.at(
                    peer.lit.span(),
                    format!("peer \"{addr}\" is listed twice: give it a weight instead (`\"{addr}\" weight 2`)"),
                );
            }
        }
        let weight = check_weight(peer, errors);
        if let (Some(addr), Some(weight)) = (addr, weight) {
            checked.push((addr, weight));
        }
    }
    if let (Some(d), false) = (up.discover.first(), named.is_empty()) {
        errors.at(
            d.keyword.span(),
            "peers given by host name are already resolved by DNS (every 30s): remove `discover`, or list IP addresses",
        );
    }
    if !named.is_empty() {
        // The IP literals join the names, so the group's peers come from one source.
        named.extend(
            checked
                .drain(..)
                .map(|(a, w)| (a.ip().to_string(), a.port(), w)),
        );
    }
    (checked, named)
}

/// `"HOST:PORT"` with a DNS name for a host (not an IP literal): the name and the port.
fn host_peer(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|&p| p > 0)?;
    let labels_ok = host
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    (labels_ok && !numeric).then(|| (host.to_ascii_lowercase(), port))
}

/// A peer's weight: 1 unless given, else `1..=MAX_WEIGHT`.
fn check_weight(peer: &PeerLit, errors: &mut Errors) -> Option<u32> {
    let Some(w) = &peer.weight else {
        return Some(1);
    };
    match w.base10_parse::<u32>() {
        Ok(n) if rules::is_weight(n) => return Some(n),
        Ok(0) => errors.at(
            w.span(),
            "weight 0 would send this peer nothing: use a weight from 1 to 256, or remove the peer",
        ),
        Ok(n) => errors.at(
            w.span(),
            format!("weight {n} is too large: weights go from 1 to {MAX_WEIGHT}"),
        ),
        Err(_) => errors.at(w.span(), "a weight is a whole number from 1 to 256"),
    }
    None
}

/// `select STRATEGY[(KEY)]`: given once, a known strategy, a key exactly when it hashes.
fn validate_select(
    selects: &[SelectDecl],
    errors: &mut Errors,
) -> (model::Strategy, Option<model::RequestKey>) {
    let mut chosen = (model::Strategy::RoundRobin, None);
    for (i, select) in selects.iter().enumerate() {
        let strategy = &select.name;
        if i > 0 {
            errors.at(
                strategy.span(),
                "`select` is given twice in this upstream: keep one",
            );
        }
        let s = strategy.to_string();
        let typed = match s.as_str() {
            "round_robin" => model::Strategy::RoundRobin,
            "random" => model::Strategy::Random,
            "least_conn" => model::Strategy::LeastConn,
            "consistent_hash" => model::Strategy::ConsistentHash,
            "hash" => model::Strategy::Hash,
            "custom" => match &select.custom {
                Some(expr) => model::Strategy::Custom(expr.clone()),
                None => model::Strategy::RoundRobin,
            },
            _ => {
                errors.at(
                    strategy.span(),
                    format!("unknown selection strategy `{s}`: {}", hint(&s, STRATEGIES)),
                );
                continue;
            }
        };
        let key = (s != "custom")
            .then(|| check_strategy_key(&s, select, errors))
            .flatten();
        if i == 0 {
            chosen = (typed, key);
        }
    }
    chosen
}

/// The key of a strategy: required by the hashing ones, refused by the others.
fn check_strategy_key(
    s: &str,
    select: &SelectDecl,
    errors: &mut Errors,
) -> Option<model::RequestKey> {
    let keyed = KEYED_STRATEGIES.contains(&s);
    match (&select.key, keyed) {
        (None, true) => errors.at(
            select.name.span(),
            format!("`{s}` needs a key to hash: `{s}(header \"x-user\")`, `{s}(cookie \"session\")`, `{s}(path)` or `{s}(client_ip)`"),
        ),
        (Some(key), false) => errors.at(
            key.kind.span(),
            format!("`{s}` takes no key: only consistent_hash(...) and hash(...) do"),
        ),
        (Some(key), true) => return check_key(key, errors),
        (None, false) => {}
    }
    None
}

pub(super) fn check_key(key: &KeyDecl, errors: &mut Errors) -> Option<model::RequestKey> {
    let kind = key.kind.to_string();
    match (kind.as_str(), &key.arg) {
        ("header", Some(name)) => {
            if http::header::HeaderName::from_bytes(name.value().as_bytes()).is_ok() {
                return Some(model::RequestKey::Header(name.value().to_ascii_lowercase()));
            }
            errors.at(
                name.span(),
                format!("invalid header name \"{}\"", name.value()),
            );
        }
        ("cookie", Some(name)) => {
            let n = name.value();
            if !n.is_empty()
                && !n
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'=' || b == b';')
            {
                return Some(model::RequestKey::Cookie(name.clone()));
            }
            errors.at(name.span(), format!("invalid cookie name \"{n}\""));
        }
        ("header" | "cookie", None) => errors.at(
            key.kind.span(),
            format!(
                "`{kind}` needs a name, e.g. `({kind} \"{}\")`",
                if kind == "header" {
                    "x-user"
                } else {
                    "session"
                }
            ),
        ),
        ("path", None) => return Some(model::RequestKey::Path),
        ("client_ip", None) => return Some(model::RequestKey::ClientIp),
        ("path" | "client_ip", Some(arg)) => {
            errors.at(arg.span(), format!("`{kind}` takes no name"))
        }
        (other, _) => errors.at(
            key.kind.span(),
            format!("unknown key `{other}`: {}", hint(other, KEYS)),
        ),
    }
    None
}

/// `retry N [backoff D] [replay SIZE] [any_method]`, given once.
fn validate_retry(retries: &[RetryDecl], errors: &mut Errors) -> Option<model::Retry> {
    let mut first = None;
    for (i, retry) in retries.iter().enumerate() {
        if i > 0 {
            errors.at(
                retry.keyword.span(),
                "`retry` is given twice in this upstream: keep one",
            );
        }
        let count = match retry.count.base10_parse::<u32>() {
            Ok(r) if r <= MAX_RETRIES => Some(r),
            _ => {
                errors.at(
                    retry.count.span(),
                    format!("retry takes a count from 0 to {MAX_RETRIES} (tries on other peers after a failed connect)"),
                );
                None
            }
        };
        let backoff = retry
            .backoff
            .as_ref()
            .and_then(|b| check_duration(b, errors));
        let replay = retry
            .replay
            .as_ref()
            .and_then(|lit| check_replay_bytes(lit, errors));
        if let (Some(count), 0) = (count, i) {
            first = Some(model::Retry {
                count,
                backoff,
                replay,
                any_method: retry.any_method.is_some(),
            });
        }
    }
    first
}

/// `passive failures N eject D`, given once.
fn validate_passive(up: &Upstream, errors: &mut Errors) -> Option<model::Passive> {
    let mut first = None;
    for (i, passive) in up.passive.iter().enumerate() {
        if i > 0 {
            errors.at(
                passive.keyword.span(),
                "`passive` is given twice in this upstream: keep one",
            );
        }
        let failures = match passive.failures.base10_parse::<u32>() {
            Ok(n @ 1..=100) => Some(n),
            _ => {
                errors.at(
                    passive.failures.span(),
                    "passive failures takes a count from 1 to 100 (failed requests in a row that eject a peer)",
                );
                None
            }
        };
        let eject = check_duration(&passive.eject, errors);
        if let (Some(failures), Some(eject), 0) = (failures, eject, i) {
            first = Some(model::Passive { failures, eject });
        }
    }
    first
}

/// `discover etcd "http://HOST:PORT[,http://...]" prefix "P"`: endpoints over HTTP, a
/// prefix that is not empty, no `every` (etcd is watched).
fn etcd_source(
    d: &DiscoverDecl,
    target: String,
    errors: &mut Errors,
) -> Option<model::DiscoverSource> {
    let mut valid = true;
    if let Some((word, _)) = &d.every {
        errors.at(
            word.span(),
            "etcd is watched (a change arrives as it happens), not asked every so often: remove `every`",
        );
        valid = false;
    }
    let endpoints: Vec<String> = target.split(',').map(|e| e.trim().to_owned()).collect();
    let bad = endpoints.iter().find(|e| {
        let authority = e.strip_prefix("http://").map(|a| a.trim_end_matches('/'));
        !authority.is_some_and(|a| {
            a.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !a.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
        })
    });
    if let Some(bad) = bad {
        let tls = if bad.starts_with("https://") {
            " (TLS to etcd is not built in)"
        } else {
            ""
        };
        errors.at(
            d.target.span(),
            format!("invalid etcd endpoint \"{bad}\"{tls}: write \"http://HOST:PORT\", several separated by commas"),
        );
        valid = false;
    }
    let prefix = match &d.prefix {
        None => {
            errors.at(
                d.target.span(),
                "`discover etcd` needs the keys' prefix: `discover etcd \"http://127.0.0.1:2379\" prefix \"/services/api/\";`",
            );
            None
        }
        Some((_, p)) if p.value().is_empty() => {
            errors.at(
                p.span(),
                "an empty prefix would take every key of etcd: e.g. \"/services/api/\"",
            );
            None
        }
        Some((_, p)) => Some(p.value()),
    };
    let prefix = prefix?;
    valid.then_some(model::DiscoverSource::Etcd(endpoints, prefix))
}

/// `discover dns "NAME:PORT"` or `discover file "PATH"`, with `every D`; given once.
fn validate_discover(discover: &[DiscoverDecl], errors: &mut Errors) -> Option<model::Discover> {
    let mut first = None;
    for (i, d) in discover.iter().enumerate() {
        if i > 0 {
            errors.at(
                d.keyword.span(),
                "`discover` is given twice in this upstream: one source per upstream",
            );
        }
        let source = discover_source(d, errors);
        let every = d
            .every
            .as_ref()
            .and_then(|(_, e)| check_duration(e, errors));
        if let (Some(source), 0) = (source, i) {
            first = Some(model::Discover { source, every });
        }
    }
    first
}

fn discover_source(d: &DiscoverDecl, errors: &mut Errors) -> Option<model::DiscoverSource> {
    let target = d.target.value();
    let kind = d.kind.to_string();
    if let (Some((word, _)), false) = (&d.prefix, kind == "etcd") {
        errors.at(word.span(), "`prefix` is for `discover etcd`: remove it");
        return None;
    }
    match kind.as_str() {
        "etcd" => etcd_source(d, target, errors),
        "dns" => {
            let valid = target.rsplit_once(':').and_then(|(host, port)| {
                let host_ok = !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                match port.parse::<u16>() {
                    Ok(port @ 1..) if host_ok => Some(model::DiscoverSource::Dns {
                        host: host.to_owned(),
                        port,
                    }),
                    _ => None,
                }
            });
            if valid.is_none() {
                errors.at(
                    d.target.span(),
                    format!("invalid DNS target \"{target}\": write NAME:PORT, e.g. \"backend.internal:8080\""),
                );
            }
            valid
        }
        "file" if target.trim().is_empty() => {
            errors.at(d.target.span(), "the peers file needs a path");
            None
        }
        "file" => Some(model::DiscoverSource::File(target)),
        other => {
            errors.at(
                d.kind.span(),
                format!(
                    "unknown discovery `{other}`: {}",
                    hint(other, &["dns", "file", "etcd"])
                ),
            );
            None
        }
    }
}

/// `http2 [negotiate]` and `tls ...` of an upstream.
fn validate_transport(
    up: &Upstream,
    errors: &mut Errors,
) -> (Option<model::UpstreamTls>, Option<bool>) {
    for (keyword, _) in up.http2.iter().skip(1) {
        errors.at(keyword.span(), "`http2` is given twice in this upstream");
    }
    if let (Some((keyword, true)), None) = (up.http2.first(), up.tls.first()) {
        errors.at(
            keyword.span(),
            "`http2 negotiate` needs TLS (ALPN): add `tls ...;`, or write `http2;` for cleartext HTTP/2 (h2c)",
        );
    }
    for decl in up.tls.iter().skip(1) {
        errors.at(
            decl.keyword.span(),
            "`tls` is given twice in this upstream: put every TLS setting in one `tls ...;`",
        );
    }
    for decl in &up.tls {
        super::settings::check_upstream_tls(decl, errors);
    }
    let tls = up.tls.first().map(|decl| model::UpstreamTls {
        sni: decl.sni.clone(),
        ca: decl.ca.clone(),
        cert: decl.cert.clone(),
        insecure: decl.insecure.is_some(),
    });
    (tls, up.http2.first().map(|(_, negotiate)| *negotiate))
}

//! The admin listener's view of the HTTP caches: their counters as Prometheus families and
//! status rows, and purges (`PURGE /cache?key=KEY` or `?prefix=PREFIX`; `DELETE` too).

use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

use super::metric_family::Family;
use crate::service::{CacheCounts, CacheView, ServiceView};

/// One cache on the status page and in `/status.json`.
#[derive(Debug, Serialize)]
pub struct CacheStatus {
    /// `proxy`, or the label of the route that declares it.
    pub label: String,
    /// Its counters and size.
    #[serde(flatten)]
    pub counts: CacheCounts,
}

/// The status rows of a service's caches.
pub(super) fn statuses(caches: &[CacheView]) -> Vec<CacheStatus> {
    caches
        .iter()
        .map(|c| CacheStatus {
            label: c.label.clone(),
            counts: c.cache.counts(),
        })
        .collect()
}

/// The caches' metric families, labelled by proxy and cache.
pub(super) fn families(views: &[ServiceView]) -> Vec<MetricFamily> {
    type Pick = fn(&CacheCounts) -> u64;
    let counters: [(&str, &str, Pick); 11] = [
        ("hits_total", "Answers from a fresh stored response.", |c| {
            c.hits
        }),
        (
            "misses_total",
            "Requests that went upstream without a usable stored response.",
            |c| c.misses,
        ),
        (
            "stale_total",
            "Stale answers, while revalidating or for an origin's error.",
            |c| c.stale,
        ),
        (
            "revalidated_total",
            "Stored responses an origin's 304 refreshed.",
            |c| c.revalidated,
        ),
        ("bypass_total", "Requests the cache does not take.", |c| {
            c.bypass
        }),
        (
            "coalesced_total",
            "Requests that waited for another request's fill of their key.",
            |c| c.coalesced,
        ),
        ("stored_total", "Responses stored.", |c| c.stored),
        (
            "evictions_total",
            "Stored responses removed to stay within the memory budget.",
            |c| c.evictions,
        ),
        (
            "purged_total",
            "Keys removed by purges and unsafe methods.",
            |c| c.purged,
        ),
        (
            "disk_loads_total",
            "Responses read back from the disk tier.",
            |c| c.disk_loads,
        ),
        (
            "disk_skipped_total",
            "Responses not written to disk because its writers were all busy.",
            |c| c.disk_skipped,
        ),
    ];
    let gauges: [(&str, &str, Pick); 4] = [
        ("bytes", "Bytes the cache holds in memory.", |c| c.bytes),
        ("objects", "Keys the cache holds in memory.", |c| c.objects),
        ("disk_bytes", "Bytes the cache's disk tier holds.", |c| {
            c.disk_bytes
        }),
        (
            "disk_objects",
            "Objects the cache's disk tier holds.",
            |c| c.disk_objects,
        ),
    ];
    let all = counters
        .iter()
        .map(|(n, h, pick)| (n, h, pick, MetricType::COUNTER))
        .chain(
            gauges
                .iter()
                .map(|(n, h, pick)| (n, h, pick, MetricType::GAUGE)),
        );
    let mut out = Vec::new();
    for (name, help, pick, kind) in all {
        let mut family = Family::new(&format!("cache_{name}"), help, kind);
        for v in views {
            for c in &v.caches {
                let labels = [("proxy", v.name.as_str()), ("cache", c.label.as_str())];
                let value = pick(&c.cache.counts());
                match kind {
                    MetricType::GAUGE => family.gauge(&labels, value as f64),
                    _ => family.counter(&labels, value),
                }
            }
        }
        if !family.0.get_metric().is_empty() {
            out.push(family.0);
        }
    }
    out
}

/// What a purge asks for.
enum Purge {
    Key(String),
    Prefix(String),
}

/// Runs the purge `query` asks for (`key=K` or `prefix=P`, percent-encoded) on every
/// cache of `views`: the JSON answer, or why the query is wrong.
pub(super) fn purge(views: &[ServiceView], query: Option<&str>) -> Result<String, &'static str> {
    let purge = match parse(query.unwrap_or("")) {
        Some(p) => p,
        None => return Err("purge with ?key=KEY or ?prefix=PREFIX (percent-encoded)\n"),
    };
    let mut purged = 0u64;
    for c in views.iter().flat_map(|v| &v.caches) {
        purged += match &purge {
            Purge::Key(key) => u64::from(c.cache.purge(key)),
            Purge::Prefix(prefix) => c.cache.purge_prefix(prefix),
        };
    }
    Ok(format!("{{\n  \"purged\": {purged}\n}}\n"))
}

fn parse(query: &str) -> Option<Purge> {
    let (name, value) = query.split_once('=')?;
    let value = decode(value)?;
    match name {
        "key" => Some(Purge::Key(value)),
        "prefix" if !value.is_empty() => Some(Purge::Prefix(value)),
        _ => None,
    }
}

/// Percent-decodes a query value (`+` is a space).
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_queries() {
        assert!(
            matches!(parse("key=http%3A%2F%2Fa%2Fb%3Fc"), Some(Purge::Key(k)) if k == "http://a/b?c")
        );
        assert!(matches!(parse("prefix=http://a/"), Some(Purge::Prefix(p)) if p == "http://a/"));
        assert!(parse("prefix=").is_none());
        assert!(parse("other=1").is_none());
        assert!(parse("key=%zz").is_none());
    }
}

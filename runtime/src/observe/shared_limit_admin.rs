//! The admin listener's view of the rate limits shared through Redis: their decisions as
//! Prometheus families (`pingora_dsl_shared_limit_*_total`) and as rows of the status.

use std::sync::atomic::Ordering;

use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

use super::metric_family::Family;
use crate::metrics::SharedLimitCounts;
use crate::service::{ServiceView, SharedLimitView};

/// One shared limit in `/status.json`.
#[derive(Debug, Serialize)]
pub struct SharedLimitStatus {
    /// `proxy`, or the label of the route that declares it.
    pub label: String,
    /// Requests per window.
    pub limit: u64,
    /// The window in milliseconds.
    pub window_ms: u64,
    /// The Redis it counts in.
    pub redis: String,
    /// Requests admitted from a lease, without a round trip.
    pub leased: u64,
    /// Round trips Redis answered.
    pub asked: u64,
    /// Requests refused because the shared budget was spent.
    pub refused: u64,
    /// Requests the fallback decided.
    pub fallback: u64,
    /// Round trips that failed or timed out.
    pub errors: u64,
}

/// The status rows of a service's shared limits.
pub(super) fn statuses(limits: &[SharedLimitView]) -> Vec<SharedLimitStatus> {
    limits
        .iter()
        .map(|l| {
            let c = &l.counts;
            SharedLimitStatus {
                label: l.label.clone(),
                limit: l.limit,
                window_ms: l.window.as_millis() as u64,
                redis: l.redis.clone(),
                leased: c.leased.load(Ordering::Relaxed),
                asked: c.asked.load(Ordering::Relaxed),
                refused: c.refused.load(Ordering::Relaxed),
                fallback: c.fallback.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
            }
        })
        .collect()
}

/// The shared limits' counters, labelled by proxy and limit (`proxy` or the route).
pub(super) fn families(views: &[ServiceView]) -> Vec<MetricFamily> {
    type Pick = fn(&SharedLimitCounts) -> u64;
    let counters: [(&str, &str, Pick); 5] = [
        (
            "leased_total",
            "Requests admitted from a lease of the shared budget, without a round trip to Redis.",
            |c| c.leased.load(Ordering::Relaxed),
        ),
        ("asked_total", "Round trips to Redis it answered.", |c| {
            c.asked.load(Ordering::Relaxed)
        }),
        (
            "refused_total",
            "Requests refused because the shared budget was spent.",
            |c| c.refused.load(Ordering::Relaxed),
        ),
        (
            "fallback_total",
            "Requests the fallback decided: Redis failed, was slower than the timeout, or was being reconnected to.",
            |c| c.fallback.load(Ordering::Relaxed),
        ),
        (
            "errors_total",
            "Round trips to Redis that failed or timed out.",
            |c| c.errors.load(Ordering::Relaxed),
        ),
    ];
    let mut out = Vec::new();
    for (name, help, pick) in counters {
        let mut family = Family::new(&format!("shared_limit_{name}"), help, MetricType::COUNTER);
        for v in views {
            for l in &v.shared_limits {
                let labels = [("proxy", v.name.as_str()), ("limit", l.label.as_str())];
                family.counter(&labels, pick(&l.counts));
            }
        }
        if !family.0.get_metric().is_empty() {
            out.push(family.0);
        }
    }
    out
}

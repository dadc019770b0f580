//! The counters a running proxy keeps about itself, per route, per peer and per listener.
//!
//! Every figure is a relaxed atomic (a histogram is one per bucket, plus a sum) living
//! next to what it counts: a route's in [`RouteStats`], a peer's in [`PeerStats`] (held by
//! [`crate::lb::PeerState`]), a listening service's in [`ListenerStats`]. Recording is an atomic
//! add on the request path, with no lock, map lookup or label formatting; the admin
//! listener ([`crate::observe::admin`]) reads them when scraped and builds the Prometheus families,
//! the status page and its JSON then. Labels therefore come from declared names (proxy,
//! route, pool, peer address), never from a request, so their number stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

/// Upper bounds of the request and upstream-timing histogram buckets: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [Duration; 14] = [
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (requests in flight).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away.
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram over [`LATENCY_BUCKETS`]: a count per bucket (the last one above
/// every bound) and the sum, in nanoseconds. Recording is two relaxed atomic adds; the
/// cumulative counts Prometheus wants are made when scraped.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        // Most observations fall in the first few buckets: a short linear scan.
        let index = LATENCY_BUCKETS
            .iter()
            .position(|bound| d <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observations, in seconds.
    pub fn sum(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The histogram as a Prometheus sample (cumulative buckets, count, sum), without
    /// labels.
    pub fn sample(&self) -> prometheus::proto::Metric {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                let mut b = prometheus::proto::Bucket::default();
                b.set_upper_bound(bound.as_secs_f64());
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = prometheus::proto::Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(self.count());
        h.set_sample_sum(self.sum());
        let mut m = prometheus::proto::Metric::default();
        m.set_histogram(h);
        m
    }
}

/// The class of a response status, as metrics label it.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn class_index(status: Option<StatusCode>) -> usize {
    match status.map(|s| s.as_u16() / 100) {
        Some(c @ 1..=5) => c as usize - 1,
        _ => 5,
    }
}

/// What one route (or, for requests no route took, its proxy) counts.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Finished requests by [`STATUS_CLASSES`].
    pub responses: [Counter; 6],
    /// Time from the request head to the end of the response body.
    pub duration: Histogram,
    /// Request body bytes received from clients.
    pub bytes_in: Counter,
    /// Of those, the bytes spliced to the upstream (socket to socket in the kernel, never
    /// copied into the proxy's memory).
    pub bytes_spliced: Counter,
    /// Response body bytes sent to clients.
    pub bytes_out: Counter,
    /// Of those, the bytes spliced from the upstream's socket.
    pub bytes_out_spliced: Counter,
    /// Requests sent again to another peer.
    pub retries: Counter,
}

impl RouteStats {
    /// Records a finished request.
    #[inline]
    pub fn record(&self, status: Option<StatusCode>, elapsed: Duration, bytes_out: u64) {
        self.responses[class_index(status)].inc();
        self.duration.observe(elapsed);
        if bytes_out != 0 {
            self.bytes_out.add(bytes_out);
        }
    }

    /// Finished requests of every class.
    pub fn requests(&self) -> u64 {
        self.responses.iter().map(Counter::get).sum()
    }

    /// Finished requests answered 5xx.
    pub fn server_errors(&self) -> u64 {
        self.responses[4].get()
    }
}

/// What one upstream peer counts (shared by the handles of a peer whose weight changed).
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Requests (or, in a TCP proxy, connections) sent to the peer.
    pub requests: Counter,
    /// Of those, the ones that failed on the peer's side: refused, timed out, reset,
    /// a bad response or TLS handshake.
    pub errors: Counter,
    /// New connections opened to the peer.
    pub connections_new: Counter,
    /// Requests sent over a pooled (reused) connection.
    pub connections_reused: Counter,
    /// Time to connect (TCP, and TLS if any) for new connections.
    pub connect_time: Histogram,
    /// Time from sending a request to receiving the response head.
    pub first_byte_time: Histogram,
    /// Times passive health ejected the peer.
    pub ejections: Counter,
}

/// What a proxy counts beyond its routes: the requests no route took (all of them, for
/// a proxy without a router) and the requests in flight.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests no route counted.
    pub unrouted: std::sync::Arc<RouteStats>,
    /// Requests being processed now.
    pub active_requests: Gauge,
}

/// What a listening service counts about its downstream connections.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections open now.
    pub open: Gauge,
    /// TLS handshakes with clients that failed.
    pub tls_failures: Counter,
    /// TLS handshakes completed, by the key-exchange group agreed on (indexed as
    /// [`crate::tls::GROUP_NAMES`]).
    pub tls_groups: [Counter; crate::tls::GROUP_NAMES.len()],
    /// Its QUIC listeners' own counts (HTTP/3).
    pub quic: QuicStats,
}

/// What a service's QUIC listeners count (their connections also count in
/// [`ListenerStats::accepted`] and [`ListenerStats::open`]).
#[derive(Debug, Default)]
pub struct QuicStats {
    /// Connections whose QUIC and HTTP/3 handshakes completed.
    pub connections: Counter,
    /// Requests (request streams) received.
    pub requests: Counter,
    /// Handshakes that failed or timed out.
    pub handshake_failures: Counter,
    /// New connections asked to prove their address first (a Retry).
    pub retries: Counter,
    /// New connections refused (past `max_connections`).
    pub refused: Counter,
}

impl ListenerStats {
    /// Counts a completed handshake that agreed on `group` (a [`crate::tls::GROUP_NAMES`]
    /// name).
    pub fn count_tls_group(&self, group: &str) {
        self.tls_groups[crate::tls::group_index(group)].inc();
    }

    /// `(group, handshakes)` for each group some handshake agreed on.
    pub fn tls_groups(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        crate::tls::GROUP_NAMES
            .iter()
            .zip(&self.tls_groups)
            .map(|(name, c)| (*name, c.get()))
            .filter(|(_, n)| *n > 0)
    }
}

/// Counters of a mirror's copies, by outcome.
#[derive(Debug, Default)]
pub struct MirrorOutcomes {
    /// Copies the shadow pool answered.
    pub sent: Counter,
    /// Copies that failed (no peer, connect, timeout, closed).
    pub failed: Counter,
    /// Copies not made because the in-flight cap were under way.
    pub dropped: Counter,
    /// Requests not copied because they had a body.
    pub skipped: Counter,
}

impl MirrorOutcomes {
    /// `(outcome, counter)` for each outcome, as metrics label them.
    pub fn by_outcome(&self) -> [(&'static str, &Counter); 4] {
        [
            ("sent", &self.sent),
            ("failed", &self.failed),
            ("dropped", &self.dropped),
            ("skipped", &self.skipped),
        ]
    }
}

/// `name` as a `&'static str`, stored once per distinct name: for the declared names
/// (routes, pools) a request carries to its error report without a reference count. Names
/// come from declarations and config files, so their number stays bounded.
pub fn label(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = names.iter().find(|n| **n == name) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    leaked
}

/// A shared limit's decisions, for the admin listener.
#[derive(Debug, Default)]
pub struct SharedLimitCounts {
    /// Requests admitted from a lease, without a round trip.
    pub leased: AtomicU64,
    /// Round trips Redis answered.
    pub asked: AtomicU64,
    /// Requests refused because the shared budget is spent.
    pub refused: AtomicU64,
    /// Requests the fallback decided (Redis failed, was slow, or is being reconnected to).
    pub fallback: AtomicU64,
    /// Round trips that failed or timed out.
    pub errors: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_histograms() {
        let s = RouteStats::default();
        s.record(Some(StatusCode::OK), Duration::from_millis(3), 10);
        s.record(Some(StatusCode::BAD_GATEWAY), Duration::from_millis(30), 0);
        s.record(None, Duration::from_millis(1), 0);
        assert_eq!(s.responses[1].get(), 1);
        assert_eq!(s.server_errors(), 1);
        assert_eq!(s.responses[5].get(), 1);
        assert_eq!(s.requests(), 3);
        assert_eq!(s.bytes_out.get(), 10);
        assert_eq!(s.duration.count(), 3);
        let sample = s.duration.sample();
        let buckets = sample.get_histogram().get_bucket();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len());
        // 3 ms falls in the 5 ms bucket, 1 ms in the 1 ms one, 30 ms in 50 ms.
        assert_eq!(buckets[1].cumulative_count(), 1);
        assert_eq!(buckets[3].cumulative_count(), 2);
        assert_eq!(buckets[6].cumulative_count(), 3);
    }
}

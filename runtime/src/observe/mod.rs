//! Watching the proxy from outside: the access log (a line per request or connection),
//! the admin listener (Prometheus metrics, the status page), syslog as a destination of
//! both logs, and Sentry for errors and panics. The counters themselves live where they are
//! counted ([`crate::metrics`]).

pub mod access_log;
pub mod admin;
pub mod cache_admin;
mod metric_family;
pub mod sentry;
pub mod shared_limit_admin;
pub mod syslog;

//! Watching the proxy from outside: the access log (a line per request or connection) and
//! the admin listener (Prometheus metrics, the status page). The counters themselves live
//! where they are counted ([`crate::metrics`]).

pub mod access_log;
pub mod admin;
pub mod syslog;

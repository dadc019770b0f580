//! Shared support for the workspace's examples, integration tests and benchmarks: the demo
//! and test origins they proxy to, and the declared/hand-written twin proxies of the
//! zero-cost comparison, and certificates made at run time. Not part of the published API.

pub mod certs;
pub mod origin;
pub mod twins;

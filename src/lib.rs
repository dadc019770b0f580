//! Shared support for the workspace's examples, integration tests and benchmarks: the demo
//! and test origins they proxy to, the in-memory harness of the zero-cost comparison, and
//! certificates made at run time. Not part of the published API.

pub mod certs;
pub mod in_memory;
pub mod origin;
pub mod paired;

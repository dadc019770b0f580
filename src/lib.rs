//! Shared support for the workspace's examples, integration tests and benchmarks: the demo
//! and test origins they proxy to. Not part of the published API.

pub mod origin;

//! The engine of pingora-dsl, laid out along the path of a request:
//!
//! ```text
//! server/      the process: run() and its command line (cli.rs), the config file
//!              (config.rs) and its reload, daemon.rs, socket handover (handover.rs),
//!              the Server running services until a signal (mod.rs)
//!   |
//! listen/      listening sockets and the accept loop (mod.rs), TLS (tls.rs),
//!              sniffing HTTP/1 from h2c (sniff.rs): shared by HTTP and layer 4
//!   |
//! downstream/  HTTP from clients: the listening HTTP service (mod.rs), the HTTP/1 direct
//!              path (h1.rs), HTTP/2 limits (h2.rs), the request body (body.rs)
//!   |
//! proxy/       the phases a request goes through (mod.rs, phase.rs), its session,
//!              header rules, bodies, tunnels; route/ matches it to a group or an answer
//!   |
//! lb/          choosing a peer: peers and strategies (mod.rs), upstream groups
//!              (group.rs), health checks (health.rs), discovery (discovery.rs)
//!   |
//! upstream/    reaching the peer: connecting, TLS, the pool, the HTTP/1 and HTTP/2 client
//!
//! l4/          the layer-4 path: TCP and UDP proxies over the same listen/ and lb/
//! observe/     the access log and the admin listener (metrics, status page)
//! ```
//!
//! Leaves used along the way: [`shutdown`] (asking everything to stop), [`service`] (the
//! contracts between the process and what it runs), [`error`] (the edge error and its
//! status), [`metrics`] (counters, where they are counted), [`io_timeout`] (socket
//! deadlines), [`tls`] (the TLS library and its process-wide policy: groups, FIPS mode), [`watched`]
//! (credential and key files re-read on SIGHUP).
//!
//! Most users depend on the `pingora-dsl` facade crate, which re-exports this one.

pub mod downstream;
pub mod error;
mod h1_field;
mod header_pool;
pub mod io_timeout;
pub mod l4;
pub mod lb;
pub mod listen;
pub mod metrics;
pub mod observe;
pub mod proxy;
mod read_buffer;
pub mod server;
pub mod service;
pub mod shutdown;
mod splice;
pub mod tls;
pub mod upstream;
pub mod watched;

pub use crate::downstream::body::DownstreamBody;
pub use crate::error::{BoxError, Error, ErrorKind, Result};
pub use ::bytes::Bytes;
pub use ::http::header::HeaderName;
pub use ::http::{HeaderValue, Method, StatusCode};

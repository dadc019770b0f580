//! The engine of pingora-dsl.
//!
//! Modules follow a request's path: [`server`] (process, services, shutdown) ->
//! [`listen`] (TCP accept) -> [`http`] (downstream HTTP/1 serving) -> [`proxy`] (the phases)
//! -> [`lb`] (choosing a peer) -> [`upstream`] (connecting, pooling, the HTTP client).
//! Beside them: [`error`] (the edge error and its status mapping), [`io_timeout`]
//! (read/write deadlines on sockets), and what declared proxies are built from: [`route`]
//! (matching requests to upstream groups or fixed answers), [`phase`] (plugging user code
//! into phases), [`cli`] (the command line and `main` of a declared proxy), [`config`]
//! (its config file), [`daemon`] (running in the background) and [`upgrade`] (handing the
//! listening sockets to a new process).
//!
//! Most users depend on the `pingora-dsl` facade crate, which re-exports this one.

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod declared;
pub mod downstream_body;
mod downstream_h1;
mod downstream_h2;
pub mod error;
mod h1_field;
mod header_pool;
pub mod http;
pub mod io_timeout;
pub mod layer4;
pub mod lb;
pub mod listen;
pub mod metrics;
pub mod phase;
pub mod protocol;
pub mod proxy;
pub mod rate;
pub mod relay;
pub mod route;
pub mod server;
pub mod tcp_proxy;
pub mod tls;
pub mod udp_proxy;
pub mod upgrade;
pub mod upstream;

pub use crate::downstream_body::DownstreamBody;
pub use crate::error::{BoxError, Error, ErrorKind, Result};
pub use ::bytes::Bytes;
pub use ::http::header::HeaderName;
pub use ::http::{HeaderValue, Method, StatusCode};

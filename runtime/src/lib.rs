//! The engine of pingora-dsl.
//!
//! Modules follow a request's path: [`server`] (process, services, shutdown) ->
//! [`listen`] (TCP accept) -> [`http`] (downstream HTTP/1 serving) -> [`proxy`] (the phases)
//! -> [`lb`] (choosing a peer) -> [`upstream`] (connecting, pooling, the HTTP client).
//! Beside them: [`error`] (the edge error and its status mapping) and [`io_timeout`]
//! (read/write deadlines on sockets).
//!
//! Most users depend on the `pingora-dsl` facade crate, which re-exports this one.

pub mod error;
pub mod http;
pub mod io_timeout;
pub mod lb;
pub mod listen;
pub mod proxy;
pub mod server;
pub mod upstream;

pub use crate::error::{BoxError, Error, ErrorKind, Result};
pub use ::http::{HeaderValue, Method, StatusCode};

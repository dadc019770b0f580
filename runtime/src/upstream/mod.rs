//! The upstream side: peers, connecting (TCP, TLS), the connection pool and the HTTP/1.1
//! client.
//!
//! [`HttpPeer`] says where a request goes and with which timeouts; [`HttpClient`] sends it
//! there over a pooled connection. The proxy forwards through an `HttpClient`; so can any
//! program that needs a pooled HTTP client. An [`crate::lb::UpstreamGroup`] is a named, balanced set
//! of peers (what `proxy!` declares with `upstream NAME { ... }`); a [`crate::lb::HealthChecker`]
//! probes its peers as its requests reach them (TLS, HTTP version).

mod client;
mod h1;
mod peer;
mod pool;
mod stream;
mod tls;

pub use client::{ClientOptions, HttpClient, SendError, UpstreamBody};
pub use peer::{HttpPeer, PeerTimeouts, UpstreamHttp};
pub use tls::{TlsConnector, UpstreamTls};

//! The two load balancers of the examples, as their users write them (the example files
//! themselves, their `main`s unused): `BlogLoadBalancer`, declared with `proxy!` in
//! `examples/load_balancer.rs`, and `RoundRobinLb`, the `ProxyHttp` impl written by hand in
//! `examples/load_balancer_manual.rs`. Shared by `tests/zero_cost.rs` and `benches/dsl.rs`.

use std::net::SocketAddr;

use pingora_dsl::prelude::*;
use pingora_dsl_suite::in_memory::{self, Client};

#[path = "../../examples/load_balancer.rs"]
#[allow(dead_code)]
mod declared;

#[path = "../../examples/load_balancer_manual.rs"]
#[allow(dead_code)]
mod manual;

pub use declared::BlogLoadBalancer;
pub use manual::RoundRobinLb;

/// The declared load balancer forwarding to `origin` only, as `--upstream ORIGIN` makes it.
pub fn declared(origin: SocketAddr) -> BlogLoadBalancer {
    let mut proxy = BlogLoadBalancer::new();
    assert!(
        in_memory::point_pool(proxy.router_mut(), "origins", origin),
        "the example declares the pool `origins`"
    );
    proxy
}

/// The hand-written load balancer forwarding to `origin` only, as its `main` builds it for
/// `--upstream ORIGIN`.
pub fn manual(origin: SocketAddr) -> RoundRobinLb {
    let lb = LoadBalancer::try_from_iter([origin.to_string()]).expect("a loopback address");
    RoundRobinLb { lb }
}

/// A client connection to each load balancer (declared, then hand-written), both forwarding
/// to `origin`; each with its own options, as `run` and `http_proxy_service` give them.
pub async fn connect(origin: SocketAddr) -> std::io::Result<(Client, Client)> {
    let a = in_memory::connect(declared(origin), BlogLoadBalancer::options()).await?;
    let b = in_memory::connect(manual(origin), ProxyOptions::default()).await?;
    Ok((a, b))
}

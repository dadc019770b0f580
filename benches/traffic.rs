//! What traffic management costs the requests that use it: a request matched by a header
//! condition, and one sent through a 2-arm weighted split (sticky by a header), against the
//! same request through a proxy whose one route matches everything. All three are declared
//! with `proxy!`, forward to one loopback origin, and are driven in-process over an
//! in-memory pipe (`pingora_dsl_suite::in_memory`); every request carries the same headers.
//!
//! Paired rounds, as in `benches/dsl.rs`: rounds of 2,000 requests alternating between the
//! plain proxy and the one measured (order swapped each round); the median of the
//! per-round ratios is printed. Run: `cargo bench --bench traffic`.
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use pingora_dsl::prelude::*;
use pingora_dsl_suite::in_memory::{self, exchange_with, Client};
use pingora_dsl_suite::origin::Origin;
use pingora_dsl_suite::paired;
use tokio::runtime::Runtime;

proxy! {
    /// One route that matches everything.
    pub Plain {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route => upstream app;
    }
}

proxy! {
    /// The request matches a header condition.
    pub HeaderMatch {
        listen "127.0.0.1:6188";
        upstream canary { peers ["127.0.0.1:8001"]; }
        upstream app { peers ["127.0.0.1:8001"]; }
        route header "x-canary" == "1" => upstream canary;
        route => upstream app;
    }
}

proxy! {
    /// The request goes through a 2-arm split, sticky by a header.
    pub TwoArms {
        listen "127.0.0.1:6188";
        upstream stable { peers ["127.0.0.1:8001"]; }
        upstream canary { peers ["127.0.0.1:8001"]; }
        route => split { 90% stable, 10% canary } by header "x-user";
    }
}

const HEADERS: &[(&str, &str)] = &[("x-canary", "1"), ("x-user", "user-42")];

/// A connection to `proxy` with every pool pointed at `origin`.
async fn connect<P: ProxyHttp>(
    mut proxy: P,
    router: impl Fn(&mut P) -> &mut pingora_dsl::proxy::route::Router,
    options: ProxyOptions,
    origin: SocketAddr,
) -> Client {
    for pool in ["app", "canary", "stable"] {
        in_memory::point_pool(router(&mut proxy), pool, origin);
    }
    in_memory::connect(proxy, options).await.expect("connect")
}

/// A runtime, an origin, and connections to the plain, header-matching and split proxies.
fn setup() -> (Runtime, Origin, [Client; 3]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (origin, clients) = rt.block_on(async {
        let origin = Origin::start("bench").await.expect("origin");
        let addr = origin.addr();
        let clients = [
            connect(Plain::new(), Plain::router_mut, Plain::options(), addr).await,
            connect(
                HeaderMatch::new(),
                HeaderMatch::router_mut,
                HeaderMatch::options(),
                addr,
            )
            .await,
            connect(
                TwoArms::new(),
                TwoArms::router_mut,
                TwoArms::options(),
                addr,
            )
            .await,
        ];
        (origin, clients)
    });
    (rt, origin, clients)
}

/// Paired rounds of the plain proxy against each of the others; prints the ratios.
fn paired(c: &mut Criterion) {
    let _ = c;
    let (rt, _origin, [mut plain, mut header, mut split]) = setup();
    for (name, measured) in [("header_match", &mut header), ("split_2_arms", &mut split)] {
        let p = paired::compare(&rt, &mut plain, measured, "/", HEADERS);
        println!(
            "paired/{name}: plain {:.0} ns, {name} {:.0} ns per request; {name}/plain = {:.3} (per-round ratios {:.3}..{:.3})",
            p.a_ns, p.b_ns, p.ratio, p.spread.0, p.spread.1
        );
    }
}

/// Each proxy on its own, for criterion's statistics.
fn each(c: &mut Criterion) {
    let (rt, _origin, clients) = setup();
    let mut g = c.benchmark_group("traffic");
    for (name, mut client) in ["plain", "header_match", "split_2_arms"]
        .into_iter()
        .zip(clients)
    {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(exchange_with(&mut client, "/", HEADERS))
                    .expect("answer")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, paired, each);
criterion_main!(benches);

//! Zero cost, measured: the load balancer of the examples declared with `proxy!`
//! (`examples/load_balancer.rs`) against the same proxy written by hand as a `ProxyHttp`
//! impl (`examples/load_balancer_manual.rs`), the example files themselves, driven
//! in-process over an in-memory pipe (`pingora_dsl_suite::in_memory`). Requests are
//! forwarded: through the phases (peer selection, the `Host` set upstream, logging) and the
//! pooled upstream client to a loopback origin. Both run side by side in one process;
//! compare the two lines of the group. (The load balancer has no route answering by
//! itself, so unlike the earlier twins there is no `answered` group.)
//!
//! Criterion's groups measure one function after the other, so slow drifts of a shared VM
//! land on one side; the run therefore starts with a paired measurement: rounds of 2,000
//! requests alternating between the two (order swapped each round), reporting the median
//! per-request time of each and the median of the per-round ratios.
//!
//! Run: `cargo bench --bench dsl` (add `-- --quick` for a short criterion part).
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use criterion::{criterion_group, criterion_main, Criterion};
use pingora_dsl_suite::in_memory::{exchange, Client};
use pingora_dsl_suite::origin::Origin;
use pingora_dsl_suite::paired;
use tokio::runtime::Runtime;

#[path = "../tests/zero_cost/load_balancers.rs"]
mod load_balancers;

/// The path every request asks for.
const PATH: &str = "/";

/// A single-threaded runtime (client, proxies and origin on one thread, as in the tests),
/// an origin on it, and a connection to each load balancer (declared first).
fn setup(name: &str) -> (Runtime, Client, Client, Origin) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (declared, manual, origin) = rt.block_on(async {
        let origin = Origin::start(name).await.expect("origin");
        let (a, b) = load_balancers::connect(origin.addr())
            .await
            .expect("connect");
        (a, b, origin)
    });
    (rt, declared, manual, origin)
}

fn forwarded(c: &mut Criterion) {
    let (rt, mut declared, mut manual, _origin) = setup("bench");
    let mut g = c.benchmark_group("forwarded");
    g.bench_function("declared", |b| {
        b.iter(|| rt.block_on(exchange(&mut declared, PATH)).expect("answer"))
    });
    g.bench_function("hand_written", |b| {
        b.iter(|| rt.block_on(exchange(&mut manual, PATH)).expect("answer"))
    });
    g.finish();
}

/// Rounds of requests on each load balancer, alternating; prints medians and the ratio.
fn paired(c: &mut Criterion) {
    let _ = c;
    let (rt, mut declared, mut manual, _origin) = setup("paired");
    let p = paired::compare(&rt, &mut manual, &mut declared, PATH, &[]);
    println!(
        "paired/forwarded: declared {:.0} ns, hand-written {:.0} ns per request; \
         declared/hand-written = {:.3} (per-round ratios {:.3}..{:.3})",
        p.b_ns, p.a_ns, p.ratio, p.spread.0, p.spread.1
    );
}

criterion_group!(benches, paired, forwarded);
criterion_main!(benches);

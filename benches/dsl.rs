//! Zero cost, measured: the same pipeline declared with `proxy!` and written by hand with
//! the runtime API (`pingora_dsl_suite::twins`), driven in-process over an in-memory pipe.
//! `answered` requests end at a `respond` route (no network at all); `forwarded` requests go
//! through the filters and the pooled upstream client to a loopback origin. Each pair runs
//! side by side in one process; compare the two lines of a group.
//!
//! Criterion's groups measure one function after the other, so slow drifts of a shared VM
//! land on one side; the run therefore starts with a paired measurement: rounds of 2,000
//! requests alternating between the twins (order swapped each round), reporting the
//! median per-request time of each and the median of the per-round ratios.
//!
//! Run: `cargo bench --bench dsl` (add `-- --quick` for a short criterion part).
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use pingora_dsl_suite::origin::Origin;
use pingora_dsl_suite::twins::{connect_twins, exchange};

fn twins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut declared, mut hand, origin) = rt.block_on(async {
        let origin = Origin::start("bench").await.expect("origin");
        let (a, b) = connect_twins(origin.addr()).await.expect("connect");
        (a, b, origin)
    });

    for (group, path) in [("answered", "/healthz"), ("forwarded", "/api/x")] {
        let mut g = c.benchmark_group(group);
        g.bench_function("declared", |b| {
            b.iter(|| rt.block_on(exchange(&mut declared, path)).expect("answer"))
        });
        g.bench_function("hand_written", |b| {
            b.iter(|| rt.block_on(exchange(&mut hand, path)).expect("answer"))
        });
        g.finish();
    }
    drop(origin);
}

/// Rounds of `per_round` requests on each twin, alternating; prints medians and the ratio.
fn paired(c: &mut Criterion) {
    let _ = c;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut declared, mut hand, origin) = rt.block_on(async {
        let origin = Origin::start("paired").await.expect("origin");
        let (a, b) = connect_twins(origin.addr()).await.expect("connect");
        (a, b, origin)
    });
    const ROUNDS: usize = 31;
    const PER_ROUND: u32 = 2_000;
    for (group, path) in [("answered", "/healthz"), ("forwarded", "/api/x")] {
        let mut a_times = Vec::with_capacity(ROUNDS);
        let mut b_times = Vec::with_capacity(ROUNDS);
        let mut ratios = Vec::with_capacity(ROUNDS);
        let run = |sender: &mut _| {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                rt.block_on(exchange(sender, path)).expect("answer");
            }
            start.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
        };
        run(&mut declared);
        run(&mut hand);
        for round in 0..ROUNDS {
            let (a, b) = if round % 2 == 0 {
                let a = run(&mut declared);
                (a, run(&mut hand))
            } else {
                let b = run(&mut hand);
                (run(&mut declared), b)
            };
            a_times.push(a);
            b_times.push(b);
            ratios.push(a / b);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, b) = (median(&mut a_times), median(&mut b_times));
        let ratio = median(&mut ratios);
        println!(
            "paired/{group}: declared {a:.0} ns, hand-written {b:.0} ns per request; \
             declared/hand-written = {ratio:.3} (per-round ratios {:.3}..{:.3})",
            ratios[ROUNDS / 4],
            ratios[ROUNDS * 3 / 4]
        );
    }
    drop(origin);
}

criterion_group!(benches, paired, twins);
criterion_main!(benches);

//! Paired rounds, for benchmarks that compare two ways of serving a request on a noisy
//! machine: rounds of requests alternating between the two (the order swapped each round),
//! the median time of each and the median of the per-round ratios.

use std::time::Instant;

use tokio::runtime::Runtime;

use crate::in_memory::{exchange_with, Client};

/// Rounds per comparison.
pub const ROUNDS: usize = 31;
/// Requests per client per round.
pub const PER_ROUND: u32 = 2_000;

/// The outcome of a paired comparison of `a` and `b`, in nanoseconds per request.
#[derive(Debug, Clone, Copy)]
pub struct Paired {
    /// `a`'s median time per request.
    pub a_ns: f64,
    /// `b`'s median time per request.
    pub b_ns: f64,
    /// The median of the per-round ratios `b / a`.
    pub ratio: f64,
    /// The first and third quartiles of the per-round ratios.
    pub spread: (f64, f64),
}

/// Compares `a` and `b`: [`ROUNDS`] rounds of [`PER_ROUND`] requests for `path` (with
/// `headers`) on each, after one round each to warm up.
pub fn compare(
    rt: &Runtime,
    a: &mut Client,
    b: &mut Client,
    path: &str,
    headers: &[(&str, &str)],
) -> Paired {
    let run = |client: &mut Client| {
        let start = Instant::now();
        for _ in 0..PER_ROUND {
            rt.block_on(exchange_with(client, path, headers))
                .expect("answer");
        }
        start.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
    };
    run(a);
    run(b);
    let (mut a_times, mut b_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (ta, tb) = if round % 2 == 0 {
            let ta = run(a);
            (ta, run(b))
        } else {
            let tb = run(b);
            (run(a), tb)
        };
        a_times.push(ta);
        b_times.push(tb);
        ratios.push(tb / ta);
    }
    let ratio = median(&mut ratios);
    Paired {
        a_ns: median(&mut a_times),
        b_ns: median(&mut b_times),
        ratio,
        spread: (ratios[ROUNDS / 4], ratios[ROUNDS * 3 / 4]),
    }
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

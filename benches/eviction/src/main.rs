//! Hit ratios of the memory tier's candidates on synthetic traces: quick_cache (S3-FIFO) and
//! moka (W-TinyLFU), both weighted by object size, the same byte budget.
use std::time::Instant;

struct Trace {
    keys: Vec<u32>,
    sizes: Vec<u32>,
}

/// `n` requests over `objects` keys, Zipf(`alpha`), sizes log-uniform 1 KiB..256 KiB; every
/// `scan_every` requests (if any) a scan of `scan_len` keys never seen again.
fn trace(objects: u32, n: usize, alpha: f64, scan_every: usize, scan_len: u32, seed: u64) -> Trace {
    let mut rng = fastrand::Rng::with_seed(seed);
    let weights: Vec<f64> = (1..=objects)
        .map(|i| 1.0 / (i as f64).powf(alpha))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(objects as usize);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut sizes: Vec<u32> = (0..objects + 10_000_000).map(|_| 0).collect();
    let mut size_of = |k: u32, rng: &mut fastrand::Rng| {
        if sizes[k as usize] == 0 {
            sizes[k as usize] = (1024.0 * 256f64.powf(rng.f64())) as u32;
        }
        sizes[k as usize]
    };
    let mut keys = Vec::with_capacity(n);
    let mut scan_key = objects;
    for i in 0..n {
        if scan_every > 0 && i % scan_every == 0 && i > 0 {
            for _ in 0..scan_len {
                keys.push(scan_key);
                size_of(scan_key, &mut rng);
                scan_key += 1;
            }
        }
        let u = rng.f64();
        let k = cdf.partition_point(|c| *c < u) as u32;
        size_of(k, &mut rng);
        keys.push(k);
    }
    Trace { keys, sizes }
}

#[derive(Clone)]
struct W;
impl quick_cache::Weighter<u32, u32> for W {
    fn weight(&self, _k: &u32, v: &u32) -> u64 {
        *v as u64
    }
}

/// Replays `t` through a cache (`get`, then `insert` on a miss): object and byte hit ratios
/// and the time per request.
fn replay(t: &Trace, get: impl Fn(u32) -> bool, insert: impl Fn(u32, u32)) -> (f64, f64, f64) {
    let (mut hits, mut hit_bytes, mut bytes) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for &k in &t.keys {
        let s = t.sizes[k as usize];
        bytes += s as u64;
        if get(k) {
            hits += 1;
            hit_bytes += s as u64;
        } else {
            insert(k, s);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / t.keys.len() as f64;
    (
        hits as f64 / t.keys.len() as f64,
        hit_bytes as f64 / bytes as f64,
        ns,
    )
}

fn run_quick(t: &Trace, budget: u64) -> (f64, f64, f64) {
    let c = quick_cache::sync::Cache::with_weighter((budget / 32768).max(64) as usize, budget, W);
    replay(t, |k| c.get(&k).is_some(), |k, s| c.insert(k, s))
}

fn run_moka(t: &Trace, budget: u64) -> (f64, f64, f64) {
    let c: moka::sync::Cache<u32, u32> = moka::sync::Cache::builder()
        .max_capacity(budget)
        .weigher(|_k, v: &u32| *v)
        .build();
    // (Its pending maintenance runs within the lookups and inserts timed.)
    replay(t, |k| c.get(&k).is_some(), |k, s| c.insert(k, s))
}

fn main() {
    let objects = 100_000u32;
    for (name, alpha, scan_every, scan_len) in [
        ("zipf 0.8", 0.8, 0, 0),
        ("zipf 1.0", 1.0, 0, 0),
        ("zipf 0.8 + scans", 0.8, 50_000, 20_000),
    ] {
        let t = trace(objects, 1_000_000, alpha, scan_every, scan_len, 7);
        let distinct: u64 = {
            let mut seen = std::collections::HashSet::new();
            t.keys
                .iter()
                .filter(|k| seen.insert(**k))
                .map(|k| t.sizes[*k as usize] as u64)
                .sum()
        };
        for share in [0.05, 0.2] {
            let budget = (distinct as f64 * share) as u64;
            let q = run_quick(&t, budget);
            let m = run_moka(&t, budget);
            println!("{name:18} budget {:4.0}% of {:6.0} MiB: quick_cache hits {:.3} bytes {:.3} ({:.0} ns/op) | moka hits {:.3} bytes {:.3} ({:.0} ns/op)",
                share * 100.0, distinct as f64 / 1048576.0, q.0, q.1, q.2, m.0, m.1, m.2);
        }
    }
}

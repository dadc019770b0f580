//! What a cache hit costs against a `respond` route (the cheapest answer a proxy gives)
//! and against forwarding the same request to the origin. All three are declared with
//! `proxy!` and driven in-process over an in-memory pipe (`pingora_dsl_suite::in_memory`);
//! the cached proxy's `ttl` keeps the origin's answer (which carries no freshness) fresh
//! for the whole run, so every measured request is a hit.
//!
//! Paired rounds, as in `benches/dsl.rs`: rounds of 2,000 requests alternating between the
//! `respond` route and the one measured (order swapped each round); the median of the
//! per-round ratios is printed. Run: `cargo bench --bench cache`.
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use criterion::{criterion_group, criterion_main, Criterion};
use pingora_dsl::prelude::*;
use pingora_dsl_suite::in_memory::{self, exchange, Client};
use pingora_dsl_suite::origin::Origin;
use pingora_dsl_suite::paired;
use tokio::runtime::Runtime;

proxy! {
    /// A fixed answer of the proxy's own.
    pub Answered {
        listen "127.0.0.1:6188";
        route => respond 200 "origin bench";
    }
}

proxy! {
    /// A fixed answer of the proxy's own with as many header fields as the origin's
    /// stored answer carries (the origin's five, and `Accept-Ranges`, `Age`, `x-cache`).
    pub AnsweredLikeTheCache {
        listen "127.0.0.1:6188";
        set_response_header "x-origin" "bench";
        set_response_header "x-seen-host" "localhost";
        set_response_header "x-seen-xff" "127.0.0.1";
        set_response_header "x-seen-target" "/";
        set_response_header "date" "Mon, 07 Dec 2026 04:00:00 GMT";
        set_response_header "accept-ranges" "bytes";
        set_response_header "age" "0";
        set_response_header "x-cache" "HIT";
        route => respond 200 "origin bench";
    }
}

proxy! {
    /// Every answer kept for an hour.
    pub Cached {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        cache { ttl 1h; }
        route => upstream app;
    }
}

proxy! {
    /// Every request forwarded.
    pub Forwarded {
        listen "127.0.0.1:6188";
        upstream app { peers ["127.0.0.1:8001"]; }
        route => upstream app;
    }
}

/// A runtime, an origin, and connections to the three proxies (the cache filled).
fn setup() -> (Runtime, Origin, [Client; 4]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (origin, clients) = rt.block_on(async {
        let origin = Origin::start("bench").await.expect("origin");
        let answered = in_memory::connect(Answered::new(), Answered::options())
            .await
            .expect("connect");
        let mut cached = Cached::new();
        in_memory::point_pool(cached.router_mut(), "app", origin.addr());
        let mut cached = in_memory::connect(cached, Cached::options())
            .await
            .expect("connect");
        exchange(&mut cached, "/").await.expect("the fill");
        let mut forwarded = Forwarded::new();
        in_memory::point_pool(forwarded.router_mut(), "app", origin.addr());
        let forwarded = in_memory::connect(forwarded, Forwarded::options())
            .await
            .expect("connect");
        let like = in_memory::connect(AnsweredLikeTheCache::new(), AnsweredLikeTheCache::options())
            .await
            .expect("connect");
        (origin, [answered, cached, forwarded, like])
    });
    (rt, origin, clients)
}

/// Paired rounds of the `respond` route against the cache hit and the forwarded request.
fn paired(c: &mut Criterion) {
    let _ = c;
    let (rt, origin, [mut answered, mut hit, mut forwarded, mut like]) = setup();
    for (name, measured) in [
        ("cache_hit", &mut hit),
        ("forwarded", &mut forwarded),
        ("respond_8_headers", &mut like),
    ] {
        let p = paired::compare(&rt, &mut answered, measured, "/", &[]);
        println!(
            "paired/{name}: respond {:.0} ns, {name} {:.0} ns per request; {name}/respond = {:.3} (per-round ratios {:.3}..{:.3})",
            p.a_ns, p.b_ns, p.ratio, p.spread.0, p.spread.1
        );
    }
    println!(
        "origin requests: {} (1 fill, the rest forwarded)",
        origin.requests()
    );
}

/// Each proxy on its own, for criterion's statistics.
fn each(c: &mut Criterion) {
    let (rt, _origin, clients) = setup();
    let mut g = c.benchmark_group("cache");
    for (name, mut client) in ["respond", "cache_hit", "forwarded", "respond_8_headers"]
        .into_iter()
        .zip(clients)
    {
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(exchange(&mut client, "/")).expect("answer"))
        });
    }
    g.finish();
}

criterion_group!(benches, paired, each);
criterion_main!(benches);

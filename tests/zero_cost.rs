//! The declared load balancer costs what the one written by hand does: the two proxies of
//! the examples as their users write them (`examples/load_balancer.rs`, declared with
//! `proxy!`, and `examples/load_balancer_manual.rs`, a `ProxyHttp` impl), driven in memory
//! (`pingora_dsl_suite::in_memory`) to one loopback origin. Checked in ways that cannot
//! drift with machine noise, each a comparison of the two in the same run: the same
//! answers; a boxed future per request larger by no more than the route context the
//! declared proxy keeps (the hand-written one keeps none); no more heap allocations per
//! request (counted by a global allocator). The timing comparison is `benches/dsl.rs`.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to the
// system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::StatusCode;
use pingora_dsl::prelude::*;
use pingora_dsl_suite::in_memory::{self, exchange, Client, CLIENT_HOST};
use pingora_dsl_suite::origin::Origin;

#[path = "zero_cost/load_balancers.rs"]
mod load_balancers;

use load_balancers::{BlogLoadBalancer, RoundRobinLb};

/// Counts allocations made by the current thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// The `Host` both load balancers send upstream.
const UPSTREAM_HOST: &str = "one.one.one.one";

/// Sends `path` through `client` and returns the answer with the `Host` the origin got.
async fn through(client: &mut Client, origin: &Origin, path: &str) -> (in_memory::Answer, String) {
    let answer = exchange(client, path).await.expect("an answer");
    let headers = origin.last_headers().expect("the origin saw the request");
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .expect("a Host header upstream")
        .to_owned();
    (answer, host)
}

#[tokio::test]
async fn both_load_balancers_answer_alike() {
    let origin = Origin::start("o").await.expect("origin");
    let (mut declared, mut manual) = load_balancers::connect(origin.addr())
        .await
        .expect("connect");
    let paths = ["/", "/index.html", "/api/users?id=7"];
    for path in paths {
        let (x, x_host) = through(&mut declared, &origin, path).await;
        let (y, y_host) = through(&mut manual, &origin, path).await;
        assert_eq!(x.status, StatusCode::OK, "{path}");
        assert_eq!(x, y, "{path}");
        assert_eq!(&x.body[..], b"origin o", "{path}");
        assert_eq!(x_host, UPSTREAM_HOST, "declared, {path}");
        assert_eq!(y_host, UPSTREAM_HOST, "hand-written, {path}");
        assert_ne!(x_host, CLIENT_HOST);
    }
    assert_eq!(origin.requests(), 2 * paths.len());
}

/// The per-request context the declared load balancer keeps beyond the hand-written one's:
/// `RouteCtx` (the matched route, the in-flight count held on the chosen peer, whether its
/// outcome went to passive health), against `()`.
fn extra_context() -> usize {
    std::mem::size_of::<<BlogLoadBalancer as ProxyHttp>::Ctx>()
        - std::mem::size_of::<<RoundRobinLb as ProxyHttp>::Ctx>()
}

#[tokio::test]
async fn the_declared_future_is_larger_only_by_its_context() {
    let origin = Origin::start("o").await.expect("origin");
    let addr = origin.addr();
    // Each with its own options: the declared proxy has no `layer`, so this pipeline is
    // the one its `pipeline()` builds; the hand-written one is `http_proxy_service`'s.
    let (mut declared, declared_size) =
        in_memory::connect_measured(load_balancers::declared(addr), BlogLoadBalancer::options())
            .await
            .expect("connect");
    let (mut manual, manual_size) =
        in_memory::connect_measured(load_balancers::manual(addr), ProxyOptions::default())
            .await
            .expect("connect");
    exchange(&mut declared, "/")
        .await
        .expect("declared answers");
    exchange(&mut manual, "/")
        .await
        .expect("hand-written answers");
    let (a, b, ctx) = (declared_size.bytes(), manual_size.bytes(), extra_context());
    println!(
        "response future: declared {a} bytes, hand-written {b} bytes \
         (the declared context: {ctx} bytes more)"
    );
    assert!(a > 0 && b > 0, "both measured: {a}, {b}");
    // The declared proxy keeps its route context in the future for the whole request (the
    // in-flight count and passive health need it until `logging`); the hand-written one
    // keeps none. Anything else the declaration added would show here.
    assert!(
        a <= b + ctx,
        "the declared load balancer boxes {a} bytes per request, the hand-written one {b} \
         (+{ctx} bytes of route context allowed)"
    );
}

/// Allocations per request on `path` after a warm-up, over `n` requests.
async fn allocations_per_request(client: &mut Client, path: &str, n: u64) -> f64 {
    for _ in 0..50 {
        exchange(client, path).await.expect("warm-up");
    }
    let before = allocations();
    for _ in 0..n {
        exchange(client, path).await.expect("request");
    }
    (allocations() - before) as f64 / n as f64
}

#[tokio::test(flavor = "current_thread")]
async fn the_declared_allocates_no_more_per_request() {
    let origin = Origin::start("o").await.expect("origin");
    let (mut declared, mut manual) = load_balancers::connect(origin.addr())
        .await
        .expect("connect");
    // Alternate, so both see the same state of the shared origin and allocator; the
    // client's and the origin's allocations (on this thread too) count on both sides.
    let a1 = allocations_per_request(&mut declared, "/", 200).await;
    let b1 = allocations_per_request(&mut manual, "/", 200).await;
    let a2 = allocations_per_request(&mut declared, "/", 200).await;
    let b2 = allocations_per_request(&mut manual, "/", 200).await;
    println!("allocations per request: declared {a1:.2}/{a2:.2}, hand-written {b1:.2}/{b2:.2}");
    let (a, b) = (a1.min(a2).round(), b1.min(b2).round());
    assert!(a > 0.0, "the counting allocator counts");
    assert!(
        a <= b,
        "the declared load balancer makes {a} allocations per request, the hand-written one {b}"
    );
}

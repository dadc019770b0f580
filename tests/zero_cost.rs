//! The declared pipeline costs what the hand-written one does, checked in ways that cannot
//! drift with machine noise: the same boxed future size per request, and the same number
//! of heap allocations per request (counted by a global allocator), for the twins of
//! `pingora_dsl_suite::twins`. The timing comparison is `benches/dsl.rs`.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to the
// system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::StatusCode;
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::{Identity, ProxyPipeline};
use pingora_dsl_suite::origin::Origin;
use pingora_dsl_suite::twins::{
    connect_in_memory, connect_twins, exchange, harness_conn, point_twins, DeclaredTwin,
    HandWrittenTwin, MeasureFuture,
};

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

/// The twins, pointed at `origin`.
fn twins(origin: &Origin) -> (DeclaredTwin, HandWrittenTwin) {
    let (mut declared, mut hand) = (DeclaredTwin::new(), HandWrittenTwin::new());
    point_twins(&mut declared, &mut hand, origin.addr());
    (declared, hand)
}

#[tokio::test]
async fn the_twins_answer_alike() {
    let origin = Origin::start("o").await.expect("origin");
    let (mut a, mut b) = connect_twins(origin.addr()).await.expect("connect");
    for path in ["/healthz", "/api/users", "/", "/apix"] {
        let x = exchange(&mut a, path).await.expect("declared answers");
        let y = exchange(&mut b, path).await.expect("hand-written answers");
        assert_eq!(x, y, "{path}");
        assert_eq!(x.0, StatusCode::OK, "{path}");
    }
    assert_eq!(origin.requests(), 6);
}

#[tokio::test]
async fn the_twins_box_the_same_future_size() {
    let origin = Origin::start("o").await.expect("origin");
    let (declared, hand) = twins(&origin);
    // The declared twin has no `layer`, so its pipeline is this one; built by hand here only
    // to name the service type, whose boxed future the wrapper measures.
    let declared = ProxyPipeline::new(declared, DeclaredTwin::options(), Identity::new());
    let hand = ProxyPipeline::new(hand, ProxyOptions::default(), Identity::new());
    let (a_size, b_size) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut a = connect_in_memory(MeasureFuture::new(
        declared.service_for(&harness_conn()),
        a_size.clone(),
    ))
    .await
    .expect("connect");
    let mut b = connect_in_memory(MeasureFuture::new(
        hand.service_for(&harness_conn()),
        b_size.clone(),
    ))
    .await
    .expect("connect");
    exchange(&mut a, "/api/x").await.expect("declared answers");
    exchange(&mut b, "/api/x")
        .await
        .expect("hand-written answers");
    let (a_size, b_size) = (
        a_size.load(Ordering::Relaxed),
        b_size.load(Ordering::Relaxed),
    );
    println!("response future: declared {a_size} bytes, hand-written {b_size} bytes");
    assert!(a_size > 0);
    assert_eq!(a_size, b_size);
}

/// Allocations per request on `path` after a warm-up, over `n` requests.
async fn allocations_per_request(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
    n: u64,
) -> f64 {
    for _ in 0..50 {
        exchange(sender, path).await.expect("warm-up");
    }
    let before = allocations();
    for _ in 0..n {
        exchange(sender, path).await.expect("request");
    }
    (allocations() - before) as f64 / n as f64
}

#[tokio::test(flavor = "current_thread")]
async fn the_twins_allocate_the_same_per_request() {
    let origin = Origin::start("o").await.expect("origin");
    let (mut a, mut b) = connect_twins(origin.addr()).await.expect("connect");
    for path in ["/healthz", "/api/x", "/"] {
        // Alternate, so both see the same state of the shared origin and allocator.
        let a1 = allocations_per_request(&mut a, path, 200).await;
        let b1 = allocations_per_request(&mut b, path, 200).await;
        let a2 = allocations_per_request(&mut a, path, 200).await;
        let b2 = allocations_per_request(&mut b, path, 200).await;
        println!("{path}: declared {a1:.2}/{a2:.2}, hand-written {b1:.2}/{b2:.2} allocations per request");
        assert_eq!(a1.min(a2).round(), b1.min(b2).round(), "{path}");
    }
}

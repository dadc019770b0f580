//! Load balancing, health and failover of declared proxies, over real sockets with real
//! faults: weighted splits, least connections, consistent hashing, a peer killed under
//! load, a peer coming back, and misbehaving origins ejected.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::lb::Backend;
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::route::Router;
use pingora_dsl_suite::origin::{start_faulty_origin, Origin};
use support::{client, get, send, wait_until};
use tokio::io::AsyncWriteExt;

/// Bound on every wait for a condition.
const WAIT: Duration = Duration::from_secs(10);

fn point(router: &Router, group: &str, backends: Vec<Backend>) {
    router
        .group(group)
        .expect("declared group")
        .set_backends(backends);
}

fn origin_of(resp: &http::Response<()>) -> String {
    resp.headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// An origin that reads a request head and resets the connection.
async fn resetting_origin() -> std::net::SocketAddr {
    start_faulty_origin(|s| async move {
        // Linger 0: closing sends a reset.
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await
}

/// Serves `service` on an ephemeral loopback port.
macro_rules! spawn {
    ($service:expr) => {{
        let mut service = $service;
        service.clear_tcp();
        service.add_tcp("127.0.0.1:0");
        service.spawn().expect("proxy starts")
    }};
}

proxy! {
    /// One pool per strategy.
    pub Strategies {
        listen "127.0.0.1:6188";
        upstream weighted {
            peers ["127.0.0.1:8001" weight 1, "127.0.0.1:8002" weight 3];
            select random;
        }
        upstream least {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
            select least_conn;
        }
        upstream sticky {
            peers ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];
            select consistent_hash(header "x-user");
        }
        upstream by_cookie {
            peers ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];
            select hash(cookie "session");
        }
        route path "/weighted" => upstream weighted;
        route path "/least" => upstream least;
        route path "/cookie" => upstream by_cookie;
        route => upstream sticky;
    }
}

#[tokio::test]
async fn weighted_random_splits_one_to_three_within_five_percent() {
    let (a, b) = (
        Origin::start("a").await.expect("origin"),
        Origin::start("b").await.expect("origin"),
    );
    let proxy = Strategies::new();
    point(
        proxy.router(),
        "weighted",
        vec![
            Backend::weighted(a.addr(), 1),
            Backend::weighted(b.addr(), 3),
        ],
    );
    let running = spawn!(proxy.service());
    let c = client();
    let mut heavy = 0;
    for _ in 0..4_000 {
        let (resp, _) = send(&c, get(running.addr(), "/weighted", None)).await;
        heavy += usize::from(origin_of(&resp) == "b");
    }
    // 3,000 expected; ±5% of the 4,000 requests.
    assert!((2_800..=3_200).contains(&heavy), "b got {heavy} of 4,000");
}

#[tokio::test]
async fn least_connections_sends_new_requests_away_from_a_slow_peer() {
    let (slow, fast) = (
        Origin::start("slow").await.expect("origin"),
        Origin::start("fast").await.expect("origin"),
    );
    slow.set_delay(Duration::from_millis(300));
    let proxy = Strategies::new();
    point(
        proxy.router(),
        "least",
        vec![Backend::new(slow.addr()), Backend::new(fast.addr())],
    );
    let running = spawn!(proxy.service());
    let addr = running.addr();
    let fast_count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let fast_count = fast_count.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..10 {
                let (resp, _) = send(&c, get(addr, "/least", None)).await;
                if origin_of(&resp) == "fast" {
                    fast_count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let fast = fast_count.load(Ordering::Relaxed);
    // Round robin would give the slow peer 40 of 80; least connections keeps it at the few
    // requests it holds at a time.
    assert!(fast >= 64, "the fast peer served only {fast} of 80");
}

#[tokio::test]
async fn consistent_hash_keeps_each_user_on_one_peer_and_spreads_users() {
    let origins = [
        Origin::start("a").await.expect("origin"),
        Origin::start("b").await.expect("origin"),
        Origin::start("c").await.expect("origin"),
    ];
    let proxy = Strategies::new();
    for group in ["sticky", "by_cookie"] {
        point(
            proxy.router(),
            group,
            origins.iter().map(|o| Backend::new(o.addr())).collect(),
        );
    }
    let running = spawn!(proxy.service());
    let c = client();
    let mut users_per_origin = std::collections::HashMap::new();
    for user in 0..60 {
        let mut seen = std::collections::HashSet::new();
        for path in ["/a", "/b", "/c"] {
            let req = Request::get(format!("http://{}{path}", running.addr()))
                .header("x-user", format!("user-{user}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let (resp, _) = send(&c, req).await;
            seen.insert(origin_of(&resp));
        }
        assert_eq!(seen.len(), 1, "user-{user} moved between peers: {seen:?}");
        let origin = seen.into_iter().next().expect("one");
        *users_per_origin.entry(origin).or_insert(0) += 1;
        // The cookie-keyed hash pool is as sticky.
        let mut by_cookie = std::collections::HashSet::new();
        for _ in 0..3 {
            let req = Request::get(format!("http://{}/cookie", running.addr()))
                .header("cookie", format!("theme=dark; session=s{user}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            by_cookie.insert(origin_of(&send(&c, req).await.0));
        }
        assert_eq!(by_cookie.len(), 1);
    }
    assert_eq!(users_per_origin.len(), 3, "{users_per_origin:?}");
    assert!(
        users_per_origin.values().all(|&n| n >= 8),
        "users spread unevenly: {users_per_origin:?}"
    );
}

static RETRIED_AFTER: AtomicUsize = AtomicUsize::new(0);
static LOGGED: AtomicUsize = AtomicUsize::new(0);

proxy! {
    /// Three peers with health checks, passive ejection and retries.
    pub Resilient {
        listen "127.0.0.1:6188";
        upstream pool {
            peers ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];
            timeout connect 500ms, read 5s;
            retry 2 backoff 5ms;
            health http "/health" every 200ms timeout 150ms rise 2 fall 1;
            passive failures 2 eject 5s;
        }
        logging(session, _error, _ctx) {
            LOGGED.fetch_add(1, Ordering::Relaxed);
            if session.retries() > 0 {
                RETRIED_AFTER.store(LOGGED.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
}

/// A TCP socket bound to `addr` with `SO_REUSEPORT`: listening, it serves as an origin's
/// listener; bound only, it holds the port (refusing connections) while no origin runs
/// there, so that no other socket takes the port before the origin comes back.
fn shared_port(addr: std::net::SocketAddr) -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket.bind(addr).expect("bind");
    socket
}

/// An origin named `name` listening on `addr` through a [`shared_port`] socket.
fn origin_on_shared_port(addr: std::net::SocketAddr, name: &str) -> Origin {
    let listener = shared_port(addr).listen(1024).expect("listen");
    Origin::serve_on(listener, name).expect("origin")
}

#[tokio::test]
async fn a_peer_killed_under_load_costs_no_request_and_comes_back_when_healthy() {
    let a = Origin::start("a").await.expect("origin");
    let b = Origin::start("b").await.expect("origin");
    let victim = origin_on_shared_port("127.0.0.1:0".parse().expect("addr"), "victim");
    let victim_addr = victim.addr();
    let proxy = Resilient::new();
    point(
        proxy.router(),
        "pool",
        [a.addr(), b.addr(), victim_addr].map(Backend::new).to_vec(),
    );
    let peers = proxy.router().group("pool").expect("group").peers();
    let checkers: Vec<_> = proxy
        .router()
        .background_tasks()
        .into_iter()
        .map(|c| tokio::spawn(c.run_forever()))
        .collect();
    let running = spawn!(proxy.service());
    let addr = running.addr();

    // Eight clients in a loop, keep-alive and fresh connections mixed, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = client();
            while !stop.load(Ordering::Relaxed) {
                if i % 2 == 0 {
                    c = client();
                }
                let req = get(addr, "/", None);
                match tokio::time::timeout(WAIT, c.request(req)).await {
                    Ok(Ok(resp)) if resp.status() == 200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    wait_until(WAIT, "every peer, the victim too, serves the load", || {
        [&a, &b, &victim].iter().all(|o| o.requests() >= 20)
    })
    .await;
    let killed_at = LOGGED.load(Ordering::Relaxed);
    // The port stays held (refusing) while the victim is down.
    let hold = shared_port(victim_addr);
    drop(victim);
    let killed = Instant::now();
    let victim_peer = peers
        .iter()
        .find(|p| p.addr() == victim_addr)
        .expect("victim peer");
    while victim_peer.is_healthy() && killed.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let marked_down = killed.elapsed();
    let logged_when_down = LOGGED.load(Ordering::Relaxed);
    // More load once the peer is down.
    let served_when_down = served.load(Ordering::Relaxed);
    wait_until(WAIT, "the load goes on after the mark-down", || {
        served.load(Ordering::Relaxed) >= served_when_down + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a client request failed"
    );
    assert!(!victim_peer.is_healthy());
    // One interval plus one probe timeout, with slack for a loaded machine.
    assert!(
        marked_down < Duration::from_millis(1_000),
        "marked down after {marked_down:?}"
    );
    // After the peer was marked down, no request needed a retry (none went to it).
    let last_retry = RETRIED_AFTER.load(Ordering::Relaxed);
    assert!(last_retry >= killed_at, "the kill was survived by retries");
    assert!(
        last_retry <= logged_when_down + 16,
        "requests still went to the dead peer after it was marked down"
    );

    // It comes back on the same address after `rise` successful checks.
    let back = origin_on_shared_port(victim_addr, "victim");
    drop(hold);
    let restarted = Instant::now();
    while !victim_peer.is_healthy() && restarted.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(victim_peer.is_healthy(), "the peer never came back");
    let c = client();
    for _ in 0..30 {
        let (resp, _) = send(&c, get(addr, "/", None)).await;
        assert_eq!(resp.status(), 200);
    }
    assert!(back.requests() > 0, "the recovered peer gets traffic again");
    for c in checkers {
        c.abort();
    }
}

proxy! {
    /// One single-peer pool per fault, ejecting after one failure.
    pub Faults {
        listen "127.0.0.1:6188";
        upstream reset { peers ["127.0.0.1:8001"]; passive failures 1 eject 60s; }
        upstream stall {
            peers ["127.0.0.1:8002"];
            timeout read 300ms;
            passive failures 1 eject 60s;
        }
        upstream garbage { peers ["127.0.0.1:8003"]; passive failures 1 eject 60s; }
        upstream down { peers ["127.0.0.1:8004"]; fail_open; passive failures 1 eject 60s; }
        route path "/reset" => upstream reset;
        route path "/stall" => upstream stall;
        route path "/garbage" => upstream garbage;
        route path "/down" => upstream down;
    }
}

#[tokio::test]
async fn misbehaving_origins_get_the_right_status_and_are_ejected() {
    let reset = resetting_origin().await;
    let stall = start_faulty_origin(|s| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    })
    .await;
    let garbage = start_faulty_origin(|mut s| async move {
        let _ = s.write_all(b"this is not HTTP\r\n\r\n").await;
    })
    .await;
    let live = Origin::start("live").await.expect("origin");
    let proxy = Faults::new();
    let mut ejected = Vec::new();
    for (group, addr) in [("reset", reset), ("stall", stall), ("garbage", garbage)] {
        point(proxy.router(), group, vec![Backend::new(addr)]);
        ejected.push((group, proxy.router().group(group).expect("group").peers()));
    }
    point(proxy.router(), "down", vec![Backend::new(live.addr())]);
    let down_peer = proxy.router().group("down").expect("group").peers();
    let running = spawn!(proxy.service());
    let c = client();
    for (path, status) in [("/reset", 502), ("/stall", 504), ("/garbage", 502)] {
        let (resp, _) = send(&c, get(running.addr(), path, None)).await;
        assert_eq!(resp.status().as_u16(), status, "{path}");
        // The only peer is now ejected: no healthy peer is left.
        let (resp, _) = send(&c, get(running.addr(), path, None)).await;
        assert_eq!(resp.status().as_u16(), 503, "{path} after the ejection");
    }
    for (group, peers) in &ejected {
        assert!(peers[0].is_ejected(), "{group} peer not ejected");
    }
    // A pool that fails open still forwards when its only peer is ejected.
    down_peer[0].record_failure(1, Duration::from_secs(60));
    let (resp, _) = send(&c, get(running.addr(), "/down", None)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(origin_of(&resp), "live");
}

proxy! {
    /// The pool of `Resilient` without its logging: retries here must not move the
    /// counters the kill test reads while both run.
    pub Resending {
        listen "127.0.0.1:6188";
        upstream pool {
            peers ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];
            timeout connect 500ms, read 5s;
            retry 2 backoff 5ms;
            health http "/health" every 200ms timeout 150ms rise 2 fall 1;
            passive failures 2 eject 5s;
        }
    }
}

#[tokio::test]
async fn an_idempotent_request_is_resent_when_its_peer_breaks_and_a_post_is_not() {
    let broken = resetting_origin().await;
    let live = Origin::start("live").await.expect("origin");
    let proxy = Resending::new();
    point(
        proxy.router(),
        "pool",
        vec![Backend::new(broken), Backend::new(live.addr())],
    );
    let running = spawn!(proxy.service());
    let c = client();
    for _ in 0..6 {
        let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
        assert_eq!(resp.status(), 200, "GET is resent to the live peer");
        assert_eq!(origin_of(&resp), "live");
    }
    // A POST is not idempotent: when it meets the broken peer it fails, never resent.
    let proxy = Resending::new();
    point(
        proxy.router(),
        "pool",
        vec![Backend::new(broken), Backend::new(live.addr())],
    );
    let running = spawn!(proxy.service());
    let before = live.requests();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let post = Request::post(format!("http://{}/consume", running.addr()))
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request");
        statuses.push(send(&c, post).await.0.status().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(live.requests() - before, 1);
}

proxy! {
    /// Peers from DNS and from a file.
    pub Discovered {
        listen "127.0.0.1:6188";
        upstream by_name {
            discover dns "origins.test:8080" every 100ms;
            retry 2;
            passive failures 1 eject 30s;
        }
        upstream by_file {
            discover file "peers.txt" every 100ms;
        }
        route path "/dns" => upstream by_name;
        route => upstream by_file;
    }
}

/// A resolver under the test's control (no system resolver, no DNS): `origins.test` is
/// 127.0.0.1, every other name is unknown.
struct TestResolver;

impl pingora_dsl::lb::discovery::Resolve for TestResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> pingora_dsl::lb::discovery::ResolveFuture<'a> {
        let answer = match name {
            "origins.test" => Ok(vec![std::net::Ipv4Addr::LOCALHOST.into()]),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                name.to_owned(),
            )),
        };
        Box::pin(async move { answer })
    }
}

/// Waits (bounded) until `group` has `n` peers.
async fn wait_for_peers(router: &Router, group: &str, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if router.group(group).expect("group").backends().len() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn dns_and_file_discovery_find_peers_and_pick_up_changes_without_restart() {
    use pingora_dsl::lb::discovery::{DnsDiscovery, FileDiscovery};
    let a = Origin::start("a").await.expect("origin");
    let b = Origin::start("b").await.expect("origin");
    let dir = std::env::temp_dir().join(format!("pingora-dsl-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("peers.txt");
    std::fs::write(&file, format!("# the pool\n{}\n", a.addr())).expect("write peers");

    let mut proxy = Discovered::new();
    // The declared sources name fixed ports; point them at this test's origins.
    proxy
        .router_mut()
        .group_mut("by_name")
        .expect("group")
        .set_discovery(
            DnsDiscovery::with_resolver("origins.test", a.addr().port(), TestResolver),
            Duration::from_millis(100),
        );
    proxy
        .router_mut()
        .group_mut("by_file")
        .expect("group")
        .set_discovery(FileDiscovery::new(&file), Duration::from_millis(100));
    let tasks: Vec<_> = proxy
        .router()
        .background_tasks()
        .into_iter()
        .map(|t| tokio::spawn(t.run_forever()))
        .collect();
    assert!(
        wait_for_peers(proxy.router(), "by_name", 1).await,
        "DNS found nothing"
    );
    assert!(
        wait_for_peers(proxy.router(), "by_file", 1).await,
        "the file was not read"
    );
    let names = proxy.router().group("by_name").expect("group").backends();
    assert!(names.iter().any(|p| p.addr == a.addr()), "{names:?}");
    let file_group = proxy.router().group("by_file").expect("group").backends();
    let running = spawn!(proxy.service());
    let c = client();
    for _ in 0..4 {
        let (resp, _) = send(&c, get(running.addr(), "/dns", None)).await;
        assert_eq!(origin_of(&resp), "a", "origins.test resolved to a's port");
        let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
        assert_eq!(origin_of(&resp), "a");
    }
    assert_eq!(file_group.len(), 1);

    let a_connections = a.connections();
    // Add b to the file: it is picked up without a restart. The modification time is
    // moved forward explicitly, as coarse file-system clocks could hide the change.
    std::fs::write(&file, format!("{}\n{} weight 3\n", a.addr(), b.addr())).expect("rewrite");
    let handle = std::fs::File::options()
        .write(true)
        .open(&file)
        .expect("open");
    handle
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(2))
        .expect("touch");
    drop(handle);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut b_seen = false;
    while Instant::now() < deadline && !b_seen {
        let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
        assert_eq!(
            resp.status(),
            200,
            "no request fails while the peers change"
        );
        b_seen = origin_of(&resp) == "b";
    }
    assert!(b_seen, "the added peer never got traffic");
    let mut a_after = 0;
    for _ in 0..12 {
        let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
        a_after += usize::from(origin_of(&resp) == "a");
    }
    assert!(a_after > 0, "a stays in the pool");
    assert_eq!(
        a.connections(),
        a_connections,
        "the swap kept the pooled connection to the peer that remained"
    );
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

proxy! {
    /// Resends any method with a body of up to 16 bytes.
    pub Replaying {
        listen "127.0.0.1:6188";
        upstream pool {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
            retry 1 replay 16 any_method;
        }
    }
}

#[tokio::test]
async fn a_post_is_resent_with_its_body_only_when_allowed_and_buffered() {
    let broken = resetting_origin().await;
    let live = Origin::start("live").await.expect("origin");
    let proxy = Replaying::new();
    point(
        proxy.router(),
        "pool",
        vec![Backend::new(broken), Backend::new(live.addr())],
    );
    let running = spawn!(proxy.service());
    let c = client();
    let post = |body: &'static [u8]| {
        Request::post(format!("http://{}/consume", running.addr()))
            .body(Full::new(Bytes::from_static(body)))
            .expect("request")
    };
    for _ in 0..4 {
        let (resp, body) = send(&c, post(b"payload")).await;
        assert_eq!(resp.status(), 200, "a 7-byte POST is resent whole");
        assert_eq!(&body[..], b"7", "the live origin got the whole body");
    }
    let big: &'static [u8] = &[b'x'; 100];
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(send(&c, post(big)).await.0.status().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 502],
        "a body over the replay limit is never resent"
    );
}

/// A user strategy: always the last peer that is available.
pub struct LastPeer;

impl pingora_dsl::lb::Selection for LastPeer {
    fn pick(
        &self,
        _key: &[u8],
        attempt: usize,
        peers: &[Arc<pingora_dsl::lb::PeerState>],
    ) -> usize {
        peers.len() - 1 - attempt % peers.len()
    }
}

proxy! {
    /// A pool with a user-implemented strategy.
    pub Custom {
        listen "127.0.0.1:6188";
        upstream pool {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
            select custom(LastPeer);
        }
    }
}

#[tokio::test]
async fn a_user_strategy_plugs_in_through_the_selection_trait() {
    let (a, b) = (
        Origin::start("a").await.expect("origin"),
        Origin::start("b").await.expect("origin"),
    );
    let proxy = Custom::new();
    point(
        proxy.router(),
        "pool",
        vec![Backend::new(a.addr()), Backend::new(b.addr())],
    );
    let peers = proxy.router().group("pool").expect("group").peers();
    let running = spawn!(proxy.service());
    let c = client();
    for _ in 0..5 {
        assert_eq!(
            origin_of(&send(&c, get(running.addr(), "/", None)).await.0),
            "b"
        );
    }
    // With the last peer ejected, its next candidate is taken.
    peers[1].record_failure(1, Duration::from_secs(60));
    assert_eq!(
        origin_of(&send(&c, get(running.addr(), "/", None)).await.0),
        "a"
    );
}

proxy! {
    /// Consistent hashing with retries, no ejection: each retry hashes the same key.
    pub StickyRetry {
        listen "127.0.0.1:6188";
        upstream pool {
            peers ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];
            select consistent_hash(header "x-user");
            retry 2;
        }
    }
}

#[tokio::test]
async fn retries_keep_hashing_the_users_key() {
    let (a, b) = (
        Origin::start("a").await.expect("origin"),
        Origin::start("b").await.expect("origin"),
    );
    let refused = support::refused_port();
    let dead = refused.addr();
    let proxy = StickyRetry::new();
    point(
        proxy.router(),
        "pool",
        vec![
            Backend::new(a.addr()),
            Backend::new(b.addr()),
            Backend::new(dead),
        ],
    );
    let running = spawn!(proxy.service());
    let c = client();
    // Which users the dead peer owns, by the same ring the proxy uses.
    let ring = pingora_dsl::lb::LoadBalancer::new(
        vec![
            Backend::new(a.addr()),
            Backend::new(b.addr()),
            Backend::new(dead),
        ],
        pingora_dsl::lb::Strategy::ConsistentHash,
    );
    let mut fallbacks = std::collections::HashSet::new();
    for user in 0..90 {
        let owner = ring
            .select(format!("user-{user}").as_bytes(), 1)
            .expect("a peer")
            .addr;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2 {
            let req = Request::get(format!("http://{}/", running.addr()))
                .header("x-user", format!("user-{user}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let (resp, _) = send(&c, req).await;
            assert_eq!(resp.status(), 200, "retried past the dead peer");
            seen.insert(origin_of(&resp));
        }
        assert_eq!(seen.len(), 1, "user-{user} is not sticky: {seen:?}");
        if owner == dead {
            fallbacks.extend(seen);
        }
    }
    // Users of the dead peer fall back along the ring by their own key, so both live
    // peers serve (a retry hashing an empty key would send them all to one).
    assert_eq!(fallbacks.len(), 2, "{fallbacks:?}");
}

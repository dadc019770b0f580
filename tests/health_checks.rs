//! Active health checks speak the pool's protocol, over real sockets: a `tls` pool is
//! probed over TLS with the pool's SNI name, trust and client certificate (a TCP check
//! completes the handshake), an `http2` pool with HTTP/2 (prior knowledge in cleartext, ALPN
//! over TLS), and every probe gives up within the check's timeout.
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora_dsl::lb::{Backend, Strategy};
use pingora_dsl::lb::{GroupTask, HealthCheck, HealthKind, UpstreamGroup};
use pingora_dsl::listen::tls::{CertKey, TlsAcceptor, TlsSettings};
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::route::Router;
use pingora_dsl::upstream::{UpstreamHttp, UpstreamTls};
use pingora_dsl_suite::certs::{CertFiles, TestCa};
use support::wait_until;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// The SNI name the pools send and the origins' certificates carry.
const NAME: &str = "origin.test";

/// A directory of its own for a test's certificates.
fn scratch(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pdsl-health-{test}-{}", std::process::id()))
}

/// One request a test origin received.
#[derive(Debug, Clone)]
struct Received {
    version: Version,
    path: String,
    /// The `Host` header (HTTP/1.1) or the `:authority` (HTTP/2).
    host: Option<String>,
    /// The SNI name of the TLS connection.
    sni: Option<String>,
    /// The common name of the client's certificate.
    client_cn: Option<String>,
}

/// What a test origin saw.
#[derive(Debug, Default)]
struct Seen {
    requests: Mutex<Vec<Received>>,
    /// Connections being served now.
    open: AtomicUsize,
}

impl Seen {
    fn requests(&self) -> Vec<Received> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests for `/health` (the probes).
    fn probes(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/health")
            .collect()
    }

    /// The HTTP versions of the probes.
    fn probe_versions(&self) -> Vec<Version> {
        self.probes().into_iter().map(|r| r.version).collect()
    }
}

/// How a test origin speaks.
enum Speaks {
    /// HTTP/1.1 in cleartext.
    Http1,
    /// HTTP/2 in cleartext, prior knowledge only (h2c).
    H2c,
    /// TLS with this acceptor, then HTTP/2 if ALPN chose it, else HTTP/1.1.
    Tls(TlsAcceptor),
    /// Accepts connections and never says a word.
    Silent,
}

/// A running test origin answering `200 ok` to everything; stops when dropped.
struct TestOrigin {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestOrigin {
    async fn start(speaks: Speaks) -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let speaks = Arc::new(speaks);
        let stats = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                conns.spawn(serve(tcp, speaks.clone(), stats.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        TestOrigin { addr, seen, task }
    }

    /// A TLS origin with a certificate for `cert`, offering HTTP/2 by ALPN when `h2`,
    /// requiring a client certificate from `client_ca` if given.
    async fn tls(cert: &CertFiles, h2: bool, client_ca: Option<PathBuf>) -> TestOrigin {
        let mut settings = TlsSettings::new(&cert.cert, &cert.key);
        if let Some(ca) = client_ca {
            settings = settings.with_client_ca(ca);
        }
        TestOrigin::start(Speaks::Tls(settings.build(h2).expect("acceptor"))).await
    }
}

/// Serves one connection, counting it open while it lasts.
async fn serve(tcp: TcpStream, speaks: Arc<Speaks>, seen: Arc<Seen>) {
    seen.open.fetch_add(1, Ordering::SeqCst);
    match &*speaks {
        Speaks::Http1 => http1(TokioIo::new(tcp), seen.clone(), None, None).await,
        Speaks::H2c => http2(TokioIo::new(tcp), seen.clone(), None, None).await,
        Speaks::Tls(acceptor) => {
            if let Ok(accepted) = acceptor.accept(tcp).await {
                let sni = accepted.server_name().map(str::to_owned);
                let cn = accepted.client_common_name();
                let io = TokioIo::new(accepted.stream);
                if accepted.h2 {
                    http2(io, seen.clone(), sni, cn).await;
                } else {
                    http1(io, seen.clone(), sni, cn).await;
                }
            }
        }
        Speaks::Silent => {
            let mut tcp = tcp;
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink).await;
        }
    }
    seen.open.fetch_sub(1, Ordering::SeqCst);
}

/// The origin's handler: records each request with what its connection saw, answers
/// `200 ok`.
#[derive(Clone)]
struct Answer {
    seen: Arc<Seen>,
    sni: Option<String>,
    cn: Option<String>,
}

impl hyper::service::Service<Request<Incoming>> for Answer {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .map(str::to_owned);
        self.seen
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Received {
                version: req.version(),
                path: req.uri().path().to_owned(),
                host,
                sni: self.sni.clone(),
                client_cn: self.cn.clone(),
            });
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

async fn http1<I>(io: TokioIo<I>, seen: Arc<Seen>, sni: Option<String>, cn: Option<String>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, Answer { seen, sni, cn })
        .await;
}

async fn http2<I>(io: TokioIo<I>, seen: Arc<Seen>, sni: Option<String>, cn: Option<String>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, Answer { seen, sni, cn })
        .await;
}

/// An HTTP check of `/health`: one failure takes a peer down, one success brings it back.
fn http_check(timeout: Duration) -> HealthCheck {
    HealthCheck {
        kind: HealthKind::Http {
            path: "/health".into(),
            host: None,
            status: 200..=399,
        },
        interval: Duration::from_secs(10),
        timeout,
        rise: 1,
        fall: 1,
    }
}

/// A round-robin group over `origins` checked with `check`.
fn group(name: &str, origins: &[&TestOrigin], check: HealthCheck) -> UpstreamGroup {
    let backends = origins.iter().map(|o| Backend::new(o.addr)).collect();
    UpstreamGroup::new(name, backends, Strategy::RoundRobin).with_health_check(check)
}

/// TLS to `NAME`, trusting only `ca`.
fn tls_to(ca: &TestCa) -> UpstreamTls {
    UpstreamTls {
        ca_file: Some(ca.cert_path()),
        ..UpstreamTls::with_sni(NAME)
    }
}

/// Runs one round of `group`'s health checks, bounded by [`WAIT`].
async fn check_once(group: &UpstreamGroup) {
    let checker = group
        .health_checker()
        .expect("the group has a health check");
    tokio::time::timeout(WAIT, checker.check_once())
        .await
        .expect("a round of probes ends within the probes' timeout");
}

/// Runs one round of every health check of `router`'s groups.
async fn check_router_once(router: &Router) {
    for task in router.background_tasks() {
        if let GroupTask::Health(checker) = task {
            tokio::time::timeout(WAIT, checker.check_once())
                .await
                .expect("a round of probes ends within the probes' timeout");
        }
    }
}

/// Whether `group`'s peer at `addr` is healthy.
fn healthy(group: &UpstreamGroup, addr: SocketAddr) -> bool {
    group
        .peers()
        .iter()
        .find(|p| p.addr() == addr)
        .expect("peer of the group")
        .is_healthy()
}

/// Points `router`'s group `name` at `origins`.
fn point(router: &Router, name: &str, origins: &[&TestOrigin]) {
    router
        .group(name)
        .expect("declared group")
        .set_backends(origins.iter().map(|o| Backend::new(o.addr)).collect());
}

/// Serves a declared proxy's `service` on an ephemeral loopback port.
macro_rules! spawn {
    ($service:expr) => {{
        let mut service = $service;
        service.clear_tcp();
        service.add_tcp("127.0.0.1:0");
        service.spawn().expect("proxy starts")
    }};
}

/// `GET path` through the proxy at `addr` on a fresh HTTP/1.1 connection: status and body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    tokio::time::timeout(WAIT, async {
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let request = Request::get(path)
            .header("host", "proxy.test")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body");
        (status, body.to_bytes())
    })
    .await
    .expect("an answer within the bound")
}

proxy! {
    /// A pool of TLS origins with an HTTP health check, as a production proxy declares it.
    pub TlsPool {
        listen "127.0.0.1:6188";
        upstream secure {
            peers ["127.0.0.1:9"];
            tls sni "origin.test" insecure;
            health http "/health" every 10s timeout 5s rise 1 fall 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_tls_pool_is_probed_over_tls_and_serves() {
    let ca = TestCa::new(&scratch("declared-tls")).expect("ca");
    let cert = ca.server(NAME, &[NAME]).expect("cert");
    let a = TestOrigin::tls(&cert, false, None).await;
    let b = TestOrigin::tls(&cert, false, None).await;
    let proxy = TlsPool::new();
    point(proxy.router(), "secure", &[&a, &b]);
    check_router_once(proxy.router()).await;
    let pool = proxy.router().group("secure").expect("group").clone();
    let running = spawn!(proxy.service());
    for _ in 0..4 {
        let (status, body) = get(running.addr(), "/").await;
        assert_eq!(
            status, 200,
            "the pool serves (a 503 says its TLS peers were marked down)"
        );
        assert_eq!(&body[..], b"ok");
    }
    for origin in [&a, &b] {
        assert!(healthy(&pool, origin.addr), "a TLS peer was marked down");
        let probes = origin.seen.probes();
        assert_eq!(probes.len(), 1, "one probe per peer and round");
        assert_eq!(
            probes[0].sni.as_deref(),
            Some(NAME),
            "the probe sent the pool's SNI name"
        );
        assert_eq!(
            probes[0].host.as_deref(),
            Some(NAME),
            "without `host`, the probe asks for the pool's SNI name"
        );
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_certificate_does_not_verify_is_marked_down() {
    let dir = scratch("verify");
    let ca = TestCa::new(&dir).expect("ca");
    let other_ca = TestCa::new(&dir.join("other")).expect("other ca");
    let good = TestOrigin::tls(&ca.server(NAME, &[NAME]).expect("cert"), false, None).await;
    let wrong_name = TestOrigin::tls(
        &ca.server("other.test", &["other.test"]).expect("cert"),
        false,
        None,
    )
    .await;
    let untrusted =
        TestOrigin::tls(&other_ca.server(NAME, &[NAME]).expect("cert"), false, None).await;
    let cleartext = TestOrigin::start(Speaks::Http1).await;
    let origins = [&good, &wrong_name, &untrusted, &cleartext];

    for kind in ["http", "tcp"] {
        let mut check = http_check(Duration::from_secs(5));
        if kind == "tcp" {
            check.kind = HealthKind::Tcp;
        }
        let pool = group(kind, &origins, check).with_tls(&tls_to(&ca));
        check_once(&pool).await;
        assert!(healthy(&pool, good.addr), "{kind}: the verified peer is up");
        for (bad, why) in [
            (&wrong_name, "a certificate for another name"),
            (&untrusted, "a certificate from another CA"),
            (&cleartext, "no TLS at all"),
        ] {
            assert!(!healthy(&pool, bad.addr), "{kind}: a peer with {why} is up");
        }
    }
    assert_eq!(
        good.seen.probe_versions(),
        vec![Version::HTTP_11],
        "the HTTP probe reached the verified peer over TLS"
    );
    assert!(
        cleartext.seen.requests().is_empty(),
        "nothing was sent in cleartext to a peer of a TLS pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_present_the_pools_client_certificate() {
    let dir = scratch("mtls");
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server(NAME, &[NAME]).expect("cert");
    let client = ca.client("health-prober").expect("client cert");
    let origin = TestOrigin::tls(&cert, false, Some(ca.cert_path())).await;

    let without =
        group("without", &[&origin], http_check(Duration::from_secs(5))).with_tls(&tls_to(&ca));
    check_once(&without).await;
    assert!(
        !healthy(&without, origin.addr),
        "the origin requires a client certificate: a pool without one cannot reach it"
    );

    let with =
        group("with", &[&origin], http_check(Duration::from_secs(5))).with_tls(&UpstreamTls {
            client_cert: Some(CertKey {
                cert: client.cert.clone(),
                key: client.key.clone(),
            }),
            ..tls_to(&ca)
        });
    check_once(&with).await;
    assert!(
        healthy(&with, origin.addr),
        "the pool's certificate admits the probe"
    );
    let requests = origin.seen.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, "/health");
    assert_eq!(requests[0].client_cn.as_deref(), Some("health-prober"));
}

proxy! {
    /// A pool of cleartext HTTP/2 (prior knowledge) origins with an HTTP health check.
    pub H2cPool {
        listen "127.0.0.1:6188";
        upstream grpc {
            peers ["127.0.0.1:9"];
            http2;
            health http "/health" every 10s timeout 5s rise 1 fall 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_pool_is_probed_with_http2_and_an_http1_peer_is_marked_down() {
    let h2 = TestOrigin::start(Speaks::H2c).await;
    let h1_only = TestOrigin::start(Speaks::Http1).await;
    let proxy = H2cPool::new();
    point(proxy.router(), "grpc", &[&h2, &h1_only]);
    check_router_once(proxy.router()).await;

    let pool = proxy.router().group("grpc").expect("group");
    assert!(healthy(pool, h2.addr), "the h2c peer was marked down");
    assert_eq!(h2.seen.probe_versions(), vec![Version::HTTP_2]);
    assert!(
        !healthy(pool, h1_only.addr),
        "a peer speaking only HTTP/1.1 cannot serve an http2 pool"
    );
    assert!(
        h1_only.seen.requests().is_empty(),
        "no HTTP/1.1 request was sent to a peer of an http2 pool"
    );
    // The probe leaves no connection behind.
    wait_until(WAIT, "the probe's HTTP/2 connection is closed", || {
        h2.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;

    let running = spawn!(proxy.service());
    for _ in 0..4 {
        let (status, body) = get(running.addr(), "/").await;
        assert_eq!(status, 200, "the healthy h2c peer serves every request");
        assert_eq!(&body[..], b"ok");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_over_tls_pool_is_probed_with_http2_by_alpn() {
    let ca = TestCa::new(&scratch("h2-alpn")).expect("ca");
    let cert = ca.server(NAME, &[NAME]).expect("cert");
    let h2 = TestOrigin::tls(&cert, true, None).await;
    let h1_only = TestOrigin::tls(&cert, false, None).await;

    // `http2;`: HTTP/2 or nothing.
    let always = group(
        "always",
        &[&h2, &h1_only],
        http_check(Duration::from_secs(5)),
    )
    .with_tls(&tls_to(&ca))
    .with_http(UpstreamHttp::Http2);
    check_once(&always).await;
    assert!(healthy(&always, h2.addr), "the h2 peer was marked down");
    assert_eq!(h2.seen.probe_versions(), vec![Version::HTTP_2]);
    assert!(
        !healthy(&always, h1_only.addr),
        "a peer whose ALPN refuses h2 cannot serve an http2 pool"
    );
    assert!(h1_only.seen.requests().is_empty());

    // `http2 negotiate;`: HTTP/2 where ALPN agrees, HTTP/1.1 elsewhere, as traffic.
    let negotiated = group(
        "negotiated",
        &[&h2, &h1_only],
        http_check(Duration::from_secs(5)),
    )
    .with_tls(&tls_to(&ca))
    .with_http(UpstreamHttp::Negotiate);
    check_once(&negotiated).await;
    assert!(healthy(&negotiated, h2.addr));
    assert!(healthy(&negotiated, h1_only.addr));
    assert_eq!(h2.seen.probe_versions(), vec![Version::HTTP_2; 2]);
    assert_eq!(h1_only.seen.probe_versions(), vec![Version::HTTP_11]);

    // A TCP check of an `http2` TLS pool needs ALPN to agree too.
    let mut tcp = http_check(Duration::from_secs(5));
    tcp.kind = HealthKind::Tcp;
    let tcp_checked = group("tcp", &[&h2, &h1_only], tcp)
        .with_tls(&tls_to(&ca))
        .with_http(UpstreamHttp::Http2);
    check_once(&tcp_checked).await;
    assert!(healthy(&tcp_checked, h2.addr));
    assert!(!healthy(&tcp_checked, h1_only.addr));

    // No probe leaves a connection behind.
    wait_until(WAIT, "every probe's connection is closed", || {
        h2.seen.open.load(Ordering::SeqCst) + h1_only.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_fails_every_kind_of_probe_within_the_timeout() {
    let ca = TestCa::new(&scratch("silent")).expect("ca");
    let silent = TestOrigin::start(Speaks::Silent).await;
    let timeout = Duration::from_millis(300);
    let mut tcp_tls = http_check(timeout);
    tcp_tls.kind = HealthKind::Tcp;
    let pools = [
        ("http/1.1", group("h1", &[&silent], http_check(timeout))),
        (
            "h2c",
            group("h2c", &[&silent], http_check(timeout)).with_http(UpstreamHttp::Http2),
        ),
        (
            "http over tls",
            group("tls", &[&silent], http_check(timeout)).with_tls(&tls_to(&ca)),
        ),
        (
            "h2 over tls",
            group("h2", &[&silent], http_check(timeout))
                .with_tls(&tls_to(&ca))
                .with_http(UpstreamHttp::Http2),
        ),
        (
            "tcp over tls",
            group("tcp", &[&silent], tcp_tls).with_tls(&tls_to(&ca)),
        ),
    ];
    for (what, pool) in pools {
        let started = Instant::now();
        check_once(&pool).await;
        let took = started.elapsed();
        assert!(!healthy(&pool, silent.addr), "{what}: a silent peer is up");
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(2),
            "{what}: the probe gave up after {took:?} (timeout {timeout:?})"
        );
    }
    // A probe that gave up leaves no connection behind.
    wait_until(WAIT, "every abandoned probe's connection is closed", || {
        silent.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

//! Helpers shared by the integration tests: a configurable test proxy, a pooled real HTTP
//! client, and raw-socket exchanges for malformed input.
#![allow(dead_code)]

pub mod h3_client;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pingora_dsl::downstream::{HttpOptions, HttpService, RunningService};
use pingora_dsl::observe::admin::Admin;
use pingora_dsl::prelude::*;
use pingora_dsl::proxy::{ProxyLayer, ProxyPipeline};
use pingora_dsl::service::Observable;
use pingora_dsl::upstream::PeerTimeouts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `logging` saw for one request.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub id: String,
    pub status: Option<u16>,
    pub error: Option<ErrorKind>,
    pub upstream: Option<SocketAddr>,
    pub bytes: u64,
}

/// The proxy under test: round robin over its peers, `/admin` denied with 403, optional Host
/// rewrite, and a log of every `logging` call keyed by the request's `x-test-id`.
pub struct TestProxy {
    pub lb: LoadBalancer,
    pub host: Option<&'static str>,
    pub timeouts: PeerTimeouts,
    pub log: Arc<Mutex<Vec<LogEntry>>>,
}

impl TestProxy {
    pub fn new(peers: &[SocketAddr]) -> Self {
        let addrs: Vec<String> = peers.iter().map(|a| a.to_string()).collect();
        TestProxy {
            lb: LoadBalancer::try_from_iter(&addrs).expect("valid peers"),
            host: None,
            timeouts: PeerTimeouts::default(),
            log: Arc::default(),
        }
    }
}

#[derive(Default)]
pub struct TestCtx {
    id: String,
}

impl ProxyHttp for TestProxy {
    type Ctx = TestCtx;

    fn new_ctx(&self) -> TestCtx {
        TestCtx::default()
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut TestCtx) -> Result<()> {
        if let Some(id) = session.headers().get("x-test-id") {
            ctx.id = id.to_str().unwrap_or("").to_owned();
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut TestCtx) -> Result<Flow> {
        match session.path() {
            "/admin" => Ok(Flow::respond_with(StatusCode::FORBIDDEN, "forbidden\n")),
            "/old" => Flow::redirect(StatusCode::MOVED_PERMANENTLY, "/new"),
            "/fail-filter" => Err(Error::filter("test filter failed")),
            _ => Ok(Flow::Continue),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut TestCtx) -> Result<HttpPeer> {
        let backend = self
            .lb
            .select(b"", 16)
            .ok_or(Error::new(ErrorKind::NoPeer, "no backend"))?;
        Ok(HttpPeer::new(backend.addr).with_timeouts(self.timeouts))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut TestCtx,
    ) -> Result<()> {
        if let Some(host) = self.host {
            req.insert_header("host", host)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut TestCtx,
    ) -> Result<()> {
        resp.insert_header("x-proxied", "1")
    }

    fn logging(&self, session: &Session, error: Option<&Error>, ctx: &mut TestCtx) {
        self.log.lock().expect("log lock").push(LogEntry {
            id: ctx.id.clone(),
            status: session.response_status().map(|s| s.as_u16()),
            error: error.map(|e| e.kind()),
            upstream: session.upstream_addr(),
            bytes: session.body_bytes_sent(),
        });
    }
}

/// Starts `proxy` on an ephemeral loopback port with `options`.
pub fn start_proxy_with(
    proxy: TestProxy,
    options: HttpOptions,
    proxy_options: ProxyOptions,
) -> RunningService {
    let mut service = http_proxy_service_with(
        "test-proxy",
        proxy,
        proxy_options,
        tower::layer::util::Identity::new(),
    );
    service.add_tcp("127.0.0.1:0");
    *service.options_mut() = options;
    service.spawn().expect("proxy starts")
}

/// Starts `proxy` with default options.
pub fn start_proxy(proxy: TestProxy) -> RunningService {
    start_proxy_with(proxy, HttpOptions::default(), ProxyOptions::default())
}

/// A real HTTP/1.1 client with its own connection pool (hyper-util's).
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and collects the response body, bounded by 30 s.
pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    tokio::time::timeout(Duration::from_secs(30), async {
        let resp = client.request(req).await.expect("request succeeds");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (Response::from_parts(parts, ()), bytes)
    })
    .await
    .expect("response within 30 s")
}

/// `GET http://addr{path}` with an optional test id.
pub fn get(addr: SocketAddr, path: &str, id: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get(format!("http://{addr}{path}"));
    if let Some(id) = id {
        b = b.header("x-test-id", HeaderValue::from_str(id).expect("id"));
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

/// Writes `raw` to a new connection to `addr`, then reads until the peer closes or `wait`
/// passes without data. Returns everything read.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    read_until_quiet(&mut stream, wait).await
}

/// Reads from `stream` until EOF, an error, or `wait` without data.
pub async fn read_until_quiet(stream: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the peer closed `stream` (EOF or reset) within `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Waits (bounded by 5 s) until `log` holds at least `n` entries, then returns them by id.
/// Entries may still arrive afterwards: to count them (e.g. "logged exactly once"), use
/// [`settled_log`].
pub async fn wait_for_log(log: &Mutex<Vec<LogEntry>>, n: usize) -> HashMap<String, Vec<LogEntry>> {
    wait_until(
        Duration::from_secs(5),
        &format!("{n} logging calls"),
        || log.lock().expect("log").len() >= n,
    )
    .await;
    by_id(log)
}

/// Waits for `n` entries as [`wait_for_log`] does, then stops `proxy` (no new connections;
/// the open ones end, their responses' bodies dropped, so every `logging` call that will
/// ever happen has happened) and returns `log` by id: a late duplicate is in it.
pub async fn settled_log(
    proxy: RunningService,
    log: &Mutex<Vec<LogEntry>>,
    n: usize,
) -> HashMap<String, Vec<LogEntry>> {
    wait_for_log(log, n).await;
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .expect("the proxy stops within 10 s");
    by_id(log)
}

fn by_id(log: &Mutex<Vec<LogEntry>>) -> HashMap<String, Vec<LogEntry>> {
    let mut by_id: HashMap<String, Vec<LogEntry>> = HashMap::new();
    for e in log.lock().expect("log").iter() {
        by_id.entry(e.id.clone()).or_default().push(e.clone());
    }
    by_id
}

/// The binary of example `name`, which `cargo test` builds beside the test binaries.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples")
        .join(name)
}

/// Starts `command` with its stdout piped, and a thread that hands each line over.
pub fn spawn_with_lines(
    command: &mut std::process::Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    spawn_with_lines_and(command, std::process::Stdio::null())
}

/// Like [`spawn_with_lines`], with stderr going to `stderr` (e.g. a file).
pub fn spawn_with_lines_and(
    command: &mut std::process::Command,
    stderr: impl Into<std::process::Stdio>,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead as _;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the program starts (an example is built by `cargo test`)");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// Reads lines from `lines` until one satisfies `want`, for at most 10 s; the others are
/// kept in `seen`.
pub fn read_until(
    lines: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no such line within 10 s; saw: {seen:#?}"),
        }
    }
}

/// The address after `marker` in `line` (up to a `/` or the end).
pub fn addr_after(line: &str, marker: &str) -> SocketAddr {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    let end = rest.find('/').unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

/// A loopback port that refuses connections for as long as the value lives: a TCP socket
/// bound there and never listening. Unlike a port bound and released, no other socket can
/// take it meanwhile.
pub struct RefusedPort {
    _socket: socket2::Socket,
    addr: SocketAddr,
}

impl RefusedPort {
    /// The address connections to which are refused.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A new [`RefusedPort`] on 127.0.0.1.
pub fn refused_port() -> RefusedPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind a loopback port");
    let addr = socket
        .local_addr()
        .expect("bound")
        .as_socket()
        .expect("an IP address");
    RefusedPort {
        _socket: socket,
        addr,
    }
}

/// Waits until `cond` holds, checking it every 10 ms for at most `within`; panics saying
/// `what` was awaited if it never does.
pub async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_until_async(within, what, || std::future::ready(cond())).await;
}

/// [`wait_until`] for a condition that must itself be awaited (e.g. a fetch of metrics).
pub async fn wait_until_async<F, C>(within: Duration, what: &str, mut cond: C)
where
    C: FnMut() -> F,
    F: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_until`] for a thread outside any runtime.
pub fn wait_until_blocking(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether this process has a handler installed for `signal` (the `SigCgt` mask of
/// `/proc/self/status`): raising it then cannot take the default action (end the process).
pub fn catches_signal(signal: nix::sys::signal::Signal) -> bool {
    process_catches_signal(std::process::id(), signal)
}

/// Whether process `pid` has a handler installed for `signal` (the `SigCgt` mask of its
/// `/proc` status; `false` once it is gone).
pub fn process_catches_signal(pid: u32, signal: nix::sys::signal::Signal) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (signal as i32 - 1)) != 0)
}

/// Points the declared pool `group` of `router` at `addrs` (a test's origins).
pub fn point(router: &mut pingora_dsl::proxy::route::Router, group: &str, addrs: &[SocketAddr]) {
    router
        .group_mut(group)
        .expect("declared group")
        .set_backends(
            addrs
                .iter()
                .copied()
                .map(pingora_dsl::lb::Backend::new)
                .collect(),
        );
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One keep-alive HTTP/1.1 `GET path` (with `x-request-id: id` if given) on `stream`, left
/// open for the next: the status line and the body (framed by `content-length`).
pub async fn exchange<S>(stream: &mut S, path: &str, id: Option<&str>) -> (String, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (head, body) = exchange_head(stream, path, id).await;
    (head.lines().next().unwrap_or_default().to_owned(), body)
}

/// [`exchange`], returning the whole response head (status line and header lines).
pub async fn exchange_head<S>(stream: &mut S, path: &str, id: Option<&str>) -> (String, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let id = id
        .map(|id| format!("x-request-id: {id}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{id}\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_response(stream).await
}

/// Reads one response off `stream`: its head (status line and header lines) and its body
/// (framed by `content-length`), within 10 s.
pub async fn read_response<S>(stream: &mut S) -> (String, Vec<u8>)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut byte))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut body))
        .await
        .expect("the body within 10 s")
        .expect("body");
    (head, body)
}

/// The DOM of `url` after headless Chromium ran its scripts for `budget_ms` of virtual
/// time (bounded by 60 s of real time). Panics, saying how to install it, without Chromium.
pub async fn chromium_dom(url: &str, budget_ms: u32) -> String {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("a headless Chromium is needed for this test: `apt-get install chromium` (./test.sh installs it)");
    let profile = std::env::temp_dir().join(format!(
        "pingora-dsl-chromium-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&profile).expect("profile dir");
    let child = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom",
            url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let dump = tokio::task::spawn_blocking(move || {
        finished.recv_timeout(Duration::from_secs(60)).map_err(|_| {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        })
    })
    .await
    .expect("waiter")
    .expect("chromium finished within 60 s")
    .expect("chromium ran");
    let _ = std::fs::remove_dir_all(profile);
    assert!(
        dump.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    String::from_utf8_lossy(&dump.stdout).into_owned()
}

/// Serves `page` as `text/html` to every request on a loopback port of its own (for a
/// browser to load), until the runtime stops. Returns the address.
pub async fn serve_page(page: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
                    {
                        Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// Starts `service` on an ephemeral port, and an admin listener watching it.
pub fn start_with_admin<P: ProxyHttp, L: ProxyLayer<P>>(
    mut service: HttpService<ProxyPipeline<P, L>>,
) -> (RunningService, RunningService) {
    let admin = Admin::new();
    admin.watch(service.observer());
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("proxy starts");
    let admin = admin.service("127.0.0.1:0").spawn().expect("admin starts");
    (proxy, admin)
}

/// The body of `GET path` on `addr` (an admin listener), which must answer 200.
pub async fn fetch(addr: SocketAddr, path: &str) -> String {
    let (response, body) = send(&client(), get(addr, path, None)).await;
    assert_eq!(response.status(), 200, "GET {path}");
    String::from_utf8(body.to_vec()).expect("utf-8")
}

/// The value of the sample of `name` whose labels include every one of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// [`sample`] as a count; panics, showing the metrics, when there is none.
pub fn count(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    sample(metrics, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{metrics}"))
        as u64
}

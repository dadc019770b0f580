//! Several instances of one proxy as one: the `cluster` example's rate limit shared
//! through a real `redis-server` (two and three processes keep one budget; Redis killed,
//! the declared fallback decides and nothing hangs; Redis back, shared again), its peers
//! watched in a real `etcd` (a change reaches every instance; a malformed value and a dead
//! etcd keep the peers), and three instances on one port with `SO_REUSEPORT`.
//!
//! `./test.sh` installs redis-server and etcd-server when the machine lacks them.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use base64::Engine;
use pingora_dsl_suite::origin::Origin;
use support::{
    addr_after, count, example_binary, fetch, refused_port, spawn_with_lines, wait_until_async,
    wait_until_blocking, KillOnDrop,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The limit `examples/cluster.rs` declares: 100 requests a minute per API key.
const LIMIT: usize = 100;
/// Over the limit the sliding window may admit when a test runs across the edge of Redis's
/// 60 s window: the previous window's count weighs `1 - elapsed`, so a few of its requests
/// stop counting during the test (a test takes a few seconds: 1/60 of 100 per second).
const WINDOW_EDGE: usize = 3;
/// Under the limit an instance may admit when the window ends while it holds a lease: the
/// lease ends with it. The first lease of a budget of 100 is its largest, 100/16.
const LARGEST_LEASE: usize = LIMIT / 16;

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pdsl-cluster-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines of a process's stdout, with the ones read past kept.
struct Lines {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// The first line (read so far or next, within 15 s) containing `marker`.
    fn find(&mut self, marker: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(marker)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line with {marker:?} within 15 s; saw: {:#?}", self.seen),
            }
        }
    }
}

/// A `redis-server` on a Unix socket (no port to race for), without persistence.
fn start_redis(socket: &Path) -> KillOnDrop {
    let _ = std::fs::remove_file(socket);
    let mut command = Command::new("redis-server");
    command.args([
        "--port",
        "0",
        "--save",
        "",
        "--appendonly",
        "no",
        "--unixsocket",
    ]);
    command.arg(socket);
    let (child, rx) = spawn_with_lines(&mut command);
    let process = KillOnDrop(child);
    Lines {
        rx,
        seen: Vec::new(),
    }
    .find("ready to accept connections");
    process
}

/// A single-member `etcd` on loopback ports: the process and its client address.
fn start_etcd(dir: &Path) -> (KillOnDrop, SocketAddr) {
    // Two ports held by sockets that do not listen, released just before etcd binds them
    // by number.
    let (client_port, peer_port) = (refused_port(), refused_port());
    let (client, peer) = (client_port.addr(), peer_port.addr());
    drop((client_port, peer_port));
    let script = format!(
        "exec etcd --name t --data-dir {data} --listen-client-urls http://{client} \
         --advertise-client-urls http://{client} --listen-peer-urls http://{peer} \
         --initial-advertise-peer-urls http://{peer} --initial-cluster t=http://{peer} 2>&1",
        data = dir.join("etcd").display()
    );
    let (child, rx) = spawn_with_lines(Command::new("sh").args(["-c", &script]));
    let process = KillOnDrop(child);
    let mut lines = Lines {
        rx,
        seen: Vec::new(),
    };
    let line = lines.find("serving insecure client requests on");
    assert!(
        line.contains(&client.to_string()),
        "etcd serves {client}: {line}"
    );
    // Serving is not yet healthy (the member elects itself leader first): wait for /health.
    let health = format!("GET /health HTTP/1.1\r\nHost: {client}\r\nConnection: close\r\n\r\n");
    wait_until_blocking(Duration::from_secs(15), "etcd healthy", || {
        blocking_exchange(client, health.as_bytes()).contains("\"health\":\"true\"")
    });
    (process, client)
}

/// [`exchange`] outside the runtime, for a helper that runs before the test's requests;
/// whatever was read (nothing if the connection failed) within 2 s.
fn blocking_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = Vec::new();
    if stream.write_all(raw).is_ok() {
        let _ = stream.read_to_end(&mut answer);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// `POST path` with a JSON body to etcd's gateway: the answer's body.
async fn etcd_call(etcd: SocketAddr, path: &str, body: serde_json::Value) -> String {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {etcd}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(etcd, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    answer
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn etcd_put(etcd: SocketAddr, key: &str, value: &str) {
    let body = serde_json::json!({ "key": b64(key), "value": b64(value) });
    etcd_call(etcd, "/v3/kv/put", body).await;
}

async fn etcd_delete(etcd: SocketAddr, key: &str) {
    etcd_call(
        etcd,
        "/v3/kv/deleterange",
        serde_json::json!({ "key": b64(key) }),
    )
    .await;
}

/// Writes `raw` on a new connection and reads the answer to its end (within 5 s).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(raw).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(5), talk)
        .await
        .expect("an answer within 5 s (nothing hangs)")
}

/// `GET /` with API key `key` on a new connection: the status and the `x-origin` header.
async fn get(proxy: SocketAddr, key: &str) -> (u16, String) {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: api.test\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n"
    );
    let answer = exchange(proxy, request.as_bytes())
        .await
        .to_ascii_lowercase();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an http answer: {answer:?}"));
    let origin = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-origin: "))
        .unwrap_or("")
        .to_owned();
    if status == 429 {
        assert!(answer.contains("retry-after: 60"), "{answer}");
    }
    (status, origin)
}

/// One instance of the `cluster` example.
struct Instance {
    _process: KillOnDrop,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Instance {
    /// Starts the example with config file `config` on `listen` (with `SO_REUSEPORT` if
    /// `reuse`), its upgrade socket and temporary files under `dir`.
    fn start(config: &Path, listen: &str, reuse: bool, dir: &Path) -> Instance {
        std::fs::create_dir_all(dir).expect("instance dir");
        let mut command = Command::new(example_binary("cluster"));
        command
            .arg("-c")
            .arg(config)
            .args([
                "--listen",
                listen,
                "--admin",
                "127.0.0.1:0",
                "--threads",
                "1",
            ])
            .env("TMPDIR", dir);
        if reuse {
            command.arg("--reuse-port");
        }
        let (child, rx) = spawn_with_lines(&mut command);
        let process = KillOnDrop(child);
        let mut lines = Lines {
            rx,
            seen: Vec::new(),
        };
        let line = lines.find("listening on http://");
        let addr = addr_after(&line, "listening on http://");
        let admin = addr_after(&lines.find("admin on http://"), "admin on http://");
        Instance {
            _process: process,
            addr,
            admin,
        }
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        count(&fetch(self.admin, "/metrics").await, name, labels)
    }

    /// Waits until a request of this instance is decided by Redis (connected, asked).
    async fn wait_for_redis(&self, tag: &str) {
        let asked = || {
            self.metric(
                "pingora_dsl_shared_limit_asked_total",
                &[("limit", "proxy")],
            )
        };
        let before = asked().await;
        let mut n = 0;
        wait_until_async(Duration::from_secs(20), "a decision by Redis", || {
            n += 1;
            let key = format!("{tag}-{n}");
            async move {
                get(self.addr, &key).await;
                asked().await > before
            }
        })
        .await;
    }

    /// The peers of pool `api` on this instance's status.
    async fn peers(&self) -> Vec<String> {
        let status: serde_json::Value =
            serde_json::from_str(&fetch(self.admin, "/status.json").await).expect("json");
        let pools = status["services"][0]["pools"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let api = pools
            .iter()
            .find(|p| p["name"] == "api")
            .cloned()
            .unwrap_or_default();
        let mut addrs: Vec<String> = api["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["addr"].as_str().map(str::to_owned))
            .collect();
        addrs.sort();
        addrs
    }
}

/// A config file for the example: the shared limits in the Redis at `socket` (with a
/// timeout a loaded test machine meets), and the peers (or the etcd watched for them).
fn config(dir: &TempDir, socket: &Path, peers: &str) -> PathBuf {
    let path = dir.path("cluster.toml");
    let text = format!(
        "[proxy.Cluster.shared_limits]\nredis = \"redis+unix://{}\"\ntimeout = \"500ms\"\nfallback = \"local\"\n\n[proxy.Cluster.upstream.api]\n{peers}\n",
        socket.display()
    );
    std::fs::write(&path, text).expect("write the config");
    path
}

/// Sends `n` requests with API key `key`, the i-th to `proxies[i % len]`: how many each
/// proxy admitted. Every answer is 200 (from an origin) or 429.
async fn spread(proxies: &[SocketAddr], key: &str, n: usize) -> Vec<usize> {
    let mut admitted = vec![0; proxies.len()];
    for i in 0..n {
        let (status, origin) = get(proxies[i % proxies.len()], key).await;
        match status {
            200 => {
                assert!(!origin.is_empty(), "an origin answered");
                admitted[i % proxies.len()] += 1;
            }
            429 => {}
            other => panic!("request {i}: status {other}"),
        }
    }
    admitted
}

/// The requests admitted over `instances` instances are one budget: the limit, give or
/// take what a window's edge allows (see [`WINDOW_EDGE`], [`LARGEST_LEASE`]).
fn assert_one_budget(admitted: &[usize], instances: usize, what: &str) {
    let total: usize = admitted.iter().sum();
    let least = LIMIT - instances * LARGEST_LEASE;
    assert!(
        (least..=LIMIT + WINDOW_EDGE).contains(&total),
        "{what}: {admitted:?} admitted, {total} in all: one budget of {LIMIT} expected"
    );
}

/// Two instances of the example on their own ports, one origin, one Redis, each instance
/// connected to Redis.
struct Pair {
    _dir: TempDir,
    socket: PathBuf,
    redis: Option<KillOnDrop>,
    _origin: Origin,
    one: Instance,
    two: Instance,
}

impl Pair {
    async fn start(tag: &str) -> Pair {
        let dir = TempDir::new(tag);
        let socket = dir.path("redis.sock");
        let redis = start_redis(&socket);
        let origin = Origin::start("a").await.expect("origin");
        let conf = config(&dir, &socket, &format!("peers = [\"{}\"]", origin.addr()));
        let one = Instance::start(&conf, "127.0.0.1:0", false, &dir.path("1"));
        let two = Instance::start(&conf, "127.0.0.1:0", false, &dir.path("2"));
        one.wait_for_redis("warm-1").await;
        two.wait_for_redis("warm-2").await;
        Pair {
            _dir: dir,
            socket,
            redis: Some(redis),
            _origin: origin,
            one,
            two,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_budget_in_redis_with_few_round_trips() {
    let pair = Pair::start("two").await;
    let (one, two) = (&pair.one, &pair.two);

    let admitted = spread(&[one.addr, two.addr], "team-a", 3 * LIMIT).await;
    assert_one_budget(&admitted, 2, "two instances");
    assert!(
        admitted.iter().all(|&n| n > 0),
        "both admitted some: {admitted:?}"
    );

    // Leases: far fewer round trips than requests admitted.
    let mut asked = 0;
    let mut leased = 0;
    for instance in [one, two] {
        let labels = [("proxy", "Cluster"), ("limit", "proxy")];
        asked += instance
            .metric("pingora_dsl_shared_limit_asked_total", &labels)
            .await;
        leased += instance
            .metric("pingora_dsl_shared_limit_leased_total", &labels)
            .await;
        let errors = instance
            .metric("pingora_dsl_shared_limit_errors_total", &labels)
            .await;
        assert_eq!(errors, 0, "Redis answered every round trip");
    }
    eprintln!("{LIMIT} admitted by two instances: {asked} round trips, {leased} from leases");
    assert!(leased > 0, "some requests were admitted from a lease");
    assert!(
        (asked as usize) < LIMIT,
        "{asked} round trips for {LIMIT} admitted: leases save them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_fallback_decides_promptly_and_sharing_resumes_when_it_is_back() {
    let mut pair = Pair::start("fallback").await;
    let redis = pair.redis.take();
    let (one, two) = (&pair.one, &pair.two);

    drop(redis);
    // `fallback local`: each instance counts alone against the whole limit. Every answer
    // comes back (each request waits at most the 500 ms timeout, once per backoff).
    let started = Instant::now();
    let admitted = spread(&[one.addr], "alone", LIMIT + 50).await;
    assert!(
        (LIMIT..=LIMIT + WINDOW_EDGE).contains(&admitted[0]),
        "the local fallback admits the limit and refuses the rest: {admitted:?}"
    );
    eprintln!("150 requests without Redis in {:?}", started.elapsed());
    let labels = [("proxy", "Cluster"), ("limit", "proxy")];
    let fallback = one
        .metric("pingora_dsl_shared_limit_fallback_total", &labels)
        .await;
    assert!(
        fallback as usize >= LIMIT,
        "the fallback decided: {fallback}"
    );
    assert!(
        one.metric("pingora_dsl_shared_limit_errors_total", &labels)
            .await
            > 0
    );

    let _redis = start_redis(&pair.socket);
    one.wait_for_redis("back-1").await;
    two.wait_for_redis("back-2").await;
    let admitted = spread(&[one.addr, two.addr], "after", 3 * LIMIT).await;
    assert_one_budget(&admitted, 2, "after Redis came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_port_follow_etcd_and_keep_one_budget() {
    let dir = TempDir::new("three");
    let socket = dir.path("redis.sock");
    let _redis = start_redis(&socket);
    let (etcd_process, etcd) = start_etcd(&dir.0);
    let (a, b) = (
        Origin::start("a").await.expect("origin a"),
        Origin::start("b").await.expect("origin b"),
    );
    etcd_put(etcd, "/services/api/a", &a.addr().to_string()).await;
    // Another prefix is not the pool's.
    etcd_put(etcd, "/services/apix/b", &b.addr().to_string()).await;
    let watched =
        format!("etcd = {{ endpoints = [\"http://{etcd}\"], prefix = \"/services/api/\" }}");
    let conf = config(&dir, &socket, &watched);
    let first = Instance::start(&conf, "127.0.0.1:0", true, &dir.path("1"));
    let shared = first.addr.to_string();
    let instances = [
        first,
        Instance::start(&conf, &shared, true, &dir.path("2")),
        Instance::start(&conf, &shared, true, &dir.path("3")),
    ];
    let port = instances[0].addr;
    for instance in &instances {
        assert_eq!(instance.addr, port, "one port for all three");
        let want = vec![a.addr().to_string()];
        wait_until_async(
            Duration::from_secs(10),
            "the peers read from etcd",
            || async { instance.peers().await == want },
        )
        .await;
    }
    for _ in 0..20 {
        assert_eq!(get(port, "warm").await.1, "a");
    }

    // A change: b joins (JSON with a weight), a drains. Every instance follows.
    let changed = Instant::now();
    let b_value = format!("{{\"addr\": \"{}\", \"weight\": 2}}", b.addr());
    etcd_put(etcd, "/services/api/b", &b_value).await;
    etcd_put(etcd, "/services/api/a", &format!("{} draining", a.addr())).await;
    wait_until_async(Duration::from_secs(10), "a request routed to b", || async {
        get(port, "probe").await.1 == "b"
    })
    .await;
    eprintln!(
        "etcd change to the first request routed by it: {:?}",
        changed.elapsed()
    );
    for instance in &instances {
        let want = vec![b.addr().to_string()];
        wait_until_async(Duration::from_secs(5), "every instance follows", || async {
            instance.peers().await == want
        })
        .await;
    }
    let accepted_before = accepted(&instances).await;
    for _ in 0..60 {
        assert_eq!(get(port, "after-change").await.1, "b", "only b now");
    }
    let accepted_after = accepted(&instances).await;
    for (i, (before, after)) in accepted_before.iter().zip(&accepted_after).enumerate() {
        assert!(
            after > before,
            "instance {i} served some of the 60 (SO_REUSEPORT spreads them)"
        );
    }

    // One budget over the three, whichever instance each connection reaches.
    for instance in &instances {
        instance.wait_for_redis("warm").await;
    }
    let admitted = spread(&[port], "fleet", 3 * LIMIT).await;
    assert_one_budget(&admitted, 3, "three instances on one port");

    // A malformed value is skipped; it never empties the pool.
    etcd_put(etcd, "/services/api/zz", "not a peer").await;
    etcd_delete(etcd, "/services/api/a").await;
    for instance in &instances {
        let want = vec![b.addr().to_string()];
        wait_until_async(Duration::from_secs(5), "b kept", || async {
            instance.peers().await == want
        })
        .await;
    }
    // etcd gone: the peers stay, the failure is counted.
    drop(etcd_process);
    wait_until_async(
        Duration::from_secs(15),
        "discovery failures counted",
        || async {
            let labels = [("proxy", "Cluster"), ("pool", "api")];
            instances[0]
                .metric("pingora_dsl_discovery_failures_total", &labels)
                .await
                > 0
        },
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            get(port, "etcd-gone").await.1,
            "b",
            "the last known peers serve"
        );
    }
}

/// Connections each instance accepted so far.
async fn accepted(instances: &[Instance]) -> Vec<u64> {
    let mut counts = Vec::new();
    for instance in instances {
        let labels = [("proxy", "Cluster")];
        counts.push(
            instance
                .metric("pingora_dsl_downstream_connections_total", &labels)
                .await,
        );
    }
    counts
}

#[test]
fn bad_shared_settings_and_etcd_sources_in_the_config_file_are_refused_by_name() {
    let dir = TempDir::new("bad");
    let cases = [
        (
            "[proxy.Cluster.shared_limits]\nredis = \"rediss://cache:6380\"\n",
            "proxy.Cluster.shared_limits.redis",
        ),
        (
            "[proxy.Cluster.shared_limits]\ntimeout = \"5s\"\n",
            "proxy.Cluster.shared_limits.timeout: from 1ms to 1s",
        ),
        (
            "[proxy.Cluster.shared_limits]\nfallback = \"maybe\"\n",
            "unknown fallback \"maybe\"",
        ),
        (
            "[proxy.Cluster.upstream.api]\netcd = { endpoints = [\"https://e:2379\"], prefix = \"/p/\" }\n",
            "proxy.Cluster.upstream.api.etcd: etcd endpoint \"https://e:2379\"",
        ),
        (
            "[proxy.Cluster.upstream.api]\npeers = [\"127.0.0.1:1\"]\netcd = { endpoints = [\"http://127.0.0.1:2379\"], prefix = \"/p/\" }\n",
            "not both",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path("bad.toml");
        std::fs::write(&path, text).expect("write");
        let out = Command::new(example_binary("cluster"))
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .env("TMPDIR", &dir.0)
            .output()
            .expect("the example runs");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}: refused");
        assert!(said.contains(expected), "{text}: {said}");
    }
}

//! The examples read their config file: a `-c` file's peers reach the proxy (demo origins
//! start only for the groups nobody gave peers), `-t` and `--print-config` start no demo
//! origin, and what `tls_gateway --print-config` prints (TLS listener and certificate
//! included) is a config file that `-t` accepts and that starts the same HTTPS proxy.
//! Run on the example binaries, which `cargo build --examples` (and `cargo test`) build.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Output};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use nix::sys::signal::Signal;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use pingora_dsl::server::config::Config;
use pingora_dsl_suite::origin::Origin;
use support::{addr_after, client, example_binary, get, read_until, send, spawn_with_lines_and};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("pdsl-examples-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An example process, killed when dropped (a failing test leaves none behind).
struct Running {
    child: Child,
    lines: Receiver<String>,
    /// The stdout lines read so far that no `read_until` asked for.
    seen: Vec<String>,
}

impl Running {
    /// Starts `command` and reads its stdout up to the first "listening on SCHEME://"
    /// line; returns the process and that address.
    fn start(command: &mut Command, scheme: &str) -> (Running, SocketAddr) {
        Running::start_with_stderr(command, scheme, std::process::Stdio::null())
    }

    /// Like [`Running::start`], with the process's stderr (its log) going to `stderr`.
    fn start_with_stderr(
        command: &mut Command,
        scheme: &str,
        stderr: impl Into<std::process::Stdio>,
    ) -> (Running, SocketAddr) {
        let (child, lines) = spawn_with_lines_and(command, stderr);
        let mut running = Running {
            child,
            lines,
            seen: Vec::new(),
        };
        let marker = format!("listening on {scheme}://");
        let line = read_until(&running.lines, &mut running.seen, |l| l.contains(&marker));
        (running, addr_after(&line, &marker))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Runs example `name` with `args` to its end (bounded by the example: `-t` and
/// `--print-config` exit on their own); returns its output.
fn run_to_end(name: &str, args: &[&str], tmp: &Path) -> Output {
    Command::new(example_binary(name))
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .expect("the example runs")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `GET path` through `proxy`; the `x-origin` header of the answer (200 required).
async fn origin_of(proxy: SocketAddr, path: &str) -> String {
    let (response, body) = send(&client(), get(proxy, path, None)).await;
    assert_eq!(response.status(), 200, "{path}: {body:?}");
    let name = response
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(body, format!("origin {name}").as_bytes(), "{path}");
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_files_peers_are_served_and_reloaded() {
    let first = Origin::start("from-file").await.expect("an origin");
    let second = Origin::start("reloaded").await.expect("an origin");
    let dir = TempDir::new("peers");
    let conf_text = |peer: SocketAddr| {
        format!(
            "[proxy.BlogLoadBalancer]\nlisten = [\"127.0.0.1:0\"]\n\n[proxy.BlogLoadBalancer.upstream.origins]\npeers = [\"{peer}\"]\n"
        )
    };
    let conf = dir.file("lb.toml", &conf_text(first.addr()));
    let log = dir.0.join("stderr.log");
    let (proxy, addr) = Running::start_with_stderr(
        Command::new(example_binary("load_balancer")).args(["-c", path_str(&conf)]),
        "http",
        std::fs::File::create(&log).expect("a log file"),
    );
    assert!(
        !proxy.seen.iter().any(|l| l.contains("demo origins")),
        "no demo origin starts when the file gives the peers: {:?}",
        proxy.seen
    );
    for _ in 0..4 {
        assert_eq!(origin_of(addr, "/").await, "from-file");
    }
    assert_eq!(first.requests(), 4);

    // A reload applies the file's new peers (no flag stands in their way).
    std::fs::write(&conf, conf_text(second.addr())).expect("rewrite the file");
    let pid = proxy.pid();
    support::wait_until(Duration::from_secs(10), "the proxy handles SIGHUP", || {
        support::process_catches_signal(pid, Signal::SIGHUP)
    })
    .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGHUP)
        .expect("send SIGHUP");
    // The reload says it is done once the new peers are in place: from then on, every
    // request goes to them.
    support::wait_until(Duration::from_secs(10), "the reload is logged", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("configuration reloaded"))
    })
    .await;
    let before = first.requests();
    for _ in 0..4 {
        assert_eq!(origin_of(addr, "/").await, "reloaded");
    }
    assert_eq!(
        first.requests(),
        before,
        "the old peer gets no more requests"
    );
    // Nothing printed a demo origin line meanwhile either.
    while let Ok(line) = proxy.lines.try_recv() {
        assert!(!line.contains("demo origins"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_origins_start_only_for_the_groups_without_peers() {
    let web = Origin::start("web-from-file").await.expect("an origin");
    let dir = TempDir::new("groups");
    let conf = dir.file(
        "gateway.toml",
        &format!(
            "[proxy.Gateway]\nlisten = [\"127.0.0.1:0\"]\n\n[proxy.Gateway.upstream.web]\npeers = [\"{}\"]\n",
            web.addr()
        ),
    );
    let (proxy, addr) = Running::start(
        Command::new(example_binary("gateway")).args(["-c", path_str(&conf)]),
        "http",
    );
    let demo = proxy
        .seen
        .iter()
        .find(|l| l.contains("demo origins"))
        .unwrap_or_else(|| panic!("a demo origin line for api: {:?}", proxy.seen));
    assert_eq!(demo.matches("api=").count(), 2, "{demo}");
    assert!(
        !demo.contains("web="),
        "web has its peers from the file: {demo}"
    );

    assert_eq!(origin_of(addr, "/").await, "web-from-file");
    assert_eq!(web.requests(), 1);
    let request = http::Request::get(format!("http://{addr}/api/items"))
        .header("authorization", "Bearer let-me-in")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("a request");
    let (response, _) = send(&client(), request).await;
    assert_eq!(response.status(), 200);
    let api = response
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        api == "api-1" || api == "api-2",
        "a demo api origin: {api:?}"
    );
    assert_eq!(web.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_example_answers_from_its_cache_and_purges_through_its_admin() {
    let web = Origin::start("cached-origin").await.expect("an origin");
    let dir = TempDir::new("cache");
    let conf = dir.file(
        "cache.toml",
        &format!(
            "[proxy.CachedSite]\nlisten = [\"127.0.0.1:0\"]\n\n[proxy.CachedSite.cache]\nttl = \"1h\"\nmemory = \"32MiB\"\n\n[proxy.CachedSite.upstream.web]\npeers = [\"{}\"]\n",
            web.addr()
        ),
    );
    let printed = run_to_end("cache", &["-c", path_str(&conf), "--print-config"], &dir.0);
    let printed = text(&printed);
    assert!(
        printed.contains("[proxy.CachedSite.cache]")
            && printed.contains("ttl = \"3600s\"")
            && printed.contains("memory = \"32MiB\""),
        "the file's cache settings are in force: {printed}"
    );
    let mut command = Command::new(example_binary("cache"));
    command.args(["-c", path_str(&conf), "--admin", "127.0.0.1:0"]);
    let (mut proxy, addr) = Running::start(&mut command, "http");
    let marker = "admin on http://";
    let admin_line = match proxy.seen.iter().find(|l| l.starts_with(marker)) {
        Some(line) => line.clone(),
        None => read_until(&proxy.lines, &mut proxy.seen, |l| l.starts_with(marker)),
    };
    let admin = addr_after(&admin_line, marker);
    let cached = |path: &str| {
        let request = get(addr, path, None);
        async move {
            let (response, _) = send(&client(), request).await;
            let label = response
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            (response.status(), label)
        }
    };
    assert_eq!(cached("/page").await.1.as_deref(), Some("MISS"));
    assert_eq!(cached("/page").await.1.as_deref(), Some("HIT"));
    assert_eq!(web.requests(), 1, "the second answer came from the cache");
    assert_eq!(cached("/api/x").await.1, None, "`cache off` on /api");
    assert_eq!(cached("/api/x").await.1, None);
    assert_eq!(web.requests(), 3);
    let purge = http::Request::builder()
        .method("PURGE")
        .uri(format!(
            "http://{admin}/cache?prefix=http%3A%2F%2F{}%2F",
            addr.to_string().replace(':', "%3A")
        ))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("a request");
    let (response, body) = send(&client(), purge).await;
    assert_eq!(response.status(), 200);
    assert!(
        String::from_utf8_lossy(&body).contains("\"purged\": 1"),
        "{body:?}"
    );
    assert_eq!(cached("/page").await.1.as_deref(), Some("MISS"));
    assert_eq!(web.requests(), 4);
}

/// The cache example with a disk tier from its config file, killed with SIGKILL while it
/// stores responses and while others still stream: restarted on the same directory, it
/// answers the objects it kept from disk, whole, never a partial one, and nothing half
/// written is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_cache_killed_mid_write_serves_only_whole_objects_after_restart() {
    const FAST: usize = 32;
    const SIZE: usize = 300_000;
    const SLOW: usize = 4;
    let web = Origin::start("disk-origin").await.expect("an origin");
    let dir = TempDir::new("disk");
    let disk = dir.0.join("cache");
    let conf = dir.file(
        "cache.toml",
        &format!(
            "[proxy.CachedSite]\nlisten = [\"127.0.0.1:0\"]\n\n[proxy.CachedSite.cache]\nttl = \"1h\"\ndisk = \"{}\"\ndisk_size = \"256MiB\"\n\n[proxy.CachedSite.upstream.web]\npeers = [\"{}\"]\n",
            disk.display(),
            web.addr()
        ),
    );
    let start = || {
        let mut command = Command::new(example_binary("cache"));
        command.args(["-c", path_str(&conf), "--admin", "127.0.0.1:0"]);
        Running::start(&mut command, "http")
    };
    let fast = |i: usize| format!("/bytes/{SIZE}?object={i}");
    // 100 small chunks, one every 5 ms: still streaming when the proxy dies.
    let slow = |i: usize| format!("/drip/100/5?object={i}");
    // The key holds the host: both processes are asked for the same one, whatever
    // their ports.
    let on_host = |addr: SocketAddr, path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .header("host", "cache.test")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("a request")
    };
    let (mut proxy, addr) = start();
    let loads: Vec<_> = (0..FAST)
        .map(fast)
        .chain((0..SLOW).map(slow))
        .map(|path| {
            let request = on_host(addr, &path);
            tokio::spawn(async move {
                // Read whole (an answer the client leaves is not stored); the kill cuts
                // some short.
                let response = client().request(request).await.ok()?;
                http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .ok()
            })
        })
        .collect();
    let objects = disk.join("objects");
    support::wait_until(Duration::from_secs(20), "8 objects written to disk", || {
        std::fs::read_dir(&objects).is_ok_and(|d| d.count() >= 8)
    })
    .await;
    proxy.child.kill().expect("SIGKILL");
    let _ = proxy.child.wait();
    for load in loads {
        let _ = load.await;
    }
    let (_proxy, addr) = start();
    assert_eq!(
        std::fs::read_dir(disk.join("tmp"))
            .expect("the tmp directory")
            .count(),
        0,
        "what was half written is gone"
    );
    let label = |r: &http::Response<()>| {
        r.headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap_or("?").to_owned())
    };
    let mut from_disk = 0;
    for i in 0..FAST {
        let (response, body) = send(&client(), on_host(addr, &fast(i))).await;
        assert_eq!(response.status(), 200, "object {i}");
        assert_eq!(
            body.len(),
            SIZE,
            "object {i} whole ({:?})",
            label(&response)
        );
        from_disk += usize::from(label(&response).as_deref() == Some("HIT"));
    }
    assert!(
        from_disk >= 8,
        "the objects on disk before the kill are served: {from_disk}"
    );
    let before = web.requests();
    for i in 0..SLOW {
        let (response, body) = send(&client(), on_host(addr, &slow(i))).await;
        assert_eq!(
            label(&response).as_deref(),
            Some("MISS"),
            "cut off: never stored"
        );
        assert_eq!(body.len(), 100 * pingora_dsl_suite::origin::DRIP_CHUNK);
    }
    assert_eq!(web.requests(), before + SLOW);
}

/// Every example with demo origins, and the arguments `-t` needs to bind only port 0.
const EXAMPLES: &[(&str, &[&str])] = &[
    ("load_balancer", &["--listen", "127.0.0.1:0"]),
    ("gateway", &["--listen", "127.0.0.1:0"]),
    ("tls_gateway", &["--listen", "127.0.0.1:0"]),
    ("zero_downtime", &["--listen", "127.0.0.1:0"]),
    ("failover", &["--listen", "127.0.0.1:0"]),
    (
        "observability",
        &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
    ),
    ("grpc_proxy", &["--listen", "127.0.0.1:0"]),
    (
        "cache",
        &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
    ),
    ("websocket_proxy", &["--listen", "127.0.0.1:0"]),
];

#[test]
fn check_and_print_config_start_no_demo_origin() {
    let dir = TempDir::new("checks");
    for (name, listen) in EXAMPLES {
        let mut args = vec!["-t"];
        args.extend_from_slice(listen);
        let out = run_to_end(name, &args, &dir.0);
        let all = text(&out);
        assert!(out.status.success(), "{name} -t: {all}");
        assert!(all.contains("configuration OK"), "{name} -t: {all}");
        assert!(
            !all.contains("demo"),
            "{name} -t starts no demo origin: {all}"
        );

        let out = run_to_end(name, &["--print-config"], &dir.0);
        assert!(
            out.status.success(),
            "{name} --print-config: {}",
            text(&out)
        );
        assert!(
            !text(&out).contains("demo"),
            "{name} --print-config starts no demo origin: {}",
            text(&out)
        );
        // Only the configuration on stdout, and the declared peers stand in it.
        let printed = String::from_utf8_lossy(&out.stdout);
        let config = Config::parse(&printed)
            .unwrap_or_else(|e| panic!("{name} --print-config is a config file: {e}\n{printed}"));
        let section = config.proxy.values().next().expect("the proxy's section");
        assert!(
            section
                .upstream
                .values()
                .all(|up| up.peers.as_ref().is_some_and(
                    |p| !p.is_empty() && p.iter().all(|p| p.starts_with("127.0.0.1:"))
                )),
            "{name}: the declared peers: {printed}"
        );
    }
    let printed = run_to_end("gateway", &["--print-config"], &dir.0);
    let config = Config::parse(&String::from_utf8_lossy(&printed.stdout)).expect("parses");
    let gateway = &config.proxy["Gateway"];
    assert_eq!(
        gateway.upstream["api"].peers.as_deref(),
        Some(
            &[
                "127.0.0.1:9001".to_owned(),
                "127.0.0.1:9002 weight 2".to_owned()
            ][..]
        )
    );

    // A config file that does not load: no demo origin, and the error names the file.
    let missing = dir.0.join("missing.toml");
    let out = run_to_end("load_balancer", &["-c", path_str(&missing)], &dir.0);
    assert!(!out.status.success());
    assert!(!text(&out).contains("demo"), "{}", text(&out));
    assert!(text(&out).contains("missing.toml"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_tls_gateway_prints_is_a_config_that_starts_the_same_https_proxy() {
    let dir = TempDir::new("tls");
    let out = run_to_end("tls_gateway", &["--print-config"], &dir.0);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8(out.stdout.clone()).expect("UTF-8");
    let config = Config::parse(&printed)
        .unwrap_or_else(|e| panic!("the printed configuration parses: {e}\n{printed}"));
    let section = &config.proxy["TlsGateway"];
    assert_eq!(
        section.tls_listen.as_deref(),
        Some(&["127.0.0.1:6189".to_owned()][..]),
        "{printed}"
    );
    assert_eq!(section.listen.as_deref(), Some(&[][..]), "{printed}");
    let certs = section.certificate.as_ref().expect("the certificate files");
    assert_eq!(certs.len(), 1, "{printed}");
    // The example's self-signed certificate, made in its temporary directory.
    let cert = certs[0].cert.clone();
    assert!(cert.starts_with(&dir.0) && cert.exists(), "{printed}");
    assert!(certs[0].key.exists(), "{printed}");
    assert_eq!(
        section.upstream["origins"].peers.as_deref(),
        Some(&["127.0.0.1:8001".to_owned(), "127.0.0.1:8002".to_owned()][..]),
        "the declared peers, no demo origin: {printed}"
    );

    // The printed file with its fixed port made 0 (and the peers a real origin): `-t`
    // accepts it, and it starts the HTTPS proxy with that certificate.
    let origin = Origin::start("tls-from-file").await.expect("an origin");
    let edited = printed
        .replace("\"127.0.0.1:6189\"", "\"127.0.0.1:0\"")
        .replace(
            "[\"127.0.0.1:8001\", \"127.0.0.1:8002\"]",
            &format!("[\"{}\"]", origin.addr()),
        );
    assert_ne!(edited, printed);
    assert!(edited.contains(&origin.addr().to_string()), "{edited}");
    let conf = dir.file("printed.toml", &edited);
    let out = run_to_end("tls_gateway", &["-t", "-c", path_str(&conf)], &dir.0);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("configuration OK"), "{}", text(&out));

    // A fresh temporary directory: were the file's certificate ignored, the example
    // would make another one there.
    let run_dir = TempDir::new("tls-run");
    let (proxy, addr) = Running::start(
        Command::new(example_binary("tls_gateway"))
            .args(["-c", path_str(&conf)])
            .env("TMPDIR", &run_dir.0),
        "https",
    );
    assert!(
        !proxy.seen.iter().any(|l| l.contains("demo origins")),
        "{:?}",
        proxy.seen
    );
    let (served, response) = https_get(addr, &cert).await;
    let expected = openssl::x509::X509::from_pem(&std::fs::read(&cert).expect("read the cert"))
        .expect("a PEM certificate");
    assert_eq!(
        served,
        expected.to_der().expect("DER"),
        "the same certificate"
    );
    let head = response.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{response}");
    assert!(head.contains("x-origin: tls-from-file"), "{response}");
    assert!(head.contains("strict-transport-security"), "{response}");
    assert!(response.ends_with("origin tls-from-file"), "{response}");
    assert_eq!(origin.requests(), 1);
    assert!(!run_dir.0.join("pingora-dsl-tls-gateway").exists());
}

/// `GET /` over HTTPS to `addr`, trusting only `ca` and checking the name `localhost`;
/// returns the certificate served (DER) and the whole response.
async fn https_get(addr: SocketAddr, ca: &Path) -> (Vec<u8>, String) {
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("a connector");
    b.set_ca_file(ca).expect("the CA file");
    b.set_verify(SslVerifyMode::PEER);
    let ssl = b
        .build()
        .configure()
        .expect("configure")
        .into_ssl("localhost")
        .expect("an SSL session");
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .expect("connect within 10 s")
    .expect("connect");
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("a TLS stream");
    tokio::time::timeout(Duration::from_secs(10), Pin::new(&mut tls).connect())
        .await
        .expect("handshake within 10 s")
        .expect("the handshake verifies the certificate");
    let served = tls
        .ssl()
        .peer_certificate()
        .and_then(|c| c.to_der().ok())
        .expect("a certificate");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("the response within 10 s")
        .expect("read");
    (served, String::from_utf8_lossy(&response).into_owned())
}

#[test]
fn tls_keys_of_the_file_yield_to_flags_and_errors_name_their_key() {
    let dir = TempDir::new("tls-keys");
    let file_cert = pingora_dsl_suite::certs::self_signed(&dir.0.join("file"), &["localhost"])
        .expect("a certificate");
    let flag_cert = pingora_dsl_suite::certs::self_signed(&dir.0.join("flag"), &["localhost"])
        .expect("a certificate");
    let conf_text = |tls_listen: &str, cert: &Path| {
        format!(
            "[proxy.TlsGateway]\nlisten = []\ntls_listen = [\"{tls_listen}\"]\n\n[[proxy.TlsGateway.certificate]]\ncert = {:?}\nkey = {:?}\n\n[proxy.TlsGateway.upstream.origins]\npeers = [\"127.0.0.1:9\"]\n",
            path_str(cert),
            path_str(&cert.with_extension("key")),
        )
    };
    let conf = dir.file("tls.toml", &conf_text("127.0.0.1:0", &file_cert.cert));
    let printed_cert = |args: &[&str]| {
        let out = run_to_end("tls_gateway", args, &dir.0);
        assert!(out.status.success(), "{}", text(&out));
        let config = Config::parse(&String::from_utf8_lossy(&out.stdout)).expect("parses");
        let section = config.proxy["TlsGateway"].clone();
        let certs = section.certificate.expect("certificates");
        (
            section.tls_listen.expect("tls_listen"),
            certs[0].cert.clone(),
        )
    };
    // The file's listener and certificate, and no self-signed one made.
    let (listen, cert) = printed_cert(&["-c", path_str(&conf), "--print-config"]);
    assert_eq!(listen, ["127.0.0.1:0"]);
    assert_eq!(cert, file_cert.cert);
    assert!(!dir.0.join("pingora-dsl-tls-gateway").exists());
    // Flags win over the file.
    let (listen, cert) = printed_cert(&[
        "-c",
        path_str(&conf),
        "--print-config",
        "--cert",
        path_str(&flag_cert.cert),
        "--key",
        path_str(&flag_cert.key),
        "--tls-listen",
        "127.0.0.2:0",
    ]);
    assert_eq!(listen, ["127.0.0.2:0"]);
    assert_eq!(cert, flag_cert.cert);

    // `-t` loads the file's certificate, and a bad value names its key.
    let missing = dir.0.join("missing.crt");
    let bad = dir.file("missing.toml", &conf_text("127.0.0.1:0", &missing));
    let out = run_to_end("tls_gateway", &["-t", "-c", path_str(&bad)], &dir.0);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("missing.crt"), "{}", text(&out));
    let bad = dir.file("port.toml", &conf_text("127.0.0.1:99999", &file_cert.cert));
    let out = run_to_end("tls_gateway", &["-t", "-c", path_str(&bad)], &dir.0);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("proxy.TlsGateway.tls_listen"),
        "{}",
        text(&out)
    );
    let bad = dir.file(
        "unknown.toml",
        "[[proxy.TlsGateway.certificate]]\ncert = \"a.crt\"\nkey = \"a.key\"\npassword = \"x\"\n",
    );
    let out = run_to_end("tls_gateway", &["-t", "-c", path_str(&bad)], &dir.0);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("proxy.TlsGateway.certificate") && text(&out).contains("password"),
        "{}",
        text(&out)
    );
}

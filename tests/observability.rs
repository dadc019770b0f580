//! Observability of a declared proxy over real sockets: Prometheus metrics per route and
//! peer on the admin listener, the status page and its JSON (a peer taken down shows as
//! down), request ids forwarded upstream, and the access log in both formats.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl::downstream::RunningService;
use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::Origin;
use support::{
    addr_after, client, count, example_binary, fetch, get, process_catches_signal, read_until,
    refused_port, send, spawn_with_lines, start_with_admin, wait_until_blocking,
};

proxy! {
    /// Two pools and a dead one, each behind its own route.
    pub Observed {
        listen "127.0.0.1:6188";
        upstream api { peers ["127.0.0.1:9", "127.0.0.1:10"]; }
        upstream web { peers ["127.0.0.1:9"]; }
        upstream dead { peers ["127.0.0.1:9"]; }
        route path "/api" => upstream api;
        route path "/dead" => upstream dead;
        route path "/ping" => respond 200 "pong\n";
        route => upstream web;
    }

    /// One pool with active health checks, for the status page.
    pub Checked {
        listen "127.0.0.1:6188";
        upstream app {
            peers ["127.0.0.1:9"];
            health http "/" every 100ms timeout 100ms rise 1 fall 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_route_pool_and_peer() {
    let (a1, a2, w) = (
        Origin::start("api-1").await.expect("origin"),
        Origin::start("api-2").await.expect("origin"),
        Origin::start("web").await.expect("origin"),
    );
    let dead = refused_port();
    let dead_addr = dead.addr();
    let cli = ProxyCli {
        upstream: vec![
            format!("api={}", a1.addr()),
            format!("api={}", a2.addr()),
            format!("web={}", w.addr()),
            format!("dead={dead_addr}"),
        ],
        ..Default::default()
    };
    let mut proxy = Observed::new();
    cli.configure("Observed", proxy.router_mut())
        .expect("peers");
    let (running, admin) = start_with_admin(proxy.service());
    let addr = running.addr();
    let c = client();
    for _ in 0..6 {
        let (r, _) = send(&c, get(addr, "/api/x", None)).await;
        assert_eq!(r.status(), 200);
    }
    let post = Request::post(format!("http://{addr}/api/upload"))
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .expect("request");
    assert_eq!(send(&c, post).await.0.status(), 200);
    for _ in 0..3 {
        assert_eq!(send(&c, get(addr, "/other", None)).await.0.status(), 200);
    }
    assert_eq!(send(&c, get(addr, "/dead", None)).await.0.status(), 502);
    assert_eq!(send(&c, get(addr, "/ping", None)).await.0.status(), 200);

    let m = fetch(admin.addr(), "/metrics").await;
    let p = ("proxy", "Observed");
    let api = [p, ("route", "/api")];
    assert_eq!(
        count(
            &m,
            "pingora_dsl_requests_total",
            &[api[0], api[1], ("class", "2xx")]
        ),
        7
    );
    assert_eq!(
        count(
            &m,
            "pingora_dsl_requests_total",
            &[p, ("route", "*"), ("class", "2xx")]
        ),
        3
    );
    assert_eq!(
        count(
            &m,
            "pingora_dsl_requests_total",
            &[p, ("route", "/dead"), ("class", "5xx")]
        ),
        1
    );
    assert_eq!(
        count(
            &m,
            "pingora_dsl_requests_total",
            &[p, ("route", "/ping"), ("class", "2xx")]
        ),
        1
    );
    assert_eq!(
        count(&m, "pingora_dsl_request_duration_seconds_count", &api),
        7
    );
    assert_eq!(
        count(&m, "pingora_dsl_request_body_bytes_total", &api),
        1000
    );
    assert!(count(&m, "pingora_dsl_response_body_bytes_total", &api) > 0);

    // Round robin: 4 and 3 requests; one new connection each, the rest reused.
    let peer = |o: &Origin| o.addr().to_string();
    let (p1, p2) = (peer(&a1), peer(&a2));
    fn on(addr: &str) -> [(&str, &str); 3] {
        [("proxy", "Observed"), ("pool", "api"), ("peer", addr)]
    }
    let r1 = count(&m, "pingora_dsl_upstream_requests_total", &on(&p1));
    let r2 = count(&m, "pingora_dsl_upstream_requests_total", &on(&p2));
    assert_eq!((r1.min(r2), r1.max(r2)), (3, 4));
    assert_eq!(r1 as usize, a1.requests());
    for addr in [&p1, &p2] {
        let l = on(addr);
        let new = count(
            &m,
            "pingora_dsl_upstream_connections_total",
            &[l[0], l[1], l[2], ("reused", "false")],
        );
        let reused = count(
            &m,
            "pingora_dsl_upstream_connections_total",
            &[l[0], l[1], l[2], ("reused", "true")],
        );
        assert_eq!(new, 1, "{addr}");
        assert_eq!(
            new + reused,
            count(&m, "pingora_dsl_upstream_requests_total", &l)
        );
        assert_eq!(
            count(&m, "pingora_dsl_upstream_connect_seconds_count", &l),
            1
        );
        assert_eq!(
            count(&m, "pingora_dsl_upstream_first_byte_seconds_count", &l),
            count(&m, "pingora_dsl_upstream_requests_total", &l)
        );
        assert_eq!(count(&m, "pingora_dsl_upstream_errors_total", &l), 0);
        assert_eq!(count(&m, "pingora_dsl_upstream_healthy", &l), 1);
    }
    let d = dead_addr.to_string();
    let dl = [p, ("pool", "dead"), ("peer", d.as_str())];
    assert_eq!(count(&m, "pingora_dsl_upstream_requests_total", &dl), 1);
    assert_eq!(count(&m, "pingora_dsl_upstream_errors_total", &dl), 1);
    assert!(count(&m, "pingora_dsl_downstream_connections_total", &[p]) >= 1);
    assert_eq!(count(&m, "pingora_dsl_active_requests", &[p]), 0);
    assert!(
        m.contains("# TYPE pingora_dsl_request_duration_seconds histogram"),
        "{m}"
    );

    // The JSON status agrees.
    let json: serde_json::Value =
        serde_json::from_str(&fetch(admin.addr(), "/status.json").await).expect("json");
    let service = &json["services"][0];
    assert_eq!(service["name"], "Observed");
    let routes = service["routes"].as_array().expect("routes");
    let api_route = routes.iter().find(|r| r["label"] == "/api").expect("/api");
    assert_eq!(api_route["requests"], 7);
    assert_eq!(api_route["target"], "upstream api");
    let pools: Vec<&str> = service["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(pools, ["api", "web", "dead"]);
}

/// Waits until the status JSON says `peer` is in `state`.
async fn wait_for_state(admin: SocketAddr, peer: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let json: serde_json::Value =
            serde_json::from_str(&fetch(admin, "/status.json").await).expect("json");
        let seen = json["services"][0]["pools"][0]["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["addr"] == peer))
            .map(|p| p["state"].clone());
        if seen.as_ref().is_some_and(|s| s == state) {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "{peer} never became {state}: {json}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A checked pool of two origins behind a proxy with an admin listener; the health
/// checks run. Returns the origins, the proxy and the admin listener.
async fn checked_pool() -> (Origin, Origin, RunningService, RunningService) {
    let (up, down) = (
        Origin::start("stays").await.expect("origin"),
        Origin::start("goes").await.expect("origin"),
    );
    let cli = ProxyCli {
        upstream: vec![up.addr().to_string(), down.addr().to_string()],
        ..Default::default()
    };
    let mut proxy = Checked::new();
    cli.configure("Checked", proxy.router_mut()).expect("peers");
    for task in proxy.router().background_tasks() {
        tokio::spawn(task.run_forever());
    }
    let (running, admin) = start_with_admin(proxy.service());
    (up, down, running, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_peer_taken_down() {
    let (up, down, running, admin) = checked_pool().await;
    let (up_addr, down_addr) = (up.addr().to_string(), down.addr().to_string());
    let c = client();
    for _ in 0..4 {
        assert_eq!(
            send(&c, get(running.addr(), "/", None)).await.0.status(),
            200
        );
    }
    wait_for_state(admin.addr(), &down_addr, "up").await;
    drop(down);
    let json = wait_for_state(admin.addr(), &down_addr, "down").await;
    let peers = json["services"][0]["pools"][0]["peers"]
        .as_array()
        .expect("peers")
        .clone();
    let stays = peers
        .iter()
        .find(|p| p["addr"] == up_addr.as_str())
        .expect("peer");
    assert_eq!(stays["state"], "up");
    assert_eq!(json["services"][0]["pools"][0]["name"], "app");

    let page = fetch(admin.addr(), "/status").await;
    assert!(page.contains("<h3>pool app</h3>"), "{page}");
    assert!(
        page.contains(&format!(
            r#"<tr class="peer down" data-peer="{down_addr}">"#
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"<tr class="peer up" data-peer="{up_addr}">"#)),
        "{page}"
    );
    let m = fetch(admin.addr(), "/metrics").await;
    let l = [
        ("proxy", "Checked"),
        ("pool", "app"),
        ("peer", down_addr.as_str()),
    ];
    assert_eq!(count(&m, "pingora_dsl_upstream_healthy", &l), 0);
    // Requests now all go to the peer that stayed.
    let before = up.requests();
    for _ in 0..3 {
        assert_eq!(
            send(&c, get(running.addr(), "/", None)).await.0.status(),
            200
        );
    }
    assert!(up.requests() >= before + 3);
}

/// The browser: Chromium renders the page (running its script), lists the pool, and
/// shows the peer taken down as DOWN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_status_page() {
    let (_up, down, _running, admin) = checked_pool().await;
    let down_addr = down.addr().to_string();
    drop(down);
    wait_for_state(admin.addr(), &down_addr, "down").await;
    let url = format!("http://{}/status", admin.addr());
    // Virtual time lets the page's 2 s refresh run once before the DOM is dumped.
    let dom = support::chromium_dom(&url, 3000).await;
    assert!(dom.contains("pingora-dsl status"), "{dom}");
    // The page's script fetched a fresh rendering and swapped it in.
    assert!(
        dom.contains("data-refreshes=\"1\""),
        "the page did not refresh itself: {dom}"
    );
    assert!(dom.contains("pool app"), "{dom}");
    assert!(dom.contains(r#"data-name="Checked""#), "{dom}");
    let row = dom
        .split("<tr")
        .find(|r| r.contains(&format!(r#"data-peer="{down_addr}""#)))
        .unwrap_or_else(|| panic!("no row for {down_addr}: {dom}"));
    assert!(row.contains("DOWN"), "{row}");
    assert!(row.contains("peer down"), "{row}");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pingora-dsl-{name}-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Reads `path` until it holds `n` lines (bounded), then returns them.
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} log lines: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `Observed` with the access log of `cli` (peers of api and web: `origin`).
fn start_logged(cli: ProxyCli, origin: SocketAddr) -> RunningService {
    let cli = ProxyCli {
        upstream: vec![format!("api={origin}"), format!("web={origin}")],
        ..cli
    };
    let mut proxy = Observed::new();
    cli.configure("Observed", proxy.router_mut())
        .expect("peers");
    let mut options = Observed::options();
    cli.configure_options("Observed", &mut options)
        .expect("access log");
    let mut service = proxy.service_with(options);
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    service.spawn().expect("proxy starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_go_upstream_and_into_the_json_access_log() {
    let origin = Origin::start("logged").await.expect("origin");
    let dir = tempdir("access-json");
    let log = dir.join("access.log");
    let running = start_logged(
        ProxyCli {
            access_log: Some(log.display().to_string()),
            access_log_format: Some("json".into()),
            ..Default::default()
        },
        origin.addr(),
    );
    let c = client();
    let mut given = get(running.addr(), "/api/a?q=1", None);
    given
        .headers_mut()
        .insert("x-request-id", http::HeaderValue::from_static("abc-123"));
    given
        .headers_mut()
        .insert("user-agent", http::HeaderValue::from_static("obs-test/1"));
    assert_eq!(send(&c, given).await.0.status(), 200);
    let seen = origin.last_headers().expect("origin saw the request");
    assert_eq!(seen.get("x-request-id").expect("forwarded"), "abc-123");
    assert_eq!(
        send(&c, get(running.addr(), "/other", None))
            .await
            .0
            .status(),
        200
    );
    let generated = origin
        .last_headers()
        .and_then(|h| h.get("x-request-id").cloned())
        .expect("a generated id is forwarded");
    let generated = generated.to_str().expect("ascii").to_owned();
    assert_eq!(generated.len(), 32);
    assert!(
        generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "{generated}"
    );
    assert_eq!(
        send(&c, get(running.addr(), "/dead", None))
            .await
            .0
            .status(),
        502
    );

    let lines = lines(&log, 3).await;
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let first = &entries[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/api/a?q=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["request_id"], "abc-123");
    assert_eq!(first["user_agent"], "obs-test/1");
    assert_eq!(first["upstream"], origin.addr().to_string());
    assert_eq!(first["retries"], 0);
    assert!(first["bytes"].as_u64().expect("bytes") > 0);
    assert!(first["duration"].as_f64().expect("duration") > 0.0);
    assert!(first["time"].as_str().expect("time").ends_with('Z'));
    assert!(first["error"].is_null());
    assert_eq!(entries[1]["request_id"], generated.as_str());
    assert_eq!(entries[2]["status"], 502);
    assert!(
        entries[2]["error"]
            .as_str()
            .expect("error")
            .contains("connect"),
        "{}",
        entries[2]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_combined_access_log_is_nginx_shaped() {
    let origin = Origin::start("logged").await.expect("origin");
    let dir = tempdir("access-combined");
    let log = dir.join("access.log");
    let running = start_logged(
        ProxyCli {
            access_log: Some(log.display().to_string()),
            ..Default::default()
        },
        origin.addr(),
    );
    let c = client();
    let mut req = get(running.addr(), "/ping", None);
    req.headers_mut().insert(
        "referer",
        http::HeaderValue::from_static("http://example.org/\"x"),
    );
    assert_eq!(send(&c, req).await.0.status(), 200);
    let line = lines(&log, 1).await.remove(0);
    // 127.0.0.1 - - [26/Nov/2026:07:00:00 +0000] "GET /ping HTTP/1.1" 200 5 "..." "-" rt=...
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(" +0000] \"GET /ping HTTP/1.1\" 200 5 "),
        "{line}"
    );
    assert!(line.contains("\"http://example.org/\\x22x\""), "{line}");
    assert!(line.contains(" upstream=- retries=0 id="), "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_access_log_path_or_format_is_a_startup_error() {
    let mut options = Observed::options();
    let err = ProxyCli {
        access_log: Some("/nonexistent-dir/x/access.log".into()),
        ..Default::default()
    }
    .configure_options("Observed", &mut options)
    .expect_err("cannot open");
    assert!(
        err.to_string().contains("/nonexistent-dir/x/access.log"),
        "{err}"
    );
    let err = ProxyCli {
        access_log_format: Some("xml".into()),
        ..Default::default()
    }
    .configure_options("Observed", &mut options)
    .expect_err("bad format");
    assert!(err.to_string().contains("`combined` or `json`"), "{err}");
}

/// A running example and the lines of its stdout.
struct Example {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    /// The proxy's name, as it reports itself (`NAME listening on ...`).
    name: String,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Example {
    /// Starts example `name` on ephemeral ports with an admin listener, plus `args`.
    fn start(name: &str, args: &[&str]) -> Example {
        let (child, lines) = spawn_with_lines(
            std::process::Command::new(example_binary(name))
                .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                .args(args),
        );
        let mut seen = Vec::new();
        let listen = read_until(&lines, &mut seen, |l| l.contains(" listening on http"));
        let (proxy_name, _) = listen.split_once(" listening on ").expect("a name");
        let proxy = addr_after(&listen, "://");
        let admin_line = read_until(&lines, &mut seen, |l| l.starts_with("admin on http://"));
        let admin = addr_after(&admin_line, "admin on http://");
        Example {
            child,
            lines,
            seen,
            name: proxy_name.to_owned(),
            proxy,
            admin,
        }
    }

    /// The next stdout line satisfying `want` (10 s at most).
    fn line(&mut self, want: impl Fn(&str) -> bool) -> String {
        read_until(&self.lines, &mut self.seen, want)
    }

    /// Sends SIGTERM (once the process handles it) and waits (10 s at most) for a clean
    /// exit.
    fn stop(&mut self) {
        let sigterm = nix::sys::signal::Signal::SIGTERM;
        wait_until_blocking(
            Duration::from_secs(10),
            "the example handles SIGTERM",
            || process_catches_signal(self.child.id(), sigterm),
        );
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sigterm).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "{status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the example did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_with_id(proxy: SocketAddr, id: &str) {
    let mut req = get(proxy, "/", None);
    req.headers_mut()
        .insert("x-request-id", http::HeaderValue::from_str(id).expect("id"));
    assert_eq!(send(&client(), req).await.0.status(), 200);
}

/// The examples that take the flags of every declared proxy (`ProxyCli`): those whose
/// source reads them. (The hand-written `load_balancer_manual` and `tcp_proxy` have flags of
/// their own.)
fn examples_with_proxy_flags() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the examples directory")
        .filter_map(|entry| {
            let path = entry.expect("an entry").path();
            let source = std::fs::read_to_string(&path).ok()?;
            let name = path.file_stem()?.to_str()?.to_owned();
            (path.extension()? == "rs" && source.contains("ProxyCli::from_env()")).then_some(name)
        })
        .collect();
    names.sort();
    names
}

/// Sends one request to example proxy `ex` the way it is meant to be used, with request id
/// `id`; returns the status it logs.
async fn request_example(name: &str, ex: &Example, id: &str) -> u16 {
    match name {
        // TLS on the listener (the certificate is the test's own, self-signed).
        "tls_gateway" => {
            let mut connector =
                openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
                    .expect("connector");
            connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
            let ssl = connector
                .build()
                .configure()
                .expect("config")
                .into_ssl("localhost")
                .expect("ssl");
            let tcp = tokio::net::TcpStream::connect(ex.proxy)
                .await
                .expect("connect");
            let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("stream");
            let exchange = async {
                std::pin::Pin::new(&mut tls)
                    .connect()
                    .await
                    .expect("handshake");
                let request = format!(
                    "GET / HTTP/1.1\r\nHost: localhost\r\nx-request-id: {id}\r\nConnection: close\r\n\r\n"
                );
                tokio::io::AsyncWriteExt::write_all(&mut tls, request.as_bytes())
                    .await
                    .expect("write");
                let mut out = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut out)
                    .await
                    .expect("read");
                String::from_utf8_lossy(&out).into_owned()
            };
            let out = tokio::time::timeout(Duration::from_secs(10), exchange)
                .await
                .expect("answered in time");
            assert!(out.starts_with("HTTP/1.1 200 "), "{name}: {out}");
            200
        }
        // A WebSocket tunnelled to the echo origin: the upgrade is logged as a 101.
        "websocket_proxy" => {
            use futures_util::{SinkExt, StreamExt};
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            use tokio_tungstenite::tungstenite::Message;
            let mut request = format!("ws://{}/chat", ex.proxy)
                .into_client_request()
                .expect("request");
            request
                .headers_mut()
                .insert("x-request-id", http::HeaderValue::from_str(id).expect("id"));
            let tcp = tokio::net::TcpStream::connect(ex.proxy)
                .await
                .expect("connect");
            let echoed = async {
                let (mut ws, response) = tokio_tungstenite::client_async(request, tcp)
                    .await
                    .expect("handshake");
                assert_eq!(response.status(), 101, "{name}");
                ws.send(Message::text("hello")).await.expect("send");
                let back = ws.next().await.expect("a message").expect("no error");
                ws.close(None).await.expect("close");
                back
            };
            let back = tokio::time::timeout(Duration::from_secs(10), echoed)
                .await
                .expect("echoed in time");
            assert_eq!(back, Message::text("hello"), "{name}");
            101
        }
        _ => {
            get_with_id(ex.proxy, id).await;
            200
        }
    }
}

/// Every example taking the flags of every declared proxy, run as a new user runs it with
/// `--admin` and `--access-log stdout`: each serves a request, logs it on stdout with its
/// id and status, counts it in its metrics, shows itself on the status page, and stops
/// cleanly on SIGTERM. The main one (`load_balancer`, two per-core workers) also counts
/// its requests per demo origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_serves_admin_and_access_log_from_flags() {
    let examples = examples_with_proxy_flags();
    for known in [
        "load_balancer",
        "tls_gateway",
        "websocket_proxy",
        "zero_downtime",
    ] {
        assert!(
            examples.iter().any(|e| e == known),
            "{known} not among {examples:?}"
        );
    }
    let dir = tempdir("every-example");
    let cert =
        pingora_dsl_suite::certs::self_signed(&dir, &["localhost", "127.0.0.1"]).expect("cert");
    let (cert_path, key_path) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    for name in &examples {
        let mut args = vec!["--access-log", "stdout"];
        match name.as_str() {
            // Two per-core workers: their counters add up in one set.
            "load_balancer" => args.extend(["--threads", "2"]),
            "tls_gateway" => args.extend(["--cert", &cert_path, "--key", &key_path]),
            _ => {}
        }
        let mut ex = Example::start(name, &args);
        let ids: Vec<String> = if name == "load_balancer" {
            (0..4).map(|i| format!("req-{i}")).collect()
        } else {
            vec![format!("every-{name}")]
        };
        for id in &ids {
            let status = request_example(name, &ex, id).await;
            let line = ex.line(|l| l.contains(&format!(" id={id}")));
            assert!(line.contains(&format!("\" {status} ")), "{name}: {line}");
        }
        let m = fetch(ex.admin, "/metrics").await;
        let counted: f64 = m
            .lines()
            .filter(|l| {
                l.starts_with("pingora_dsl_requests_total{")
                    && l.contains(&format!("proxy=\"{}\"", ex.name))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(
            counted,
            ids.len() as f64,
            "{name}: every request counted in:\n{m}"
        );
        let status_page = fetch(ex.admin, "/status").await;
        assert!(status_page.contains(&ex.name), "{name}: {status_page}");
        if name == "load_balancer" {
            let per_peer: Vec<u64> = m
                .lines()
                .filter(|l| l.starts_with("pingora_dsl_upstream_requests_total{"))
                .map(|l| {
                    l.rsplit(' ')
                        .next()
                        .and_then(|v| v.parse().ok())
                        .expect("value")
                })
                .collect();
            assert_eq!(
                per_peer,
                [2, 2],
                "round robin over the two demo origins: {m}"
            );
            let p = [("proxy", "BlogLoadBalancer")];
            assert_eq!(count(&m, "pingora_dsl_downstream_connections_total", &p), 4);
        }
        ex.stop();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `--example observability`: the request's span reaches OpenTelemetry (its stdout
/// exporter) with the request id, through a plain `tracing` layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_example_exports_request_spans() {
    let mut ex = Example::start("observability", &["--threads", "1"]);
    get_with_id(ex.proxy, "otel-trace-1").await;
    let line = ex.line(|l| l.contains("\"GET / HTTP/1.1\""));
    assert!(line.contains("id=otel-trace-1"), "{line}");
    let m = fetch(ex.admin, "/metrics").await;
    let l = [("proxy", "Observed"), ("route", "*"), ("class", "2xx")];
    assert_eq!(count(&m, "pingora_dsl_requests_total", &l), 1);
    // The batch is exported at exit at the latest.
    ex.stop();
    let mut rest: Vec<String> = ex.seen.drain(..).collect();
    rest.extend(ex.lines.try_iter());
    let out = rest.join("\n");
    assert!(
        out.contains("Name         : request"),
        "no request span in:\n{out}"
    );
    assert!(
        out.contains(r#"id: String(Owned("otel-trace-1"))"#),
        "no span with the request id in:\n{out}"
    );
}

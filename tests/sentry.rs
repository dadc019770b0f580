//! Errors and panics to Sentry, received by a stand-in for the Sentry server that the test
//! starts (an HTTP endpoint on loopback taking the envelopes the `sentry` crate posts): a
//! request failing with 502 in the `load_balancer` example reports an event with its
//! request id, route, pool and peer; a sample rate of 0 sends nothing; a panicking phase
//! answers 500, keeps the connection, and reports the panic and the failed request; a bad
//! DSN stops `-t`; `--print-config` shows the settings.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pingora_dsl::observe::sentry::SentrySettings;
use pingora_dsl::prelude::*;
use serde_json::Value;
use support::{
    addr_after, client, example_binary, read_until, refused_port, send, spawn_with_lines,
    wait_until, KillOnDrop,
};

/// A stand-in for the Sentry server: keeps the events of every envelope posted to it.
#[derive(Clone, Default)]
struct Collector {
    events: Arc<Mutex<Vec<Value>>>,
    envelopes: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = Collector::default();
        let kept = collector.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await?.to_bytes();
                            if path == "/api/42/envelope/" {
                                kept.keep(&body);
                            }
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                                "{}",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (collector, addr)
    }

    /// Keeps an envelope and the event in it (the line of JSON with a `platform`).
    fn keep(&self, body: &[u8]) {
        let text = String::from_utf8_lossy(body).into_owned();
        for line in text.lines() {
            if let Ok(value) = serde_json::from_str::<Value>(line) {
                if value.get("platform").is_some() && value.get("event_id").is_some() {
                    self.events.lock().expect("events").push(value);
                }
            }
        }
        self.envelopes.lock().expect("envelopes").push(text);
    }

    /// The first event whose JSON text contains `needle`, waiting for it up to 10 s.
    async fn event_with(&self, needle: &str) -> Value {
        let mut found = None;
        wait_until(Duration::from_secs(10), needle, || {
            found = self
                .events
                .lock()
                .expect("events")
                .iter()
                .find(|e| e.to_string().contains(needle))
                .cloned();
            found.is_some()
        })
        .await;
        found.expect("found")
    }

    fn envelopes(&self) -> usize {
        self.envelopes.lock().expect("envelopes").len()
    }
}

/// An event's level (`error`, the default, is left out of the JSON).
fn level(event: &Value) -> &str {
    event
        .get("level")
        .and_then(Value::as_str)
        .unwrap_or("error")
}

/// The value of the context field `name` of `event` (sentry-tracing puts an event's fields
/// in a context), wherever in the event it is.
fn field<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    fn find<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
        match v {
            Value::Object(map) => map
                .get(name)
                .or_else(|| map.values().find_map(|v| find(v, name))),
            Value::Array(items) => items.iter().find_map(|v| find(v, name)),
            _ => None,
        }
    }
    find(event, name)
}

fn config(dir: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pdsl-sentry-{dir}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("lb.toml");
    std::fs::write(&conf, text).expect("config");
    conf
}

/// Starts the `load_balancer` example with `conf` and its peer at `peer`: the process and
/// its address.
fn start_example(conf: &std::path::Path, peer: SocketAddr) -> (KillOnDrop, SocketAddr) {
    let (child, lines) = spawn_with_lines(Command::new(example_binary("load_balancer")).args([
        "-c",
        conf.to_str().expect("utf-8"),
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &peer.to_string(),
    ]));
    let running = KillOnDrop(child);
    let addr = addr_after(
        &read_until(&lines, &mut Vec::new(), |l| {
            l.contains("listening on http://")
        }),
        "http://",
    );
    (running, addr)
}

/// `GET path` with the request id `id`.
fn get_with_id(addr: SocketAddr, path: &str, id: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(format!("http://{addr}{path}"))
        .header("x-request-id", id)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// `GET path` with the request id `id`: the status.
async fn status_of(addr: SocketAddr, path: &str, id: &str) -> u16 {
    send(&client(), get_with_id(addr, path, id))
        .await
        .0
        .status()
        .as_u16()
}

/// Stops the example with SIGTERM and waits for it to exit (flushing pending events).
fn stop(mut running: KillOnDrop) {
    let pid = nix::unistd::Pid::from_raw(running.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    support::wait_until_blocking(Duration::from_secs(15), "the example exits", || {
        matches!(running.0.try_wait(), Ok(Some(_)))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_is_reported_with_its_request_id_route_pool_and_peer() {
    let (collector, at) = Collector::start().await;
    let gone = refused_port();
    let conf = config(
        "failed",
        &format!("[server.sentry]\ndsn = \"http://public@{at}/42\"\nenvironment = \"test-env\"\n"),
    );
    let (running, addr) = start_example(&conf, gone.addr());
    assert_eq!(status_of(addr, "/broken", "sentry-req-1").await, 502);
    // Stopped at once: what was not sent yet is flushed on the way out.
    stop(running);
    let event = collector.event_with("sentry-req-1").await;
    assert_eq!(level(&event), "error", "{event:#}");
    assert_eq!(event["environment"], "test-env", "{event:#}");
    assert!(
        event.to_string().contains("request failed"),
        "the message: {event:#}"
    );
    assert_eq!(
        field(&event, "request_id"),
        Some(&Value::from("sentry-req-1")),
        "{event:#}"
    );
    assert_eq!(
        field(&event, "pool"),
        Some(&Value::from("origins")),
        "{event:#}"
    );
    assert_eq!(field(&event, "route"), Some(&Value::from("*")), "{event:#}");
    assert_eq!(
        field(&event, "peer"),
        Some(&Value::from(gone.addr().to_string())),
        "{event:#}"
    );
    assert_eq!(
        field(&event, "path"),
        Some(&Value::from("/broken")),
        "{event:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_rate_of_zero_sends_no_event() {
    let (collector, at) = Collector::start().await;
    let gone = refused_port();
    let conf = config(
        "sampled",
        &format!("[server.sentry]\ndsn = \"http://public@{at}/42\"\nsample_rate = 0.0\n"),
    );
    let (running, addr) = start_example(&conf, gone.addr());
    for i in 0..5 {
        assert_eq!(status_of(addr, "/", &format!("unsampled-{i}")).await, 502);
    }
    // The process flushes what it holds when it stops: nothing was kept to send.
    stop(running);
    assert_eq!(collector.envelopes(), 0);
}

#[test]
fn a_bad_dsn_fails_the_check_and_print_config_shows_the_settings() {
    let conf = config(
        "bad",
        "[server.sentry]\ndsn = \"https://o0.ingest.sentry.io/42\"\n",
    );
    let out = Command::new(example_binary("load_balancer"))
        .args(["-t", "-c", conf.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("sentry dsn") && text.contains("no public key"),
        "{text}"
    );

    let conf = config(
        "shown",
        "[server.sentry]\ndsn = \"https://key@o0.ingest.sentry.io/42\"\nsample_rate = 0.5\n",
    );
    let out = Command::new(example_binary("load_balancer"))
        .args(["--print-config", "-c", conf.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("[server.sentry]")
            && text.contains("dsn = \"https://key@o0.ingest.sentry.io/42\"")
            && text.contains("sample_rate = 0.5"),
        "{text}"
    );
}

/// A proxy whose `request_filter` panics on `/panic`.
struct Panicky {
    peer: SocketAddr,
}

impl ProxyHttp for Panicky {
    type Ctx = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<Flow> {
        if session.path() == "/panic" {
            panic!("boom in request_filter");
        }
        Ok(Flow::Continue)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        Ok(HttpPeer::new(self.peer))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_phase_answers_500_keeps_the_connection_and_is_reported() {
    let (collector, at) = Collector::start().await;
    let settings = SentrySettings::new(format!("http://public@{at}/42"));
    let _guard = settings.start().expect("sentry starts");
    pingora_dsl::server::cli::init_subscriber("info", None, true);
    let origin = pingora_dsl_suite::origin::Origin::start("after-panic")
        .await
        .expect("origin");
    let mut service = http_proxy_service(
        "panicky",
        Panicky {
            peer: origin.addr(),
        },
    );
    service.add_tcp("127.0.0.1:0");
    let proxy = service.spawn().expect("proxy starts");
    let mut conn = tokio::net::TcpStream::connect(proxy.addrs()[0])
        .await
        .expect("connect");
    let (status, _) = support::exchange(&mut conn, "/panic", Some("panic-req")).await;
    assert_eq!(status, "HTTP/1.1 500 Internal Server Error");
    // The same connection serves the next request.
    let (status, body) = support::exchange(&mut conn, "/fine", None).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, b"origin after-panic");
    assert_eq!(
        proxy.accept_stats().accepted(),
        1,
        "one connection for both"
    );
    drop(conn);

    let panic = collector.event_with("boom in request_filter").await;
    assert_eq!(panic["level"], "fatal", "the panic itself: {panic:#}");
    let failed = collector.event_with("panic-req").await;
    assert_eq!(level(&failed), "error", "{failed:#}");
    assert!(
        failed.to_string().contains("a phase panicked"),
        "{failed:#}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_reports_too() {
    // Reporting starts after the daemon's fork: a client started before it would have its
    // sending thread left behind in the parent (and the fork refuses to run with threads).
    let (collector, at) = Collector::start().await;
    let gone = refused_port();
    let dir = std::env::temp_dir().join(format!("pdsl-sentry-daemon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (pid_file, log_file) = (dir.join("lb.pid"), dir.join("lb.log"));
    let conf = config(
        "daemon",
        &format!(
            "[server]\nthreads = 1\npid_file = \"{}\"\nerror_log = \"{}\"\n[server.sentry]\ndsn = \"http://public@{at}/42\"\n",
            pid_file.display(),
            log_file.display()
        ),
    );
    let status = Command::new(example_binary("load_balancer"))
        .args(["-d", "-c", conf.to_str().expect("utf-8")])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &gone.addr().to_string(),
        ])
        .status()
        .expect("runs");
    assert!(
        status.success(),
        "the foreground part exits 0 once detached"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the pid file")
        .trim()
        .parse()
        .expect("a pid");
    let marker = " listening on http://";
    wait_until(Duration::from_secs(10), "the listening line", || {
        std::fs::read_to_string(&log_file).is_ok_and(|l| l.contains(marker))
    })
    .await;
    let log = std::fs::read_to_string(&log_file).expect("the log");
    let addr: SocketAddr = addr_after(
        log.lines().find(|l| l.contains(marker)).expect("the line"),
        "http://",
    );
    assert_eq!(status_of(addr, "/from-daemon", "daemon-req").await, 502);
    let event = collector.event_with("daemon-req").await;
    assert_eq!(
        field(&event, "path"),
        Some(&Value::from("/from-daemon")),
        "{event:#}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the daemon");
    wait_until(Duration::from_secs(15), "the daemon to exit", || {
        !pid_file.exists()
    })
    .await;
}

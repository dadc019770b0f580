//! The access log to syslog: RFC 5424 messages received by real collectors the test starts
//! (a UDP socket, a local datagram socket, a TCP listener reading octet-counted frames),
//! and a collector that is absent: lines are dropped and counted, requests still answered.

mod support;

use std::time::Duration;

use pingora_dsl::downstream::{HttpOptions, RunningService};
use pingora_dsl::observe::access_log::{AccessLog, AccessLogFormat, AccessLogTarget};
use pingora_dsl::prelude::*;
use pingora_dsl_suite::origin::Origin;
use support::{client, get, send, start_proxy_with, wait_until, TestProxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Proxy options whose access log goes to `target` as JSON.
fn logging_to(target: &str) -> (ProxyOptions, AccessLog) {
    let target = AccessLogTarget::parse(target).expect("a syslog destination");
    let log = AccessLog::new(target, AccessLogFormat::Json);
    let options = ProxyOptions {
        access_log: Some(log.clone()),
        ..ProxyOptions::default()
    };
    (options, log)
}

/// Sends `GET path` through a proxy logging to `target`; the proxy stays up while the
/// returned handles live.
async fn request_through(target: &str, path: &str) -> (Origin, RunningService, AccessLog) {
    let origin = Origin::start("logged").await.expect("origin");
    let (options, log) = logging_to(target);
    let proxy = start_proxy_with(
        TestProxy::new(&[origin.addr()]),
        HttpOptions::default(),
        options,
    );
    let (resp, _) = send(&client(), get(proxy.addr(), path, None)).await;
    assert_eq!(
        resp.status(),
        200,
        "the request is answered whatever the collector does"
    );
    (origin, proxy, log)
}

/// Checks one RFC 5424 message: facility local3 and severity info, version 1, the tag,
/// and the JSON access-log line of `path` as its message.
fn assert_message(message: &str, path: &str) {
    assert!(message.starts_with("<158>1 "), "{message}");
    let fields: Vec<&str> = message.splitn(8, ' ').collect();
    assert_eq!(fields[3], "edge", "the tag is APP-NAME: {message}");
    assert_eq!(
        fields[4],
        std::process::id().to_string(),
        "PROCID: {message}"
    );
    assert!(
        fields[1].ends_with('Z') && fields[1].contains('T'),
        "{message}"
    );
    let line: serde_json::Value = serde_json::from_str(fields[7]).expect("a JSON line");
    assert_eq!(line["path"], path, "{message}");
    assert_eq!(line["status"], 200, "{message}");
}

#[tokio::test]
async fn lines_go_to_a_udp_collector() {
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = format!(
        "syslog:udp://{}?facility=local3&tag=edge",
        collector.local_addr().expect("addr")
    );
    let (_origin, _proxy, _log) = request_through(&target, "/over-udp").await;
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(Duration::from_secs(5), collector.recv(&mut buf))
        .await
        .expect("a message within 5 s")
        .expect("recv");
    assert_message(&String::from_utf8_lossy(&buf[..n]), "/over-udp");
}

#[tokio::test]
async fn lines_go_to_a_local_datagram_socket() {
    let dir = std::env::temp_dir().join(format!("pdsl-syslog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("log.sock");
    let _ = std::fs::remove_file(&path);
    let collector = tokio::net::UnixDatagram::bind(&path).expect("bind");
    let target = format!("syslog:unix://{}?facility=local3&tag=edge", path.display());
    let (_origin, _proxy, _log) = request_through(&target, "/over-unix").await;
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(Duration::from_secs(5), collector.recv(&mut buf))
        .await
        .expect("a message within 5 s")
        .expect("recv");
    assert_message(&String::from_utf8_lossy(&buf[..n]), "/over-unix");
}

#[tokio::test]
async fn lines_go_to_a_tcp_collector_in_octet_counted_frames() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = format!(
        "syslog:tcp://{}?facility=local3&tag=edge",
        listener.local_addr().expect("addr")
    );
    let (_origin, _proxy, _log) = request_through(&target, "/over-tcp").await;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a connection within 5 s")
        .expect("accept");
    let mut reader = BufReader::new(stream);
    let mut length = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_until(b' ', &mut length))
        .await
        .expect("a frame within 5 s")
        .expect("read");
    let length: usize = String::from_utf8_lossy(&length)
        .trim()
        .parse()
        .expect("MSG-LEN");
    let mut message = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(5), reader.read_exact(&mut message))
        .await
        .expect("the message within 5 s")
        .expect("read");
    assert_message(&String::from_utf8_lossy(&message), "/over-tcp");
}

#[tokio::test]
async fn an_absent_collector_drops_and_counts_lines() {
    let dir = std::env::temp_dir().join(format!("pdsl-syslog-absent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let target = format!("syslog:unix://{}/nobody.sock", dir.display());
    let (_origin, _proxy, log) = request_through(&target, "/lost").await;
    wait_until(
        Duration::from_secs(5),
        "the lost line to be counted",
        || log.dropped() == 1,
    )
    .await;
}

#[test]
fn malformed_destinations_are_refused_with_the_reason() {
    for (target, reason) in [
        ("syslog:udp://logs.internal:514", "is not IP:PORT"),
        (
            "syslog:udp://127.0.0.1:514?facility=local9",
            "unknown syslog facility",
        ),
        ("syslog:ftp://127.0.0.1:21", "syslog:udp://IP:PORT"),
    ] {
        let e = AccessLogTarget::parse(target).expect_err("refused");
        assert!(e.to_string().contains(reason), "{target}: {e}");
    }
}

#[test]
fn the_config_file_and_flags_take_a_syslog_destination() {
    use pingora_dsl::server::config::set_access_log;
    let mut options = ProxyOptions::default();
    set_access_log(
        &mut options,
        Some("syslog:tcp://127.0.0.1:6514?facility=daemon&tag=gw"),
        Some("json"),
    )
    .expect("a valid destination");
    let log = options.access_log.as_ref().expect("an access log");
    assert_eq!(
        log.target().describe(),
        "syslog:tcp://127.0.0.1:6514?facility=daemon&tag=gw",
        "what --print-config shows"
    );
    let e =
        set_access_log(&mut options, Some("syslog:tcp://127.0.0.1"), None).expect_err("no port");
    assert!(e.to_string().contains("is not IP:PORT"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_log_goes_to_syslog_with_each_events_severity() {
    use support::{addr_after, example_binary, read_until, refused_port, spawn_with_lines};
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gone = refused_port();
    let dir = std::env::temp_dir().join(format!("pdsl-syslog-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("lb.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nlog = \"syslog:udp://{}?facility=daemon&tag=lb\"\n",
            collector.local_addr().expect("addr")
        ),
    )
    .expect("config");
    let (child, lines) = spawn_with_lines(
        std::process::Command::new(example_binary("load_balancer")).args([
            "-c",
            conf.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &gone.addr().to_string(),
        ]),
    );
    let _running = support::KillOnDrop(child);
    let addr = addr_after(
        &read_until(&lines, &mut Vec::new(), |l| {
            l.contains("listening on http://")
        }),
        "http://",
    );
    let (resp, _) = send(&client(), get(addr, "/", None)).await;
    assert_eq!(resp.status(), 502);
    // The failed request is logged as an error: facility daemon (3), severity 3.
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, collector.recv(&mut buf))
            .await
            .expect("the error within 5 s")
            .expect("recv");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains("request failed") {
            assert!(message.starts_with("<27>1 "), "{message}");
            assert_eq!(message.split(' ').nth(3), Some("lb"), "{message}");
            assert!(
                !message.contains('\u{1b}'),
                "no terminal colours: {message}"
            );
            break;
        }
    }
}

#[test]
fn the_process_log_takes_stderr_or_a_datagram_collector() {
    use pingora_dsl::server::config::process_log_writer;
    assert!(process_log_writer("stderr").expect("valid").is_none());
    assert!(process_log_writer("syslog:unix:///dev/log")
        .expect("valid")
        .is_some());
    let e = process_log_writer("syslog:tcp://127.0.0.1:6514")
        .err()
        .expect("a stream");
    assert!(e.to_string().contains("over datagrams"), "{e}");
    let e = process_log_writer("/var/log/proxy.log")
        .err()
        .expect("not a target");
    assert!(e.to_string().contains("\"stderr\""), "{e}");
}

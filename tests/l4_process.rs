//! The layer-4 proxies' `run()` as processes (the `tcp_proxy` and `udp_proxy` examples):
//! every flag and config key they take has an effect — TLS termination, the idle timeout,
//! a line per connection in the access log, `-u` handing UDP sockets over with traffic
//! flowing — and those they cannot honour are refused naming the flag or key, hidden from
//! `--help` and absent from `--print-config`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use pingora_dsl_suite::certs::TestCa;
use pingora_dsl_suite::origin::{start_tcp_echo, start_udp_echo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{
    addr_after, example_binary, process_catches_signal, read_until, spawn_with_lines,
    spawn_with_lines_and, wait_until_blocking,
};

const WAIT: Duration = Duration::from_secs(10);

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pdsl-l4p-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The line of `lines` (or of those already `seen`) containing `marker`.
fn line_with(lines: &Receiver<String>, seen: &mut Vec<String>, marker: &str) -> String {
    if let Some(i) = seen.iter().position(|l| l.contains(marker)) {
        return seen.remove(i);
    }
    read_until(lines, seen, |l| l.contains(marker))
}

/// Runs `example` with `args` to its end.
/// The address the tcp_proxy example says it listens on (its lines read into `seen`).
fn listening_on_tcp(lines: &Receiver<String>, seen: &mut Vec<String>) -> SocketAddr {
    let marker = " listening on tcp ";
    addr_after(&line_with(lines, seen, marker), marker)
}

fn run(example: &str, args: &[&str]) -> Output {
    Command::new(example_binary(example))
        .args(args)
        .output()
        .expect("the example runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends SIGTERM once the process handles it, and waits for a clean exit.
fn stop(mut child: Child) {
    let pid = child.id();
    wait_until_blocking(WAIT, "the proxy handles SIGTERM", || {
        process_catches_signal(pid, Signal::SIGTERM)
    });
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    let mut status = None;
    wait_until_blocking(WAIT, "the proxy exits after SIGTERM", || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Writes `data`, half-closes, and reads everything back.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    data: &[u8],
) -> String {
    s.write_all(data).await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut back))
        .await
        .expect("the echo ends in time")
        .expect("read");
    String::from_utf8(back).expect("text")
}

async fn tls_connect(addr: SocketAddr, ca: &Path) -> tokio_openssl::SslStream<TcpStream> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    b.set_ca_file(ca).expect("ca");
    b.set_verify(SslVerifyMode::PEER);
    let ssl = b
        .build()
        .configure()
        .expect("config")
        .into_ssl("localhost")
        .expect("ssl");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("stream");
    Pin::new(&mut tls).connect().await.expect("handshake");
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_run_terminates_tls_from_its_flags_and_logs_every_connection() {
    let dir = scratch("tls");
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server("localhost", &["localhost"]).expect("cert");
    let echo = start_tcp_echo("origin-a").await.expect("echo");
    let (child, lines) = spawn_with_lines(
        Command::new(example_binary("tcp_proxy"))
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .args(["--upstream", &echo.to_string(), "--access-log", "stdout"]),
    );
    let mut seen = Vec::new();
    let (plain, tls) = tokio::task::block_in_place(|| {
        let plain = line_with(&lines, &mut seen, " listening on tcp ");
        let tls = line_with(&lines, &mut seen, " listening on tls ");
        (
            addr_after(&plain, " listening on tcp "),
            addr_after(&tls, " listening on tls "),
        )
    });
    assert!(
        seen.iter().all(|l| !l.contains("demo origins")),
        "peers were given: {seen:?}"
    );

    let plain_conn = TcpStream::connect(plain).await.expect("connect");
    let plain_client = plain_conn.local_addr().expect("local");
    assert_eq!(exchange(plain_conn, b"hello").await, "origin-a\nhello");
    let tls_conn = tls_connect(tls, &ca.cert_path()).await;
    let tls_client = tls_conn.get_ref().local_addr().expect("local");
    assert_eq!(exchange(tls_conn, b"secret!").await, "origin-a\nsecret!");

    let (tcp_line, tls_line) = tokio::task::block_in_place(|| {
        (
            line_with(&lines, &mut seen, "\"TCP\""),
            line_with(&lines, &mut seen, "\"TLS\""),
        )
    });
    for (line, client, sent) in [(tcp_line, plain_client, 5), (tls_line, tls_client, 7)] {
        assert!(
            line.starts_with(&format!("{} - - [", client.ip())),
            "{line}"
        );
        assert!(
            line.contains(&format!(
                "upstream={echo} to_upstream={sent} to_client={} ",
                "origin-a\n".len() + sent
            )),
            "{line}"
        );
        assert!(line.contains(" retries=0 end=closed"), "{line}");
    }
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_config_file_sets_the_idle_timeout_and_a_json_access_log() {
    let dir = scratch("idle");
    let echo = start_tcp_echo("origin-b").await.expect("echo");
    let conf = dir.join("tcp.toml");
    std::fs::write(
        &conf,
        format!(
            "[proxy.TcpEcho]\nlisten = [\"127.0.0.1:0\"]\nidle = \"400ms\"\naccess_log = \"stdout\"\n\
             access_log_format = \"json\"\n\n[proxy.TcpEcho.upstream.echo]\npeers = [\"{echo}\"]\n\
             timeout = {{ connect = \"500ms\" }}\n"
        ),
    )
    .expect("config");
    let (child, lines) = spawn_with_lines(
        Command::new(example_binary("tcp_proxy"))
            .arg("-c")
            .arg(&conf),
    );
    let mut seen = Vec::new();
    let addr = tokio::task::block_in_place(|| listening_on_tcp(&lines, &mut seen));
    assert!(
        seen.iter().all(|l| !l.contains("demo origins")),
        "the file names the peers: {seen:?}"
    );
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let mut greeting = [0u8; 9];
    conn.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"origin-b\n");
    let quiet_since = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut rest))
        .await
        .expect("closed by the idle timeout")
        .expect("read");
    let idled = quiet_since.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        idled >= Duration::from_millis(350),
        "closed after {idled:?}, before the idle timeout of 400ms"
    );

    let line = tokio::task::block_in_place(|| line_with(&lines, &mut seen, "\"protocol\""));
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["protocol"], "TCP", "{line}");
    assert_eq!(entry["end"], "idle", "{line}");
    assert_eq!(entry["upstream"], echo.to_string(), "{line}");
    assert_eq!(entry["bytes_to_client"], 9, "{line}");
    assert_eq!(entry["bytes_to_upstream"], 0, "{line}");
    assert!(
        entry["duration"].as_f64().is_some_and(|d| d >= 0.35),
        "{line}"
    );
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_config_file_requires_a_proxy_protocol_header() {
    let dir = scratch("proxy-protocol");
    let echo = start_tcp_echo("origin-c").await.expect("echo");
    let conf = dir.join("tcp.toml");
    std::fs::write(
        &conf,
        format!(
            "[proxy.TcpEcho]\nlisten = [\"127.0.0.1:0\"]\nproxy_protocol = \"required\"\n\
             access_log = \"stdout\"\naccess_log_format = \"json\"\n\n\
             [proxy.TcpEcho.upstream.echo]\npeers = [\"{echo}\"]\n"
        ),
    )
    .expect("config");
    let (child, lines) = spawn_with_lines(
        Command::new(example_binary("tcp_proxy"))
            .arg("-c")
            .arg(&conf),
    );
    let mut seen = Vec::new();
    let addr = tokio::task::block_in_place(|| listening_on_tcp(&lines, &mut seen));
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"PROXY TCP4 192.0.2.10 127.0.0.1 5555 6432\r\n")
        .await
        .expect("header");
    let mut greeting = [0u8; 9];
    tokio::time::timeout(WAIT, conn.read_exact(&mut greeting))
        .await
        .expect("a greeting in time")
        .expect("greeting");
    assert_eq!(&greeting, b"origin-c\n");
    drop(conn);
    let line = tokio::task::block_in_place(|| line_with(&lines, &mut seen, "\"protocol\""));
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["client"], "192.0.2.10:5555", "{line}");

    let mut bare = TcpStream::connect(addr).await.expect("connect");
    bare.write_all(b"no header, just bytes\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, bare.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    // Closed with the unread bytes still queued: a reset is a close too.
    let closed = read.as_ref().map_or_else(
        |e| e.kind() == std::io::ErrorKind::ConnectionReset,
        |_| true,
    );
    assert!(closed, "{read:?}");
    assert!(rest.is_empty(), "nothing relayed: {rest:?}");
    let line = tokio::task::block_in_place(|| line_with(&lines, &mut seen, "\"protocol\""));
    assert!(line.contains("\"end\":\"proxy_protocol\""), "{line}");
    stop(child);
}

#[test]
fn what_a_relay_cannot_honour_is_refused_naming_it_and_hidden() {
    let udp_help = String::from_utf8(run("udp_proxy", &["--help"]).stdout).expect("help");
    for flag in ["--tls-listen", "--cert", "--key", "--client-ca"] {
        assert!(!udp_help.contains(flag), "{flag} in:\n{udp_help}");
    }
    assert!(udp_help.contains("a line per connection"), "{udp_help}");
    let tcp_help = String::from_utf8(run("tcp_proxy", &["--help"]).stdout).expect("help");
    assert!(tcp_help.contains("--tls-listen"), "{tcp_help}");

    let out = run("udp_proxy", &["-t", "--tls-listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--tls-listen: a UDP proxy has no TLS"),
        "{}",
        stderr(&out)
    );

    let dir = scratch("refused");
    let cases = [
        (
            "tcp_proxy",
            "[proxy.TcpEcho]\nmax_idle_per_peer = 4\n",
            "proxy.TcpEcho.max_idle_per_peer: not available in tcp_proxy!",
        ),
        (
            "tcp_proxy",
            "[proxy.TcpEcho]\nallow_upgrade = []\n",
            "proxy.TcpEcho.allow_upgrade: not available in tcp_proxy!",
        ),
        (
            "tcp_proxy",
            "[proxy.TcpEcho.upstream.echo]\ntimeout = { read = \"1s\" }\n",
            "proxy.TcpEcho.upstream.echo.timeout.read: not available in tcp_proxy!",
        ),
        (
            "udp_proxy",
            "[proxy.UdpEcho.upstream.echo]\nretry = 1\n",
            "proxy.UdpEcho.upstream.echo.retry: not available in udp_proxy!",
        ),
        (
            "udp_proxy",
            "[proxy.UdpEcho.upstream.echo]\ntimeout = { connect = \"1s\" }\n",
            "proxy.UdpEcho.upstream.echo.timeout.connect: not available in udp_proxy!",
        ),
        (
            "udp_proxy",
            "[proxy.UdpEcho]\ntls_listen = [\"127.0.0.1:0\"]\n",
            "proxy.UdpEcho.tls_listen: not available in udp_proxy!",
        ),
        (
            "udp_proxy",
            "[proxy.UdpEcho]\nproxy_protocol = \"required\"\n",
            "proxy.UdpEcho.proxy_protocol: not available in udp_proxy!",
        ),
        (
            "load_balancer",
            "[proxy.BlogLoadBalancer]\nidle = \"1m\"\n",
            "proxy.BlogLoadBalancer.idle: a setting of tcp_proxy!/udp_proxy!",
        ),
        (
            "udp_proxy",
            "[proxy.UdpEcho]\nidle = \"soon\"\n",
            "proxy.UdpEcho.idle: invalid duration",
        ),
    ];
    for (i, (example, text, error)) in cases.iter().enumerate() {
        let conf = dir.join(format!("case-{i}.toml"));
        std::fs::write(&conf, text).expect("config");
        let conf = conf.to_str().expect("path");
        let out = run(example, &["-t", "-c", conf]);
        assert!(!out.status.success(), "{example} accepted {text:?}");
        assert!(stderr(&out).contains(error), "{text:?}: {}", stderr(&out));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("demo origins"),
            "-t starts no demo origin"
        );
    }
}

#[test]
fn print_config_shows_what_a_relay_honours_and_is_accepted_back() {
    let dir = scratch("print");
    let ca = TestCa::new(&dir).expect("ca");
    let cert = ca.server("localhost", &["localhost"]).expect("cert");
    let (cert_path, key_path) = (
        cert.cert.to_str().expect("path").to_owned(),
        cert.key.to_str().expect("path").to_owned(),
    );
    for (example, args) in [
        (
            "tcp_proxy",
            vec![
                "--listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--cert",
                &cert_path,
                "--key",
                &key_path,
                "--access-log",
                "stdout",
            ],
        ),
        ("udp_proxy", vec!["--listen", "127.0.0.1:0"]),
    ] {
        let mut print = args.clone();
        print.push("--print-config");
        let out = run(example, &print);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).expect("text");
        let parsed =
            pingora_dsl::server::config::Config::parse(&text).expect("a valid config file");
        let proxy = parsed.proxy.values().next().expect("one proxy");
        assert_eq!(proxy.max_idle_per_peer, None, "{example}: {text}");
        assert_eq!(proxy.allow_upgrade, None, "{example}: {text}");
        assert!(proxy.idle.is_some(), "{example}: {text}");
        assert!(!text.contains("read ="), "{example}: {text}");
        if example == "tcp_proxy" {
            assert_eq!(
                proxy.tls_listen.as_deref(),
                Some(&["127.0.0.1:0".to_owned()][..]),
                "{text}"
            );
            let certs = proxy.certificate.as_deref().unwrap_or_default();
            assert_eq!(
                certs.first().map(|c| c.cert.as_path()),
                Some(cert.cert.as_path()),
                "{text}"
            );
            assert_eq!(proxy.access_log.as_deref(), Some("stdout"), "{text}");
        } else {
            assert_eq!(proxy.tls_listen, None, "{text}");
            assert!(!text.contains("retry"), "{text}");
        }
        let conf = dir.join(format!("{example}.toml"));
        std::fs::write(&conf, &text).expect("config");
        let out = run(example, &["-t", "-c", conf.to_str().expect("path")]);
        assert!(
            out.status.success(),
            "{example} refused its own --print-config: {}\n{text}",
            stderr(&out)
        );
    }
}

/// Datagrams sent and answered by a client that asks and waits for each answer.
#[derive(Default)]
struct UdpTraffic {
    sent: AtomicU64,
    answered: AtomicU64,
    lost: AtomicU64,
    stop: AtomicBool,
}

/// Asks `proxy` question after question (each answered within 2 s, or counted lost) until
/// told to stop or 20,000 were asked.
fn udp_client(proxy: SocketAddr, traffic: Arc<UdpTraffic>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("client socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        for i in 0..20_000u64 {
            if traffic.stop.load(Ordering::Relaxed) {
                break;
            }
            let question = format!("q{i}");
            socket.send_to(question.as_bytes(), proxy).expect("send");
            traffic.sent.fetch_add(1, Ordering::Relaxed);
            let want = format!("origin:{question}");
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) if buf[..n] == *want.as_bytes() => {
                        traffic.answered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    // A late answer to an earlier question: keep waiting for this one.
                    Ok(_) => continue,
                    Err(_) => {
                        traffic.lost.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_upgrade_hands_the_socket_over_with_traffic_flowing() {
    let dir = scratch("udp-upgrade");
    let origin = start_udp_echo("origin").await.expect("udp echo");
    let socket = dir.join("upgrade.sock");
    let conf = dir.join("udp.toml");
    let write_conf = |listen: &str| {
        std::fs::write(
            &conf,
            format!(
                "[server]\nthreads = 1\ngrace_period = \"1s\"\nupgrade_socket = \"{}\"\n\n\
                 [proxy.UdpEcho]\nlisten = [\"{listen}\"]\n\n[proxy.UdpEcho.upstream.echo]\n\
                 peers = [\"{origin}\"]\n",
                socket.display()
            ),
        )
        .expect("config");
    };
    write_conf("127.0.0.1:0");
    let (mut old, old_lines) = spawn_with_lines(
        Command::new(example_binary("udp_proxy"))
            .arg("-c")
            .arg(&conf),
    );
    let mut seen = Vec::new();
    let addr = tokio::task::block_in_place(|| {
        addr_after(
            &line_with(&old_lines, &mut seen, " listening on udp "),
            " listening on udp ",
        )
    });
    write_conf(&addr.to_string());

    let traffic = Arc::new(UdpTraffic::default());
    let client = udp_client(addr, traffic.clone());
    let answered = |n: u64| {
        let traffic = traffic.clone();
        move || traffic.answered.load(Ordering::Relaxed) >= n
    };
    tokio::task::block_in_place(|| {
        wait_until_blocking(WAIT, "answers through the old process", answered(200))
    });

    let (new, new_lines) = spawn_with_lines(
        Command::new(example_binary("udp_proxy"))
            .arg("-c")
            .arg(&conf)
            .arg("-u"),
    );
    tokio::task::block_in_place(|| {
        wait_until_blocking(WAIT, "the new process waits for the sockets", || {
            socket.exists()
        });
        wait_until_blocking(WAIT, "the old process handles SIGQUIT", || {
            process_catches_signal(old.id(), Signal::SIGQUIT)
        });
    });
    kill(Pid::from_raw(old.id() as i32), Signal::SIGQUIT).expect("SIGQUIT");
    let mut new_seen = Vec::new();
    let line =
        tokio::task::block_in_place(|| line_with(&new_lines, &mut new_seen, " listening on udp "));
    assert_eq!(
        addr_after(&line, " listening on udp "),
        addr,
        "the same socket"
    );
    tokio::task::block_in_place(|| {
        wait_until_blocking(WAIT, "the old process exits", || {
            old.try_wait().expect("wait").is_some()
        })
    });
    let after_old = traffic.answered.load(Ordering::Relaxed);
    tokio::task::block_in_place(|| {
        wait_until_blocking(
            WAIT,
            "answers through the new process alone",
            answered(after_old + 200),
        )
    });
    traffic.stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    assert_eq!(
        traffic.lost.load(Ordering::Relaxed),
        0,
        "a question went unanswered"
    );
    assert_eq!(
        traffic.answered.load(Ordering::Relaxed),
        traffic.sent.load(Ordering::Relaxed)
    );
    stop(new);
}

/// The first line a new connection to `proxy` gets: the name of the echo origin reached.
async fn origin_reached(proxy: SocketAddr) -> String {
    let mut conn = TcpStream::connect(proxy).await.expect("connect");
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while tokio::time::timeout(WAIT, conn.read_exact(&mut byte))
        .await
        .expect("a greeting in time")
        .is_ok()
        && byte[0] != b'\n'
    {
        greeting.push(byte[0]);
    }
    String::from_utf8(greeting).expect("a name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_what_a_relay_cannot_honour_and_applies_the_rest() {
    let dir = scratch("reload");
    let a = start_tcp_echo("origin-a").await.expect("echo");
    let b = start_tcp_echo("origin-b").await.expect("echo");
    let c = start_tcp_echo("origin-c").await.expect("echo");
    let conf = dir.join("tcp.toml");
    let write = |peer: SocketAddr, extra: &str| {
        std::fs::write(
            &conf,
            format!(
                "[proxy.TcpEcho]\nlisten = [\"127.0.0.1:0\"]\n\n[proxy.TcpEcho.upstream.echo]\n\
                 peers = [\"{peer}\"]\n{extra}"
            ),
        )
        .expect("config");
    };
    write(a, "");
    let errors = dir.join("stderr.log");
    let (child, lines) = spawn_with_lines_and(
        Command::new(example_binary("tcp_proxy"))
            .arg("-c")
            .arg(&conf),
        std::fs::File::create(&errors).expect("stderr file"),
    );
    let mut seen = Vec::new();
    let proxy = tokio::task::block_in_place(|| listening_on_tcp(&lines, &mut seen));
    assert_eq!(origin_reached(proxy).await, "origin-a");
    let hup = || {
        wait_until_blocking(WAIT, "the proxy handles SIGHUP", || {
            process_catches_signal(child.id(), Signal::SIGHUP)
        });
        kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).expect("SIGHUP");
    };

    // Refused whole: the peer it names is not taken either.
    write(b, "timeout = { read = \"1s\" }\n");
    tokio::task::block_in_place(hup);
    let mut refused = String::new();
    tokio::task::block_in_place(|| {
        wait_until_blocking(WAIT, "the reload is refused", || {
            refused = std::fs::read_to_string(&errors).unwrap_or_default();
            refused.contains("configuration NOT reloaded")
        })
    });
    assert!(
        refused.contains("proxy.TcpEcho.upstream.echo.timeout.read: not available in tcp_proxy!"),
        "{refused}"
    );
    assert_eq!(origin_reached(proxy).await, "origin-a");

    write(c, "");
    tokio::task::block_in_place(hup);
    let deadline = Instant::now() + WAIT;
    loop {
        match origin_reached(proxy).await.as_str() {
            "origin-c" => break,
            "origin-a" => assert!(Instant::now() < deadline, "the valid reload never applied"),
            other => panic!("reached {other} through a refused reload"),
        }
    }
    stop(child);
}

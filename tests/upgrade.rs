//! Graceful upgrade and graceful stop, with real processes and real signals: the
//! `zero_downtime` example (a declared proxy answering with `x-served-by-pid`) that
//! `cargo test` builds, driven by load from this test.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pingora_dsl_suite::origin::{Origin, DRIP_CHUNK};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive connections under load during upgrades.
const KEEPALIVE_CLIENTS: usize = 12;

/// `target/<profile>/examples/zero_downtime`, next to this test's own binary.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("examples").join("zero_downtime")
}

/// A scratch directory with a config file for one proxy process family.
struct Setup {
    dir: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
    /// Where the proxies listen: `127.0.0.1:0` until the first process has bound a port
    /// (and holds it, to hand over), then that address.
    addr: SocketAddr,
    origin: Origin,
    grace: String,
    upgrade_timeout: String,
    /// `[server] reuse_port`: the sockets handed over are `SO_REUSEPORT` ones.
    reuse_port: bool,
    /// HTTP/3 too: the certificate of a TLS listener and a QUIC listener, and their
    /// addresses once the first process bound them.
    h3: Option<H3Listeners>,
}

/// The TLS and QUIC listeners of a [`Setup`] with HTTP/3.
struct H3Listeners {
    cert: pingora_dsl_suite::certs::CertFiles,
    tls: SocketAddr,
    quic: SocketAddr,
}

impl Setup {
    async fn new(test: &str, grace: &str, upgrade_timeout: &str) -> Setup {
        let origin = Origin::start(test).await.expect("origin");
        let dir = std::env::temp_dir().join(format!("pdsl-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("upgrade.sock");
        let pid_file = dir.join("proxy.pid");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let conf = dir.join("proxy.toml");
        let setup = Setup {
            dir,
            conf,
            socket,
            pid_file,
            addr,
            origin,
            grace: grace.to_owned(),
            upgrade_timeout: upgrade_timeout.to_owned(),
            reuse_port: false,
            h3: None,
        };
        setup.write_conf(None);
        setup
    }

    fn write_conf(&self, extra_listen: Option<SocketAddr>) {
        let mut listen = format!("\"{}\"", self.addr);
        if let Some(extra) = extra_listen {
            listen.push_str(&format!(", \"{extra}\""));
        }
        std::fs::write(
            &self.conf,
            format!(
                "[server]\nthreads = 2\ngrace_period = \"{}\"\nupgrade_socket = \"{}\"\n\
                 upgrade_timeout = \"{}\"\npid_file = \"{}\"\nerror_log = \"{}\"\n\
                 reuse_port = {}\n\n[proxy.ZeroDowntime]\nlisten = [{listen}]\n",
                self.grace,
                self.socket.display(),
                self.upgrade_timeout,
                self.pid_file.display(),
                self.dir.join("daemon.log").display(),
                self.reuse_port,
            ),
        )
        .expect("config");
        if let Some(h3) = &self.h3 {
            let text = format!(
                "tls_listen = [\"{}\"]\nquic_listen = [\"{}\"]\n\n[[proxy.ZeroDowntime.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
                h3.tls,
                h3.quic,
                h3.cert.cert.display(),
                h3.cert.key.display()
            );
            let mut conf = std::fs::read_to_string(&self.conf).expect("config");
            conf.push_str(&text);
            std::fs::write(&self.conf, conf).expect("config");
        }
    }

    /// Serves HTTP/3 too (a TLS listener for its certificate, and a QUIC one), from the
    /// next process started.
    fn with_h3(&mut self) {
        let cert =
            pingora_dsl_suite::certs::self_signed(&self.dir, &["localhost"]).expect("certificate");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        self.h3 = Some(H3Listeners {
            cert,
            tls: any,
            quic: any,
        });
        self.write_conf(None);
    }

    /// Starts a proxy process (`-u`: as the new process of an upgrade).
    fn spawn(&self, upgrade: bool, name: &str) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log");
        let mut cmd = Command::new(example_binary());
        cmd.arg("-c")
            .arg(&self.conf)
            .args(["--upstream", &self.origin.addr().to_string()])
            .stdout(Stdio::null())
            .stderr(log);
        if upgrade {
            cmd.arg("-u");
        }
        cmd.spawn().expect("start the example")
    }

    /// Starts the first proxy process on a port of its choosing (port 0), reads the address
    /// it bound from its output, and names that address in the config from then on (the
    /// process holds the port, and hands it to the next one).
    fn spawn_first(&mut self, name: &str) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log");
        let mut child = Command::new(example_binary())
            .arg("-c")
            .arg(&self.conf)
            .args(["--upstream", &self.origin.addr().to_string()])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the example");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            // Read to the end, so that the process never writes into a closed pipe.
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let line = tokio::task::block_in_place(|| {
            support::read_until(&lines, &mut seen, |l| l.contains(" listening on http://"))
        });
        self.addr = support::addr_after(&line, " listening on http://");
        if let Some(h3) = &mut self.h3 {
            for (marker, slot) in [
                (" listening on https://", &mut h3.tls),
                (" listening on quic ", &mut h3.quic),
            ] {
                let line = seen.iter().find(|l| l.contains(marker)).cloned();
                let line = line.unwrap_or_else(|| {
                    tokio::task::block_in_place(|| {
                        support::read_until(&lines, &mut seen, |l| l.contains(marker))
                    })
                });
                *slot = support::addr_after(&line, marker);
            }
        }
        self.write_conf(None);
        child
    }

    /// The pid the pid file names.
    fn pid_in_file(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Runs a daemon (`-d`, and `-u` for an upgrade) to the end of its foreground part.
    async fn run_daemon(&self, upgrade: bool) -> std::process::Output {
        let mut cmd = Command::new(example_binary());
        cmd.arg("-d")
            .arg("-c")
            .arg(&self.conf)
            .args(["--upstream", &self.origin.addr().to_string()]);
        if upgrade {
            cmd.arg("-u");
        }
        tokio::task::spawn_blocking(move || cmd.output().expect("run the example"))
            .await
            .expect("foreground part")
    }

    /// Runs the first daemon on a port of its choosing (port 0), reads the address it
    /// bound from its log, and names that address in the config from then on.
    async fn run_first_daemon(&mut self) -> std::process::Output {
        let out = self.run_daemon(false).await;
        if out.status.success() {
            let marker = " listening on http://";
            let deadline = Instant::now() + IO_TIMEOUT;
            let line = loop {
                if let Some(line) = self.log("daemon").lines().find(|l| l.contains(marker)) {
                    break line.to_owned();
                }
                assert!(
                    Instant::now() < deadline,
                    "the daemon never said where it listens:\n{}",
                    self.log("daemon")
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            self.addr = support::addr_after(&line, marker);
            self.write_conf(None);
        }
        out
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until the new process waits on the upgrade socket.
    async fn wait_for_upgrade_socket(&self) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while !self.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the new process never bound the upgrade socket"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to process `pid` once it handles it (bounded wait).
async fn signal_pid(pid: u32, sig: Signal) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !support::process_catches_signal(pid, sig) {
        assert!(
            Instant::now() < deadline,
            "process {pid} never handled {sig}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(Pid::from_raw(pid as i32), sig).expect("signal");
}

/// Sends `sig` to `child` once it handles it (bounded wait).
async fn signal(child: &Child, sig: Signal) {
    signal_pid(child.id(), sig).await;
}

/// Waits (bounded) for `child` to exit, returning whether it exited successfully.
async fn exits_within(child: &mut Child, within: Duration) -> Option<bool> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status.success());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One response as read off the wire.
struct Answer {
    status: u16,
    pid: Option<u32>,
    close: bool,
    body_len: usize,
}

/// Sends a GET for `path` on `stream` and reads the response (Content-Length framing).
async fn exchange(
    stream: &mut BufReader<TcpStream>,
    path: &str,
    close: bool,
) -> Result<Answer, String> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let request = format!("GET {path} HTTP/1.1\r\nHost: upgrade.test\r\n{connection}\r\n");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut status = 0;
    let mut pid = None;
    let mut length = None;
    let mut conn_close = false;
    let mut line = String::new();
    loop {
        line.clear();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before the response head ended (status {status})"
            ));
        }
        let text = line.trim_end();
        if text.is_empty() {
            break;
        }
        if status == 0 {
            status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {text:?}"))?;
            continue;
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(format!("bad header line {text:?}"));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "x-served-by-pid" => pid = value.parse().ok(),
            "content-length" => length = value.parse().ok(),
            "connection" => conn_close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let length: usize = length.ok_or("no content-length")?;
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("read body ({length} bytes): {e}"))?;
    Ok(Answer {
        status,
        pid,
        close: conn_close,
        body_len: length,
    })
}

async fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(BufReader::new(s)),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect timed out".into()),
    }
}

/// What the load saw.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    /// Responses per serving pid.
    pids: Mutex<BTreeMap<u32, u64>>,
}

impl Load {
    fn record(&self, answer: Result<Answer, String>) -> Option<Answer> {
        match answer {
            Ok(a) if a.status == 200 && a.pid.is_some() => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                if let Some(pid) = a.pid {
                    *self.pids.lock().expect("pids").entry(pid).or_default() += 1;
                }
                Some(a)
            }
            Ok(a) => {
                self.fail(format!("status {} pid {:?}", a.status, a.pid));
                None
            }
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn fail(&self, what: String) {
        self.failures.lock().expect("failures").push(what);
    }

    fn served_by(&self, pid: u32) -> u64 {
        self.pids
            .lock()
            .expect("pids")
            .get(&pid)
            .copied()
            .unwrap_or(0)
    }
}

/// Requests on one keep-alive connection after another, reconnecting only when a
/// response said `Connection: close`.
async fn keepalive_client(addr: SocketAddr, stop: Arc<AtomicBool>, load: Arc<Load>) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match conn.take() {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    load.fail(e);
                    continue;
                }
            },
        };
        let answer = tokio::time::timeout(IO_TIMEOUT, exchange(&mut stream, "/", false))
            .await
            .unwrap_or_else(|_| Err("response timed out".into()));
        if let Some(a) = load.record(answer) {
            if !a.close {
                conn = Some(stream);
            }
        }
    }
}

/// One new connection per request.
async fn new_connection_client(addr: SocketAddr, stop: Arc<AtomicBool>, load: Arc<Load>) {
    while !stop.load(Ordering::Relaxed) {
        let answer = async {
            let mut stream = connect(addr).await?;
            exchange(&mut stream, "/", true).await
        };
        let answer = tokio::time::timeout(IO_TIMEOUT, answer)
            .await
            .unwrap_or_else(|_| Err("response timed out".into()));
        load.record(answer);
    }
}

/// Waits until `pid` has served some of the load.
async fn wait_served_by(load: &Load, pid: u32, setup: &Setup, name: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while load.served_by(pid) < 20 {
        assert!(
            Instant::now() < deadline,
            "process {name} (pid {pid}) never served; its log:\n{}",
            setup.log(name)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_upgrades_under_load_lose_no_request() {
    let mut setup = Setup::new("upgrade-load", "60s", "20s").await;
    // With SO_REUSEPORT sockets (as N instances on one port run): handed over the same.
    setup.reuse_port = true;
    setup.write_conf(None);
    let first = setup.spawn_first("p0");
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    // The first process is up once a request succeeds.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Ok(mut s) = connect(setup.addr).await {
            if let Ok(a) = exchange(&mut s, "/", true).await {
                assert_eq!(a.pid, Some(first.id()));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "p0 never served:\n{}",
            setup.log("p0")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A long response (60 x 1 KiB, one every 200 ms: 12 s) in flight through every upgrade.
    let long = tokio::spawn({
        let addr = setup.addr;
        async move {
            let mut stream = connect(addr).await?;
            let answer = exchange(&mut stream, "/drip/60/200", false).await?;
            Ok::<_, String>((answer, Instant::now()))
        }
    });
    let mut clients = Vec::new();
    for _ in 0..KEEPALIVE_CLIENTS {
        clients.push(tokio::spawn(keepalive_client(
            setup.addr,
            stop.clone(),
            load.clone(),
        )));
    }
    for _ in 0..2 {
        clients.push(tokio::spawn(new_connection_client(
            setup.addr,
            stop.clone(),
            load.clone(),
        )));
    }
    wait_served_by(&load, first.id(), &setup, "p0").await;

    let mut pids = vec![first.id()];
    let mut retired: Vec<(String, Child)> = Vec::new();
    let mut current = ("p0".to_owned(), first);
    for n in 1..=5 {
        let name = format!("p{n}");
        // Either order works: new process first (it waits for the sockets), or SIGQUIT
        // first (the old one waits for a new process), as a systemd ExecReload does.
        let next = if n % 2 == 1 {
            let next = setup.spawn(true, &name);
            setup.wait_for_upgrade_socket().await;
            signal(&current.1, Signal::SIGQUIT).await;
            next
        } else {
            signal(&current.1, Signal::SIGQUIT).await;
            setup.spawn(true, &name)
        };
        wait_served_by(&load, next.id(), &setup, &name).await;
        pids.push(next.id());
        retired.push(std::mem::replace(&mut current, (name, next)));
    }
    let upgrades_done = Instant::now();
    // More load on the last process, then stop the clients.
    let last = current.1.id();
    let before = load.served_by(last);
    let deadline = Instant::now() + IO_TIMEOUT;
    while load.served_by(last) < before + 100 {
        assert!(
            Instant::now() < deadline,
            "the last process stopped serving"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }

    let (answer, finished) = long
        .await
        .expect("long response task")
        .expect("the long response completed");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body_len, 60 * DRIP_CHUNK);
    assert_eq!(
        answer.pid,
        Some(pids[0]),
        "the first process served it to the end"
    );
    assert!(
        finished > upgrades_done,
        "it was in flight during all five upgrades"
    );

    let failures = load.failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        failures.len() as u64 + load.ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)]
    );
    let served = load.pids.lock().expect("pids").clone();
    eprintln!("responses per serving pid, in upgrade order: {served:?} (pids {pids:?})");
    for pid in &pids {
        assert!(
            served.get(pid).copied().unwrap_or(0) > 0,
            "pid {pid} served nothing: {served:?}"
        );
    }
    assert_eq!(
        served.len(),
        6,
        "six processes, one after the other: {served:?}"
    );
    assert!(
        load.ok.load(Ordering::Relaxed) > 500,
        "load ran: {served:?}"
    );

    // Every old process drained and exited by itself, cleanly.
    for (name, mut child) in retired {
        let exited = exits_within(&mut child, Duration::from_secs(20)).await;
        assert_eq!(
            exited,
            Some(true),
            "{name} exits 0 after draining:\n{}",
            setup.log(&name)
        );
    }
    assert_eq!(
        setup.pid_in_file(),
        Some(current.1.id()),
        "the pid file names the serving process (no old one removed it)"
    );
    signal(&current.1, Signal::SIGTERM).await;
    assert_eq!(
        exits_within(&mut current.1, Duration::from_secs(10)).await,
        Some(true)
    );
    assert!(
        !setup.pid_file.exists(),
        "the last process removed its pid file"
    );
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("State:\tZ"))
}

/// The systemd way (`Type=forking`, `PIDFile=`, `ExecReload` sending SIGQUIT and then
/// starting `-d -u`): the foreground part of the new daemon returns once it serves, and the
/// pid file then names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_is_upgraded_by_sigquit_then_a_new_daemon() {
    let mut setup = Setup::new("upgrade-daemon", "5s", "20s").await;
    let out = setup.run_first_daemon().await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old = setup.pid_in_file().expect("the first daemon's pid");
    let mut s = connect(setup.addr).await.expect("connect");
    let a = exchange(&mut s, "/", false).await.expect("served");
    assert_eq!(a.pid, Some(old));

    signal_pid(old, Signal::SIGQUIT).await;
    let out = setup.run_daemon(true).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        setup.log("daemon")
    );
    let new = setup.pid_in_file().expect("the new daemon's pid");
    assert_ne!(new, old);
    // The kept-alive connection gets its answers from the old process until one (as soon
    // as the old one drains) is marked as its last.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let a = exchange(&mut s, "/", false)
            .await
            .expect("served while draining");
        assert_eq!(a.pid, Some(old));
        if a.close {
            break;
        }
        assert!(Instant::now() < deadline, "the old daemon never drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut s = connect(setup.addr).await.expect("connect");
    let a = exchange(&mut s, "/", true)
        .await
        .expect("served by the new daemon");
    assert_eq!(a.pid, Some(new));

    let deadline = Instant::now() + IO_TIMEOUT;
    while alive(old) {
        assert!(Instant::now() < deadline, "the old daemon drains and exits");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        setup.pid_in_file(),
        Some(new),
        "the old daemon left the pid file alone"
    );
    signal_pid(new, Signal::SIGTERM).await;
    let deadline = Instant::now() + IO_TIMEOUT;
    while alive(new) || setup.pid_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the new daemon exits and removes its pid file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_leaves_the_old_process_serving() {
    // The new configuration adds an address someone else holds: the new process receives
    // the sockets, cannot bind the extra one, and exits before saying ready.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut setup = Setup::new("upgrade-fail", "5s", "1s").await;
    let mut old = setup.spawn_first("old");
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut keepalive = loop {
        if let Ok(mut s) = connect(setup.addr).await {
            if exchange(&mut s, "/", false).await.is_ok() {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "old never served:\n{}",
            setup.log("old")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // SIGQUIT and no new process within the upgrade timeout (1 s): logged, nothing changes.
    signal(&old, Signal::SIGQUIT).await;
    let deadline = Instant::now() + IO_TIMEOUT;
    while !setup.log("old").contains("no new process came") {
        assert!(Instant::now() < deadline, "{}", setup.log("old"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = exchange(&mut keepalive, "/", false)
        .await
        .expect("still served");
    assert_eq!(a.pid, Some(old.id()));

    setup.write_conf(Some(taken.local_addr().expect("addr")));
    let mut new = setup.spawn(true, "new");
    setup.wait_for_upgrade_socket().await;
    signal(&old, Signal::SIGQUIT).await;
    assert_eq!(
        exits_within(&mut new, IO_TIMEOUT).await,
        Some(false),
        "the new process fails"
    );
    assert!(
        setup.log("new").contains("cannot bind"),
        "{}",
        setup.log("new")
    );

    // The old process still serves: on the open connection and on new ones.
    let a = exchange(&mut keepalive, "/", false)
        .await
        .expect("keep-alive still served");
    assert_eq!(a.pid, Some(old.id()));
    for _ in 0..20 {
        let mut s = connect(setup.addr).await.expect("connect");
        let a = exchange(&mut s, "/", true)
            .await
            .expect("new connection served");
        assert_eq!((a.status, a.pid), (200, Some(old.id())));
    }
    assert!(
        old.try_wait().expect("wait").is_none(),
        "the old process runs on"
    );
    let log = setup.log("old");
    assert!(log.contains("exited before it was ready"), "{log}");
    signal(&old, Signal::SIGTERM).await;
    assert_eq!(exits_within(&mut old, IO_TIMEOUT).await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_then_exits_within_the_grace_period() {
    let mut setup = Setup::new("sigterm", "5s", "20s").await;
    let mut proxy = setup.spawn_first("proxy");
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut idle = loop {
        if let Ok(mut s) = connect(setup.addr).await {
            if exchange(&mut s, "/", false).await.is_ok() {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never served:\n{}",
            setup.log("proxy")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Three responses of 1.5 s each in flight, and one idle keep-alive connection.
    let asked = setup.origin.requests();
    let mut in_flight = Vec::new();
    for _ in 0..3 {
        let addr = setup.addr;
        in_flight.push(tokio::spawn(async move {
            let mut s = connect(addr).await?;
            let answer = exchange(&mut s, "/drip/15/100", false).await?;
            // Then the drained connection is closed (after its idle linger).
            let mut buf = [0u8; 1];
            match tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf)).await {
                Ok(Ok(0)) => Ok(answer),
                other => Err(format!(
                    "connection not closed after its response: {other:?}"
                )),
            }
        }));
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    while setup.origin.requests() < asked + 3 {
        assert!(
            Instant::now() < deadline,
            "the three requests never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let term = Instant::now();
    signal(&proxy, Signal::SIGTERM).await;

    for r in in_flight {
        let a = r.await.expect("task").expect("completes after SIGTERM");
        assert_eq!((a.status, a.body_len), (200, 15 * DRIP_CHUNK));
    }
    let mut buf = [0u8; 1];
    let idle_end = tokio::time::timeout(IO_TIMEOUT, idle.read(&mut buf)).await;
    assert!(
        matches!(idle_end, Ok(Ok(0))),
        "the idle keep-alive connection is closed"
    );
    assert_eq!(
        exits_within(&mut proxy, Duration::from_secs(10)).await,
        Some(true)
    );
    let took = term.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM, past the 5 s grace period"
    );
    assert!(
        TcpStream::connect(setup.addr).await.is_err(),
        "nothing listens after the exit"
    );
}

/// `-t` needs no signal, but belongs to the process's life too: a good config passes, a
/// broken one is refused with the reason.
#[test]
fn config_test_mode_reports_good_and_broken_files() {
    let dir = std::env::temp_dir().join(format!("pdsl-conftest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.toml");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &good,
        // Port 0: the check binds what it would listen on, and a fixed port may be taken.
        "[server]\nupgrade_socket = \"/tmp/x.sock\"\nupgrade_timeout = \"5s\"\n\n\
         [proxy.ZeroDowntime]\nlisten = [\"127.0.0.1:0\"]\n",
    )
    .expect("write");
    std::fs::write(&bad, "[server]\nupgrade_timeout = \"soon\"\n").expect("write");
    let run = |conf: &Path| {
        Command::new(example_binary())
            .arg("-t")
            .arg("-c")
            .arg(conf)
            .args(["--upstream", "127.0.0.1:9"])
            .output()
            .expect("run")
    };
    let ok = run(&good);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration OK"));
    let broken = run(&bad);
    assert!(!broken.status.success());
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(err.contains("server.upgrade_timeout"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTTP/3 requests on one connection after another: a new connection once the old one
/// refuses new requests (its GOAWAY) or closes. A request the server says it did not
/// process (a GOAWAY before it, or a stream reset H3_REQUEST_REJECTED) is sent again on a
/// new connection, as RFC 9114 lets a client do; any other error is a failure.
async fn h3_client(quic: SocketAddr, ca: PathBuf, stop: Arc<AtomicBool>, load: Arc<Load>) {
    use support::h3_client::connect_within;
    while !stop.load(Ordering::Relaxed) {
        let mut send = match connect_within(quic, &ca, IO_TIMEOUT).await {
            Ok((send, _endpoint)) => send,
            Err(e) => {
                load.fail(format!("HTTP/3 connect: {e}"));
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let request = http::Request::get("https://localhost/")
                .body(())
                .expect("request");
            // Not sent: the connection takes no new request (GOAWAY) — a new one will.
            let Ok(mut stream) = send.send_request(request).await else {
                break;
            };
            let answer = tokio::time::timeout(IO_TIMEOUT, async {
                stream.finish().await?;
                let response = stream.recv_response().await?;
                while stream.recv_data().await?.is_some() {}
                Ok::<_, h3::error::StreamError>(response)
            })
            .await;
            match answer {
                Ok(Ok(response)) => {
                    let pid = response
                        .headers()
                        .get("x-served-by-pid")
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    load.record(Ok(Answer {
                        status: response.status().as_u16(),
                        pid,
                        close: false,
                        body_len: 0,
                    }));
                }
                Ok(Err(e)) if rejected(&e) => break,
                Ok(Err(e)) => {
                    load.fail(format!("HTTP/3 request: {e}"));
                    break;
                }
                Err(_) => {
                    load.fail("HTTP/3 response timed out".into());
                    break;
                }
            }
        }
    }
}

/// Whether the server said it did not process the request (so it may be sent again): the
/// stream reset with H3_REQUEST_REJECTED, a GOAWAY that excludes it, or the connection
/// closed without error after a GOAWAY.
fn rejected(e: &h3::error::StreamError) -> bool {
    use h3::error::{Code, StreamError};
    match e {
        StreamError::RemoteTerminate { code, .. } | StreamError::StreamError { code, .. } => {
            *code == Code::H3_REQUEST_REJECTED
        }
        StreamError::RemoteClosing { .. } => true,
        other => other.is_h3_no_error(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_under_http3_load_lose_no_request() {
    let mut setup = Setup::new("upgrade-h3", "30s", "20s").await;
    setup.with_h3();
    let first = setup.spawn_first("p0");
    let (quic, ca) = {
        let h3 = setup.h3.as_ref().expect("h3");
        (h3.quic, h3.cert.cert.clone())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(h3_client(quic, ca.clone(), stop.clone(), load.clone())))
        .collect();
    wait_served_by(&load, first.id(), &setup, "p0").await;
    let mut pids = vec![first.id()];
    let mut retired = Vec::new();
    let mut current = ("p0".to_owned(), first);
    for n in 1..=2 {
        let name = format!("p{n}");
        let next = setup.spawn(true, &name);
        setup.wait_for_upgrade_socket().await;
        signal(&current.1, Signal::SIGQUIT).await;
        wait_served_by(&load, next.id(), &setup, &name).await;
        pids.push(next.id());
        retired.push(std::mem::replace(&mut current, (name, next)));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let failures = load.failures.lock().expect("failures").clone();
    let served = load.pids.lock().expect("pids").clone();
    eprintln!("HTTP/3 responses per serving pid: {served:?} (pids {pids:?})");
    assert!(
        failures.is_empty(),
        "{} of {} HTTP/3 requests failed: {:?}",
        failures.len(),
        failures.len() as u64 + load.ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)]
    );
    for pid in &pids {
        assert!(
            served.get(pid).copied().unwrap_or(0) > 0,
            "pid {pid} served nothing"
        );
    }
    for (name, mut child) in retired {
        let exited = exits_within(&mut child, Duration::from_secs(40)).await;
        assert_eq!(
            exited,
            Some(true),
            "{name} exits 0 after draining:\n{}",
            setup.log(&name)
        );
    }
    signal(&current.1, Signal::SIGTERM).await;
    assert_eq!(
        exits_within(&mut current.1, Duration::from_secs(10)).await,
        Some(true)
    );
}

//! Daemon mode of a declared proxy, as a real process: `-d` detaches, writes the pid file,
//! logs to the error log, serves, drops to the configured user, and on SIGTERM exits and
//! removes its pid file. Runs the `load_balancer` example binary that `cargo test` builds.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pingora_dsl_suite::origin::Origin;

/// `target/<profile>/examples/load_balancer`, next to this test's own binary.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("examples").join("load_balancer")
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The uid a process runs as, from /proc.
fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_detaches_writes_its_pid_serves_and_cleans_up_on_sigterm() {
    let binary = example_binary();
    assert!(binary.exists(), "{} not built", binary.display());
    let origin = Origin::start("daemon-origin").await.expect("origin");
    let dir = std::env::temp_dir().join(format!("pingora-dsl-daemon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // World-writable, so a daemon that dropped to `nobody` can remove its pid file.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let (pid_file, log_file, conf) = (dir.join("lb.pid"), dir.join("lb.log"), dir.join("lb.toml"));
    let as_root = nix::unistd::Uid::effective().is_root();
    let user_line = if as_root { "user = \"nobody\"\n" } else { "" };
    std::fs::write(
        &conf,
        format!(
            "[server]\nthreads = 1\npid_file = \"{}\"\nerror_log = \"{}\"\n{user_line}",
            pid_file.display(),
            log_file.display()
        ),
    )
    .expect("config");
    let status = Command::new(&binary)
        .args(["-d", "-c"])
        .arg(&conf)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--upstream", &origin.addr().to_string()])
        .status()
        .expect("run the example");
    assert!(
        status.success(),
        "the foreground part exits 0 once detached"
    );

    // The foreground part exits once the daemon reported its start: the pid file is there.
    assert!(
        pid_file.exists(),
        "the pid file exists when the foreground part exits"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon runs"
    );

    // It serves, on the port it chose and named in its log.
    let marker = " listening on http://";
    wait_until("the listening line in the log", || {
        std::fs::read_to_string(&log_file).is_ok_and(|l| l.contains(marker))
    });
    let log = std::fs::read_to_string(&log_file).expect("the log");
    let line = log.lines().find(|l| l.contains(marker)).expect("the line");
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    let addr = &rest[..rest.find('/').unwrap_or(rest.len())];
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(format!("http://{addr}/").parse().expect("uri")),
    )
    .await
    .expect("in time")
    .expect("a response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-origin"], "daemon-origin");

    // Its log went to the error log, and it dropped root when told to.
    wait_until("the log", || {
        std::fs::read_to_string(&log_file).is_ok_and(|l| l.contains("listening on"))
    });
    if as_root {
        let nobody = nix::unistd::User::from_name("nobody")
            .expect("lookup")
            .expect("a nobody user")
            .uid
            .as_raw();
        assert_eq!(uid_of(pid), Some(nobody), "the daemon runs as nobody");
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the daemon");
    wait_until("the daemon to exit", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains("State:\tZ"))
    });
    wait_until("the pid file to go", || !pid_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_daemon_refuses_to_start_with_threads_running_and_says_why() {
    let binary = example_binary();
    // Without --upstream the example starts its demo origins on a thread first.
    let out = Command::new(&binary)
        .args(["-d", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run the example");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot run as a daemon"), "{stderr}");
}

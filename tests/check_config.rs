//! `-t` gives the verdict a start would, and writes nothing: run on the `load_balancer`
//! example binary (built by `cargo test`) with `--upstream` (so no demo origins start).
//! It asks each discovery source once: the group's check in-process (a resolver under the
//! test's control, never the system's), and a declared `discover file` in a process.

mod support;

use std::process::Command;
use std::time::Duration;

use clap::Parser as _;
use pingora_dsl::lb::discovery::{Discovery, DnsDiscovery, FileDiscovery, Resolve, ResolveFuture};
use pingora_dsl::lb::Strategy;
use pingora_dsl::lb::UpstreamGroup;
use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use support::example_binary;

/// Runs the example with `args` plus an upstream; returns (success, stdout + stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(example_binary("load_balancer"))
        .args(["--upstream", "127.0.0.1:9"])
        .args(args)
        .output()
        .expect("the example runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn an_address_in_use_or_missing_fails_the_test_as_it_would_a_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().map(|a| a.to_string()).expect("addr");
    let (ok, text) = run(&["-t", "--listen", &taken]);
    assert!(!ok && text.contains(&taken), "{text}");
    let (ok, text) = run(&["-t", "--listen", "127.0.0.1:0", "--admin", &taken]);
    assert!(!ok && text.contains("admin"), "{text}");
    // An address this machine does not have.
    let (ok, text) = run(&["-t", "--listen", "10.255.255.1:6240"]);
    assert!(!ok && text.contains("10.255.255.1"), "{text}");
    let (ok, text) = run(&["-t", "--listen", "127.0.0.1:0"]);
    assert!(ok && text.contains("configuration OK"), "{text}");
}

#[test]
fn bad_flags_and_an_empty_listen_list_are_refused_with_their_name() {
    let (ok, text) = run(&["-t", "--listen", "127.0.0.1:99999"]);
    assert!(!ok && text.contains("--listen 127.0.0.1:99999"), "{text}");
    let (ok, text) = run(&["-t", "--threads", "0", "--listen", "127.0.0.1:0"]);
    assert!(!ok && text.contains("--threads 0"), "{text}");
    let dir = std::env::temp_dir().join(format!("pdsl-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("lb.toml");
    std::fs::write(&conf, "[proxy.BlogLoadBalancer]\nlisten = []\n").expect("write");
    let (ok, text) = run(&["-t", "-c", conf.to_str().expect("utf-8")]);
    assert!(!ok && text.contains("no listening address"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_test_creates_no_log_file() {
    let dir = std::env::temp_dir().join(format!("pdsl-check-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let access = dir.join("access.log");
    let error = dir.join("error.log");
    let conf = dir.join("lb.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nerror_log = {:?}\n\n[proxy.BlogLoadBalancer]\naccess_log = {:?}\n",
            error.display().to_string(),
            access.display().to_string()
        ),
    )
    .expect("write");
    let (ok, text) = run(&[
        "-t",
        "--listen",
        "127.0.0.1:0",
        "-c",
        conf.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{text}");
    assert!(!access.exists(), "no access log file");
    assert!(!error.exists(), "no error log file");
    // A log in a directory that does not exist is refused.
    std::fs::write(
        &conf,
        "[proxy.BlogLoadBalancer]\naccess_log = \"/nonexistent-dir/access.log\"\n",
    )
    .expect("write");
    let (ok, text) = run(&[
        "-t",
        "--listen",
        "127.0.0.1:0",
        "-c",
        conf.to_str().expect("utf-8"),
    ]);
    assert!(!ok && text.contains("access log"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

// --- Discovery sources, asked once by `-t` ---

/// A directory of this test's own, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pdsl-check-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A resolver under the test's control (no system resolver, no DNS): `origins.test` is
/// 127.0.0.1 and ::1, `silent.test` never answers, every other name is unknown.
struct TestResolver;

impl Resolve for TestResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            match name {
                "origins.test" => Ok(vec![
                    std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::Ipv6Addr::LOCALHOST.into(),
                ]),
                "silent.test" => std::future::pending().await,
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{name}: no such name"),
                )),
            }
        })
    }
}

fn group_discovering(name: &str, source: impl Discovery) -> UpstreamGroup {
    UpstreamGroup::new(name, Vec::new(), Strategy::round_robin())
        .with_discovery(source, Duration::from_secs(5))
}

#[test]
fn a_discover_file_is_checked_once_it_exists_parses_and_names_peers() {
    let dir = TempDir::new("file");
    let file = dir.0.join("peers.txt");
    let shown = file.display().to_string();
    let check = || group_discovering("backends", FileDiscovery::new(&file)).check_discovery();

    std::fs::write(&file, "# two\n127.0.0.1:8001\n127.0.0.1:8002 weight 3\n").expect("write");
    let line = check().expect("a good file passes").expect("a line");
    assert_eq!(
        line,
        format!(
            "upstream backends: discover file {shown}: 2 peers (127.0.0.1:8001, 127.0.0.1:8002)"
        )
    );

    std::fs::write(&file, "127.0.0.1:8001\nnot-a-peer\n").expect("write");
    let e = check().expect_err("a bad line fails");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "upstream backends: discover file {shown}: line 2:"
        )),
        "{text}"
    );

    std::fs::write(&file, "# nobody yet\n").expect("write");
    let text = check().expect_err("no peers fails").to_string();
    assert!(text.ends_with(": found no peers"), "{text}");

    std::fs::remove_file(&file).expect("remove");
    let e = check().expect_err("a missing file fails");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("upstream backends: discover file {shown}: ")),
        "{e}"
    );
}

#[test]
fn a_discover_dns_name_is_checked_once_through_the_groups_resolver_within_a_bound() {
    let check = |name: &str| {
        group_discovering(
            "by_name",
            DnsDiscovery::with_resolver(name, 8080, TestResolver),
        )
        .check_discovery_within(Duration::from_millis(300))
    };
    let line = check("origins.test").expect("resolves").expect("a line");
    assert_eq!(
        line,
        "upstream by_name: discover dns origins.test:8080: 2 peers (127.0.0.1:8080, [::1]:8080)"
    );

    let text = check("nowhere.test").expect_err("unknown").to_string();
    assert_eq!(
        text,
        "upstream by_name: discover dns nowhere.test:8080: nowhere.test: no such name"
    );

    let started = std::time::Instant::now();
    let e = check("silent.test").expect_err("no answer");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(
        e.to_string()
            .starts_with("upstream by_name: discover dns silent.test:8080: no answer within"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout given"
    );

    // A group without a source has nothing to check; one called from a runtime's thread
    // works too (the check runs on a thread of its own).
    let fixed = UpstreamGroup::new(
        "fixed",
        vec![Backend::new("127.0.0.1:9".parse().expect("addr"))],
        Strategy::round_robin(),
    );
    assert!(fixed.check_discovery().expect("nothing to check").is_none());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let line = runtime.block_on(async { check("origins.test") });
    assert!(line.expect("resolves").is_some());
}

proxy! {
    /// Its peers come from `peers.txt` in the working directory.
    pub FileDiscovered {
        listen "127.0.0.1:6188";
        upstream pool {
            discover file "peers.txt" every 1s;
        }
        route => upstream pool;
    }
}

/// Set (to the arguments, separated by newlines) in the environment of the process
/// [`discovery_child`] runs in.
const CHILD_ARGS: &str = "PDSL_CHECK_CHILD_ARGS";

/// Not a test of its own (it returns at once): the process that
/// `the_test_checks_a_discover_file_with_a_line_and_fails_on_a_bad_one` runs, which runs
/// the declared `FileDiscovered` with the arguments given in the environment.
#[test]
fn discovery_child() {
    let Some(args) = std::env::var_os(CHILD_ARGS) else {
        return;
    };
    let args = args.to_string_lossy().into_owned();
    let cli = match ProxyCli::try_parse_from(std::iter::once("file_discovered").chain(args.lines()))
    {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let code = FileDiscovered::run_with(cli);
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

/// Runs `FileDiscovered` in `dir` with `args` (listening on a port 0); returns (success,
/// stdout + stderr).
fn run_discovered(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let args = [&["--listen", "127.0.0.1:0"], args].concat();
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "discovery_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ARGS, args.join("\n"))
        .current_dir(dir)
        .output()
        .expect("the test binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_test_checks_a_discover_file_with_a_line_and_fails_on_a_bad_one() {
    let dir = TempDir::new("discover");
    let (ok, text) = run_discovered(&dir.0, &["-t"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("upstream pool: discover file peers.txt: "),
        "the missing file named with its group: {text}"
    );
    assert!(!text.contains("configuration OK"), "{text}");

    std::fs::write(dir.0.join("peers.txt"), "127.0.0.1:8001\n127.0.0.1:8002\n").expect("write");
    let (ok, text) = run_discovered(&dir.0, &["-t"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "upstream pool: discover file peers.txt: 2 peers (127.0.0.1:8001, 127.0.0.1:8002)"
        ),
        "{text}"
    );
    assert!(text.contains("configuration OK"), "{text}");

    std::fs::write(dir.0.join("peers.txt"), "127.0.0.1:8001 weight 0\n").expect("write");
    let (ok, text) = run_discovered(&dir.0, &["-t"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "upstream pool: discover file peers.txt: line 1: a weight goes from 1 to 256"
        ),
        "{text}"
    );

    // Peers on the command line replace the source: nothing to check.
    std::fs::remove_file(dir.0.join("peers.txt")).expect("remove");
    let (ok, text) = run_discovered(&dir.0, &["-t", "--upstream", "127.0.0.1:9"]);
    assert!(ok, "{text}");
    assert!(!text.contains("discover file"), "{text}");
}

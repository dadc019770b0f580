//! `-t` gives the verdict a start would, and writes nothing: run on the `load_balancer`
//! example binary (built by `cargo test`) with `--upstream` (so no demo origins start).

mod support;

use std::process::Command;

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

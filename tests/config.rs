//! The config file of declared proxies: the file overrides the declaration, flags override
//! the file, bad files are refused with the key's path and line, and `--print-config`'s
//! output is itself a valid config that changes nothing.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl::server::config::Config;
use pingora_dsl::server::RuntimeFlavor;
use pingora_dsl_suite::origin::Origin;
use support::{catches_signal, client, get, send, wait_until};

/// Bound on every wait for a condition.
const WAIT: Duration = Duration::from_secs(10);

proxy! {
    /// A proxy whose values a config file changes.
    pub Configured {
        listen "127.0.0.1:6188";
        upstream web {
            peers ["127.0.0.1:8001"];
            timeout connect 5s, read 30s;
        }
        upstream api {
            peers ["127.0.0.1:8002"];
        }
        route path "/api" => upstream api;
        route => upstream web;
    }
}

fn cli_with(text: &str) -> ProxyCli {
    ProxyCli {
        config: Some(Config::parse(text).expect("valid config")),
        ..ProxyCli::default()
    }
}

#[tokio::test]
async fn the_file_overrides_the_declaration_and_flags_override_the_file() {
    let (web, api, api2) = (
        Origin::start("web").await.expect("origin"),
        Origin::start("api").await.expect("origin"),
        Origin::start("api-2").await.expect("origin"),
    );
    let text = format!(
        r#"
[server]
threads = 3
work_stealing = true
grace_period = "2s"
graceful_shutdown_timeout = "250ms"
upgrade_socket = "/run/configured.sock"
upgrade_timeout = "7s"

[proxy.Configured]
listen = ["127.0.0.1:0"]
max_idle_per_peer = 0

[proxy.Configured.upstream.web]
peers = ["{}"]
timeout = {{ read = "250ms" }}
retry = 1

[proxy.Configured.upstream.api]
peers = ["{} weight 2"]
"#,
        web.addr(),
        api.addr()
    );
    let mut cli = cli_with(&text);
    let conf = cli.server_conf().expect("server section");
    assert_eq!(conf.threads, 3);
    assert!(matches!(conf.flavor, RuntimeFlavor::WorkStealing));
    assert_eq!(conf.grace_period, Duration::from_secs(2));
    assert_eq!(conf.shutdown_timeout, Duration::from_millis(250));
    let upgrade = conf.upgrade.as_ref().expect("upgrade settings");
    assert_eq!(upgrade.socket, std::path::Path::new("/run/configured.sock"));
    assert_eq!(upgrade.timeout, Duration::from_secs(7));

    let mut proxy = Configured::new();
    cli.configure("Configured", proxy.router_mut())
        .expect("applies");
    let web_group = proxy.router().group("web").expect("group");
    assert_eq!(web_group.timeouts().read, Duration::from_millis(250));
    assert_eq!(
        web_group.timeouts().connect,
        Duration::from_secs(5),
        "declared value kept"
    );
    assert_eq!(web_group.retries(), 1);
    assert_eq!(
        proxy.router().group("api").expect("group").backends()[0].weight,
        2
    );
    assert_eq!(
        cli.listen_for("Configured", Configured::LISTEN)
            .expect("listen"),
        ["127.0.0.1:0"]
    );

    let mut options = Configured::options();
    cli.configure_options("Configured", &mut options)
        .expect("applies");
    assert_eq!(options.client.max_idle_per_peer, 0);
    let mut service = proxy.service_with(options);
    service.clear_tcp();
    for addr in cli
        .listen_for("Configured", Configured::LISTEN)
        .expect("listen")
    {
        service.add_tcp(&addr);
    }
    let running = service.spawn().expect("starts");
    let c = client();
    let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
    assert_eq!(resp.headers()["x-origin"], "web");
    let (resp, _) = send(&c, get(running.addr(), "/api/x", None)).await;
    assert_eq!(resp.headers()["x-origin"], "api");
    // The file's pool size 0: no upstream connection is kept, each request opens one.
    for _ in 0..4 {
        let (resp, _) = send(&c, get(running.addr(), "/", None)).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(web.connections(), 5, "one upstream connection per request");
    // The file's 250 ms read timeout is in force.
    let (resp, _) = send(&c, get(running.addr(), "/stall", None)).await;
    assert_eq!(resp.status(), 504);

    // Flags win over the file.
    cli.upstream = vec![format!("api={}", api2.addr())];
    cli.listen = vec!["127.0.0.1:7777".into()];
    cli.threads = Some(1);
    let mut proxy = Configured::new();
    cli.configure("Configured", proxy.router_mut())
        .expect("applies");
    assert_eq!(
        proxy.router().group("api").expect("group").backends()[0].addr,
        api2.addr()
    );
    assert_eq!(
        cli.listen_for("Configured", Configured::LISTEN)
            .expect("listen"),
        ["127.0.0.1:7777"]
    );
    assert_eq!(cli.server_conf().expect("conf").threads, 1);
}

#[test]
fn bad_files_are_refused_with_the_path_and_line() {
    let unknown =
        Config::parse("[proxy.Configured.upstream.web]\npeers = [\"127.0.0.1:1\"]\nretyr = 2\n")
            .expect_err("unknown key");
    let text = unknown.to_string();
    assert!(text.contains("proxy.Configured.upstream.web"), "{text}");
    assert!(text.contains("line 3"), "{text}");
    assert!(text.contains("retyr"), "{text}");

    let config = Config::parse("[proxy.Configured.upstream.nope]\nretry = 1\n").expect("parses");
    let e = config
        .apply_proxy("Configured", Configured::new().router_mut())
        .expect_err("unknown group");
    assert!(e.to_string().contains("no upstream named \"nope\""), "{e}");

    let config = Config::parse("[proxy.Other]\nlisten = [\"127.0.0.1:1\"]\n").expect("parses");
    let e = config
        .check_proxies(&["Configured"])
        .expect_err("unknown proxy");
    assert!(e.to_string().contains("no proxy named \"Other\""), "{e}");

    for (bad, why) in [
        (
            "[proxy.Configured.upstream.web]\npeers = [\"localhost:80\"]\n",
            "IP:PORT",
        ),
        (
            "[proxy.Configured.upstream.web]\npeers = [\"127.0.0.1:1 weight 0\"]\n",
            "weight",
        ),
        (
            "[proxy.Configured.upstream.web]\ntimeout = { read = \"10\" }\n",
            "unit",
        ),
        (
            "[proxy.Configured.upstream.web]\npeers = []\n",
            "at least one peer",
        ),
    ] {
        let config = Config::parse(bad).expect("parses");
        let e = config
            .apply_proxy("Configured", Configured::new().router_mut())
            .expect_err(bad);
        assert!(e.to_string().contains(why), "{e}");
    }
    let config = Config::parse("[server]\ngrace_period = \"soon\"\n").expect("parses");
    let mut conf = ServerConf::default();
    assert!(config.apply_server(&mut conf).is_err());
}

#[test]
fn the_printed_config_is_a_valid_config_that_changes_nothing() {
    let proxy = Configured::new();
    let conf = ServerConf::default();
    let listen = vec!["127.0.0.1:6188".to_owned()];
    let effective = Config::effective(
        "Configured",
        &listen,
        proxy.router(),
        &Configured::options(),
        &conf,
        Some("127.0.0.1:9100"),
    );
    let text = effective.to_toml().expect("toml");
    let reparsed = Config::parse(&text).expect("the printed config parses");
    assert_eq!(reparsed, effective);
    let mut again = Configured::new();
    reparsed
        .apply_proxy("Configured", again.router_mut())
        .expect("applies");
    let round_trip = Config::effective(
        "Configured",
        &listen,
        again.router(),
        &Configured::options(),
        &conf,
        Some("127.0.0.1:9100"),
    );
    assert_eq!(round_trip, effective);
    assert!(text.contains("read = \"30s\""), "{text}");
    assert!(text.contains("admin = \"127.0.0.1:9100\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_peers_and_timeouts_without_failing_a_request() {
    let (old, new) = (
        Origin::start("old").await.expect("origin"),
        Origin::start("new").await.expect("origin"),
    );
    let dir = std::env::temp_dir().join(format!("pingora-dsl-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("proxy.toml");
    let write = |peer: std::net::SocketAddr, read: &str| {
        std::fs::write(
            &path,
            format!("[proxy.Configured.upstream.web]\npeers = [\"{peer}\"]\ntimeout = {{ read = \"{read}\" }}\n"),
        )
        .expect("write config");
    };
    write(old.addr(), "30s");
    let cli = ProxyCli {
        config: Some(Config::load(&path).expect("loads")),
        ..ProxyCli::default()
    };
    let mut proxy = Configured::new();
    cli.configure("Configured", proxy.router_mut())
        .expect("applies");
    let groups = proxy.router().groups().to_vec();
    let reloader = pingora_dsl::server::cli::Reloader::new(
        "Configured",
        &ProxyCli::default(),
        Configured::declared_router,
        groups.clone(),
    );
    let mut service = proxy.service();
    service.clear_tcp();
    service.add_tcp("127.0.0.1:0");
    let running = service.spawn().expect("starts");
    let addr = running.addr();

    // The reload task, as `run()` starts it, woken by a real SIGHUP.
    let (trigger, watch) = pingora_dsl::shutdown::shutdown_channel();
    let reloading = tokio::spawn(pingora_dsl::server::cli::reload_on_hangup(
        reloader,
        Some(path.clone()),
        watch,
    ));
    // A SIGHUP before the task's handler is installed would end the test process.
    wait_until(WAIT, "the reload task catches SIGHUP", || {
        catches_signal(Signal::SIGHUP)
    })
    .await;

    // Four clients in a loop until told to stop, each counting what it completed.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let completed: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::default()).collect();
    let mut clients = Vec::new();
    for done in &completed {
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(WAIT, c.request(get(addr, "/", None))).await {
                    Ok(Ok(resp)) if resp.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    wait_until(WAIT, "the old peer serves the load", || {
        old.requests() >= 20
    })
    .await;
    let before = new.requests();
    write(new.addr(), "250ms");
    let web = groups.iter().find(|g| g.name() == "web").expect("group");
    let reloaded = || web.backends().first().map(|b| b.addr) == Some(new.addr());
    let raised = Instant::now();
    while !reloaded() {
        assert!(raised.elapsed() < WAIT, "SIGHUP never reloaded the file");
        nix::sys::signal::raise(Signal::SIGHUP).expect("raise SIGHUP");
        // Installed is not yet listening: a signal in between is lost (tokio registers the
        // listener just after the handler), so raise it again if nothing happens.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while !reloaded() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
    // A request chose its peer before the switch only if it was in flight then: once every
    // client has completed the one it had in flight, the old peer has seen all it will.
    let marks: Vec<usize> = completed.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    wait_until(WAIT, "each client finished its request in flight", || {
        completed
            .iter()
            .zip(&marks)
            .all(|(c, mark)| c.load(Ordering::SeqCst) > *mark)
    })
    .await;
    let old_after = old.requests();
    let new_after = new.requests();
    wait_until(WAIT, "the new peer serves the load", || {
        new.requests() >= new_after + 40
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no request failed");
    assert_eq!(before, 0, "the new peer was unused before the reload");
    assert_eq!(
        old.requests(),
        old_after,
        "after the reload the old peer gets no request"
    );
    assert_eq!(web.timeouts().read, Duration::from_millis(250));

    // A key deleted from the file reverts to its declared value on the next reload.
    std::fs::write(
        &path,
        format!(
            "[proxy.Configured.upstream.web]\npeers = [\"{}\"]\n",
            new.addr()
        ),
    )
    .expect("write");
    let check = pingora_dsl::server::cli::Reloader::new(
        "Configured",
        &ProxyCli::default(),
        Configured::declared_router,
        groups.clone(),
    );
    check.reload(&path).expect("reloads");
    assert_eq!(
        web.timeouts().read,
        Duration::from_secs(30),
        "back to the declared 30s"
    );

    // An invalid file changes nothing.
    std::fs::write(
        &path,
        "[proxy.Configured.upstream.web]\npeers = [\"nonsense\"]\n",
    )
    .expect("write");
    let check = pingora_dsl::server::cli::Reloader::new(
        "Configured",
        &ProxyCli::default(),
        Configured::declared_router,
        groups.clone(),
    );
    assert!(check.reload(&path).is_err());
    assert_eq!(web.backends()[0].addr, new.addr());
    trigger.trigger();
    tokio::time::timeout(WAIT, reloading)
        .await
        .expect("the reload task stops on shutdown")
        .expect("the reload task");
    let _ = std::fs::remove_dir_all(&dir);
}

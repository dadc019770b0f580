//! A connect that fails sends nothing, so trying another peer is always safe: declared
//! proxies do it by default, with no `retry` declared, once per peer of the group (as
//! nginx's `proxy_next_upstream error timeout`). Tried on the `load_balancer` example
//! binary (built by `cargo test`) with one live origin and one port that refuses
//! connections.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pingora_dsl_suite::origin::Origin;
use support::{addr_after, client, example_binary, read_until, send, spawn_with_lines};

/// A loopback port that refuses connections for as long as the returned socket lives: it
/// is bound (so no other test can take it) but not listening.
fn refusing_port() -> (socket2::Socket, SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket
        .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("bind");
    let addr = socket
        .local_addr()
        .expect("the bound address")
        .as_socket()
        .expect("an IP address");
    (socket, addr)
}

/// The `load_balancer` example over `upstreams`, listening on an ephemeral port.
struct Example {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Example {
    fn start(upstreams: &[SocketAddr]) -> Example {
        Example::start_with(upstreams, None)
    }

    /// With `-c conf` when given.
    fn start_with(upstreams: &[SocketAddr], conf: Option<&std::path::Path>) -> Example {
        let mut command = std::process::Command::new(example_binary("load_balancer"));
        command.args(["--listen", "127.0.0.1:0", "--threads", "1"]);
        if let Some(conf) = conf {
            command.arg("-c").arg(conf);
        }
        for u in upstreams {
            command.args(["--upstream", &u.to_string()]);
        }
        let (child, lines) = spawn_with_lines(&mut command);
        let marker = "listening on http://";
        let line = read_until(&lines, &mut Vec::new(), |l| l.contains(marker));
        Example {
            child,
            addr: addr_after(&line, marker),
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refusing_peer_of_two_fails_no_request_without_retry_declared() {
    let live = Origin::start("live").await.expect("origin");
    let (_held, dead) = refusing_port();
    // Both orders: the dead peer is the round robin's first pick, then its second.
    for upstreams in [[dead, live.addr()], [live.addr(), dead]] {
        let before = live.requests();
        let example = Example::start(&upstreams);
        let client = client();
        for i in 0..200 {
            let request = if i % 4 == 3 {
                // A request with a body is as safe: none of it left.
                Request::post(format!("http://{}/echo", example.addr))
                    .body(Full::new(Bytes::from(format!("body {i}"))))
                    .expect("request")
            } else {
                support::get(example.addr, &format!("/n/{i}"), None)
            };
            let (response, body) =
                tokio::time::timeout(Duration::from_secs(10), send(&client, request))
                    .await
                    .expect("answered in time");
            assert_eq!(response.status(), 200, "request {i} with {upstreams:?}");
            assert_eq!(response.headers()["x-origin"], "live", "request {i}");
            if i % 4 == 3 {
                assert_eq!(body, format!("body {i}"), "the body arrived whole");
            }
        }
        assert_eq!(
            live.requests() - before,
            200,
            "every request reached the live peer once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_peer_refusing_the_answer_is_502_after_one_try_each() {
    let (_a, dead_a) = refusing_port();
    let (_b, dead_b) = refusing_port();
    let example = Example::start(&[dead_a, dead_b]);
    let client = client();
    let (response, _) = tokio::time::timeout(
        Duration::from_secs(10),
        send(&client, support::get(example.addr, "/", None)),
    )
    .await
    .expect("answered in time");
    assert_eq!(response.status(), 502);
}

/// Sends `n` GETs to `example`, returning how many were answered 200 by the live origin.
async fn live_answers(example: &Example, n: usize) -> usize {
    let client = client();
    let mut ok = 0;
    for i in 0..n {
        let (response, _) = tokio::time::timeout(
            Duration::from_secs(10),
            send(
                &client,
                support::get(example.addr, &format!("/b/{i}"), None),
            ),
        )
        .await
        .expect("answered in time");
        if response.status() == 200 && response.headers()["x-origin"] == "live" {
            ok += 1;
        } else {
            assert_eq!(response.status(), 502, "request {i}");
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_retry_resends_after_a_broken_connection() {
    let live = Origin::start("live").await.expect("origin");
    // Reads the request, then closes without an answer: the request may have been acted on,
    // so only a declared (or configured) retry resends it.
    let broken = pingora_dsl_suite::origin::start_faulty_origin(|s| async move { drop(s) }).await;
    let upstreams = [broken, live.addr()];

    let without = Example::start(&upstreams);
    let ok = live_answers(&without, 40).await;
    assert!(
        ok < 40,
        "with no retry, the broken peer's requests fail: {ok}/40"
    );
    drop(without);

    let dir = std::env::temp_dir().join(format!("pdsl-file-retry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("retry.toml");
    std::fs::write(
        &conf,
        "[proxy.BlogLoadBalancer.upstream.origins]\nretry = 1\n",
    )
    .expect("config");
    let with = Example::start_with(&upstreams, Some(&conf));
    assert_eq!(
        live_answers(&with, 40).await,
        40,
        "`retry = 1` in the file resends each broken GET to the live peer"
    );
}

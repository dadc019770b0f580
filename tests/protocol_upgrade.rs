//! Which HTTP/1.1 `Upgrade`s the proxy forwards. An upgraded connection is an opaque
//! tunnel: nothing on it passes the phases again. So only allowed protocols (`websocket`
//! by default, `h2c` never) are forwarded; any other upgrade request is answered as plain
//! HTTP/1.1, and a `101` from the origin to a protocol the client did not offer is a 502.
//!
//! The bypass this guards against is tried through the `gateway` example binary (built by
//! `cargo test`), whose `request_filter` answers 401 to `/api` without a token, in front of
//! an origin that accepts every upgrade and then answers whatever arrives.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{addr_after, example_binary, read_until, spawn_with_lines};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// What the origin does with a request asking to upgrade.
#[derive(Clone, Copy)]
enum Switch {
    /// Switch to what the request asked for, if it asked.
    AsAsked,
    /// Answer every request, asking or not, with a switch to this protocol.
    Always(&'static str),
}

/// An origin that switches protocols as `switch` says, then keeps reading request heads
/// from the switched connection and answering them (as a tunnelled HTTP/1.1 server
/// would). It records every request head it receives.
struct LaxOrigin {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl LaxOrigin {
    async fn start(switch: Switch) -> LaxOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_lax(stream, switch, seen.clone()));
            }
        });
        LaxOrigin { addr, heads }
    }

    /// Every request head received so far, lowercased.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

/// The value of field `name` (lowercase) in a lowercased head.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

async fn serve_lax(mut stream: TcpStream, switch: Switch, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut switched = false;
    loop {
        let Some(end) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        seen.lock().expect("heads").push(head.clone());
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let to = match switch {
            Switch::AsAsked => field(&head, "upgrade").map(str::to_owned),
            Switch::Always(p) => Some(p.to_owned()),
        };
        let answer = match to {
            Some(protocol) if !switched => {
                switched = true;
                format!("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n")
            }
            _ => {
                let body = if switched {
                    format!("tunnelled {path}")
                } else {
                    format!("plain {path}")
                };
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads until `buf` holds a whole head; returns its length.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One response read from a client connection: its status and body (`content-length`
/// framed, as every answer in these tests is).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        let end = read_head(stream, buf).await.expect("a response head");
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let length: usize = field(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[..length.min(buf.len())]).into_owned();
        buf.drain(..length.min(buf.len()));
        (status, body)
    })
    .await
    .expect("a response in time")
}

/// The `gateway` example, with both pools pointed at `origin`.
struct Gateway {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Gateway {
    fn start(origin: SocketAddr, extra: &[&str]) -> Gateway {
        let web = format!("web={origin}");
        let api = format!("api={origin}");
        let (child, lines) = spawn_with_lines(
            std::process::Command::new(example_binary("gateway"))
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--upstream",
                    &web,
                    "--upstream",
                    &api,
                ])
                .args(extra),
        );
        let marker = "listening on http://";
        let line = read_until(&lines, &mut Vec::new(), |l| l.contains(marker));
        Gateway {
            child,
            addr: addr_after(&line, marker),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const H2C_UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
const API_WITHOUT_TOKEN: &[u8] = b"GET /api/users HTTP/1.1\r\nHost: gateway\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_served_as_plain_http_and_later_requests_meet_the_filters() {
    let origin = LaxOrigin::start(Switch::AsAsked).await;
    let gateway = Gateway::start(origin.addr, &[]);
    let mut client = TcpStream::connect(gateway.addr).await.expect("connect");
    let mut buf = Vec::new();

    client.write_all(H2C_UPGRADE).await.expect("write");
    let (status, body) = read_response(&mut client, &mut buf).await;
    assert_eq!((status, body.as_str()), (200, "plain /"));
    let heads = origin.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(field(&heads[0], "upgrade"), None, "{heads:?}");
    assert_eq!(field(&heads[0], "http2-settings"), None, "{heads:?}");

    // The same connection is still HTTP/1.1 through the proxy: the token check answers.
    client.write_all(API_WITHOUT_TOKEN).await.expect("write");
    let (status, body) = read_response(&mut client, &mut buf).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        origin.heads().len(),
        1,
        "the origin saw {:?}",
        origin.heads()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_that_is_not_allowed_is_dropped_and_an_allowed_one_kept() {
    let origin = LaxOrigin::start(Switch::AsAsked).await;
    let gateway = Gateway::start(origin.addr, &[]);
    let mut client = TcpStream::connect(gateway.addr).await.expect("connect");
    let mut buf = Vec::new();
    client
        .write_all(
            b"GET /x HTTP/1.1\r\nHost: g\r\nConnection: upgrade\r\nUpgrade: x-tunnel\r\n\r\n",
        )
        .await
        .expect("write");
    let (status, body) = read_response(&mut client, &mut buf).await;
    assert_eq!((status, body.as_str()), (200, "plain /x"));
    assert_eq!(field(&origin.heads()[0], "upgrade"), None);

    // Offered with an allowed one, only the allowed one reaches the origin.
    let mut client = TcpStream::connect(gateway.addr).await.expect("connect");
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: g\r\nConnection: upgrade\r\nUpgrade: h2c, websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .expect("write");
    let (status, _) = read_response(&mut client, &mut buf).await;
    assert_eq!(status, 101);
    let heads = origin.heads();
    assert_eq!(field(&heads[1], "upgrade"), Some("websocket"), "{heads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_the_client_did_not_ask_for_is_a_bad_gateway() {
    // The origin switches to h2c whatever it was asked.
    let origin = LaxOrigin::start(Switch::Always("h2c")).await;
    let gateway = Gateway::start(origin.addr, &[]);
    let mut buf = Vec::new();

    let mut client = TcpStream::connect(gateway.addr).await.expect("connect");
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: g\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .expect("write");
    let (status, _) = read_response(&mut client, &mut buf).await;
    assert_eq!(status, 502, "a 101 to h2c for a websocket request");

    let mut client = TcpStream::connect(gateway.addr).await.expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .expect("write");
    let (status, _) = read_response(&mut client, &mut buf).await;
    assert_eq!(status, 502, "a 101 to a request that asked for none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_chooses_the_allowed_protocols() {
    let dir = std::env::temp_dir().join(format!("pingora-dsl-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let conf = dir.join("gateway.toml");
    std::fs::write(&conf, "[proxy.Gateway]\nallow_upgrade = [\"x-tunnel\"]\n").expect("write");
    let origin = LaxOrigin::start(Switch::AsAsked).await;
    let gateway = Gateway::start(origin.addr, &["-c", conf.to_str().expect("utf-8 path")]);
    let mut buf = Vec::new();

    let mut client = TcpStream::connect(gateway.addr).await.expect("connect");
    client
        .write_all(
            b"GET /x HTTP/1.1\r\nHost: g\r\nConnection: upgrade\r\nUpgrade: x-tunnel\r\n\r\n",
        )
        .await
        .expect("write");
    let (status, _) = read_response(&mut client, &mut buf).await;
    assert_eq!(status, 101, "x-tunnel is allowed by the file");
    // What the user allowed is a real tunnel: bytes reach the origin as they are.
    client
        .write_all(b"GET /inside HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .expect("write");
    let (status, body) = read_response(&mut client, &mut buf).await;
    assert_eq!((status, body.as_str()), (200, "tunnelled /inside"));

    // websocket is no longer in the list.
    let mut client = TcpStream::connect(gateway.addr).await.expect("connect");
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: g\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .expect("write");
    let (status, body) = read_response(&mut client, &mut buf).await;
    assert_eq!((status, body.as_str()), (200, "plain /ws"));

    // h2c in the file is refused at start, with the key named.
    std::fs::write(&conf, "[proxy.Gateway]\nallow_upgrade = [\"h2c\"]\n").expect("write");
    let out = std::process::Command::new(example_binary("gateway"))
        .args(["-t", "-c", conf.to_str().expect("utf-8 path")])
        .args(["--upstream", &format!("web={}", origin.addr)])
        .args(["--upstream", &format!("api={}", origin.addr)])
        .output()
        .expect("gateway -t runs");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("allow_upgrade") && text.contains("h2c"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! The performance floor of issue 21: the least an HTTP/1.1 reverse proxy built on hyper
//! can do, measured beside the declared `load_balancer` in the same benchmark run.
//!
//! No framework, no feature: one current-thread runtime, hyper's HTTP/1.1 server and
//! client connections, round robin over the `--upstream` peers, a last-in-first-out pool
//! of idle upstream connections per peer, and the one edit `load_balancer` makes (the
//! `Host` sent upstream). No timeouts, no retries, no `X-Forwarded-For`, no logging, no
//! health checks, no limits — it is not a proxy to run, only the figure below which the
//! framework cannot go with the same libraries on the same machine
//! (`docs/performance.md`, "The floor").
//!
//! ```text
//! cargo build --release --example floor_hyper_relay
//! target/release/examples/floor_hyper_relay --listen 127.0.0.1:6188 \
//!     --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002
//! ```

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Sender = SendRequest<Incoming>;

/// Idle upstream connections of one peer, the most recently used on top.
struct Peer {
    addr: SocketAddr,
    idle: RefCell<Vec<Sender>>,
}

/// The peers and the round-robin cursor, shared by every connection of the one thread.
struct Upstreams {
    peers: Vec<Rc<Peer>>,
    next: Cell<usize>,
}

impl Upstreams {
    fn pick(&self) -> Rc<Peer> {
        let i = self.next.get();
        self.next.set((i + 1) % self.peers.len());
        Rc::clone(&self.peers[i])
    }
}

/// An upstream response body that puts its connection back in the pool once it has ended.
struct PooledBody {
    inner: Incoming,
    home: Option<(Rc<Peer>, Sender)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((peer, sender)) = self.home.take() {
            peer.idle.borrow_mut().push(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ if self.inner.is_end_stream() => self.release(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A ready idle connection to `peer`, or a new one.
async fn checkout(peer: &Peer) -> Result<Sender, BoxError> {
    loop {
        let Some(mut sender) = peer.idle.borrow_mut().pop() else {
            break;
        };
        if sender.ready().await.is_ok() {
            return Ok(sender);
        }
    }
    let stream = TcpStream::connect(peer.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(connection);
    Ok(sender)
}

async fn relay(
    upstreams: Rc<Upstreams>,
    host: HeaderValue,
    mut request: Request<Incoming>,
) -> Result<Response<PooledBody>, BoxError> {
    request.headers_mut().insert(HOST, host);
    let peer = upstreams.pick();
    let mut sender = checkout(&peer).await?;
    let response = sender.send_request(request).await?;
    let (parts, inner) = response.into_parts();
    let mut body = PooledBody {
        inner,
        home: Some((peer, sender)),
    };
    if body.inner.is_end_stream() {
        body.release();
    }
    Ok(Response::from_parts(parts, body))
}

async fn serve(listener: TcpListener, upstreams: Rc<Upstreams>) {
    let host = HeaderValue::from_static("one.one.one.one");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let upstreams = Rc::clone(&upstreams);
        let host = host.clone();
        let service = service_fn(move |request| {
            let upstreams = Rc::clone(&upstreams);
            let host = host.clone();
            async move {
                match relay(upstreams, host, request).await {
                    Ok(response) => Ok::<_, BoxError>(response.map(Either::Left)),
                    Err(_) => Ok(bad_gateway()),
                }
            }
        });
        tokio::task::spawn_local(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service),
        );
    }
}

fn bad_gateway() -> Response<Either<PooledBody, Empty<Bytes>>> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// `--listen ADDR` (once) and `--upstream ADDR` (repeatable); other flags (`--threads`) are
/// accepted and ignored so the same benchmark command line runs both binaries.
fn parse_args() -> Result<(SocketAddr, Vec<SocketAddr>), String> {
    let mut listen = None;
    let mut upstreams = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let addr = || {
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(addr()?),
            "--upstream" => upstreams.push(addr()?),
            _ => {}
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    if upstreams.is_empty() {
        return Err("at least one --upstream ADDR is required".into());
    }
    Ok((listen, upstreams))
}

fn main() -> ExitCode {
    let (listen, peers) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("floor_hyper_relay: {message}");
            return ExitCode::from(2);
        }
    };
    let upstreams = Rc::new(Upstreams {
        peers: peers
            .into_iter()
            .map(|addr| {
                Rc::new(Peer {
                    addr,
                    idle: RefCell::default(),
                })
            })
            .collect(),
        next: Cell::new(0),
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("floor_hyper_relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        match TcpListener::bind(listen).await {
            Ok(listener) => {
                println!("floor_hyper_relay listening on {listen}");
                // SIGINT stops it (also when started in the background, where a shell
                // ignores SIGINT for its children unless they ask for it).
                tokio::select! {
                    () = serve(listener, upstreams) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("floor_hyper_relay: bind {listen}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

//! The performance floor of issue 21: the least a reverse proxy built on hyper can do,
//! measured beside the declared `load_balancer` (and, with `--cert`/`--key`, beside
//! `tls_gateway`) in the same benchmark run.
//!
//! No framework, no feature: one current-thread runtime, hyper's HTTP/1.1 server (and
//! HTTP/2 over TLS, chosen by ALPN, with `--cert FILE --key FILE`: OpenSSL's Mozilla
//! intermediate settings) and HTTP/1.1 client connections, round robin over the `--upstream` peers, a last-in-first-out pool
//! of idle upstream connections per peer, and the one edit `load_balancer` makes (the
//! `Host` sent upstream). No timeouts, no retries, no `X-Forwarded-For`, no logging, no
//! health checks, no limits — it is not a proxy to run, only the figure below which the
//! framework cannot go with the same libraries on the same machine
//! (`docs/performance.md`, "The floor").
//!
//! ```text
//! cargo build --release --example floor_hyper_relay
//! target/release/examples/floor_hyper_relay --listen 127.0.0.1:6188 \
//!     --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002 [--cert F --key F]
//! ```

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use openssl::ssl::{AlpnError, Ssl, SslAcceptor, SslFiletype, SslMethod};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

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
    // An HTTP/2 request goes to the HTTP/1.1 origin in origin form.
    if request.version() != Version::HTTP_11 {
        *request.version_mut() = Version::HTTP_11;
        let target = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned());
        *request.uri_mut() = target
            .and_then(|t| t.parse().ok())
            .unwrap_or(Uri::from_static("/"));
    }
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

async fn serve(listener: TcpListener, upstreams: Rc<Upstreams>, tls: Option<Rc<SslAcceptor>>) {
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
        let Some(acceptor) = tls.clone() else {
            tokio::task::spawn_local(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
            continue;
        };
        tokio::task::spawn_local(async move {
            let Ok(ssl) = Ssl::new(acceptor.context()) else {
                return;
            };
            let Ok(mut stream) = SslStream::new(ssl, stream) else {
                return;
            };
            if Pin::new(&mut stream).accept().await.is_err() {
                return;
            }
            if stream.ssl().selected_alpn_protocol() == Some(b"h2") {
                let _ = hyper::server::conn::http2::Builder::new(LocalExec)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
    }
}

/// Runs HTTP/2 stream tasks on the thread's `LocalSet` (the service is not `Send`).
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// A TLS acceptor for `cert` and `key` (PEM) offering h2 then http/1.1.
fn acceptor(cert: &str, key: &str) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    builder.set_certificate_chain_file(cert)?;
    builder.set_private_key_file(key, SslFiletype::PEM)?;
    builder.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x02h2\x08http/1.1", offered).ok_or(AlpnError::NOACK)
    });
    Ok(builder.build())
}

fn bad_gateway() -> Response<Either<PooledBody, Empty<Bytes>>> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// What the command line asks for.
struct Args {
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
    /// `--cert` and `--key`: serve TLS.
    tls: Option<(String, String)>,
}

/// `--listen ADDR` (once), `--upstream ADDR` (repeatable), `--cert FILE --key FILE`; other
/// flags (`--threads`) are accepted and ignored so the same benchmark command line runs
/// both binaries.
fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let (mut cert, mut key) = (None, None);
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
            "--cert" => cert = Some(value.clone()),
            "--key" => key = Some(value.clone()),
            _ => {}
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    if upstreams.is_empty() {
        return Err("at least one --upstream ADDR is required".into());
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(Args {
        listen,
        upstreams,
        tls,
    })
}

fn main() -> ExitCode {
    let Args {
        listen,
        upstreams: peers,
        tls,
    } = match parse_args() {
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
    let tls = match tls.map(|(cert, key)| acceptor(&cert, &key)).transpose() {
        Ok(tls) => tls.map(Rc::new),
        Err(e) => {
            eprintln!("floor_hyper_relay: TLS: {e}");
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
                    () = serve(listener, upstreams, tls) => {}
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

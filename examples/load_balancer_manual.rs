//! The load balancer from Cloudflare's "Open sourcing Pingora" post, written by hand with
//! the runtime API: round robin over two peers, with `upstream_request_filter` setting Host.
//! `examples/load_balancer.rs` declares the same proxy with `proxy!`; compare the two.
//! `tests/zero_cost.rs` and `benches/dsl.rs` do, at run time (this file is compiled into them
//! as a module, hence `pub` on `RoundRobinLb`).
//!
//! Run it, then try it:
//!
//! ```text
//! cargo run --release --example load_balancer_manual
//! curl -i http://127.0.0.1:6188/      # repeat: the x-origin header alternates
//! ```
//!
//! Without `--upstream`, two demo origins start in-process on loopback (no network needed).
//! Flags: `--listen ADDR` (repeatable, default 127.0.0.1:6188), `--upstream HOST:PORT`
//! (repeatable; given, no demo origins start), `--threads N` (default: one per core),
//! `--work-stealing` (one shared runtime instead of per-core single-threaded workers),
//! `--admin ADDR` (metrics and the status page; a hand-written proxy is reported as a
//! whole, without routes or pools).
//! Set `RUST_LOG=debug` to see a line per request.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use pingora_dsl::observe::admin::Admin;
use pingora_dsl::prelude::*;
use pingora_dsl::service::Observable;

#[derive(Parser, Debug)]
#[command(about = "Round-robin HTTP load balancer (the Pingora blog post's example)")]
struct Args {
    /// Address to listen on (repeatable).
    #[arg(long = "listen", default_value = "127.0.0.1:6188")]
    listen: Vec<String>,
    /// Upstream HOST:PORT (repeatable). Without it, two demo origins start in-process.
    #[arg(long = "upstream")]
    upstream: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// With several threads, one work-stealing runtime instead of per-core workers.
    #[arg(long)]
    work_stealing: bool,
    /// Serve Prometheus metrics and the status page (`/metrics`, `/status`,
    /// `/status.json`) on this address.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
}

/// The load balancer: a round-robin pool of backends.
pub struct RoundRobinLb {
    /// The backends, picked in turn.
    pub lb: LoadBalancer,
}

impl ProxyHttp for RoundRobinLb {
    type Ctx = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<HttpPeer> {
        let backend = self
            .lb
            .select(b"", 256)
            .ok_or(Error::new(ErrorKind::NoPeer, "no backend available"))?;
        Ok(HttpPeer::new(backend.addr))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        upstream_request.headers.insert(
            http::header::HOST,
            HeaderValue::from_static("one.one.one.one"),
        );
        Ok(())
    }

    fn logging(&self, session: &Session, error: Option<&Error>, _ctx: &mut ()) {
        tracing::debug!(
            method = %session.method(),
            path = session.path(),
            status = session.response_status().map(|s| s.as_u16()),
            upstream = ?session.upstream_addr(),
            bytes = session.body_bytes_sent(),
            error = error.map(tracing::field::display),
            "request"
        );
    }
}

/// A demo origin on an ephemeral loopback port: answers every request with its name, in the
/// body and in `x-origin`. Returns the service and its address.
fn demo_origin(
    name: &'static str,
) -> std::io::Result<(impl pingora_dsl::service::Service, SocketAddr)> {
    let handler = tower::service_fn(
        move |_req: http::Request<pingora_dsl::DownstreamBody>| async move {
            let mut response =
                http::Response::new(Full::new(Bytes::from(format!("Hello from {name}\n"))));
            response
                .headers_mut()
                .insert("x-origin", http::HeaderValue::from_static(name));
            Ok::<_, Infallible>(response)
        },
    );
    let mut service = serve_handler(name, handler);
    service.add_tcp("127.0.0.1:0");
    service.bind()?;
    let addr = service.local_addrs()[0];
    Ok((service, addr))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let mut conf = ServerConf::default();
    if let Some(threads) = args.threads {
        conf.threads = threads.max(1);
    }
    if args.work_stealing {
        conf.flavor = pingora_dsl::server::RuntimeFlavor::WorkStealing;
    }
    let mut server = Server::new(conf);

    let upstreams = if args.upstream.is_empty() {
        let mut addrs = Vec::new();
        for name in ["origin-1", "origin-2"] {
            let (origin, addr) = demo_origin(name)?;
            addrs.push(addr.to_string());
            server.add_service(origin);
        }
        println!("demo origins on {}", addrs.join(" and "));
        addrs
    } else {
        args.upstream.clone()
    };

    let lb = LoadBalancer::try_from_iter(&upstreams)?;
    let mut proxy = http_proxy_service("load_balancer", RoundRobinLb { lb });
    for addr in &args.listen {
        proxy.add_tcp(addr);
    }
    proxy.bind()?;
    for addr in proxy.local_addrs() {
        println!(
            "load balancer on http://{addr}/ -> {}",
            upstreams.join(", ")
        );
        println!("try: curl -i http://{addr}/   (repeat it: x-origin alternates)");
    }
    if let Some(addr) = &args.admin {
        let admin = Admin::new();
        admin.watch(proxy.observer());
        let mut admin = admin.service(addr);
        admin.bind()?;
        for addr in admin.local_addrs() {
            println!("admin on http://{addr}/status (metrics: http://{addr}/metrics)");
        }
        server.add_service(admin);
    }
    server.add_service(proxy);
    server.run_until_signal()?;
    Ok(())
}

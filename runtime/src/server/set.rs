//! Several declared proxies in one process: e.g. a port-80 redirector beside the HTTPS
//! proxy, run with one command line, one config file (a `[proxy.NAME]` section for each),
//! one admin listener, one SIGHUP reload and one graceful upgrade that hands over every
//! proxy's sockets.
//!
//! In a binary: `ProxySet::new().with::<Redirect>().with::<Edge>().run()`, where
//! `Redirect` and `Edge` are declared with `proxy!` (see `examples/https_edge.rs`).

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::listen::{ListenAddr, Sockets};
use crate::server::cli::{self, ProxyCli, Services};
use crate::server::config::Config;
use crate::server::declared::{Declared, DeclaredHttp, DeclaredLayer4};
use crate::service::{BoxFuture, Listening, Observable, Observer, Service};
use crate::shutdown::ShutdownWatch;

/// Builds one proxy of a set with the command line and config file applied.
type Build = Box<dyn FnOnce(&ProxyCli) -> io::Result<Services<Box<dyn Listening>>>>;

/// Declared proxies to run together (see the module documentation).
#[derive(Default)]
pub struct ProxySet {
    members: Vec<Member>,
}

/// One proxy of a set: its name, what it declares for the whole process (admin listener,
/// TLS policy), and how it is built.
struct Member {
    name: &'static str,
    declare_process: fn(&mut ProxyCli),
    build: Build,
}

impl ProxySet {
    /// An empty set.
    pub fn new() -> Self {
        ProxySet::default()
    }

    /// Adds the HTTP proxy `P` (declared with `proxy!`).
    pub fn with<P: DeclaredHttp>(mut self) -> Self {
        let build: Build = Box::new(|cli| boxed(P::build_declared(cli)));
        self.members.push(Member {
            name: P::NAME,
            declare_process: P::declare_process,
            build,
        });
        self
    }

    /// Adds the layer-4 proxy `P` (declared with `tcp_proxy!` or `udp_proxy!`).
    pub fn with_layer4<P: DeclaredLayer4>(mut self) -> Self {
        let build: Build = Box::new(|cli| boxed(P::build_declared(cli)));
        self.members.push(Member {
            name: <P as Declared>::NAME,
            declare_process: <P as Declared>::declare_process,
            build,
        });
        self
    }

    /// A complete `main`: the command line of the process (as a declared proxy's
    /// `run`), then every proxy served until a stop signal.
    pub fn run(self) -> ExitCode {
        self.run_with(ProxyCli::from_env())
    }

    /// Like [`run`](ProxySet::run), with a command line built by the caller. Flags that
    /// belong to one proxy (`--listen`, `--tls-listen`, `--cert`, `--key`, `--client-ca`,
    /// `--upstream`) are refused when the set has several: give them per proxy in the
    /// config file.
    pub fn run_with(self, mut cli: ProxyCli) -> ExitCode {
        let names: Vec<&'static str> = self.members.iter().map(|m| m.name).collect();
        let process = names.join("+");
        // The first proxy declaring an admin listener or TLS groups gives them (applied
        // last); `fips on` in any of them turns FIPS mode on.
        for member in self.members.iter().rev() {
            (member.declare_process)(&mut cli);
        }
        let members = self.members;
        cli::run_named(&process.clone(), &names.clone(), cli, move |cli| {
            check_set(&names, cli)?;
            let mut built = Vec::new();
            for member in members {
                built.push((member.build)(cli)?);
            }
            Ok(combine(process, built))
        })
    }
}

/// A proxy's built services, with its listening service boxed to sit beside the others.
fn boxed<S: Listening>(built: io::Result<Services<S>>) -> io::Result<Services<Box<dyn Listening>>> {
    let (service, tasks, config, reloader) = built?;
    Ok((Box::new(service), tasks, config, reloader))
}

/// Several proxies, distinct names; no flag that would apply to each of them.
fn check_set(names: &[&str], cli: &ProxyCli) -> io::Result<()> {
    if names.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the proxy set is empty: add proxies with `.with::<Proxy>()`",
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("proxy {name} is in the set twice"),
            ));
        }
    }
    let per_proxy = !cli.listen.is_empty()
        || !cli.tls_listen.is_empty()
        || !cli.upstream.is_empty()
        || cli.cert.is_some()
        || cli.key.is_some()
        || cli.client_ca.is_some();
    if per_proxy && names.len() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--listen, --tls-listen, --cert, --key, --client-ca and --upstream would apply to every proxy of {}: give them per proxy in the config file ([proxy.NAME])",
                names.join(", ")
            ),
        ));
    }
    Ok(())
}

/// One service, task list, configuration and reloader for the whole set.
fn combine(name: String, built: Vec<Services<Box<dyn Listening>>>) -> Services<ServiceSet> {
    let mut members = Vec::new();
    let mut tasks = Vec::new();
    let mut config: Option<Config> = None;
    let mut reloader: Option<cli::Reloader> = None;
    for (service, t, c, r) in built {
        members.push(service);
        tasks.extend(t);
        match &mut config {
            None => config = Some(c),
            Some(all) => all.proxy.extend(c.proxy),
        }
        reloader = Some(match reloader {
            None => r,
            Some(all) => all.join(r),
        });
    }
    let set = ServiceSet { name, members };
    let reloader = reloader.unwrap_or_else(|| {
        let empty = || crate::proxy::route::Router::new(Vec::new(), Vec::new());
        cli::Reloader::new(&set.name, &ProxyCli::default(), empty, Vec::new())
    });
    (set, tasks, config.unwrap_or_default(), reloader)
}

/// The listening services of a set, checked, bound, announced and run together.
pub struct ServiceSet {
    name: String,
    members: Vec<Box<dyn Listening>>,
}

impl Service for ServiceSet {
    fn name(&self) -> &str {
        &self.name
    }

    fn bind(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        self.bind_with(sockets)
    }

    fn start(self: Box<Self>, shutdown: ShutdownWatch, grace: Duration) -> BoxFuture<()> {
        let members = self.members.into_iter().map(|m| m as Box<dyn Service>);
        start_all(members.collect(), shutdown, grace)
    }

    fn worker_copy(&self) -> io::Result<Option<Box<dyn Service>>> {
        let mut copies = Vec::new();
        for member in &self.members {
            copies.extend(member.worker_copy()?);
        }
        Ok((!copies.is_empty()).then(|| {
            Box::new(Workers {
                name: self.name.clone(),
                members: copies,
            }) as Box<dyn Service>
        }))
    }
}

/// Starts every one of `members` and runs them side by side until all have finished.
fn start_all(
    members: Vec<Box<dyn Service>>,
    shutdown: ShutdownWatch,
    grace: Duration,
) -> BoxFuture<()> {
    let started: Vec<_> = members
        .into_iter()
        .map(|m| m.start(shutdown.clone(), grace))
        .collect();
    Box::pin(async move {
        let mut running = tokio::task::JoinSet::new();
        for future in started {
            running.spawn(future);
        }
        while running.join_next().await.is_some() {}
    })
}

/// The copies of a set's services for another worker.
struct Workers {
    name: String,
    members: Vec<Box<dyn Service>>,
}

impl Service for Workers {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(self: Box<Self>, shutdown: ShutdownWatch, grace: Duration) -> BoxFuture<()> {
        start_all(self.members, shutdown, grace)
    }
}

impl Observable for ServiceSet {
    /// The first proxy's observer; the admin listener watches every proxy's through
    /// [`Listening::observers`].
    fn observer(&self) -> Observer {
        match self.members.first() {
            Some(m) => m.observer(),
            None => {
                let name = self.name.clone();
                Box::new(move || crate::service::ServiceView {
                    name: name.clone(),
                    kind: "http",
                    listener: None,
                    proxy: None,
                    routes: Vec::new(),
                    groups: Vec::new(),
                    caches: Vec::new(),
                    shared_limits: Vec::new(),
                })
            }
        }
    }
}

impl Listening for ServiceSet {
    fn check(&self) -> io::Result<()> {
        self.members.iter().try_for_each(|m| m.check())
    }

    fn bind_with(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        for member in &mut self.members {
            member
                .bind_with(sockets)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", member.name())))?;
        }
        Ok(())
    }

    fn addrs(&self) -> Vec<String> {
        self.members.iter().flat_map(|m| m.addrs()).collect()
    }

    fn bound(&self) -> Vec<(SocketAddr, &'static str)> {
        self.members.iter().flat_map(|m| m.bound()).collect()
    }

    fn bound_named(&self) -> Vec<(String, SocketAddr, &'static str)> {
        self.members.iter().flat_map(|m| m.bound_named()).collect()
    }

    fn tls_listeners_named(&self) -> Vec<(String, Vec<ListenAddr>)> {
        self.members
            .iter()
            .flat_map(|m| m.tls_listeners_named())
            .collect()
    }

    fn observers(&self) -> Vec<Observer> {
        self.members.iter().flat_map(|m| m.observers()).collect()
    }
}

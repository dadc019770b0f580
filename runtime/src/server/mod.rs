//! The process: a [`Server`] runs [`Service`]s on one shared tokio runtime until shutdown.
//!
//! Services bind their sockets in [`Service::bind`] before the runtime starts, so a bad
//! address stops the process at startup with a clear error. [`Server::run_forever`] then
//! starts every service and waits for a signal: SIGINT stops at once; SIGTERM stops
//! accepting and gives open connections the grace period to finish; SIGQUIT hands the
//! listening sockets to a new process (see [`crate::server::handover`]) and, once it serves, stops
//! like SIGTERM. The handlers are installed before any service starts, or earlier with
//! [`Server::install_signals`]: before a process says it is ready, so a signal sent as
//! soon as it is ready is never taken with its default action (the end of the process).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

pub mod cli;
pub mod config;
pub mod daemon;
pub mod declared;
pub mod handover;
pub mod layer4;
pub mod set;

use crate::listen::Sockets;
use crate::service::Service;
use crate::shutdown::{shutdown_channel, ShutdownWatch, Stop};
use handover::{Handover, UpgradeConf};

/// Settings of the whole process.
#[derive(Debug, Clone)]
pub struct ServerConf {
    /// Worker threads. `1` runs one single-threaded runtime, which measured faster than a
    /// one-worker work-stealing one.
    pub threads: usize,
    /// How more than one worker thread is organised.
    pub flavor: RuntimeFlavor,
    /// How long open connections may take to finish after a shutdown signal.
    pub grace_period: Duration,
    /// After the grace period (or an immediate stop), how long background tasks and the
    /// runtime get to stop before the process exits. Default 100 ms.
    pub shutdown_timeout: Duration,
    /// The upgrade socket SIGQUIT hands the listening sockets over; `None`: SIGQUIT is
    /// logged and ignored.
    pub upgrade: Option<UpgradeConf>,
    /// Listening sockets bound with `SO_REUSEPORT`, so that several processes (each its
    /// own upgrade socket and admin port) share the addresses.
    pub reuse_port: bool,
}

/// How a [`Server`] with several worker threads runs its services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeFlavor {
    /// One work-stealing tokio runtime with `threads` workers, shared by every service and
    /// connection pool.
    WorkStealing,
    /// `threads` single-threaded runtimes, one per OS thread. Each runs its own copy of every
    /// listening service: all accept on the same sockets, and each keeps its own upstream
    /// pools, so a request never leaves its thread. Background services run on the first
    /// worker only. Measured here: 1.1-1.3x the requests per CPU-second of work stealing
    /// with 2 threads.
    #[default]
    PerCore,
}

impl Default for ServerConf {
    fn default() -> Self {
        ServerConf {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            flavor: RuntimeFlavor::default(),
            grace_period: Duration::from_secs(5),
            shutdown_timeout: Duration::from_millis(100),
            upgrade: None,
            reuse_port: false,
        }
    }
}

/// Runs services on one shared tokio runtime.
pub struct Server {
    conf: ServerConf,
    services: Vec<Box<dyn Service>>,
    sockets: Sockets,
    on_started: Vec<Box<dyn FnOnce() + Send>>,
    /// The main thread's runtime, once built (by [`Server::install_signals`], or by the run).
    runtime: Option<tokio::runtime::Runtime>,
    /// The stop signals' handlers, once installed.
    signals: Option<StopSignals>,
}

/// The handlers of the stop signals: from their installation on, SIGINT, SIGTERM and
/// SIGQUIT are caught, and one that arrives before the server waits for it is kept for it.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    quit: Signal,
}

impl StopSignals {
    /// Installs the handlers; needs a runtime context (the streams then work on any runtime
    /// of the process).
    fn install() -> io::Result<Self> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot install the {name} handler: {e}"))
            })
        };
        Ok(StopSignals {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            quit: install(SignalKind::quit(), "SIGQUIT")?,
        })
    }
}

impl Server {
    /// A server with `conf` and no services yet.
    pub fn new(conf: ServerConf) -> Self {
        let mut sockets = Sockets::new();
        sockets.set_reuse_port(conf.reuse_port);
        Server {
            conf,
            services: Vec::new(),
            sockets,
            on_started: Vec::new(),
            runtime: None,
            signals: None,
        }
    }

    /// Installs the handlers of SIGINT, SIGTERM and SIGQUIT now (idempotent;
    /// [`Server::run_until_signal`] does it if not done yet). Call it before telling anyone
    /// the process is ready (a "listening on" line, a pid file, a waiting parent): a signal
    /// sent from then on is caught and acted on once the server runs, never taken with its
    /// default action (the end of the process, without a graceful stop). Builds the main
    /// runtime, so call it after any fork (daemonizing). A server run with
    /// [`Server::run_until`] or [`Server::run_until_stop`] ignores the signals caught.
    pub fn install_signals(&mut self) -> io::Result<()> {
        if self.signals.is_some() {
            return Ok(());
        }
        let runtime = self.runtime()?;
        let _entered = runtime.enter();
        let signals = StopSignals::install()?;
        self.signals = Some(signals);
        Ok(())
    }

    /// The main thread's runtime, built as [`ServerConf`] says the first time.
    fn runtime(&mut self) -> io::Result<&tokio::runtime::Runtime> {
        let runtime = match self.runtime.take() {
            Some(runtime) => runtime,
            None if self.conf.threads <= 1 || self.conf.flavor == RuntimeFlavor::PerCore => {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            }
            None => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.conf.threads)
                .enable_all()
                .build()?,
        };
        Ok(self.runtime.insert(runtime))
    }

    /// Takes the listening sockets from `sockets` (inherited in an upgrade) when binding.
    pub fn set_sockets(&mut self, sockets: Sockets) {
        self.sockets = sockets;
    }

    /// Runs `f` once every service has started (in order of registration): tell a
    /// waiting parent or the old process of an upgrade that this one serves.
    pub fn on_started(&mut self, f: impl FnOnce() + Send + 'static) {
        self.on_started.push(Box::new(f));
    }

    /// Tells the old process of an upgrade, through `handover`, once every service has
    /// started, that it may stop.
    pub fn ready_to(&mut self, handover: Handover) {
        self.on_started(move || match handover.ready() {
            Ok(()) => tracing::info!("upgrade: serving; the old process stops accepting"),
            Err(e) => tracing::warn!(error = %e, "upgrade: cannot tell the old process we serve"),
        });
    }

    /// Binds every service's sockets (idempotent; the `run_*` methods call it). Inherited
    /// sockets no service asked for are closed, with a warning.
    pub fn bind(&mut self) -> io::Result<()> {
        for service in &mut self.services {
            service.bind(&mut self.sockets).map_err(|e| {
                io::Error::new(e.kind(), format!("service {}: {e}", service.name()))
            })?;
        }
        for addr in self.sockets.close_unclaimed() {
            tracing::warn!(%addr, "closing a socket handed over that the configuration no longer listens on");
        }
        Ok(())
    }

    /// The server's settings.
    pub fn conf(&self) -> &ServerConf {
        &self.conf
    }

    /// Adds a service to run.
    pub fn add_service(&mut self, service: impl Service) {
        self.services.push(Box::new(service));
    }

    /// Binds every service, runs them until SIGINT or SIGTERM, drains, and exits the process
    /// (status 1 with a message if startup failed).
    pub fn run_forever(self) -> ! {
        match self.run_until_signal() {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("pingora-dsl: {e}");
                std::process::exit(1)
            }
        }
    }

    /// Binds every service and runs them until a signal: SIGTERM stops gracefully (stop
    /// accepting, let requests in flight finish within the grace period), SIGINT at once,
    /// SIGQUIT hands the listening sockets to a new process (when [`ServerConf::upgrade`]
    /// is set) and stops gracefully once it serves, or keeps serving if it fails. A SIGINT
    /// during a graceful stop ends the grace period.
    pub fn run_until_signal(mut self) -> io::Result<()> {
        self.bind()?;
        self.install_signals()?;
        let Some(signals) = self.signals.take() else {
            return Err(io::Error::other("the signal handlers are not installed"));
        };
        let sockets = self.sockets.try_clone_fds()?;
        let upgrade = self.conf.upgrade.clone();
        // The SIGINT stream goes on to the grace period once the stop signal came.
        let (interrupt_tx, interrupt_rx) = tokio::sync::oneshot::channel::<Signal>();
        let sigint_during_grace = async move {
            if let Ok(mut interrupt) = interrupt_rx.await {
                if interrupt.recv().await.is_some() {
                    tracing::info!("SIGINT received during the graceful stop: stopping now");
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        let stop = async move {
            let (how, interrupt) = wait_for_stop_signal(signals, upgrade, sockets).await;
            let _ = interrupt_tx.send(interrupt);
            how
        };
        self.run(sigint_during_grace, stop)
    }

    /// Binds every service and runs them until `stop` resolves, then drains and returns.
    pub fn run_until(self, stop: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        self.run_until_stop(async move {
            stop.await;
            Stop::Graceful
        })
    }

    /// Binds every service and runs them until `stop` resolves, then stops as it says.
    pub fn run_until_stop(
        self,
        stop: impl Future<Output = Stop> + Send + 'static,
    ) -> io::Result<()> {
        self.run(std::future::pending(), stop)
    }

    /// Runs until `stop`; a graceful stop becomes immediate if `escalate` resolves during
    /// the grace period.
    fn run(
        mut self,
        escalate: impl Future<Output = ()> + Send + 'static,
        stop: impl Future<Output = Stop> + Send + 'static,
    ) -> io::Result<()> {
        self.bind()?;
        let on_started = std::mem::take(&mut self.on_started);
        let grace = self.conf.grace_period;
        let shutdown_timeout = self.conf.shutdown_timeout;
        let (trigger, watch) = shutdown_channel();
        let mut workers = Vec::new();
        self.runtime()?;
        let Some(runtime) = self.runtime.take() else {
            return Err(io::Error::other("no runtime"));
        };
        if self.conf.threads > 1 && self.conf.flavor == RuntimeFlavor::PerCore {
            for n in 1..self.conf.threads {
                let mut copies = Vec::new();
                for service in &self.services {
                    if let Some(copy) = service.worker_copy()? {
                        copies.push(copy);
                    }
                }
                let watch = watch.clone();
                let worker = std::thread::Builder::new()
                    .name(format!("pingora-worker-{n}"))
                    .spawn(move || run_worker(copies, watch, grace, shutdown_timeout))?;
                workers.push(worker);
            }
        }
        // The trigger outlives the workers: they take its loss for an immediate stop.
        // The trigger outlives the workers: they drain until it says stop at once.
        let trigger = &trigger;
        runtime.block_on(async move {
            let running = start_services(self.services, &watch, grace);
            for started in on_started {
                started();
            }
            let how = stop.await;
            trigger.stop(how);
            // Everything stopped: this thread's services and the other workers' threads
            // (joined off the runtime, so a SIGINT can still cut the grace period short).
            let everything = async {
                join_services(running).await;
                let joined = tokio::task::spawn_blocking(move || {
                    for worker in workers {
                        match worker.join() {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::error!(error = %e, "worker failed to start"),
                            Err(_) => tracing::error!("worker thread panicked"),
                        }
                    }
                });
                let _ = joined.await;
            };
            tokio::pin!(everything);
            if how == Stop::Graceful {
                tokio::select! {
                    _ = &mut everything => return,
                    _ = escalate => trigger.trigger_immediate(),
                }
            }
            everything.await;
        });
        runtime.shutdown_timeout(shutdown_timeout);
        Ok(())
    }
}

/// Waits for SIGINT (stop now), SIGTERM (stop gracefully) or a SIGQUIT whose hand-over of
/// `sockets` to a new process succeeded (stop gracefully); returns how to stop, and the
/// SIGINT stream for the grace period.
async fn wait_for_stop_signal(
    signals: StopSignals,
    upgrade: Option<UpgradeConf>,
    sockets: Vec<OwnedFd>,
) -> (Stop, Signal) {
    let StopSignals {
        mut interrupt,
        terminate: mut term,
        mut quit,
    } = signals;
    let sockets = std::sync::Arc::new(sockets);
    loop {
        tokio::select! {
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received, shutting down now");
                return (Stop::Immediate, interrupt);
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM received, shutting down gracefully");
                return (Stop::Graceful, interrupt);
            }
            _ = quit.recv() => {}
        }
        let Some(upgrade) = upgrade.clone() else {
            tracing::warn!("SIGQUIT ignored: no upgrade socket configured");
            continue;
        };
        tracing::info!(socket = %upgrade.socket.display(), "SIGQUIT received: handing the listening sockets over");
        let sockets = sockets.clone();
        let handing = tokio::task::spawn_blocking(move || {
            let fds: Vec<_> = sockets.iter().map(|fd| fd.as_fd()).collect();
            handover::hand_over(&upgrade.socket, &fds, upgrade.timeout, upgrade.access)
        });
        tokio::select! {
            handed = handing => match handed {
                Ok(Ok(())) => {
                    tracing::info!("upgrade: the new process serves; draining and exiting");
                    return (Stop::Graceful, interrupt);
                }
                Ok(Err(e)) => tracing::error!(error = %e, "upgrade failed; still serving"),
                Err(e) => tracing::error!(error = %e, "upgrade failed; still serving"),
            },
            _ = interrupt.recv() => return (Stop::Immediate, interrupt),
            _ = term.recv() => return (Stop::Graceful, interrupt),
        }
    }
}

fn start_services(
    services: Vec<Box<dyn Service>>,
    watch: &ShutdownWatch,
    grace: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    services
        .into_iter()
        .map(|service| {
            tracing::info!(service = service.name(), "starting service");
            tokio::spawn(service.start(watch.clone(), grace))
        })
        .collect()
}

async fn join_services(running: Vec<tokio::task::JoinHandle<()>>) {
    for task in running {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "service task failed");
        }
    }
}

/// One extra worker of a per-core server: its own single-threaded runtime running its
/// copies of the services until the shared shutdown watch fires.
fn run_worker(
    services: Vec<Box<dyn Service>>,
    watch: ShutdownWatch,
    grace: Duration,
    shutdown_timeout: Duration,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = start_services(services, &watch, grace);
        join_services(running).await;
    });
    runtime.shutdown_timeout(shutdown_timeout);
    Ok(())
}

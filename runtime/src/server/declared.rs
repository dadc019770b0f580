//! What `run` does for every declared proxy, whatever its declaration says: the part of a
//! `proxy!`, `tcp_proxy!` or `udp_proxy!` expansion that is the same for all of them. A
//! declared type implements [`Declared`] and [`DeclaredHttp`] or [`DeclaredLayer4`] with
//! what its declaration gives (name, addresses, constructor, service), and its generated
//! `run_with` calls [`DeclaredHttp::run_declared`] or [`DeclaredLayer4::run_declared`], so
//! the command line, config file and server wiring is written, tested and documented once
//! here rather than expanded into every proxy.
//!
//! It sits above the server (`cli`) and the services it starts (HTTP, TCP, UDP), and below
//! nothing: only generated code and hand-written equivalents use it.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use crate::downstream::HttpService;
use crate::l4::tcp::TcpProxyService;
use crate::l4::udp::UdpProxyService;
use crate::proxy::route::Router;
use crate::proxy::{ProxyHttp, ProxyLayer, ProxyOptions, ProxyPipeline};
use crate::server::cli::{self, Prepared, ProxyCli, Services};
use crate::server::layer4::{Layer4Options, Transport};
use crate::service::Listening;

/// What every declared proxy gives `run`: its name, addresses and router as declared.
pub trait Declared: Sized {
    /// The declared name: the service's, and the config file's `[proxy.NAME]`.
    const NAME: &'static str;
    /// The cleartext listening addresses declared with `listen`.
    const LISTEN: &'static [&'static str];
    /// The admin listener declared with `admin "ADDR"`, if any.
    const ADMIN: Option<&'static str>;
    /// The TLS key-exchange groups declared with `tls_groups [...]`, if any.
    const TLS_GROUPS: Option<&'static [&'static str]> = None;
    /// Whether `fips on;` is declared.
    const FIPS: bool = false;
    /// The Sentry reporting declared with `sentry "DSN" ...;`, if any.
    const SENTRY: Option<DeclaredSentry> = None;

    /// The proxy as declared.
    fn declared() -> Self;

    /// The router exactly as declared (what a config reload starts from).
    fn declared_router() -> Router;

    /// Its routes and groups, for the command line and the config file to change.
    fn declared_router_mut(&mut self) -> &mut Router;

    /// Records the declared process-wide settings on `cli`, the admin listener and the TLS
    /// policy (a flag or the config file may replace them).
    fn declare_process(cli: &mut ProxyCli) {
        if let Some(admin) = Self::ADMIN {
            cli.declared_admin = Some(admin.to_owned());
        }
        if let Some(groups) = Self::TLS_GROUPS {
            cli.declared_tls.groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
        }
        cli.declared_tls.fips |= Self::FIPS;
        if let Some(sentry) = Self::SENTRY {
            cli.declared_sentry = Some(sentry.settings());
        }
    }
}

/// `sentry "DSN" [sample RATE] [environment "NAME"];` as declared (checked by the macro).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeclaredSentry {
    /// The project's DSN.
    pub dsn: &'static str,
    /// The share of error events sent.
    pub sample_rate: Option<f32>,
    /// The environment events are tagged with.
    pub environment: Option<&'static str>,
}

impl DeclaredSentry {
    /// As the config file's `[server.sentry]` would say it.
    pub fn settings(&self) -> crate::observe::sentry::SentrySettings {
        crate::observe::sentry::SentrySettings {
            dsn: self.dsn.to_owned(),
            sample_rate: self.sample_rate,
            environment: self.environment.map(str::to_owned),
        }
    }
}

/// An HTTP proxy declared with `proxy!`.
pub trait DeclaredHttp: Declared + ProxyHttp {
    /// The proxy options as declared.
    fn declared_options() -> ProxyOptions;

    /// The listening service with `options`, on the declared addresses.
    fn declared_service(
        self,
        options: ProxyOptions,
    ) -> HttpService<ProxyPipeline<Self, impl ProxyLayer<Self>>>;

    /// A complete `main` with `cli`: the config file and flags applied to the declared
    /// options, router, addresses and TLS listeners, then served until a stop signal.
    fn run_declared(mut cli: ProxyCli) -> ExitCode {
        Self::declare_process(&mut cli);
        cli::run(Self::NAME, cli, Self::build_declared)
    }

    /// What [`run_declared`](DeclaredHttp::run_declared) serves: the service with the
    /// config file and flags of `cli` applied, its tasks, configuration and reloader.
    #[allow(clippy::type_complexity)]
    fn build_declared(
        cli: &ProxyCli,
    ) -> io::Result<Services<HttpService<ProxyPipeline<Self, impl ProxyLayer<Self> + use<Self>>>>>
    {
        let mut proxy = Self::declared();
        let mut options = Self::declared_options();
        cli.configure_options(Self::NAME, &mut options)?;
        let d = cli.prepare(
            Self::NAME,
            proxy.declared_router_mut(),
            Self::declared_router,
            Self::LISTEN,
            &options,
        )?;
        let mut service = proxy.declared_service(options);
        service.clear_tcp();
        for addr in &d.listen {
            service.add_tcp(addr);
        }
        cli.apply_tls(&mut service)?;
        cli.apply_quic(Self::NAME, &mut service)?;
        if let Some(mode) = cli
            .config
            .as_ref()
            .map(|c| c.proxy_protocol(Self::NAME))
            .transpose()?
            .flatten()
        {
            service.set_proxy_protocol(mode);
        }
        Ok((service, d.tasks, d.effective, d.reloader))
    }
}

/// A layer-4 proxy declared with `tcp_proxy!` or `udp_proxy!`.
pub trait DeclaredLayer4: Declared {
    /// The relay service: [`TcpProxyService`] or [`UdpProxyService`].
    type Service: Relay;
    /// TCP or UDP.
    const TRANSPORT: Transport;
    /// How long a connection may carry nothing, as declared (or the transport's default).
    const IDLE: Duration;

    /// The listening service on the declared addresses.
    fn declared_service(self) -> Self::Service;

    /// A complete `main` with `cli`: the config file and flags applied to the declared
    /// upstream, addresses, idle limit and access log, then served until a stop signal.
    fn run_declared(mut cli: ProxyCli) -> ExitCode {
        Self::declare_process(&mut cli);
        cli::run(Self::NAME, cli, Self::build_declared)
    }

    /// What [`run_declared`](DeclaredLayer4::run_declared) serves: the relay with the
    /// config file and flags of `cli` applied, its tasks, configuration and reloader.
    fn build_declared(cli: &ProxyCli) -> io::Result<Services<Self::Service>> {
        let mut proxy = Self::declared();
        let (d, relay) = cli.prepare_layer4(
            Self::NAME,
            Self::TRANSPORT,
            proxy.declared_router_mut(),
            Self::declared_router,
            Self::LISTEN,
            Self::IDLE,
        )?;
        let mut service = proxy.declared_service();
        service.configure(cli, &d, relay)?;
        let Prepared {
            tasks,
            effective,
            reloader,
            ..
        } = d;
        Ok((service, tasks, effective, reloader))
    }
}

/// What `run` sets on a layer-4 service, whatever its transport.
pub trait Relay: Listening {
    /// Listens on `prepared.listen` instead of the declared addresses, with the TLS
    /// listeners the command line and file give (TCP), and the relay settings.
    fn configure(
        &mut self,
        cli: &ProxyCli,
        prepared: &Prepared,
        relay: Layer4Options,
    ) -> io::Result<()>;
}

impl Relay for TcpProxyService {
    fn configure(
        &mut self,
        cli: &ProxyCli,
        prepared: &Prepared,
        relay: Layer4Options,
    ) -> io::Result<()> {
        self.clear_tcp();
        for addr in &prepared.listen {
            self.add_tcp(addr);
        }
        cli.apply_tls(self)?;
        self.set_idle_timeout(relay.idle_timeout);
        self.set_access_log(relay.access_log);
        if let Some(mode) = relay.proxy_protocol {
            self.set_proxy_protocol(mode);
        }
        Ok(())
    }
}

impl Relay for UdpProxyService {
    fn configure(
        &mut self,
        _cli: &ProxyCli,
        prepared: &Prepared,
        relay: Layer4Options,
    ) -> io::Result<()> {
        self.clear_listen();
        for addr in &prepared.listen {
            self.add_udp(addr);
        }
        self.set_idle_timeout(relay.idle_timeout);
        self.set_access_log(relay.access_log);
        Ok(())
    }
}

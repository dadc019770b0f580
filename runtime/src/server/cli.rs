//! The command line and `main` of a proxy declared with `proxy!`: its `run()` parses
//! [`ProxyCli`], applies the config file and then the flags over the declared values, and
//! serves until SIGINT or SIGTERM (or, with `-t`, checks everything and exits; with
//! `--print-config`, prints the effective configuration).

use std::io;
use std::process::ExitCode;

use clap::Parser;

use crate::downstream::HttpService;
use crate::lb::Backend;
use crate::lb::{GroupTask, UpstreamGroup};
use crate::listen::tls::{CertKey, TlsSettings};
use crate::listen::ListenAddr;
use crate::listen::{resolve, Sockets};
use crate::observe::access_log::AccessLog;
use crate::observe::admin::Admin;
use crate::observe::sentry::SentrySettings;
use crate::proxy::route::Router;
use crate::proxy::ProxyOptions;
use crate::server::config::Config;
use crate::server::daemon::{daemonize, Identity, PidFile};
use crate::server::handover::{HandoverAccess, UpgradeConf};
use crate::server::{RuntimeFlavor, Server, ServerConf};
use crate::service::{background_service, Listening, TlsListeners};
use crate::shutdown::ShutdownWatch;
use std::path::{Path, PathBuf};
use tokio::signal::unix::{signal, SignalKind};

/// Command-line flags every declared proxy accepts. Declared values are the defaults; a
/// flag given replaces them.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    version,
    about = "An HTTP proxy declared with pingora-dsl's proxy! macro"
)]
pub struct ProxyCli {
    /// Address to listen on in cleartext, replacing the declared ones (repeatable).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Address to listen on with TLS, replacing the declared TLS ones and the config
    /// file's `tls_listen` (repeatable); the certificate comes from `--cert`/`--key`, else
    /// the file's `[[certificate]]`, else the first declared TLS listener.
    #[arg(long = "tls-listen", value_name = "ADDR")]
    pub tls_listen: Vec<String>,
    /// Certificate chain (PEM) for the TLS listeners, replacing the declared ones.
    #[arg(long = "cert", value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of `--cert`.
    #[arg(long = "key", value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// CA (PEM) client certificates must chain to on the TLS listeners (mTLS).
    #[arg(long = "client-ca", value_name = "FILE")]
    pub client_ca: Option<std::path::PathBuf>,
    /// A peer replacing an upstream group's declared peers (repeatable). `GROUP=HOST:PORT`
    /// names the group; a bare `HOST:PORT` is enough when the proxy has one group.
    #[arg(long = "upstream", value_name = "[GROUP=]HOST:PORT")]
    pub upstream: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// A QUIC (HTTP/3) listening address, replacing the declared ones and the config
    /// file's `quic_listen` (repeatable); it serves the TLS listener's certificates.
    #[arg(long = "quic-listen", value_name = "ADDR")]
    pub quic_listen: Vec<String>,
    /// With several threads, one work-stealing runtime instead of per-core workers.
    #[arg(long)]
    pub work_stealing: bool,
    /// Listen with `SO_REUSEPORT`: several processes may serve the same addresses (each
    /// with its own `--admin` and upgrade socket).
    #[arg(long = "reuse-port")]
    pub reuse_port: bool,
    /// A config file (TOML) overriding the declared values; flags override it in turn.
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    pub conf: Option<std::path::PathBuf>,
    /// Load and check everything (config file, addresses, peers), print a verdict, exit
    /// 0 if all is well and 1 otherwise.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Print the effective configuration (declaration + file + flags) as TOML and exit.
    #[arg(long = "print-config")]
    pub print_config: bool,
    /// Run in the background (pid file, error log and user from the config's `[server]`).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Take over from a running process: wait on the upgrade socket for its listening
    /// sockets (send it SIGQUIT), serve on them, then let it drain and exit.
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Serve Prometheus metrics (`/metrics`) and the status page (`/status`,
    /// `/status.json`) on this address.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Write a line per request to `stdout`, to this file (reopened on SIGHUP), or to a
    /// syslog collector (`syslog:udp://IP:PORT?facility=local0&tag=NAME`, `syslog:tcp://...`,
    /// `syslog:unix:///dev/log`).
    #[arg(long = "access-log", value_name = "stdout|FILE|syslog:...")]
    pub access_log: Option<String>,
    /// The access log's format.
    #[arg(long = "access-log-format", value_name = "combined|json")]
    pub access_log_format: Option<String>,
    /// The loaded config file (filled in by [`run`]).
    #[arg(skip)]
    pub config: Option<Config>,
    /// The admin address the declaration gives (`admin "ADDR";`), used when neither
    /// `--admin` nor the config file sets one.
    #[arg(skip)]
    pub declared_admin: Option<String>,
    /// The TLS policy the declaration gives (`tls_groups [...]`, `fips on`), used for what
    /// the config file's `[server]` does not set.
    #[arg(skip)]
    pub declared_tls: crate::tls::TlsPolicy,
    /// The Sentry reporting the declaration gives (`sentry "DSN";`), used when the config
    /// file has no `[server.sentry]`.
    #[arg(skip)]
    pub declared_sentry: Option<SentrySettings>,
}

impl ProxyCli {
    /// Parses the process's arguments; prints help or an error and exits on bad ones.
    pub fn from_env() -> Self {
        ProxyCli::parse()
    }

    /// The server settings: defaults, then the config file, then the flags.
    pub fn server_conf(&self) -> io::Result<ServerConf> {
        let mut conf = ServerConf::default();
        if let Some(config) = &self.config {
            config.apply_server(&mut conf)?;
        }
        match self.threads {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--threads 0: must be at least 1",
                ))
            }
            Some(threads) => conf.threads = threads,
            None => {}
        }
        if self.work_stealing {
            conf.flavor = RuntimeFlavor::WorkStealing;
        }
        if self.reuse_port {
            conf.reuse_port = true;
        }
        Ok(conf)
    }

    /// Applies the config file's overrides for proxy `name`, then `--upstream`.
    pub fn configure(&self, name: &str, router: &mut Router) -> io::Result<()> {
        if let Some(config) = &self.config {
            config.apply_proxy(name, router)?;
        }
        self.apply_upstreams(router)
    }

    /// Applies the config file's connection settings for proxy `name` (the pool size)
    /// to `options`.
    pub fn configure_options(&self, name: &str, options: &mut ProxyOptions) -> io::Result<()> {
        if let Some(config) = &self.config {
            config.apply_options(name, options)?;
        }
        self.apply_access_log(options)
    }

    /// Applies `--access-log` and `--access-log-format` over what `options` has, and
    /// checks the log's file can be appended to.
    pub fn apply_access_log(&self, options: &mut ProxyOptions) -> io::Result<()> {
        crate::server::config::set_access_log(
            options,
            self.access_log.as_deref(),
            self.access_log_format.as_deref(),
        )
        .map_err(|e| invalid(format!("--access-log: {e}")))?;
        match &options.access_log {
            Some(log) => log.check(),
            None => Ok(()),
        }
    }

    /// Where the admin listener goes: `--admin`, else the config file's
    /// `[server] admin`, else the declared one.
    pub fn admin_addr(&self) -> Option<String> {
        self.admin
            .clone()
            .or_else(|| self.config.as_ref().and_then(|c| c.server.admin.clone()))
            .or_else(|| self.declared_admin.clone())
    }

    /// Where errors and panics are reported: the config file's `[server.sentry]`, else
    /// the declared one; `None` when neither sets a DSN.
    pub fn sentry_settings(&self) -> Option<SentrySettings> {
        self.config
            .as_ref()
            .and_then(|c| c.server.sentry.clone())
            .or_else(|| self.declared_sentry.clone())
    }

    /// The process's TLS policy: the config file's `[server] tls_groups` and `fips`, each
    /// else the declared one.
    pub fn tls_policy(&self) -> crate::tls::TlsPolicy {
        let server = self.config.as_ref().map(|c| &c.server);
        crate::tls::TlsPolicy {
            groups: server
                .and_then(|s| s.tls_groups.clone())
                .or_else(|| self.declared_tls.groups.clone()),
            fips: server
                .and_then(|s| s.fips)
                .unwrap_or(self.declared_tls.fips),
        }
    }

    /// What a declared proxy's `run` derives from the command line before building its
    /// service: applies the config file and `--upstream` to `router`, checks its groups,
    /// and returns the listening addresses (`declared_listen` unless overridden), the
    /// groups' background tasks, the effective configuration and the SIGHUP reloader
    /// (which rebuilds from `declared`).
    pub fn prepare(
        &self,
        name: &str,
        router: &mut Router,
        declared: fn() -> Router,
        declared_listen: &[&str],
        options: &ProxyOptions,
    ) -> io::Result<Prepared> {
        self.configure(name, router)?;
        router.check_auth()?;
        router.check_caches()?;
        router.check_shared_limits()?;
        for group in router.groups() {
            group.check()?;
            if !self.test {
                // Peers given by host name are resolved before serving; an unknown name
                // stops the start, as nginx's does.
                group.prime()?;
            }
            if self.test {
                // A discovery source is asked once, so `-t` fails as a start would.
                if let Some(line) = group.check_discovery()? {
                    println!("{line}");
                }
            }
        }
        let listen = self.listen_for(name, declared_listen)?;
        let conf = self.server_conf()?;
        Ok(Prepared {
            effective: Config::effective(
                name,
                &listen,
                router,
                options,
                &conf,
                self.admin_addr().as_deref(),
            ),
            tasks: router.background_tasks(),
            reloader: Reloader::new(name, self, declared, router.groups().to_vec())
                .with_access_log(options.access_log.clone()),
            listen,
        })
    }

    /// The listening addresses of proxy `name`: `--listen`, else the config file's, else
    /// `declared`.
    pub fn listen_for(&self, name: &str, declared: &[&str]) -> io::Result<Vec<String>> {
        if !self.listen.is_empty() {
            for addr in &self.listen {
                crate::listen::resolve(addr).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("--listen {addr}: {e}"))
                })?;
            }
            return Ok(self.listen.clone());
        }
        if let Some(list) = self
            .config
            .as_ref()
            .map(|c| c.listen(name))
            .transpose()?
            .flatten()
        {
            return Ok(list);
        }
        Ok(declared.iter().map(|a| (*a).to_owned()).collect())
    }

    /// Replaces the peers of the groups named by `--upstream`. Errors name the bad flag.
    pub fn apply_upstreams(&self, router: &mut Router) -> io::Result<()> {
        let mut replaced: Vec<(String, Vec<Backend>)> = Vec::new();
        for flag in &self.upstream {
            let (group, addr) = match flag.split_once('=') {
                Some((group, addr)) => (group.to_owned(), addr),
                None => match router.groups() {
                    [only] => (only.name().to_owned(), flag.as_str()),
                    groups => {
                        let names: Vec<&str> = groups.iter().map(|g| g.name()).collect();
                        return Err(invalid(format!(
                            "--upstream {flag}: say which group, as GROUP={flag} (groups: {})",
                            names.join(", ")
                        )));
                    }
                },
            };
            if !router.groups().iter().any(|g| g.name() == group) {
                let names: Vec<&str> = router.groups().iter().map(|g| g.name()).collect();
                return Err(invalid(format!(
                    "--upstream {flag}: no upstream group {group:?} (groups: {})",
                    names.join(", ")
                )));
            }
            let addrs = resolve(addr)
                .map_err(|e| invalid(format!("--upstream {flag}: invalid address: {e}")))?;
            let backends = addrs.into_iter().map(Backend::new);
            match replaced.iter_mut().find(|(g, _)| *g == group) {
                Some((_, list)) => list.extend(backends),
                None => replaced.push((group, backends.collect())),
            }
        }
        for (name, backends) in replaced {
            if let Some(group) = router.group_mut(&name) {
                // Peers given on the command line win over a declared discovery source.
                group.clear_discovery();
                group.set_backends(backends);
            }
        }
        Ok(())
    }

    /// Applies `--quic-listen`, else the config file's `quic_listen`, over the declared
    /// QUIC listeners of proxy `name`.
    pub fn apply_quic<M: crate::downstream::MakeConnService>(
        &self,
        name: &str,
        service: &mut crate::downstream::HttpService<M>,
    ) -> io::Result<()> {
        let from_file = self
            .config
            .as_ref()
            .and_then(|c| c.proxy.get(name))
            .and_then(|s| s.quic_listen.clone());
        let (addrs, from) = match (self.quic_listen.is_empty(), from_file) {
            (false, _) => (self.quic_listen.clone(), "--quic-listen".to_owned()),
            (true, Some(list)) => (list, format!("proxy.{name}.quic_listen")),
            (true, None) => return Ok(()),
        };
        for addr in &addrs {
            crate::listen::resolve(addr).map_err(|e| invalid(format!("{from}: {addr:?}: {e}")))?;
        }
        service.clear_quic();
        for addr in &addrs {
            service.add_quic(addr);
        }
        Ok(())
    }

    /// Applies the TLS listener settings to the service's TLS listeners: the config
    /// file's `tls_listen`, `[[certificate]]` and `client_ca` over the declared ones, then
    /// `--tls-listen`, `--cert`/`--key` and `--client-ca` over those. What is not given
    /// comes from the first declared TLS listener. Errors name the flag or key at fault.
    pub fn apply_tls(&self, service: &mut impl TlsListeners) -> io::Result<()> {
        let name = service.proxy_name().to_owned();
        let given = self.tls_given(&name)?;
        if given.addrs.is_none() && given.certs.is_none() && given.client_ca.is_none() {
            return Ok(());
        }
        let declared: Vec<ListenAddr> = service
            .listen_addrs()
            .iter()
            .filter(|l| l.tls.is_some())
            .cloned()
            .collect();
        let (addrs, addrs_from) = match given.addrs {
            Some(given) => given,
            None => (
                declared.iter().map(|l| l.addr.clone()).collect(),
                "the declaration".to_owned(),
            ),
        };
        if addrs.is_empty() {
            // No TLS listener wanted: a certificate or CA for none is a mistake.
            if let Some(from) = given.certs.map(|c| c.1).or(given.client_ca.map(|c| c.1)) {
                return Err(invalid(format!(
                    "{from}: no TLS listener to use it ({addrs_from} gives none); add --tls-listen ADDR or tls_listen = [\"ADDR\"] under [proxy.{name}]"
                )));
            }
            service.clear_tls();
            return Ok(());
        }
        let base = declared.first().and_then(|l| l.tls.clone());
        let mut settings = match (given.certs, base) {
            (Some((certs, _)), base) => TlsSettings {
                certs,
                client_ca: base.as_ref().and_then(|b| b.client_ca.clone()),
                handshake_timeout: base.and_then(|b| b.handshake_timeout),
            },
            (None, Some(base)) => base,
            (None, None) => {
                let from = given
                    .client_ca
                    .as_ref()
                    .map_or(addrs_from, |(_, f)| f.clone());
                return Err(invalid(format!(
                    "{from}: the proxy declares no TLS listener to take a certificate from; give --cert FILE --key FILE, or [[proxy.{name}.certificate]] with cert and key in the config file"
                )));
            }
        };
        if let Some((ca, _)) = given.client_ca {
            settings.client_ca = Some(ca);
        }
        service.clear_tls();
        for addr in addrs {
            service.add_tls(&addr, settings.clone());
        }
        Ok(())
    }

    /// The TLS settings the flags and the config file give for proxy `name` (flags over
    /// the file), each with where it came from, for the errors.
    fn tls_given(&self, name: &str) -> io::Result<TlsGiven> {
        let file = match &self.config {
            Some(config) => config.tls(name)?,
            None => crate::server::config::TlsOverrides::default(),
        };
        let at = |key: &str| format!("proxy.{name}.{key}");
        let certs = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((
                vec![CertKey {
                    cert: cert.clone(),
                    key: key.clone(),
                }],
                "--cert/--key".to_owned(),
            )),
            (None, None) => file.certs.map(|c| (c, at("certificate"))),
            _ => return Err(invalid("--cert and --key go together: give both".into())),
        };
        let client_ca = match &self.client_ca {
            Some(ca) => Some((ca.clone(), "--client-ca".to_owned())),
            None => file.client_ca.map(|ca| (ca, at("client_ca"))),
        };
        let addrs = if self.tls_listen.is_empty() {
            file.listen.map(|list| (list, at("tls_listen")))
        } else {
            for addr in &self.tls_listen {
                resolve(addr).map_err(|e| invalid(format!("--tls-listen {addr}: {e}")))?;
            }
            Some((self.tls_listen.clone(), "--tls-listen".to_owned()))
        };
        Ok(TlsGiven {
            certs,
            client_ca,
            addrs,
        })
    }

    /// Replaces the service's listening addresses with `--listen`, if given.
    pub fn apply_listeners<M: crate::downstream::MakeConnService>(
        &self,
        service: &mut HttpService<M>,
    ) {
        if self.listen.is_empty() {
            return;
        }
        service.clear_tcp();
        for addr in &self.listen {
            service.add_tcp(addr);
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Logs to stderr at `RUST_LOG`'s level (default `info`), unless a subscriber is set.
pub fn init_logging() {
    init_logging_at("info");
}

/// Logs to a syslog collector through `writer` (plain text, no colours), at `RUST_LOG`'s
/// level, else at `level`, unless a subscriber is set already.
pub fn init_logging_to(level: &str, writer: crate::observe::syslog::ProcessLogWriter) {
    init_subscriber(level, Some(writer), false);
}

/// Logs to stderr at `RUST_LOG`'s level, else at `level` (`info`, `debug`, or a filter
/// such as `warn,pingora_dsl_runtime=debug`), unless a subscriber is set already.
pub fn init_logging_at(level: &str) {
    init_subscriber(level, None, false);
}

/// The process's subscriber: the log (to `writer`, else stderr) at `RUST_LOG`'s level,
/// else `level`, and with `sentry` the layer that reports error events to Sentry (see
/// [`crate::observe::sentry`]). Nothing changes if a subscriber is set already.
pub fn init_subscriber(
    level: &str,
    writer: Option<crate::observe::syslog::ProcessLogWriter>,
    sentry: bool,
) {
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = match writer {
        Some(writer) => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(writer)
            .boxed(),
        None => tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .boxed(),
    };
    let sentry = sentry.then(crate::observe::sentry::tracing_layer);
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(sentry)
        .with(filter)
        .try_init();
}

/// What a declared proxy runs: its listening service, its groups' background tasks
/// (discovery, health checks), its effective configuration (for `--print-config`), and
/// what a reload on SIGHUP needs.
pub type Services<S> = (S, Vec<GroupTask>, Config, Reloader);

/// What [`ProxyCli::prepare`] derives for a declared proxy.
pub struct Prepared {
    /// The cleartext listening addresses.
    pub listen: Vec<String>,
    /// The groups' health checks and discovery.
    pub tasks: Vec<GroupTask>,
    /// The effective configuration, for `--print-config`.
    pub effective: Config,
    /// Re-applies the config file on SIGHUP.
    pub reloader: Reloader,
}

/// Re-applies a config file to a running proxy's upstream groups: the declared values,
/// then the file, then the command-line flags, exactly as at startup, so a key deleted
/// from the file reverts to its declared value.
pub struct Reloader {
    name: String,
    flags: ProxyCli,
    declared: Box<dyn Fn() -> Router + Send + Sync>,
    live: Vec<UpstreamGroup>,
    access_log: Option<AccessLog>,
    check: Option<ReloadCheck>,
    /// The reloaders of the other proxies of the process, reloaded from the same file.
    others: Vec<Reloader>,
}

/// A check a reloaded config file must pass before anything of it applies.
pub type ReloadCheck = Box<dyn Fn(&Config) -> io::Result<()> + Send + Sync>;

impl Reloader {
    /// A reloader for proxy `name` started with `flags`; `declared` builds its declared
    /// router, `live` are handles to the groups serving requests.
    pub fn new(
        name: &str,
        flags: &ProxyCli,
        declared: impl Fn() -> Router + Send + Sync + 'static,
        live: Vec<UpstreamGroup>,
    ) -> Self {
        Reloader {
            name: name.to_owned(),
            flags: ProxyCli {
                config: None,
                ..flags.clone()
            },
            declared: Box::new(declared),
            live,
            access_log: None,
            check: None,
            others: Vec::new(),
        }
    }

    /// Reloads `other`'s proxy (and those joined to it) too, from the same file: proxies
    /// run in one process.
    pub fn join(mut self, mut other: Reloader) -> Self {
        let joined = std::mem::take(&mut other.others);
        self.others.push(other);
        self.others.extend(joined);
        self
    }

    /// Every reloader of the process: this one, then those joined to it.
    fn all(&self) -> impl Iterator<Item = &Reloader> {
        std::iter::once(self).chain(self.others.iter())
    }

    /// Reopens every access log (after logrotate moved them).
    fn reopen_logs(&self) {
        for log in self.all().filter_map(|r| r.access_log.as_ref()) {
            log.reopen();
        }
    }

    /// Refuses a reloaded file that fails `check` (as the proxy's kind refuses keys it
    /// cannot honour at startup).
    pub fn with_check(
        mut self,
        check: impl Fn(&Config) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Box::new(check));
        self
    }

    /// Reopens `log`'s file on every SIGHUP (after logrotate moved it).
    pub fn with_access_log(mut self, log: Option<AccessLog>) -> Self {
        self.access_log = log;
        self
    }

    /// Reads the config file at `path` and applies it (peers, weights, timeouts, retries).
    /// Nothing changes if the file is invalid; requests in flight are not disturbed.
    /// Groups whose peers come from discovery keep them.
    pub fn reload(&self, path: &Path) -> io::Result<()> {
        let config = Config::load(path)?;
        let names: Vec<&str> = self.all().map(|r| r.name.as_str()).collect();
        config.check_proxies(&names)?;
        for check in self.all().filter_map(|r| r.check.as_ref()) {
            check(&config)?;
        }
        // Every proxy's file section is checked before any applies.
        let mut fresh = Vec::new();
        for reloader in self.all() {
            fresh.push(reloader.configured(&config)?);
        }
        for (reloader, fresh) in self.all().zip(fresh) {
            reloader.apply(fresh);
        }
        Ok(())
    }

    /// The declared router with `config` and the flags applied.
    fn configured(&self, config: &Config) -> io::Result<Router> {
        let flags = ProxyCli {
            config: Some(config.clone()),
            ..self.flags.clone()
        };
        let mut fresh = (self.declared)();
        flags.configure(&self.name, &mut fresh)?;
        Ok(fresh)
    }

    /// Gives the live groups the peers, timeouts and retries of `fresh`.
    fn apply(&self, fresh: Router) {
        for live in &self.live {
            let Some(wanted) = fresh.group(live.name()) else {
                continue;
            };
            live.set_timeouts(wanted.timeouts());
            live.set_retries(wanted.retries());
            if live.has_discovery() {
                if !wanted.has_discovery() {
                    tracing::warn!(
                        group = live.name(),
                        "peers of a discovered group are not reloaded; discovery keeps them"
                    );
                }
            } else {
                live.set_backends(wanted.backends());
            }
        }
    }
}

/// Waits for SIGHUP and reloads (see [`Reloader::reload`]) until `shutdown`. Without a config file
/// a SIGHUP is logged and ignored rather than ending the process.
pub async fn reload_on_hangup(
    reloader: Reloader,
    path: Option<PathBuf>,
    mut shutdown: ShutdownWatch,
) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloads are off");
            return;
        }
    };
    loop {
        tokio::select! {
            got = hangups.recv() => {
                if got.is_none() {
                    return;
                }
                reloader.reopen_logs();
                reload_certificates();
                reload_files();
                match &path {
                    None => tracing::info!("SIGHUP: no config file (-c) to reload"),
                    Some(path) => match reloader.reload(path) {
                        Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
                        Err(e) => tracing::error!(error = %e, "configuration NOT reloaded; the running one stays"),
                    },
                }
            }
            _ = shutdown.wait() => return,
        }
    }
}

/// Re-reads every credentials and key file (`auth` policies), logging the outcome: a file
/// that no longer loads keeps its previous contents.
fn reload_files() {
    let outcome = crate::watched::reload_files();
    for e in &outcome.failed {
        tracing::error!(error = %e, "file NOT reloaded; its previous contents stay");
    }
    if outcome.reloaded > 0 {
        tracing::info!(files = outcome.reloaded, "credential files reloaded");
    }
}

/// Re-reads every TLS listener's certificate and key files, logging the outcome: an
/// acceptor whose files no longer load keeps its previous certificate.
fn reload_certificates() {
    log_certificate_reload(&crate::listen::reload::reload_certificates());
}

/// Logs what a certificate reload did: each acceptor that kept its previous certificate,
/// and how many now serve the files as they are.
fn log_certificate_reload(outcome: &crate::listen::reload::Reloaded) {
    for e in &outcome.failed {
        tracing::error!(error = %e, "TLS certificate NOT reloaded; the previous one stays");
    }
    if outcome.reloaded > 0 {
        tracing::info!(listeners = outcome.reloaded, "TLS certificates reloaded");
    }
}

/// Checks the TLS listeners' files every `every` and loads those that changed, logging the
/// outcome as a SIGHUP does, until `shutdown`.
async fn watch_certificates(every: std::time::Duration, mut shutdown: ShutdownWatch) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait() => return,
        }
        // Reading file metadata may block: off the serving threads.
        let outcome =
            tokio::task::spawn_blocking(crate::listen::reload::reload_changed_certificates).await;
        if let Ok(outcome) = outcome {
            log_certificate_reload(&outcome);
        }
    }
}

/// A whole `main`: logs, builds the service and health checks with `build` (which applies
/// `cli`'s overrides), binds, prints where it listens, and serves until SIGINT/SIGTERM.
/// Errors go to stderr with exit code 1.
pub fn run<S, F>(name: &str, cli: ProxyCli, build: F) -> ExitCode
where
    S: Listening,
    F: FnOnce(&ProxyCli) -> io::Result<Services<S>>,
{
    run_named(name, &[name], cli, build)
}

/// [`run`] for a process serving the proxies `proxies` (a config file may have a
/// `[proxy.NAME]` for each), called `name` (its upgrade socket's name).
pub fn run_named<S, F>(name: &str, proxies: &[&str], cli: ProxyCli, build: F) -> ExitCode
where
    S: Listening,
    F: FnOnce(&ProxyCli) -> io::Result<Services<S>>,
{
    let mut cli = cli;
    let loaded = load_config(proxies, &mut cli);
    let server = cli.config.as_ref().map(|c| &c.server);
    let level = server
        .and_then(|s| s.log_level.as_deref())
        .unwrap_or("info");
    let sentry = cli.sentry_settings();
    // A bad `log` is reported by the configuration check; meanwhile logs go to stderr.
    let writer = match server
        .and_then(|s| s.log.as_deref())
        .map(crate::server::config::process_log_writer)
    {
        Some(Ok(writer)) => writer,
        _ => None,
    };
    init_subscriber(level, writer, sentry.is_some());
    let testing = cli.test;
    // A bad DSN is a configuration error like any other; reporting starts in `serve`.
    let checked = loaded.and_then(|()| sentry.as_ref().map_or(Ok(()), SentrySettings::check));
    match checked.and_then(|()| serve(name, cli, build)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if testing => {
            eprintln!("configuration test failed: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the `-c` file into `cli.config`, checking it names only the `proxies`.
fn load_config(proxies: &[&str], cli: &mut ProxyCli) -> io::Result<()> {
    if let Some(path) = &cli.conf {
        let config = Config::load(path)?;
        config.check_proxies(proxies)?;
        cli.config = Some(config);
    }
    Ok(())
}

fn serve<S, F>(name: &str, cli: ProxyCli, build: F) -> io::Result<()>
where
    S: Listening,
    F: FnOnce(&ProxyCli) -> io::Result<Services<S>>,
{
    let mut conf = cli.server_conf()?;
    // Before any TLS context is built: an unknown group or a missing FIPS module stops the
    // start here, naming it.
    configure_tls(&cli.tls_policy())?;
    let (mut service, tasks, effective, reloader) = build(&cli)?;
    let mut server_section = cli
        .config
        .as_ref()
        .map(|c| c.server.clone())
        .unwrap_or_default();
    server_section.sentry = cli.sentry_settings();
    if cli.print_config {
        return print_config(name, effective, &server_section, &conf, &service);
    }
    let identity = check_process(&server_section)?;
    let mut admin = cli
        .admin_addr()
        .as_deref()
        .map(|addr| admin_for(&service, addr));
    if cli.test {
        return check_only(name, &cli, &conf, &mut service, admin.as_mut());
    }
    let upgrade = conf
        .upgrade
        .get_or_insert_with(|| UpgradeConf::for_server(name));
    upgrade.access = HandoverAccess {
        run_as: identity.uid(),
    };
    let reuse_port = conf.reuse_port;
    let (sockets, handover) = bind(
        (cli.upgrade, reuse_port),
        upgrade,
        &mut service,
        admin.as_mut(),
    )?;
    // Bound (privileged ports too): now detach, record the pid, and give up root.
    let detached = if cli.daemon {
        Some(daemonize(server_section.error_log.as_deref())?)
    } else {
        None
    };
    let _pid_file = match &server_section.pid_file {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    identity.assume()?;
    // After the daemon's fork (the client's sending thread would not survive it); flushed
    // when this returns.
    let _sentry = cli.sentry_settings().map(|s| s.start()).transpose()?;
    if let Some(path) = &cli.conf {
        // SIGHUP reloads read the file as the user the process now runs as.
        Config::load(path)
            .map_err(|e| io::Error::new(e.kind(), format!("after dropping privileges: {e}")))?;
    }
    let mut server = Server::new(conf);
    // Handlers first: a signal sent on the readiness lines below is handled, not fatal.
    server.install_signals()?;
    announce(&service, admin.as_ref());
    server.set_sockets(sockets);
    // Started: first the old process of an upgrade is told, then the waiting foreground
    // part of a daemon (so a service manager's reload returns once the switch happened).
    if let Some(handover) = handover {
        server.ready_to(handover);
    }
    if let Some(detached) = detached {
        server.on_started(move || detached.started());
    }
    let tls_watch = cli.config.as_ref().map(Config::tls_watch).transpose()?;
    add_background(
        &mut server,
        reloader,
        cli.conf.clone(),
        tasks,
        tls_watch.flatten(),
    );
    server.add_service(service);
    if let Some(admin) = admin {
        server.add_service(admin);
    }
    server.run_until_signal()
}

/// Applies the process's TLS policy (see [`crate::tls::configure`]), logging it when it is
/// not the default.
fn configure_tls(policy: &crate::tls::TlsPolicy) -> io::Result<()> {
    crate::tls::configure(policy).map_err(|e| io::Error::new(e.kind(), format!("TLS: {e}")))?;
    if *policy != crate::tls::TlsPolicy::default() {
        tracing::info!(
            library = crate::tls::library_version(),
            groups = %crate::tls::groups().join(":"),
            fips = policy.fips,
            "TLS policy"
        );
    }
    Ok(())
}

/// Whatever of `[server]` can fail later fails now, in the foreground (and under `-t`): the
/// user and group to run as, the pid file, the error log. Returns the identity to assume.
fn check_process(server: &crate::server::config::ServerSection) -> io::Result<Identity> {
    let identity = Identity::lookup(server.user.as_deref(), server.group.as_deref())?;
    identity.check()?;
    if let Some(path) = &server.pid_file {
        PidFile::check(path)?;
    }
    if let Some(path) = &server.error_log {
        // Checked, not created: `-t` writes no file (the daemon creates it).
        crate::observe::access_log::check_append(path, "error log")?;
    }
    Ok(identity)
}

/// The admin listener on `addr`, watching every proxy of `service`.
fn admin_for<S: Listening>(service: &S, addr: &str) -> AdminService {
    let admin = Admin::new();
    for observer in service.observers() {
        admin.watch(observer);
    }
    admin.service(addr)
}

/// Adds the SIGHUP reloader (of the file at `conf`), the groups' tasks and the watch of
/// certificate files (every `tls_watch`, if given) to `server`.
fn add_background(
    server: &mut Server,
    reloader: Reloader,
    conf: Option<PathBuf>,
    tasks: Vec<GroupTask>,
    tls_watch: Option<std::time::Duration>,
) {
    server.add_service(background_service("reload on SIGHUP", move |shutdown| {
        reload_on_hangup(reloader, conf, shutdown)
    }));
    if let Some(every) = tls_watch {
        server.add_service(background_service(
            "TLS certificate watch",
            move |shutdown| watch_certificates(every, shutdown),
        ));
    }
    for task in tasks {
        server.add_service(background_service(task.name(), move |shutdown| {
            task.run(shutdown)
        }));
    }
}

/// The admin listener's service.
type AdminService =
    HttpService<crate::downstream::ServeHandler<crate::observe::admin::AdminHandler>>;

/// Binds the service and the admin listener: on sockets received from the running process
/// with `-u` (returning the handle to tell it once serving), else on fresh ones (with
/// `SO_REUSEPORT` if asked).
fn bind<S: Listening>(
    (upgrade_flag, reuse_port): (bool, bool),
    upgrade: &UpgradeConf,
    service: &mut S,
    admin: Option<&mut AdminService>,
) -> io::Result<(Sockets, Option<crate::server::handover::Handover>)> {
    let mut sockets = Sockets::new();
    let mut handover = None;
    if upgrade_flag {
        tracing::info!(socket = %upgrade.socket.display(), "waiting for the running process to hand its sockets over (send it SIGQUIT)");
        let (fds, ready) =
            crate::server::handover::receive(&upgrade.socket, upgrade.timeout, upgrade.access)?;
        sockets = Sockets::inherit(fds)?;
        handover = Some(ready);
    }
    sockets.set_reuse_port(reuse_port);
    service.bind_with(&mut sockets)?;
    if let Some(admin) = admin {
        admin.bind_with(&mut sockets).map_err(admin_error)?;
    }
    Ok((sockets, handover))
}

fn admin_error(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("admin listener: {e}"))
}

/// `--print-config`: the effective configuration, with the server settings the process
/// would use, as TOML on stdout.
fn print_config<S: Listening>(
    name: &str,
    mut effective: Config,
    server_section: &crate::server::config::ServerSection,
    conf: &ServerConf,
    service: &S,
) -> io::Result<()> {
    effective.server.pid_file = server_section.pid_file.clone();
    effective.server.error_log = server_section.error_log.clone();
    effective.server.user = server_section.user.clone();
    effective.server.group = server_section.group.clone();
    let upgrade = conf
        .upgrade
        .clone()
        .unwrap_or_else(|| UpgradeConf::for_server(name));
    effective.server.upgrade_socket = Some(upgrade.socket);
    effective.server.upgrade_timeout = Some(crate::server::config::show_duration(upgrade.timeout));
    effective.server.log_level = server_section.log_level.clone();
    effective.server.log = server_section.log.clone();
    effective.server.tls_groups = Some(crate::tls::groups());
    effective.server.sentry = server_section.sentry.clone();
    effective.server.fips = crate::tls::fips().then_some(true);
    if let Some(quic) = service.quic_listeners() {
        let section = effective.proxy.entry(name.to_owned()).or_default();
        section.quic_listen = Some(quic);
    }
    for (name, tls) in service.tls_listeners_named() {
        let differing = effective.set_tls(&name, &tls);
        if !differing.is_empty() {
            eprintln!(
                "warning: the TLS listeners {} serve other certificates than the first; a config file gives all TLS listeners one set, so the printed one gives them the first's",
                differing.join(", ")
            );
        }
    }
    print!("{}", effective.to_toml()?);
    Ok(())
}

/// `-t`: checks the service and the admin listener, binds and releases their addresses
/// (unless `-u`), and prints the verdict.
fn check_only<S: Listening>(
    name: &str,
    cli: &ProxyCli,
    conf: &ServerConf,
    service: &mut S,
    admin: Option<&mut AdminService>,
) -> io::Result<()> {
    service.check()?;
    if let Some(admin) = &admin {
        admin.check().map_err(admin_error)?;
    }
    // Bound and released with the options of a start, so an address in use or one the
    // machine lacks fails here as it would there; with `-u` the running process holds
    // them, to hand over.
    if !cli.upgrade {
        let mut probe = Sockets::new();
        probe.set_reuse_port(conf.reuse_port);
        service.bind_with(&mut probe)?;
        if let Some(admin) = admin {
            admin.bind_with(&mut probe).map_err(admin_error)?;
        }
    }
    println!(
        "configuration OK: {name} would listen on {} with {} worker thread(s)",
        service.addrs().join(", "),
        conf.threads
    );
    Ok(())
}

/// Prints where the service and the admin listener listen: the readiness lines.
fn announce<S: Listening>(service: &S, admin: Option<&AdminService>) {
    for (name, addr, scheme) in service.bound_named() {
        match scheme {
            "http" | "https" => {
                println!("{name} listening on {scheme}://{addr}/ (try: curl -i {scheme}://{addr}/)")
            }
            _ => println!("{name} listening on {scheme} {addr}"),
        }
    }
    if let Some(admin) = admin {
        for addr in admin.local_addrs() {
            println!("admin on http://{addr}/status (metrics: http://{addr}/metrics)");
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the admin listener has no authentication and is reachable beyond this host: keep it on a private network");
            }
        }
    }
}

/// TLS listener settings given by flags or the config file, each with where it came from
/// (a flag or a config key), to name it in errors.
struct TlsGiven {
    certs: Option<(Vec<CertKey>, String)>,
    client_ca: Option<(PathBuf, String)>,
    addrs: Option<(Vec<String>, String)>,
}

//! The config file of a declared proxy: server settings, and overrides of each declared
//! proxy's values by name. The declaration gives the defaults, the file wins over them,
//! and command-line flags win over the file.
//!
//! TOML, because it is what Rust users already write for Cargo, needs no indentation
//! rules, and its parser reports every error with a line and column. Unknown keys are
//! errors that name the key's path and line.
//!
//! ```toml
//! [server]
//! threads = 4
//! work_stealing = false
//! reuse_port = false                 # true: SO_REUSEPORT, several processes on one port
//! grace_period = "10s"               # for requests in flight at a stop or upgrade
//! graceful_shutdown_timeout = "1s"   # then for background tasks
//! pid_file = "/run/gateway.pid"
//! error_log = "/var/log/gateway.log" # with -d
//! user = "www-data"                  # dropped to after binding
//! upgrade_socket = "/run/gateway.upgrade.sock" # -u and SIGQUIT meet here
//! upgrade_timeout = "30s"
//! admin = "127.0.0.1:9100"          # /metrics, /status, /status.json
//! log_level = "info"                 # RUST_LOG wins
//! log = "syslog:unix:///dev/log?facility=daemon&tag=gateway" # the process log; default stderr
//! tls_groups = ["X25519MLKEM768", "X25519", "P-256"] # key exchange, preferred first
//! fips = false                       # true: FIPS module or no start
//! tls_watch = "10s"                  # certificate files checked for changes this often
//!
//! [server.sentry]                    # errors and panics to Sentry; off without it
//! dsn = "https://PUBLIC_KEY@o0.ingest.sentry.io/42"
//! sample_rate = 0.25                 # share of error events sent (default 1.0)
//! environment = "production"
//!
//! [proxy.Gateway]
//! listen = ["0.0.0.0:8080", "[::]:8080"]
//! tls_listen = ["0.0.0.0:8443"]      # served with the certificates below
//! quic_listen = ["0.0.0.0:8443"]     # HTTP/3 (UDP), the same certificates; Alt-Svc names it
//! client_ca = "/etc/gateway/clients-ca.pem" # optional: require client certificates
//! max_idle_per_peer = 128            # upstream pool size (at start)
//! access_log = "/var/log/gateway.access.log" # or "stdout"; reopened on SIGHUP
//! access_log_format = "json"         # or "combined"
//! allow_upgrade = ["websocket"]      # protocols a client may switch to (never "h2c")
//! cors_origins = ["https://app.example.com"] # replaces the `cors` policy's origins
//! allow = ["10.0.0.0/8"]             # client blocks; with deny, replace the proxy's lists
//! deny = ["10.66.0.0/16"]
//! trusted_proxies = ["10.0.0.0/8"]   # load balancers whose X-Forwarded-For names the client
//! proxy_protocol = "required"        # or "optional", "off": a PROXY header starts each connection
//!
//! [proxy.Gateway.cache]               # the declared `cache`'s sizes and times
//! memory = "256MiB"
//! max_object = "16MiB"
//! ttl = "1m"
//! stale_while_revalidate = "10s"
//! stale_if_error = "5m"
//! lock_timeout = "5s"
//! disk = "/var/cache/gateway"         # a disk tier (restarts warm), with its size
//! disk_size = "10GiB"
//!
//! [proxy.Gateway.shared_limits]       # the declared `rate_limit ... shared` ones
//! redis = "redis://10.0.0.5:6379/0"
//! timeout = "5ms"                     # the longest a request waits for Redis
//! fallback = "local"                  # or "open", "closed": when Redis cannot answer
//!
//! [[proxy.Gateway.certificate]]       # several: chosen by SNI, the first the default
//! cert = "/etc/gateway/example.com.crt"
//! key = "/etc/gateway/example.com.key"
//!
//! [proxy.Gateway.upstream.api]
//! peers = ["10.0.0.1:9000", "10.0.0.2:9000 weight 3"]
//! retry = 2
//! timeout = { connect = "500ms", read = "30s" }
//!
//! [proxy.Gateway.upstream.web]        # peers watched in etcd instead (not with `peers`)
//! etcd = { endpoints = ["http://10.0.0.7:2379"], prefix = "/services/web/" }
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lb::etcd::EtcdDiscovery;
use crate::lb::UpstreamGroup;
use crate::lb::{Backend, MAX_WEIGHT};
use crate::listen::tls::CertKey;
use crate::listen::ListenAddr;
use crate::observe::access_log::{AccessLog, AccessLogFormat, AccessLogTarget};
use crate::proxy::route::rate::shared::{Fallback, SharedSettings};
use crate::proxy::route::rate::store::RedisStore;
use crate::proxy::route::Router;
use crate::proxy::{AllowedUpgrades, ProxyOptions};
use crate::server::handover::UpgradeConf;
use crate::server::{RuntimeFlavor, ServerConf};
use crate::upstream::PeerTimeouts;

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub server: ServerSection,
    /// Overrides per declared proxy, by its name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy: BTreeMap<String, ProxySection>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Worker threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// One work-stealing runtime instead of per-core workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_stealing: Option<bool>,
    /// Listening sockets bound with `SO_REUSEPORT`: several processes share the addresses
    /// (each with its own `admin` and `upgrade_socket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_port: Option<bool>,
    /// Time in-flight requests get to finish at shutdown (`"10s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
    /// After the grace period, time background tasks and the runtime get to stop before
    /// the process exits (`"100ms"`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_shutdown_timeout: Option<String>,
    /// With `-d`: where the daemon writes its pid (removed on exit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<std::path::PathBuf>,
    /// With `-d`: where stdout and stderr (the log) go; default `/dev/null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_log: Option<std::path::PathBuf>,
    /// The user to run as once the listening sockets are bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group to run as once the listening sockets are bound (default: the user's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The Unix socket a new process started with `-u` waits on for the listening
    /// sockets (default: `pingora-dsl-NAME.upgrade.sock` in the temporary directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// How long the new process waits for the sockets and the old one for the new one to
    /// serve (`"30s"`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_timeout: Option<String>,
    /// Where the admin listener serves `/metrics`, `/status` and `/status.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The log level (`info`, `debug`, or a `RUST_LOG`-style filter); `RUST_LOG` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Where the process log goes: `stderr` (the default) or a syslog collector over
    /// datagrams (`syslog:udp://IP:PORT`, `syslog:unix:///dev/log`, with `?facility=&tag=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The TLS key-exchange groups offered to clients and origins, in order of preference
    /// (default: `X25519MLKEM768`, `X25519`, `P-256`, `P-384` where the TLS library has the
    /// post-quantum one, else the last three). A group the library lacks stops the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_groups: Option<Vec<String>>,
    /// FIPS mode: the TLS library's FIPS module for every algorithm, approved cipher suites
    /// and groups only; the start fails when the module is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fips: Option<bool>,
    /// How often the TLS listeners' certificate, key and CA files are checked for changes
    /// (`"10s"`); a changed one is loaded as on SIGHUP. Off without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_watch: Option<String>,
    /// Errors and panics to Sentry (`[server.sentry]`: `dsn`, `sample_rate`,
    /// `environment`); off without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentry: Option<crate::observe::sentry::SentrySettings>,
}

/// `[proxy.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Listening addresses, replacing the declared ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Vec<String>>,
    /// TLS listening addresses, replacing the declared TLS ones (`[]`: none). They serve
    /// `certificate` and `client_ca`, each else the first declared TLS listener's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<Vec<String>>,
    /// QUIC (HTTP/3) addresses, serving the TLS listener's certificates, replacing the
    /// declared `listen quic` ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic_listen: Option<Vec<String>>,
    /// With a CA file, clients of the TLS listeners must present a certificate it signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Most idle pooled connections kept per upstream peer (read at start; a reload
    /// does not resize running pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle_per_peer: Option<usize>,
    /// Where the access log goes: `"stdout"` or a file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<String>,
    /// The access log's format: `"combined"` (the default) or `"json"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
    /// The protocols a client may switch to with `Upgrade` (`["websocket"]` by default;
    /// `[]` for none; `"h2c"` is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_upgrade: Option<Vec<String>>,
    /// The TLS listeners' certificates (`[[proxy.NAME.certificate]]`, one or more: chosen
    /// by the names they carry (SNI), the first the default), replacing the declared ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Vec<CertificateSection>>,
    /// How long a connection (TCP) or client mapping (UDP) of a layer-4 proxy may carry
    /// nothing before it is closed (`"10m"`); an HTTP proxy refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    /// The origins the proxy's `cors` policy allows (`["*"]`: any), replacing the
    /// declared ones; the proxy must declare a `cors` policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Vec<String>>,
    /// Client address blocks allowed (`["10.0.0.0/8"]`); with `deny`, replacing the
    /// proxy's declared `allow`/`deny` lists (routes with their own keep them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Client address blocks refused (403); see `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
    /// Whether connections start with a PROXY protocol header: `"required"`, `"optional"`
    /// or `"off"`, replacing the declared `proxy_protocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// Proxies in front whose `Forwarded`/`X-Forwarded-For` name the client (`[]`: none),
    /// replacing the declared `trusted_proxies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    /// The sizes and times of the proxy's declared `cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSection>,
    /// Where the proxy's shared rate limits count, and what decides without Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_limits: Option<SharedLimitsSection>,
    /// Overrides per upstream group, by its name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream: BTreeMap<String, UpstreamSection>,
}

/// `[proxy.NAME.cache]`: sizes (`"256MiB"`) and times (`"1m"`) of the proxy-wide `cache`,
/// replacing the declared ones (read at start).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// The memory budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The largest body stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object: Option<String>,
    /// Freshness for responses that give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// How long past fresh an answer is served while refreshed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate: Option<String>,
    /// How long past fresh an answer is served when the origin fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<String>,
    /// How long a miss waits for another request fetching the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_timeout: Option<String>,
    /// The disk tier's directory (with `disk_size`), replacing the declared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<PathBuf>,
    /// The disk tier's byte budget (`"10GiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<String>,
}

/// `[proxy.NAME.shared_limits]`: the Redis, timeout and fallback of every `rate_limit ...
/// shared` the proxy declares, replacing the declared ones (read at start).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SharedLimitsSection {
    /// `redis://HOST:PORT/DB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// The longest a request waits for Redis (`"5ms"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `"local"`, `"open"` or `"closed"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// The `[proxy.NAME.shared_limits]` section that sets the shared limits as they are.
fn shared_limits_section(settings: &SharedSettings) -> SharedLimitsSection {
    SharedLimitsSection {
        redis: Some(settings.url.clone()),
        timeout: Some(format!("{}ms", settings.timeout.as_millis())),
        fallback: Some(settings.fallback.name().to_owned()),
    }
}

/// `[[proxy.NAME.certificate]]`: a certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    /// The certificate chain: the leaf first, then intermediates.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

/// The TLS listener settings a config file gives a proxy (each `None` when not set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOverrides {
    /// `tls_listen`: the TLS addresses, checked to parse.
    pub listen: Option<Vec<String>>,
    /// `[[certificate]]`: at least one.
    pub certs: Option<Vec<CertKey>>,
    /// `client_ca`.
    pub client_ca: Option<PathBuf>,
}

/// `[proxy.NAME.upstream.GROUP]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Peers, `"IP:PORT"` or `"IP:PORT weight N"`, replacing the declared ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    /// Timeouts to change (the others keep their values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutSection>,
    /// Peers watched under a prefix in etcd, replacing the declared peers or discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSection>,
    /// Retry budget after failed connects and broken connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
}

/// `etcd = { endpoints = ["http://HOST:2379"], prefix = "/services/api/" }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// `http://HOST:PORT` of each etcd member, tried in turn.
    pub endpoints: Vec<String>,
    /// The key prefix whose keys are the peers.
    pub prefix: String,
}

/// `timeout = { connect = "1s", ... }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSection {
    /// Connect timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    /// Read timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    /// Write timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<String>,
    /// Idle timeout of pooled connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
}

/// A size as the config file writes it, in the largest unit that divides it.
fn show_size(bytes: u64) -> String {
    for (unit, name) in [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// The `[proxy.NAME.cache]` section that sets `cache` as it is.
fn cache_section(cache: &crate::proxy::cache::HttpCache) -> CacheSection {
    let limits = cache.limits();
    let show = show_duration;
    CacheSection {
        memory: Some(show_size(limits.memory)),
        max_object: Some(show_size(limits.max_object)),
        ttl: limits.ttl.map(show),
        stale_while_revalidate: Some(show(limits.stale_while_revalidate)),
        stale_if_error: Some(show(limits.stale_if_error)),
        lock_timeout: Some(show(limits.lock_timeout)),
        disk: cache.disk_store().map(|d| d.dir().to_path_buf()),
        disk_size: cache.disk_store().map(|d| show_size(d.budget())),
    }
}

/// The `allow` (or deny) blocks of `list`, as text.
fn blocks_of(list: &crate::proxy::route::AccessList, allowed: bool) -> Vec<String> {
    list.blocks()
        .iter()
        .filter(|(_, a)| *a == allowed)
        .map(|(block, _)| show_block(block))
        .collect()
}

/// `10.0.0.0/8`.
fn show_block(block: &pingora_dsl_rules::Cidr) -> String {
    format!("{}/{}", block.network(), block.prefix())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A duration as the config file writes it: `"30s"`, `"250ms"`, `"0.5ms"`.
pub fn show_duration(d: Duration) -> String {
    match d.as_micros() {
        us if us % 1_000_000 == 0 => format!("{}s", us / 1_000_000),
        us if us % 1000 == 0 => format!("{}ms", us / 1000),
        us => format!("{}ms", us as f64 / 1000.0),
    }
}

/// A size as the config file writes it: `"65536"`, `"64KiB"`, `"256MiB"`, `"1GiB"`, above 0.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let bytes = pingora_dsl_rules::size_unit(unit.trim())
        .and_then(|unit| number.parse::<u64>().ok()?.checked_mul(unit as u64));
    match bytes {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid size {text:?}: write a number above 0 with a unit, bytes, KiB, MiB or GiB (e.g. \"256MiB\")"
        )),
    }
}

/// `"500ms"`, `"30s"`, `"1.5s"`, `"2m"`, `"1h"`: the units and range of the `proxy!`
/// language, as `pingora_dsl_rules::duration` (which the macro applies too) defines them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = pingora_dsl_rules::split_duration(text);
    pingora_dsl_rules::duration(number, unit).map_err(|e| match e {
        pingora_dsl_rules::DurationError::Unit => format!(
            "invalid duration {text:?}: write a number with a unit, ms, s, m or h (\"30s\")"
        ),
        pingora_dsl_rules::DurationError::Number => {
            format!("invalid duration {text:?}: the number is missing")
        }
        pingora_dsl_rules::DurationError::Range => {
            format!("duration {text:?} is out of range: 1ms to 7 days")
        }
    })
}

/// Points `options` at the access log `target` (`"stdout"` or a path) in `format`;
/// either may be `None` to keep what `options` had (a format alone applies to the
/// declared log, or to stdout).
pub fn set_access_log(
    options: &mut ProxyOptions,
    target: Option<&str>,
    format: Option<&str>,
) -> io::Result<()> {
    if target.is_none() && format.is_none() {
        return Ok(());
    }
    let current = options.access_log.as_ref();
    let format = match format {
        Some(f) => AccessLogFormat::parse(f)?,
        None => current.map_or(AccessLogFormat::Combined, AccessLog::format),
    };
    let target = match target {
        Some(t) => AccessLogTarget::parse(t)?,
        None => current.map_or(AccessLogTarget::Stdout, |l| l.target().clone()),
    };
    options.access_log = Some(AccessLog::open(target, format)?);
    Ok(())
}

/// The process log's syslog writer for `target`; `None` for `stderr`; an error for
/// anything else, or a syslog stream (the process log uses datagrams).
pub fn process_log_writer(
    target: &str,
) -> io::Result<Option<crate::observe::syslog::ProcessLogWriter>> {
    if target == "stderr" {
        return Ok(None);
    }
    match pingora_dsl_rules::parse_syslog(target) {
        Some(Ok(spec)) => crate::observe::syslog::ProcessLogWriter::new(spec).map(Some),
        Some(Err(e)) => Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{target:?}: the process log goes to \"stderr\" or \"syslog:udp://IP:PORT\" / \"syslog:unix:///dev/log\""),
        )),
    }
}

/// `"IP:PORT"` or `"IP:PORT weight N"` (the language's peer rule), and not port 0.
fn parse_peer(text: &str) -> Result<Backend, String> {
    let shape = || format!("invalid peer {text:?}: write \"IP:PORT\" or \"IP:PORT weight N\"");
    let first = text.split_whitespace().next().unwrap_or("");
    if first.parse::<SocketAddr>().is_ok_and(|a| a.port() == 0) {
        return Err(format!("invalid peer {text:?}: port 0"));
    }
    match pingora_dsl_rules::parse_peer(text) {
        Ok((addr, weight)) => Ok(Backend::weighted(addr, weight)),
        Err(pingora_dsl_rules::PeerError::Weight) => Err(format!(
            "invalid peer {text:?}: a weight goes from 1 to {MAX_WEIGHT}"
        )),
        Err(_) => Err(shape()),
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

impl Config {
    /// Parses a config file's text; errors name the key's path and its line.
    pub fn parse(text: &str) -> io::Result<Config> {
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            invalid(format!("line {line}: {}", e.message()))
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.span().map_or(1, |s| line_of(text, s.start));
            invalid(format!("{path} (line {line}): {}", inner.message()))
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> io::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// `[server] tls_watch`: how often certificate files are checked for changes.
    pub fn tls_watch(&self) -> io::Result<Option<std::time::Duration>> {
        let Some(every) = &self.server.tls_watch else {
            return Ok(None);
        };
        let every = parse_duration(every).map_err(|e| invalid(format!("server.tls_watch: {e}")))?;
        if every < std::time::Duration::from_millis(100) {
            return Err(invalid(
                "server.tls_watch: check at most every 100ms (\"10s\" is plenty)".into(),
            ));
        }
        Ok(Some(every))
    }

    /// Applies `[server]` to `conf`.
    pub fn apply_server(&self, conf: &mut ServerConf) -> io::Result<()> {
        self.tls_watch()?;
        if let Some(threads) = self.server.threads {
            if threads == 0 {
                return Err(invalid("server.threads: must be at least 1".into()));
            }
            conf.threads = threads;
        }
        if let Some(reuse) = self.server.reuse_port {
            conf.reuse_port = reuse;
        }
        if let Some(ws) = self.server.work_stealing {
            conf.flavor = if ws {
                RuntimeFlavor::WorkStealing
            } else {
                RuntimeFlavor::PerCore
            };
        }
        if let Some(grace) = &self.server.grace_period {
            conf.grace_period =
                parse_duration(grace).map_err(|e| invalid(format!("server.grace_period: {e}")))?;
        }
        if let Some(t) = &self.server.graceful_shutdown_timeout {
            conf.shutdown_timeout = parse_duration(t)
                .map_err(|e| invalid(format!("server.graceful_shutdown_timeout: {e}")))?;
        }
        if let Some(level) = &self.server.log_level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| invalid(format!("server.log_level: {e}")))?;
        }
        if let Some(target) = &self.server.log {
            process_log_writer(target).map_err(|e| invalid(format!("server.log: {e}")))?;
        }
        if let Some(path) = &self.server.upgrade_socket {
            conf.upgrade.get_or_insert_with(UpgradeConf::default).socket = path.clone();
        }
        if let Some(timeout) = &self.server.upgrade_timeout {
            let timeout = parse_duration(timeout)
                .map_err(|e| invalid(format!("server.upgrade_timeout: {e}")))?;
            if timeout.is_zero() {
                return Err(invalid(
                    "server.upgrade_timeout: must be more than 0".into(),
                ));
            }
            conf.upgrade
                .get_or_insert_with(UpgradeConf::default)
                .timeout = timeout;
        }
        Ok(())
    }

    /// Checks that every `[proxy.NAME]` names one of `declared`.
    pub fn check_proxies(&self, declared: &[&str]) -> io::Result<()> {
        for name in self.proxy.keys() {
            if !declared.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "proxy.{name}: no proxy named {name:?} is declared (declared: {})",
                    declared.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Applies `[proxy.NAME]`'s upstream overrides to `router` at startup. A group given
    /// `peers` here stops its discovery. Listening addresses are returned by
    /// [`listen`](Config::listen).
    pub fn apply_proxy(&self, name: &str, router: &mut Router) -> io::Result<()> {
        self.apply_cors(name, router)?;
        self.apply_cache(name, router)?;
        self.apply_shared_limits(name, router)?;
        self.apply_etcd(name, router)?;
        self.apply_access(name, router)?;
        let replaced = self.apply_groups(name, router.groups())?;
        for group in replaced {
            if let Some(g) = router.group_mut(&group) {
                g.clear_discovery();
            }
        }
        Ok(())
    }

    /// Applies `[proxy.NAME] allow`/`deny` to the proxy's access list.
    fn apply_access(&self, name: &str, router: &mut Router) -> io::Result<()> {
        let Some(section) = self.proxy.get(name) else {
            return Ok(());
        };
        if section.allow.is_none() && section.deny.is_none() {
            return Ok(());
        }
        let (allow, deny) = (
            section.allow.as_deref().unwrap_or_default(),
            section.deny.as_deref().unwrap_or_default(),
        );
        let list = crate::proxy::route::AccessList::parse(allow, deny)
            .map_err(|e| invalid(format!("proxy.{name}: allow/deny: {e}")))?;
        router.set_access((!list.blocks().is_empty()).then_some(list));
        Ok(())
    }

    /// Applies `etcd = { ... }` of each `[proxy.NAME.upstream.GROUP]`: the group's peers
    /// are watched there.
    fn apply_etcd(&self, name: &str, router: &mut Router) -> io::Result<()> {
        let Some(section) = self.proxy.get(name) else {
            return Ok(());
        };
        for (group_name, up) in &section.upstream {
            let Some(etcd) = &up.etcd else { continue };
            let at = format!("proxy.{name}.upstream.{group_name}.etcd");
            if up.peers.is_some() {
                return Err(invalid(format!(
                    "{at}: give the peers or where to watch them, not both"
                )));
            }
            let endpoints: Vec<&str> = etcd.endpoints.iter().map(String::as_str).collect();
            EtcdDiscovery::check(&endpoints, &etcd.prefix)
                .map_err(|e| invalid(format!("{at}: {e}")))?;
            // (An unknown group is reported by `apply_groups`.)
            if let Some(group) = router.group_mut(group_name) {
                group.set_discovery(
                    EtcdDiscovery::new(&endpoints, &etcd.prefix),
                    EtcdDiscovery::DEFAULT_INTERVAL,
                );
            }
        }
        Ok(())
    }

    /// Applies `[proxy.NAME.shared_limits]` to every shared rate limit of the proxy.
    fn apply_shared_limits(&self, name: &str, router: &mut Router) -> io::Result<()> {
        let Some(section) = self.proxy.get(name).and_then(|s| s.shared_limits.as_ref()) else {
            return Ok(());
        };
        let at = |key: &str| format!("proxy.{name}.shared_limits.{key}");
        if let Some(url) = &section.redis {
            RedisStore::check_url(url).map_err(|e| invalid(format!("{}: {e}", at("redis"))))?;
        }
        let timeout = section
            .timeout
            .as_deref()
            .map(|t| match parse_duration(t) {
                Ok(d) if !d.is_zero() && d <= Duration::from_secs(1) => Ok(d),
                Ok(_) => Err(invalid(format!(
                    "{}: from 1ms to 1s (a request waits that long for Redis)",
                    at("timeout")
                ))),
                Err(e) => Err(invalid(format!("{}: {e}", at("timeout")))),
            })
            .transpose()?;
        let fallback = section
            .fallback
            .as_deref()
            .map(|f| Fallback::parse(f).map_err(|e| invalid(format!("{}: {e}", at("fallback")))))
            .transpose()?;
        let changed = router
            .set_shared_settings(|current| SharedSettings {
                url: section.redis.clone().unwrap_or_else(|| current.url.clone()),
                timeout: timeout.unwrap_or(current.timeout),
                fallback: fallback.unwrap_or(current.fallback),
            })
            .map_err(|e| invalid(format!("proxy.{name}.shared_limits: {e}")))?;
        if changed == 0 {
            return Err(invalid(format!(
                "proxy.{name}.shared_limits: proxy {name} declares no shared rate limit (`rate_limit N per D shared \"redis://...\"`)"
            )));
        }
        Ok(())
    }

    /// Applies `[proxy.NAME.cache]` to the proxy's declared cache.
    fn apply_cache(&self, name: &str, router: &mut Router) -> io::Result<()> {
        let Some(section) = self.proxy.get(name).and_then(|s| s.cache.as_ref()) else {
            return Ok(());
        };
        let Some(cache) = router.cache_mut() else {
            return Err(invalid(format!(
                "proxy.{name}.cache: proxy {name} declares no `cache` to set"
            )));
        };
        let at = |key: &str| format!("proxy.{name}.cache.{key}");
        let size = |key: &str, text: &Option<String>| -> io::Result<Option<u64>> {
            text.as_deref()
                .map(|t| parse_size(t).map_err(|e| invalid(format!("{}: {e}", at(key)))))
                .transpose()
        };
        let time = |key: &str, text: &Option<String>| -> io::Result<Option<Duration>> {
            text.as_deref()
                .map(|t| parse_duration(t).map_err(|e| invalid(format!("{}: {e}", at(key)))))
                .transpose()
        };
        let mut updated = std::mem::take(cache);
        if let Some(n) = size("memory", &section.memory)? {
            updated = updated.memory_budget(n);
        }
        if let Some(n) = size("max_object", &section.max_object)? {
            updated = updated.max_object(n);
        }
        if let Some(d) = time("ttl", &section.ttl)? {
            updated = updated.default_ttl(d);
        }
        if let Some(d) = time("stale_while_revalidate", &section.stale_while_revalidate)? {
            updated = updated.stale_while_revalidate(d);
        }
        if let Some(d) = time("stale_if_error", &section.stale_if_error)? {
            updated = updated.stale_if_error(d);
        }
        if let Some(d) = time("lock_timeout", &section.lock_timeout)? {
            updated = updated.lock_timeout(d);
        }
        let declared = updated
            .disk_store()
            .map(|d| (d.dir().to_path_buf(), d.budget()));
        let disk_size = size("disk_size", &section.disk_size)?;
        match (section.disk.clone(), disk_size, declared) {
            (Some(dir), Some(n), _) => updated = updated.disk(dir, n),
            (Some(dir), None, Some((_, n))) | (None, Some(n), Some((dir, _))) => {
                updated = updated.disk(dir, n)
            }
            (Some(_), None, None) | (None, Some(_), None) => {
                *cache = updated;
                return Err(invalid(format!(
                    "{}: a disk tier needs both `disk` (its directory) and `disk_size`",
                    at("disk")
                )));
            }
            (None, None, _) => {}
        }
        *cache = updated;
        Ok(())
    }

    /// Applies `[proxy.NAME] cors_origins` to the proxy's CORS policy, each origin checked.
    fn apply_cors(&self, name: &str, router: &mut Router) -> io::Result<()> {
        let Some(origins) = self.proxy.get(name).and_then(|s| s.cors_origins.as_ref()) else {
            return Ok(());
        };
        let at = format!("proxy.{name}.cors_origins");
        let Some(cors) = router.cors_mut() else {
            return Err(invalid(format!(
                "{at}: proxy {name} declares no `cors {{ ... }}` policy to give origins to"
            )));
        };
        for origin in origins {
            pingora_dsl_rules::check_cors_origin(origin)
                .map_err(|e| invalid(format!("{at}: invalid origin {origin:?}: {e}")))?;
        }
        if cors.credentials() && origins.iter().any(|o| o == "*") {
            return Err(invalid(format!(
                "{at}: \"*\" with `credentials on` would let any web site read answers made with your users' cookies: list the origins"
            )));
        }
        cors.set_origins(origins.iter().map(String::as_str));
        Ok(())
    }

    /// Applies `[proxy.NAME]`'s upstream overrides (peers, weights, timeouts, retries) to
    /// live `groups` — at startup, or on a reload while requests flow. Everything is checked
    /// before anything changes. Returns the groups whose peers were replaced.
    pub fn apply_groups(&self, name: &str, groups: &[UpstreamGroup]) -> io::Result<Vec<String>> {
        let Some(section) = self.proxy.get(name) else {
            return Ok(Vec::new());
        };
        let mut changes = Vec::new();
        for (group_name, up) in &section.upstream {
            let at = |field: &str| format!("proxy.{name}.upstream.{group_name}.{field}");
            let group = groups.iter().find(|g| g.name() == group_name).ok_or_else(|| {
                let names: Vec<&str> = groups.iter().map(|g| g.name()).collect();
                invalid(format!(
                    "proxy.{name}.upstream.{group_name}: no upstream named {group_name:?} (declared: {})",
                    names.join(", ")
                ))
            })?;
            if up
                .retry
                .is_some_and(|r| r > crate::proxy::MAX_CONNECT_RETRIES)
            {
                return Err(invalid(format!("{}: at most 16", at("retry"))));
            }
            let mut timeouts: PeerTimeouts = group.timeouts();
            if let Some(t) = &up.timeout {
                for (field, value, slot) in [
                    ("connect", &t.connect, &mut timeouts.connect),
                    ("read", &t.read, &mut timeouts.read),
                    ("write", &t.write, &mut timeouts.write),
                    ("idle", &t.idle, &mut timeouts.idle),
                ] {
                    if let Some(v) = value {
                        *slot = parse_duration(v).map_err(|e| {
                            invalid(format!("{}: {e}", at(&format!("timeout.{field}"))))
                        })?;
                    }
                }
            }
            let backends = match &up.peers {
                None => None,
                Some(peers) => {
                    let list = peers
                        .iter()
                        .map(|p| {
                            parse_peer(p).map_err(|e| invalid(format!("{}: {e}", at("peers"))))
                        })
                        .collect::<io::Result<Vec<_>>>()?;
                    if list.is_empty() {
                        return Err(invalid(format!(
                            "{}: an upstream needs at least one peer",
                            at("peers")
                        )));
                    }
                    Some(list)
                }
            };
            changes.push((group, up.retry, timeouts, backends));
        }
        let mut replaced = Vec::new();
        for (group, retry, timeouts, backends) in changes {
            if let Some(retry) = retry {
                group.set_retries(retry);
            }
            group.set_timeouts(timeouts);
            if let Some(backends) = backends {
                group.set_backends(backends);
                replaced.push(group.name().to_owned());
            }
        }
        Ok(replaced)
    }

    /// The listening addresses `[proxy.NAME]` sets, if any (checked to parse).
    pub fn listen(&self, name: &str) -> io::Result<Option<Vec<String>>> {
        let Some(list) = self.proxy.get(name).and_then(|p| p.listen.clone()) else {
            return Ok(None);
        };
        for addr in &list {
            crate::listen::resolve(addr)
                .map_err(|e| invalid(format!("proxy.{name}.listen: {addr:?}: {e}")))?;
        }
        Ok(Some(list))
    }

    /// The TLS listener settings `[proxy.NAME]` sets: addresses checked to parse, a
    /// certificate list checked not to be empty (the files are checked when the listeners
    /// are built, by `-t` too).
    pub fn tls(&self, name: &str) -> io::Result<TlsOverrides> {
        let Some(section) = self.proxy.get(name) else {
            return Ok(TlsOverrides::default());
        };
        if let Some(list) = &section.tls_listen {
            for addr in list {
                crate::listen::resolve(addr)
                    .map_err(|e| invalid(format!("proxy.{name}.tls_listen: {addr:?}: {e}")))?;
            }
        }
        let certs = match &section.certificate {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(invalid(format!(
                    "proxy.{name}.certificate: give at least one, as [[proxy.{name}.certificate]] with cert = \"FILE\" and key = \"FILE\""
                )))
            }
            Some(list) => Some(
                list.iter()
                    .map(|c| CertKey {
                        cert: c.cert.clone(),
                        key: c.key.clone(),
                    })
                    .collect(),
            ),
        };
        Ok(TlsOverrides {
            listen: section.tls_listen.clone(),
            certs,
            client_ca: section.client_ca.clone(),
        })
    }

    /// Fills proxy `name`'s TLS listener settings in from the service's TLS listeners
    /// `tls` (for `--print-config`). A config file gives all TLS listeners one set of
    /// certificates: if theirs differ, the first listener's are shown, and the addresses
    /// of the listeners that differ are returned.
    pub fn set_tls(&mut self, name: &str, tls: &[ListenAddr]) -> Vec<String> {
        let section = self.proxy.entry(name.to_owned()).or_default();
        section.tls_listen = Some(tls.iter().map(|l| l.addr.clone()).collect());
        let Some(first) = tls.iter().find_map(|l| l.tls.as_ref()) else {
            return Vec::new();
        };
        section.certificate = Some(
            first
                .certs
                .iter()
                .map(|c| CertificateSection {
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                })
                .collect(),
        );
        section.client_ca = first.client_ca.clone();
        tls.iter()
            .filter(|l| {
                l.tls.as_ref().is_some_and(|t| {
                    t.certs != first.certs
                        || t.client_ca != first.client_ca
                        || t.handshake_timeout != first.handshake_timeout
                })
            })
            .map(|l| l.addr.clone())
            .collect()
    }

    /// `[proxy.NAME] proxy_protocol`, if the file sets it.
    pub fn proxy_protocol(
        &self,
        name: &str,
    ) -> io::Result<Option<crate::listen::proxy_protocol::ProxyProtocol>> {
        use crate::listen::proxy_protocol::ProxyProtocol;
        let Some(mode) = self
            .proxy
            .get(name)
            .and_then(|s| s.proxy_protocol.as_deref())
        else {
            return Ok(None);
        };
        match mode {
            "required" => Ok(Some(ProxyProtocol::Required)),
            "optional" => Ok(Some(ProxyProtocol::Optional)),
            "off" => Ok(Some(ProxyProtocol::Off)),
            other => Err(invalid(format!(
                "proxy.{name}.proxy_protocol: {other:?} is not a mode: \"required\", \"optional\" or \"off\""
            ))),
        }
    }

    /// Applies `[proxy.NAME]`'s connection settings (the pool size) to `options`.
    pub fn apply_options(&self, name: &str, options: &mut ProxyOptions) -> io::Result<()> {
        let Some(section) = self.proxy.get(name) else {
            return Ok(());
        };
        if let Some(n) = section.max_idle_per_peer {
            options.client.max_idle_per_peer = n;
        }
        if let Some(blocks) = &section.trusted_proxies {
            let blocks = blocks
                .iter()
                .map(|b| {
                    pingora_dsl_rules::Cidr::parse(b).map_err(|e| {
                        invalid(format!(
                            "proxy.{name}.trusted_proxies: {b:?} is not an address block: {e}"
                        ))
                    })
                })
                .collect::<io::Result<Vec<_>>>()?;
            options.trusted_proxies = (!blocks.is_empty())
                .then(|| std::sync::Arc::new(crate::proxy::TrustedProxies::new(blocks)));
        }
        if let Some(list) = &section.allow_upgrade {
            options.allowed_upgrades = AllowedUpgrades::new(list)
                .map_err(|e| invalid(format!("proxy.{name}.allow_upgrade: {e}")))?;
        }
        if section.idle.is_some() {
            // A relay's setting: an HTTP proxy has client and upstream timeouts instead.
            return Err(invalid(format!(
                "proxy.{name}.idle: a setting of tcp_proxy!/udp_proxy!; an HTTP proxy has `client_timeout` in its declaration and `timeout = {{ idle = \"60s\" }}` per upstream"
            )));
        }
        self.apply_access_log(name, options)
    }

    /// Applies `[proxy.NAME]`'s access log keys to `options`.
    pub fn apply_access_log(&self, name: &str, options: &mut ProxyOptions) -> io::Result<()> {
        let Some(section) = self.proxy.get(name) else {
            return Ok(());
        };
        set_access_log(
            options,
            section.access_log.as_deref(),
            section.access_log_format.as_deref(),
        )
        .map_err(|e| invalid(format!("proxy.{name}: {e}")))
    }

    /// The effective configuration of proxy `name` listening on `listen` with `router`'s
    /// groups and `options`, and of `conf`: what `--print-config` shows.
    pub fn effective(
        name: &str,
        listen: &[String],
        router: &Router,
        options: &ProxyOptions,
        conf: &ServerConf,
        admin: Option<&str>,
    ) -> Config {
        let show = show_duration;
        let upstream = router
            .groups()
            .iter()
            .map(|g| {
                let t = g.timeouts();
                let peers = g
                    .backends()
                    .iter()
                    .map(|b| match b.weight {
                        1 => b.addr.to_string(),
                        w => format!("{} weight {w}", b.addr),
                    })
                    .collect();
                let section = UpstreamSection {
                    // A discovered group's peers are not configuration.
                    peers: (!g.has_discovery()).then_some(peers),
                    // (Discovery sources are declarations, not shown here.)
                    etcd: None,
                    timeout: Some(TimeoutSection {
                        connect: Some(show(t.connect)),
                        read: Some(show(t.read)),
                        write: Some(show(t.write)),
                        idle: Some(show(t.idle)),
                    }),
                    retry: Some(g.retries()),
                };
                (g.name().to_owned(), section)
            })
            .collect();
        Config {
            server: ServerSection {
                threads: Some(conf.threads),
                work_stealing: Some(matches!(conf.flavor, RuntimeFlavor::WorkStealing)),
                reuse_port: Some(conf.reuse_port),
                grace_period: Some(show(conf.grace_period)),
                graceful_shutdown_timeout: Some(show(conf.shutdown_timeout)),
                upgrade_socket: conf.upgrade.as_ref().map(|u| u.socket.clone()),
                upgrade_timeout: conf.upgrade.as_ref().map(|u| show(u.timeout)),
                admin: admin.map(str::to_owned),
                ..ServerSection::default()
            },
            proxy: BTreeMap::from([(
                name.to_owned(),
                ProxySection {
                    listen: Some(listen.to_vec()),
                    // Filled in from the built service (see `set_tls`).
                    tls_listen: None,
                    quic_listen: None,
                    client_ca: None,
                    certificate: None,
                    max_idle_per_peer: Some(options.client.max_idle_per_peer),
                    access_log: options.access_log.as_ref().map(|l| l.target().describe()),
                    access_log_format: options
                        .access_log
                        .as_ref()
                        .map(|l| l.format().name().to_owned()),
                    allow_upgrade: Some(options.allowed_upgrades.protocols().to_vec()),
                    idle: None,
                    cors_origins: router.cors().map(|c| c.origins().to_vec()),
                    proxy_protocol: None,
                    cache: router.cache().map(cache_section),
                    shared_limits: router.shared_settings().map(shared_limits_section),
                    allow: router.access().map(|a| blocks_of(a, true)),
                    deny: router.access().map(|a| blocks_of(a, false)),
                    trusted_proxies: options
                        .trusted_proxies
                        .as_ref()
                        .map(|t| t.blocks().iter().map(show_block).collect()),
                    upstream,
                },
            )]),
        }
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> io::Result<String> {
        toml::to_string(self).map_err(|e| invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_their_path_and_line() {
        let e = Config::parse(
            "[server]\nthreads = 2\n\n[proxy.Edge.upstream.api]\ntimeot = { read = \"1s\" }\n",
        )
        .expect_err("unknown key");
        let text = e.to_string();
        assert!(text.contains("proxy.Edge.upstream.api"), "{text}");
        assert!(text.contains("line 5"), "{text}");
        assert!(text.contains("timeot"), "{text}");
        let e = Config::parse("[server]\nthreads = \"four\"\n").expect_err("bad type");
        assert!(e.to_string().contains("server.threads"), "{e}");
        assert!(Config::parse("[server\n").is_err());
    }

    #[test]
    fn durations_and_peers_parse_like_the_dsl() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_peer("10.0.0.1:80 weight 3").map(|b| b.weight), Ok(3));
        assert!(parse_peer("10.0.0.1:80 weight 0").is_err());
        assert!(parse_peer("localhost:80").is_err());
    }

    #[test]
    fn observability_keys() {
        let c = Config::parse(
            "[server]\nadmin = \"127.0.0.1:9100\"\nlog_level = \"warn,pingora_dsl_runtime=debug\"\n\n[proxy.Edge]\naccess_log = \"stdout\"\naccess_log_format = \"json\"\n",
        )
        .expect("parses");
        assert_eq!(c.server.admin.as_deref(), Some("127.0.0.1:9100"));
        c.apply_server(&mut ServerConf::default())
            .expect("a valid level");
        let mut options = ProxyOptions::default();
        c.apply_options("Edge", &mut options).expect("applies");
        let log = options.access_log.expect("an access log");
        assert_eq!(log.format(), AccessLogFormat::Json);
        assert_eq!(log.target(), &AccessLogTarget::Stdout);

        let bad = Config::parse("[server]\nlog_level = \"info,x=notalevel\"\n").expect("parses");
        let e = bad
            .apply_server(&mut ServerConf::default())
            .expect_err("bad level");
        assert!(e.to_string().contains("server.log_level"), "{e}");
        let bad = Config::parse("[proxy.Edge]\naccess_log_format = \"xml\"\n").expect("parses");
        let e = bad
            .apply_options("Edge", &mut ProxyOptions::default())
            .expect_err("bad format");
        assert!(e.to_string().contains("proxy.Edge"), "{e}");
    }

    #[test]
    fn allow_upgrade_replaces_the_declared_list_and_refuses_h2c() {
        let c = Config::parse("[proxy.Edge]\nallow_upgrade = [\"websocket\", \"Foo/2\"]\n")
            .expect("parses");
        let mut options = ProxyOptions::default();
        c.apply_options("Edge", &mut options).expect("applies");
        assert_eq!(options.allowed_upgrades.protocols(), ["websocket", "foo/2"]);
        let none = Config::parse("[proxy.Edge]\nallow_upgrade = []\n").expect("parses");
        none.apply_options("Edge", &mut options).expect("applies");
        assert!(options.allowed_upgrades.protocols().is_empty());
        let bad = Config::parse("[proxy.Edge]\nallow_upgrade = [\"h2c\"]\n").expect("parses");
        let e = bad
            .apply_options("Edge", &mut ProxyOptions::default())
            .expect_err("h2c refused");
        assert!(e.to_string().contains("proxy.Edge.allow_upgrade"), "{e}");
        assert!(e.to_string().contains("h2c"), "{e}");
    }

    #[test]
    fn tls_listener_keys_parse_print_and_name_their_path() {
        let text = "[proxy.Edge]\nlisten = []\ntls_listen = [\"127.0.0.1:8443\"]\nclient_ca = \"ca.pem\"\n\n[[proxy.Edge.certificate]]\ncert = \"a.crt\"\nkey = \"a.key\"\n\n[[proxy.Edge.certificate]]\ncert = \"b.crt\"\nkey = \"b.key\"\n";
        let c = Config::parse(text).expect("parses");
        let tls = c.tls("Edge").expect("valid");
        assert_eq!(tls.listen, Some(vec!["127.0.0.1:8443".to_owned()]));
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        let certs = tls.certs.expect("certificates");
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[1].cert, PathBuf::from("b.crt"));
        assert_eq!(c.tls("Other").expect("none"), TlsOverrides::default());

        // What --print-config makes of TLS listeners reads back the same.
        let mut printed = Config::default();
        let settings = crate::listen::tls::TlsSettings::new("a.crt", "a.key")
            .with_cert("b.crt", "b.key")
            .with_client_ca("ca.pem");
        let differing = printed.set_tls(
            "Edge",
            &[ListenAddr {
                addr: "127.0.0.1:8443".into(),
                tls: Some(settings),
                proxy_protocol: None,
            }],
        );
        assert!(differing.is_empty());
        if let Some(p) = printed.proxy.get_mut("Edge") {
            p.listen = Some(Vec::new());
        }
        let again = Config::parse(&printed.to_toml().expect("prints")).expect("reads back");
        assert_eq!(again, c);
        // A plain proxy prints `tls_listen = []`, which reads back as "no TLS listener".
        let mut plain = Config::default();
        plain.set_tls("Edge", &[]);
        let text = plain.to_toml().expect("prints");
        assert!(text.contains("tls_listen = []"), "{text}");
        assert_eq!(
            Config::parse(&text)
                .expect("reads back")
                .tls("Edge")
                .expect("valid")
                .listen,
            Some(Vec::new())
        );

        for (bad, path) in [
            (
                "[proxy.Edge]\ntls_listen = [\"127.0.0.1:99999\"]\n",
                "proxy.Edge.tls_listen",
            ),
            ("[proxy.Edge]\ncertificate = []\n", "proxy.Edge.certificate"),
        ] {
            let e = Config::parse(bad)
                .expect("parses")
                .tls("Edge")
                .expect_err("invalid");
            assert!(e.to_string().contains(path), "{e}");
        }
        for (bad, path) in [
            (
                "[[proxy.Edge.certificate]]\ncert = \"a.crt\"\n",
                "proxy.Edge.certificate",
            ),
            (
                "[[proxy.Edge.certificate]]\ncert = \"a.crt\"\nkey = \"a.key\"\nchain = \"x\"\n",
                "proxy.Edge.certificate",
            ),
            (
                "[proxy.Edge]\ntls_listen = \"127.0.0.1:8443\"\n",
                "proxy.Edge.tls_listen",
            ),
            (
                "[proxy.Edge]\ntls_lisen = [\"127.0.0.1:8443\"]\n",
                "proxy.Edge",
            ),
        ] {
            let e = Config::parse(bad).expect_err("refused");
            assert!(e.to_string().contains(path), "{bad}: {e}");
        }
    }
}

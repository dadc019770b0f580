//! What a layer-4 proxy (`tcp_proxy!`, `udp_proxy!`) takes from the command line and the
//! config file. It comes through the same front door as an HTTP proxy ([`ProxyCli`],
//! [`crate::server::cli::run`]), but relays connections, not requests: the flags and keys that
//! mean something for a relay apply (listeners, peers, connect timeout and retries, the
//! idle timeout, a per-connection access log, TLS termination for TCP), and those that
//! do not (an HTTP pool's size, upgrades, read/write timeouts; TLS for UDP) are errors
//! naming the flag or key, hidden from `--help` and absent from `--print-config`.

use std::io;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

use crate::observe::access_log::AccessLog;
use crate::proxy::route::Router;
use crate::proxy::ProxyOptions;
use crate::server::cli::{Prepared, ProxyCli};
use crate::server::config::{parse_duration, show_duration, ProxySection};

/// The transport a layer-4 proxy relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP connections, optionally TLS-terminated.
    Tcp,
    /// UDP datagrams, per client address.
    Udp,
}

impl Transport {
    fn macro_name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp_proxy!",
            Transport::Udp => "udp_proxy!",
        }
    }
}

/// Flags of [`ProxyCli`] a UDP proxy has no use for: UDP is relayed as datagrams.
const TLS_FLAGS: [&str; 4] = ["tls_listen", "cert", "key", "client_ca"];

/// The relay settings of a layer-4 proxy: the declaration's, then the config file's, then
/// the flags'.
#[derive(Debug, Clone)]
pub struct Layer4Options {
    /// How long a connection (TCP) or client mapping (UDP) may carry nothing.
    pub idle_timeout: Duration,
    /// A line per finished connection or mapping, if any.
    pub access_log: Option<AccessLog>,
    /// The config file's `proxy_protocol` (TCP), in place of the declared modes.
    pub proxy_protocol: Option<crate::listen::proxy_protocol::ProxyProtocol>,
}

impl ProxyCli {
    /// Parses the process's arguments for a layer-4 proxy: the same flags as an HTTP
    /// proxy's, with help that speaks of connections, and for UDP without the TLS flags.
    pub fn from_env_layer4(transport: Transport) -> Self {
        let mut command = ProxyCli::command()
            .about(format!(
                "A layer-4 proxy declared with pingora-dsl's {}",
                transport.macro_name()
            ))
            .mut_arg("access_log", |a| {
                a.help("Write a line per connection (client, peer, bytes each way, duration, end) to `stdout` or to this file (reopened on SIGHUP)")
            });
        if transport == Transport::Udp {
            for flag in TLS_FLAGS {
                command = command.mut_arg(flag, |a| a.hide(true));
            }
        }
        let matches = command.get_matches();
        ProxyCli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// What a layer-4 proxy's `run` derives from the command line, like
    /// [`ProxyCli::prepare`], plus its relay settings; `declared_idle` is the declared
    /// idle timeout. Flags and config keys that have no effect on a relay are errors.
    pub fn prepare_layer4(
        &self,
        name: &str,
        transport: Transport,
        router: &mut Router,
        declared: fn() -> Router,
        declared_listen: &[&str],
        declared_idle: Duration,
    ) -> io::Result<(Prepared, Layer4Options)> {
        self.check_layer4_flags(transport)?;
        let section = self.config.as_ref().and_then(|c| c.proxy.get(name));
        if let Some(section) = section {
            check_layer4_section(name, transport, section)?;
        }
        let idle_timeout = match section.and_then(|s| s.idle.as_deref()) {
            Some(idle) => {
                parse_duration(idle).map_err(|e| invalid(format!("proxy.{name}.idle: {e}")))?
            }
            None => declared_idle,
        };
        let mut options = ProxyOptions::default();
        if let Some(config) = &self.config {
            config.apply_access_log(name, &mut options)?;
        }
        self.apply_access_log(&mut options)?;
        let proxy_protocol = match &self.config {
            Some(config) => config.proxy_protocol(name)?,
            None => None,
        };
        let mut prepared = self.prepare(name, router, declared, declared_listen, &options)?;
        if let Some(effective) = prepared.effective.proxy.get_mut(name) {
            keep_layer4_keys(effective, transport, idle_timeout);
        }
        let proxy = name.to_owned();
        prepared.reloader =
            prepared
                .reloader
                .with_check(move |config| match config.proxy.get(&proxy) {
                    Some(section) => check_layer4_section(&proxy, transport, section),
                    None => Ok(()),
                });
        Ok((
            prepared,
            Layer4Options {
                idle_timeout,
                access_log: options.access_log,
                proxy_protocol,
            },
        ))
    }

    /// Refuses the flags a relay of `transport` cannot honour.
    fn check_layer4_flags(&self, transport: Transport) -> io::Result<()> {
        if transport == Transport::Udp {
            let given = [
                ("--tls-listen", !self.tls_listen.is_empty()),
                ("--cert", self.cert.is_some()),
                ("--key", self.key.is_some()),
                ("--client-ca", self.client_ca.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                return Err(invalid(format!(
                    "{flag}: a UDP proxy has no TLS (datagrams are relayed as they come)"
                )));
            }
        }
        Ok(())
    }
}

/// Refuses the keys of `[proxy.NAME]` a relay of `transport` cannot honour, naming each.
fn check_layer4_section(
    name: &str,
    transport: Transport,
    section: &ProxySection,
) -> io::Result<()> {
    let relay = "a layer-4 proxy relays connections";
    let mut refused: Vec<(String, String)> = Vec::new();
    if section.max_idle_per_peer.is_some() {
        refused.push((
            "max_idle_per_peer".into(),
            format!("{relay}; it keeps no pool of idle upstream connections"),
        ));
    }
    if section.allow_upgrade.is_some() {
        refused.push((
            "allow_upgrade".into(),
            format!("{relay}; there is no HTTP upgrade to allow"),
        ));
    }
    if transport == Transport::Udp {
        for (key, set) in [
            ("tls_listen", section.tls_listen.is_some()),
            ("certificate", section.certificate.is_some()),
            ("client_ca", section.client_ca.is_some()),
        ] {
            if set {
                refused.push((key.into(), "a UDP proxy has no TLS".into()));
            }
        }
        if section.proxy_protocol.is_some() {
            refused.push((
                "proxy_protocol".into(),
                "a UDP proxy relays datagrams, which carry no PROXY header".into(),
            ));
        }
    }
    for (group, up) in &section.upstream {
        let at = |key: &str| format!("upstream.{group}.{key}");
        if let Some(t) = &up.timeout {
            let mut keys = vec![("read", &t.read), ("write", &t.write), ("idle", &t.idle)];
            if transport == Transport::Udp {
                keys.push(("connect", &t.connect));
            }
            for (key, value) in keys {
                if value.is_some() {
                    refused.push((
                        at(&format!("timeout.{key}")),
                        format!(
                            "{relay}; set how long one may carry nothing with `idle = \"10m\"` under [proxy.{name}]"
                        ),
                    ));
                }
            }
        }
        if transport == Transport::Udp && up.retry.is_some() {
            refused.push((
                at("retry"),
                "a UDP proxy opens no connection that could fail and be retried".into(),
            ));
        }
    }
    match refused.first() {
        Some((key, why)) => Err(invalid(format!(
            "proxy.{name}.{key}: not available in {}: {why}",
            transport.macro_name()
        ))),
        None => Ok(()),
    }
}

/// Trims the effective configuration of a layer-4 proxy to the keys it honours.
fn keep_layer4_keys(section: &mut ProxySection, transport: Transport, idle: Duration) {
    section.max_idle_per_peer = None;
    section.allow_upgrade = None;
    section.idle = Some(show_duration(idle));
    for up in section.upstream.values_mut() {
        if let Some(t) = &mut up.timeout {
            t.read = None;
            t.write = None;
            t.idle = None;
            if transport == Transport::Udp {
                t.connect = None;
            }
        }
        if transport == Transport::Udp {
            up.timeout = None;
            up.retry = None;
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

//! Errors and panics reported to Sentry: off unless a DSN is configured (`sentry "DSN";`
//! in `proxy!`, `[server.sentry] dsn` in the config file).
//!
//! With a DSN, the process log's error-level events become Sentry events and its warnings
//! and info lines their breadcrumbs (through the `sentry` crate's tracing integration), and
//! a panic is reported by its panic integration. A request that fails with a 5xx is logged
//! at error level with its request id, route, pool, peer, method, host and path as
//! fields (see `proxy::error_answer`), so its event carries them; a request whose phase
//! panics gets a second event with the same context. Events are sampled by `sample_rate`
//! and sent by the crate's transport on a thread of its own, never on a request's path;
//! pending events are flushed (for at most two seconds) when the process stops.

use std::borrow::Cow;
use std::io;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where and how much to report: `[server.sentry]` of the config file, or the declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentrySettings {
    /// The project's DSN, e.g. `https://PUBLIC_KEY@o0.ingest.sentry.io/42`.
    pub dsn: String,
    /// The share of error events sent, from 0.0 to 1.0 (default 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f32>,
    /// The environment events are tagged with (`production`, `staging`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// Keeps reporting on while it lives; dropping it flushes pending events.
pub struct SentryGuard {
    _client: sentry::ClientInitGuard,
}

impl std::fmt::Debug for SentryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryGuard").finish_non_exhaustive()
    }
}

impl SentrySettings {
    /// Reporting to `dsn`, every event, no environment.
    pub fn new(dsn: impl Into<String>) -> Self {
        SentrySettings {
            dsn: dsn.into(),
            sample_rate: None,
            environment: None,
        }
    }

    /// Errors for a DSN that is not one or a sample rate outside 0..=1, naming the value.
    pub fn check(&self) -> io::Result<()> {
        self.parsed_dsn()?;
        if let Some(rate) = self.sample_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid(format!(
                    "sentry sample_rate {rate}: must be from 0.0 to 1.0"
                )));
            }
        }
        Ok(())
    }

    fn parsed_dsn(&self) -> io::Result<sentry::types::Dsn> {
        if let Err(e) = pingora_dsl_rules::check_sentry_dsn(&self.dsn) {
            return Err(invalid(format!("sentry dsn {:?}: {e}", self.dsn)));
        }
        sentry::types::Dsn::from_str(&self.dsn)
            .map_err(|e| invalid(format!("sentry dsn {:?}: {e}", self.dsn)))
    }

    /// Starts the client: the panic integration is installed now; the tracing layer
    /// ([`tracing_layer`]) must be part of the process's subscriber for log events.
    pub fn start(&self) -> io::Result<SentryGuard> {
        let dsn = self.parsed_dsn()?;
        self.check()?;
        let options = sentry::ClientOptions {
            dsn: Some(dsn),
            sample_rate: self.sample_rate.unwrap_or(1.0),
            environment: self.environment.clone().map(Cow::Owned),
            release: Some(Cow::Borrowed(concat!(
                "pingora-dsl@",
                env!("CARGO_PKG_VERSION")
            ))),
            // Client addresses and headers stay out of events unless a field names them.
            send_default_pii: false,
            shutdown_timeout: Duration::from_secs(2),
            ..sentry::ClientOptions::default()
        };
        Ok(SentryGuard {
            _client: sentry::init(options),
        })
    }
}

/// The subscriber layer that turns error-level events into Sentry events and warnings and
/// info lines into breadcrumbs; spans are not sent (no tracing sample rate is set).
pub fn tracing_layer<S>() -> sentry::integrations::tracing::SentryLayer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    sentry::integrations::tracing::layer().span_filter(|_| false)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_dsns_and_rates_are_named() {
        assert!(SentrySettings::new("http://key@127.0.0.1:9000/42")
            .check()
            .is_ok());
        let e = SentrySettings::new("sentry.example.com")
            .check()
            .expect_err("not a URL");
        assert!(e.to_string().contains("sentry.example.com"), "{e}");
        let e = SentrySettings::new("https://o0.ingest.sentry.io/42")
            .check()
            .expect_err("no key");
        assert!(e.to_string().contains("public key"), "{e}");
        let mut rate = SentrySettings::new("https://key@o0.ingest.sentry.io/42");
        rate.sample_rate = Some(1.5);
        assert!(rate.check().expect_err("rate").to_string().contains("1.5"));
    }
}

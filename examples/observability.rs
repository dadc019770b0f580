//! Observability with zero proxy code: an admin listener (Prometheus `/metrics`, a live
//! `/status` page, `/status.json`), an access log, and every request's tracing span
//! exported with OpenTelemetry through a `tracing` subscriber layer.
//!
//! ```sh
//! cargo run --example observability
//! curl -i http://127.0.0.1:6188/                  # an access log line on stdout
//! curl -s http://127.0.0.1:9100/metrics | grep pingora_dsl_requests_total
//! open http://127.0.0.1:9100/status               # refreshes itself every 2 s
//! ```
//!
//! The spans go to OpenTelemetry's stdout exporter in batches (and on exit); swap in the
//! OTLP exporter (`opentelemetry-otlp`) to send them to a collector, Jaeger or Tempo. The
//! same place takes a syslog or Sentry layer: they are all `tracing` layers.
//!
//! Flags: those of every declared proxy (`--listen`, `--upstream`, `--admin`,
//! `--access-log`, `-c`, ...). Unless `--upstream` or the `-c` file gives
//! peers, two demo origins start in-process.

use std::process::ExitCode;

use opentelemetry::trace::TracerProvider as _;
use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::demo_upstreams;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

proxy! {
    /// Round robin over two origins, checked every second, observed.
    pub Observed {
        listen "127.0.0.1:6188";
        admin "127.0.0.1:9100";
        access_log "stdout";
        upstream web {
            peers ["127.0.0.1:8001", "127.0.0.1:8002"];
            health http "/" every 1s;
        }
    }
}

fn main() -> ExitCode {
    // Spans to OpenTelemetry: the proxy's per-request span is at debug level, enabled
    // for this layer only; the console log stays at `RUST_LOG` (default info).
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let tracer = provider.tracer("pingora-dsl-example");
    let console = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let traced = EnvFilter::new("pingora_dsl_runtime=debug");
    let installed = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(console),
        )
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(traced),
        )
        .try_init();
    if let Err(e) = installed {
        eprintln!("error: cannot install the tracing subscriber: {e}");
        return ExitCode::FAILURE;
    }

    let mut cli = ProxyCli::from_env();
    if let Err(code) = demo_upstreams(&mut cli, "Observed", &["origin-1", "origin-2"]) {
        return code;
    }
    let code = Observed::run_with(cli);
    // Export what the batch still holds.
    if let Err(e) = provider.shutdown() {
        eprintln!("warning: spans not exported: {e}");
    }
    code
}

//! An HTTP cache in front of two origins, declared: answers kept in memory by RFC 9111's
//! rules (with a declared freshness for answers that give none), served stale while they
//! are refreshed or when the origins fail, one request upstream for many concurrent
//! misses, purged through the admin listener.
//!
//! ```sh
//! cargo run --example cache
//! curl -si http://127.0.0.1:6188/page | grep -i -e x-cache -e x-origin -e age   # MISS
//! curl -si http://127.0.0.1:6188/page | grep -i -e x-cache -e x-origin -e age   # HIT, same origin
//! curl -si http://127.0.0.1:6188/api/x | grep -i x-cache                       # none: not cached
//! curl -s -X PURGE 'http://127.0.0.1:9100/cache?prefix=http%3A%2F%2F127.0.0.1%3A6188%2F'
//! curl -s http://127.0.0.1:9100/metrics | grep pingora_dsl_cache_
//! ```
//!
//! Flags: those of every declared proxy (`--listen`, `--upstream`, `--admin`, `-c`, ...).
//! Unless `--upstream` or the `-c` file gives peers, two demo origins start in-process.

use std::process::ExitCode;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::demo_upstreams;

proxy! {
    /// A cached site: everything but `/api` is cached for 10 s when the origin says
    /// nothing, served stale for 5 s while refreshed and for a minute if the origins fail.
    pub CachedSite {
        listen "127.0.0.1:6188";
        admin "127.0.0.1:9100";
        upstream web { peers ["127.0.0.1:8001", "127.0.0.1:8002"]; }
        cache {
            memory 128MiB;
            max_object 16MiB;
            ttl 10s;
            stale_while_revalidate 5s;
            stale_if_error 1m;
        }
        route path "/healthz" => respond 200 "ok\n";
        route path "/api" => upstream web { cache off; }
        route => upstream web;
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env();
    if let Err(code) = demo_upstreams(&mut cli, "CachedSite", &["origin-1", "origin-2"]) {
        return code;
    }
    CachedSite::run_with(cli)
}

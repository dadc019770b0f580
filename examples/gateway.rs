//! An API gateway declared with `proxy!`: three upstream pools, host and path routing, a
//! declared bearer-token check answering 401 (its identity forwarded as `x-caller`), an
//! internal route for this machine only, a public `/v1` API split 90/10 between a stable and a
//! canary pool (sticky by user, `x-canary: 1` always to the canary) with `/v1` stripped, its
//! own read timeout and a per-key rate limit, a redirect, a health answer, CORS headers and
//! the request id on every answer (the 401 and the 429 included), a typed per-request
//! context, and a tower-http timeout layer in the pipeline.
//!
//! ```text
//! cargo run --release --example gateway
//! curl -i http://127.0.0.1:6190/                  # web pool
//! curl -i http://127.0.0.1:6190/api/users         # 401: no token
//! curl -i -H 'authorization: Bearer let-me-in' http://127.0.0.1:6190/api/users   # api pool
//! curl -i http://127.0.0.1:6190/old-docs          # 301 to /docs/
//! curl -i http://127.0.0.1:6190/healthz           # 200 "ok", answered by the gateway
//! curl -i http://127.0.0.1:6190/internal          # api pool; 403 from another machine
//! curl -i -H 'x-user: ada' http://127.0.0.1:6190/v1/items   # api or canary, sticky per user
//! curl -i -H 'x-canary: 1' http://127.0.0.1:6190/v1/items   # always canary
//! ```
//!
//! Demo origins start in-process for each group that neither `--upstream` nor the `-c`
//! file (`[proxy.Gateway.upstream.GROUP] peers`) gives peers: one `web`, two `api`, one
//! `canary` (none
//! under `-t` or `--print-config`). Flags
//! are those of every declared proxy: `--listen ADDR`, `--upstream GROUP=HOST:PORT`
//! (e.g. `--upstream web=127.0.0.1:8001 --upstream api=127.0.0.1:9001`), `--threads N`,
//! `--work-stealing`. The token is `let-me-in`; a real gateway would read its tokens from a
//! file (`auth bearer file "/etc/gateway/tokens";`, re-read on SIGHUP) or check JWTs
//! (`auth jwt { jwks "..."; }`).

use std::process::ExitCode;
use std::time::Duration;

use pingora_dsl::prelude::*;
use pingora_dsl::server::cli::ProxyCli;
use pingora_dsl_suite::origin::demo_upstreams;

/// Per-request state: the route's name for the `x-gateway` header.
#[derive(Default)]
pub struct GatewayCtx {
    api: bool,
}

proxy! {
    /// The gateway: `/api/...` needs a token and goes to the `api` pool, the rest to `web`.
    pub Gateway {
        listen "127.0.0.1:6190";
        ctx GatewayCtx;

        upstream web {
            peers ["127.0.0.1:8001"];
        }
        upstream api {
            peers ["127.0.0.1:9001", "127.0.0.1:9002" weight 2];
            select round_robin;
            timeout connect 500ms, read 10s;
            retry 1;
        }
        upstream canary {
            peers ["127.0.0.1:9003"];
        }

        route path "/old-docs" => redirect 301 "/docs/";
        route path "/healthz" method [GET, HEAD] => respond 200 "ok\n";
        route host "api.localhost" => upstream api { auth bearer ["let-me-in"]; }
        // Only from this machine: any other client gets 403 before anything goes upstream.
        route path "/internal" => upstream api { allow ["127.0.0.0/8", "::1"]; }
        route path "/api" => upstream api {
            auth bearer ["let-me-in"];
            set_request_header "x-gateway-route" "api";
            set_request_header "x-caller" "${user}";
        }
        route path "/v1" header "x-canary" == "1" => upstream canary { strip_prefix "/v1"; }
        route path "/v1" => split { 90% api, 10% canary } by header "x-user" {
            strip_prefix "/v1";
            timeout read 2s;
            rate_limit 10 per 1s by header "x-api-key";
        }
        route => upstream web;

        // Browsers on the app's origins may call the API: preflights are answered here, and
        // every answer (the 401 and the 429 too) carries the CORS headers.
        cors {
            origins ["https://app.example.com", "https://*.example.com"];
            methods [GET, POST, PUT, DELETE];
            headers ["authorization", "content-type", "x-user"];
            expose ["x-request-id"];
            credentials on;
            max_age 10m;
        }

        // Text answers compressed for clients that accept it (zstd, brotli or gzip).
        compress;

        set_response_header "x-served-by" "pingora-dsl-gateway";
        set_response_header "x-request-id" "${request_id}";
        remove_response_header "x-powered-by";

        request_filter(session, ctx) {
            // Runs after the declared checks: only requests they let through get here.
            ctx.api = session.identity().is_some();
        }

        response_filter(_session, response, ctx) {
            if ctx.api {
                response.insert_header("x-gateway", "api")?;
            }
        }

        // Any tower layer: here a 30 s cap on the whole request (408 when it fires).
        layer tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        );
    }
}

fn main() -> ExitCode {
    let mut cli = ProxyCli::from_env();
    if let Err(code) = demo_upstreams(
        &mut cli,
        "Gateway",
        &["web=web-1", "api=api-1", "api=api-2", "canary=canary-1"],
    ) {
        return code;
    }
    Gateway::run_with(cli)
}

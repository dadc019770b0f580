//! Every keyword of `proxy!` in one proxy (except `upstream_peer`, which replaces routing
//! to upstreams: see `upstream_peer.rs`).
use std::time::Duration;

use pingora_dsl::prelude::*;

#[derive(Default)]
pub struct Ctx {
    hits: u32,
}

/// A user strategy.
pub struct FirstPeer;

impl pingora_dsl::lb::Selection for FirstPeer {
    fn pick(&self, _key: &[u8], attempt: usize, peers: &[std::sync::Arc<pingora_dsl::lb::PeerState>]) -> usize {
        attempt % peers.len()
    }
}

proxy! {
    /// Doc comments and visibility carry over to the generated type.
    pub Everything {
        listen "127.0.0.1:6188";
        listen "[::1]:6188";
        listen tls "127.0.0.1:6189" cert "server.crt" key "server.key";
        listen quic "127.0.0.1:6189";
        listen tls "127.0.0.1:6190" {
            cert "default.crt" key "default.key";
            cert "api.crt" key "api.key";
            client_ca "clients.pem";
        }
        ctx Ctx;

        upstream web {
            peers ["127.0.0.1:8001", "127.0.0.1:8002" weight 3];
            select round_robin;
            timeout connect 1s, read 30s, write 2.5s, idle 1m;
            retry 2;
        }
        upstream api {
            peers ["[::1]:9001" weight 2, "10.0.0.2:9001"];
            select random;
            timeout read 500ms;
            health http "/health" host "api.local" status 200..=299 every 2s timeout 1s rise 2 fall 3;
            passive failures 3 eject 10s;
            fail_open;
            tls sni "api.local" ca "origin-ca.pem" cert "client.crt" key "client.key";
            http2 negotiate;
        }
        upstream sessions {
            peers ["10.0.0.3:80", "10.0.0.4:80"];
            select consistent_hash(cookie "session");
            sticky cookie "srv";
            health tcp every 5s;
            retry 1 backoff 20ms;
        }
        upstream users {
            peers ["10.0.0.5:80", "10.0.0.6:80"];
            select hash(header "x-user");
        }
        upstream paths {
            peers ["10.0.0.7:80", "10.0.0.8:80"];
            select consistent_hash(path);
        }
        upstream clients {
            peers ["10.0.0.9:80", "clients.internal:80" weight 2];
            select hash(client_ip);
        }
        upstream slow_ones {
            peers ["10.0.0.11:80", "10.0.0.12:80"];
            select least_conn;
            retry 2 backoff 10ms replay 64KiB any_method;
        }
        upstream named {
            discover dns "localhost:8080" every 30s;
            select custom(FirstPeer);
        }
        upstream listed {
            peers ["10.0.0.13:80"];
            discover file "peers.txt" every 5s;
        }
        upstream watched {
            discover etcd "http://127.0.0.1:2379,http://127.0.0.2:2379" prefix "/services/api/";
        }

        route path "/healthz" method [GET, HEAD] => respond 200 "ok";
        route path "/gone" => respond 410;
        route path "/old" => redirect 301 "https://${host}/new${request_uri}";
        route host "api.example.com" path "/v1" method POST => upstream api {
            set_request_header "x-route" "api-v1";
            remove_request_header "cookie";
            set_response_header "cache-control" "no-store";
            remove_response_header "x-debug";
        }
        route header "x-canary" == "1" not method POST => upstream users;
        route path exact "/login" query "next" cookie "sid" ~ "^[a-f0-9]+$" => upstream api;
        route path regex "^/u/[0-9]+$" client ["10.0.0.0/8", "::1"] scheme http => upstream users {
            rewrite_path "^/u/(?P<id>[0-9]+)$" "/users/${id}";
        }
        route path "/canary" => split { 90% api, 10% users } by cookie "uid";
        route path "/v2" not header "x-legacy" => upstream api { strip_prefix "/v2"; }
        route path "/v3" => upstream api { replace_prefix "/v3" "/v4"; }
        route path "/index" => upstream api { set_path "/index.html"; }
        route host "*.example.com" => upstream api;
        route path "/session" => upstream sessions;
        route path "/users" => upstream users { mirror clients 5%; }
        route path "/files" => upstream paths;
        route path "/geo" => upstream clients;
        route path "/reports" => upstream slow_ones {
            timeout connect 1s, read 30s, write 5s;
            retry 0;
            rate_limit 10 per 1s by client_ip;
            max_body 8MiB;
        }
        route path "/named" => upstream named;
        route path "/listed" => upstream listed;
        route path "/watched" => upstream watched {
            rate_limit 20 per 1s by route shared "redis://127.0.0.1:6379/1";
        }
        route => upstream web;

        set_request_header "x-proxy" "everything";
        remove_request_header "x-internal";
        set_response_header "server" "pingora-dsl";
        remove_response_header "x-powered-by";

        via "1.1 everything";
        access_log "syslog:udp://127.0.0.1:5514?facility=local3&tag=edge" json;
        tls_groups ["X25519MLKEM768", "X25519", "P-256"];
        fips off;
        sentry "https://public@o0.ingest.sentry.io/42" sample 0.5 environment "production";
        forwarded_for on;
        keepalive on;
        filter_local_answers on;
        max_header_bytes 32768;
        max_idle_per_peer 64;
        tunnel_idle 5m;
        allow_upgrade ["websocket", "x-custom/2"];
        rate_limit 1000 per 1s by client_ip;
        rate_limit 50 per 1m by header "x-api-key";
        rate_limit 500 per 1m by header "x-api-key" shared "redis://127.0.0.1:6379/0" timeout 10ms fallback closed;
        client_timeout header_read 10s, body_read 30s, body_total 2m, write 30s;

        early_request_filter(_session, ctx) {
            ctx.hits += 1;
        }
        request_filter(session, ctx) {
            ctx.hits += 1;
            if session.path() == "/admin" {
                return Ok(Flow::respond(StatusCode::FORBIDDEN));
            }
        }
        upstream_request_filter(_session, request, _ctx) {
            request.insert_header("x-seen", "1")?;
        }
        fail_to_connect(_session, peer, _ctx, error) {
            let _ = peer.addr();
            error
        }
        upstream_response_filter(_session, response, _ctx) {
            response.remove_header("x-upstream-secret");
        }
        response_filter(_session, response, ctx) {
            response.insert_header("x-hits", ctx.hits.to_string())?;
        }
        logging(session, error, ctx) {
            let _ = (session.path(), error.is_some(), ctx.hits);
        }

        layer tower::util::MapRequestLayer::new(|r: http::Request<pingora_dsl::DownstreamBody>| r);
        layer tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        );
    }
}

fn main() {
    let proxy = Everything::default();
    assert_eq!(Everything::LISTEN, ["127.0.0.1:6188", "[::1]:6188"]);
    assert_eq!(proxy.router().groups().len(), 10);
    assert_eq!(proxy.router().routes().len(), 21);
    let sessions = proxy.router().group("sessions").expect("declared");
    assert_eq!(sessions.sticky_cookie().map(|s| s.name()), Some("srv"));
    let reports = proxy
        .router()
        .routes()
        .iter()
        .find_map(|r| r.policy())
        .expect("a route policy");
    assert_eq!(reports.read_timeout, Some(Duration::from_secs(30)));
    assert_eq!(reports.retries, Some(0));
    assert_eq!(reports.rate_limits.len(), 1);
    assert_eq!(reports.max_body, Some(8 << 20));
    // Two health checks, four discovery tasks (one resolves host-name peers).
    assert_eq!(proxy.router().background_tasks().len(), 6);
    let shared = proxy.router().observed_shared_limits();
    assert_eq!(shared.len(), 2, "the proxy's shared limit and the route's");
    assert_eq!((shared[0].label.as_str(), shared[0].limit), ("proxy", 500));
    assert_eq!(shared[1].redis, "redis://127.0.0.1:6379/1");
    assert_eq!(proxy.router().groups()[0].retries(), 2);
    assert_eq!(
        proxy.router().groups()[0].timeouts().write,
        Duration::from_millis(2500)
    );
    let options = Everything::options();
    assert!(options.via.is_some());
    assert_eq!(
        options.access_log.as_ref().map(|l| l.target().describe()),
        Some("syslog:udp://127.0.0.1:5514?facility=local3&tag=edge".to_owned())
    );
    assert_eq!(options.client.max_idle_per_peer, 64);
    assert_eq!(options.tunnel_idle_timeout, Duration::from_secs(300));
    assert_eq!(options.body_total_timeout, Duration::from_secs(120));
    assert_eq!(
        options.allowed_upgrades.protocols(),
        ["websocket", "x-custom/2"]
    );
    let service = proxy.service();
    assert_eq!(service.options().max_header_bytes, 32768);
    assert_eq!(service.tcp_addrs().len(), 4);
    let tls: Vec<_> = service
        .listen_addrs()
        .iter()
        .filter_map(|l| Some((l.addr.as_str(), l.tls.as_ref()?)))
        .collect();
    assert_eq!(tls.len(), 2);
    assert_eq!(service.quic_addrs(), ["127.0.0.1:6189"]);
    // The upstream TLS files do not exist here: `run` would stop at startup saying so.
    let e = Everything::new()
        .router()
        .group("api")
        .map(|g| g.check())
        .expect("group api")
        .expect_err("missing CA file");
    assert!(e.to_string().contains("origin-ca.pem"), "{e}");
    assert_eq!(tls[0].0, "127.0.0.1:6189");
    assert_eq!(tls[1].1.certs.len(), 2);
    assert_eq!(
        tls[1].1.client_ca.as_deref(),
        Some(std::path::Path::new("clients.pem"))
    );
    assert_eq!(
        <Everything as pingora_dsl::server::declared::Declared>::TLS_GROUPS,
        Some(&["X25519MLKEM768", "X25519", "P-256"][..])
    );
    assert!(!<Everything as pingora_dsl::server::declared::Declared>::FIPS);
    let sentry = <Everything as pingora_dsl::server::declared::Declared>::SENTRY.expect("declared");
    assert_eq!(sentry.dsn, "https://public@o0.ingest.sentry.io/42");
    assert_eq!(sentry.sample_rate, Some(0.5));
    assert_eq!(sentry.environment, Some("production"));
}

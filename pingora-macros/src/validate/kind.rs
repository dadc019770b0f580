//! What only one kind of proxy may declare: HTTP items refused in `tcp_proxy!`/`udp_proxy!`
//! (and what a relay cannot honour), `idle` refused in `proxy!`.

use std::time::Duration;

use crate::diagnostic::Errors;
use crate::syntax::{Kind, Proxy, Setting, Upstream};

use super::values::check_duration;

/// Checks what the proxy's kind allows; returns the checked `idle` of a layer-4 proxy.
pub fn validate_kind(proxy: &Proxy, errors: &mut Errors) -> Option<Duration> {
    if proxy.kind == Kind::Http {
        for (keyword, _) in &proxy.idle {
            errors.at(
                keyword.span(),
                "`idle` is a setting of tcp_proxy!/udp_proxy!: an HTTP proxy has `client_timeout` and upstream `timeout`",
            );
        }
        return None;
    }
    refuse_http_items(proxy, errors);
    check_one_upstream(proxy, errors);
    let m = proxy.kind.macro_name();
    for up in &proxy.upstreams {
        for (keyword, _) in &up.http2 {
            errors.at(
                keyword.span(),
                format!("`http2` is an HTTP setting, not available in {m}"),
            );
        }
        for (keyword, _) in &up.sticky {
            errors.at(
                keyword.span(),
                format!("`sticky cookie` is an HTTP setting, not available in {m}: pin clients with `select hash(client_ip);`"),
            );
        }
        if proxy.kind == Kind::Udp {
            for decl in &up.tls {
                errors.at(
                    decl.keyword.span(),
                    "`tls` is not available in udp_proxy!: UDP is relayed as datagrams",
                );
            }
        }
        validate_l4_upstream(proxy.kind, up, errors);
    }
    if proxy.kind == Kind::Udp {
        for listen in &proxy.listens {
            if let Some(tls) = &listen.tls {
                errors.at(
                    tls.keyword.span(),
                    "`listen tls` is not available in udp_proxy!: UDP is relayed as datagrams",
                );
            }
            if let Some((keyword, _)) = &listen.proxy_protocol {
                errors.at(keyword.span(), UDP_NO_PROXY_PROTOCOL);
            }
        }
    }
    for (keyword, _) in proxy.idle.iter().skip(1) {
        errors.at(keyword.span(), "`idle` is set twice: keep one");
    }
    proxy
        .idle
        .first()
        .and_then(|(_, d)| check_duration(d, errors))
}

/// Routes, header edits, phases, ctx, rate limits, CORS, layers and HTTP settings of a layer-4
/// proxy: each refused at its keyword.
fn refuse_http_items(proxy: &Proxy, errors: &mut Errors) {
    let m = proxy.kind.macro_name();
    let not_here = |what: &str| {
        format!("`{what}` is not available in {m}: a layer-4 proxy forwards every connection to its one upstream")
    };
    for r in &proxy.routes {
        errors.at(r.keyword.span(), not_here("route"));
    }
    for e in &proxy.edits {
        errors.at(e.keyword.span(), not_here(&e.keyword.to_string()));
    }
    for ph in &proxy.phases {
        errors.at(ph.keyword.span(), not_here(&ph.keyword.to_string()));
    }
    for (keyword, _) in &proxy.ctx {
        errors.at(keyword.span(), not_here("ctx"));
    }
    for decl in &proxy.rate_limits {
        errors.at(decl.keyword.span(), not_here("rate_limit"));
    }
    for decl in &proxy.access {
        errors.at(
            decl.keyword.span(),
            format!("`{}` is not available in {m}: it refuses HTTP requests with a 403 (to limit who connects, use a firewall)", decl.keyword),
        );
    }
    for decl in &proxy.compress {
        errors.at(
            decl.keyword.span(),
            format!("`compress` is not available in {m}: it compresses HTTP response bodies"),
        );
    }
    for decl in &proxy.cache {
        errors.at(
            decl.keyword.span(),
            format!("`cache` is not available in {m}: it stores HTTP responses"),
        );
    }
    for decl in &proxy.auth {
        errors.at(
            decl.keyword.span(),
            format!("`auth` is not available in {m}: it checks HTTP credentials (TLS client certificates authenticate layer-4 clients: `client_ca`)"),
        );
    }
    for (keyword, _) in &proxy.trusted_proxies {
        errors.at(keyword.span(), not_here("trusted_proxies"));
    }
    for decl in &proxy.cors {
        errors.at(
            decl.keyword.span(),
            format!("`cors` is not available in {m}: it is a policy of HTTP answers"),
        );
    }
    for layer in &proxy.layers {
        errors.at(
            syn::spanned::Spanned::span(layer),
            format!("`layer` is not available in {m}: tower layers wrap HTTP requests"),
        );
    }
    for setting in &proxy.settings {
        if matches!(setting, Setting::TlsGroups(..) | Setting::Fips(..)) {
            // The process's TLS policy: layer-4 TLS listeners follow it too.
            continue;
        }
        if matches!(setting, Setting::ProxyProtocol(..)) && proxy.kind == Kind::Tcp {
            continue;
        }
        if let (Setting::ProxyProtocol(keyword, _), Kind::Udp) = (setting, proxy.kind) {
            errors.at(keyword.span(), UDP_NO_PROXY_PROTOCOL);
            continue;
        }
        let keyword = setting.keyword();
        errors.at(
            keyword.span(),
            format!("`{keyword}` is an HTTP setting, not available in {m}"),
        );
    }
}

/// Why a UDP proxy takes no `proxy_protocol`.
const UDP_NO_PROXY_PROTOCOL: &str = "`proxy_protocol` is not available in udp_proxy!: it starts a TCP connection, and datagrams are relayed as they come";

/// A layer-4 proxy has exactly one upstream.
fn check_one_upstream(proxy: &Proxy, errors: &mut Errors) {
    let m = proxy.kind.macro_name();
    match proxy.upstreams.as_slice() {
        [] if !proxy.upstreams_malformed() => errors.at(
            proxy.name.span(),
            format!("{m} `{}` needs one upstream: add `upstream NAME {{ peers [\"127.0.0.1:5432\"]; }}`", proxy.name),
        ),
        [_, more @ ..] => {
            for up in more {
                errors.at(
                    up.name.span(),
                    format!("{m} has exactly one upstream: merge the peers into one group"),
                );
            }
        }
        _ => {}
    }
}

/// What a layer-4 upstream cannot honour: read, write and pool-idle timeouts (a relay has
/// the proxy's `idle`), retry backoff and replay, and for UDP connect timeouts and retries.
fn validate_l4_upstream(kind: Kind, up: &Upstream, errors: &mut Errors) {
    let m = kind.macro_name();
    if kind == Kind::Udp {
        for k in &up.proxy_protocol {
            errors.at(k.span(), UDP_NO_PROXY_PROTOCOL);
        }
    }
    for t in &up.timeouts {
        let key = t.key.to_string();
        if key == "connect" && kind == Kind::Tcp {
            continue;
        }
        let why = if key == "connect" {
            "a UDP proxy opens no connection to time out".to_owned()
        } else {
            format!("a relay has no requests to time out; set how long a connection may carry nothing with `idle 10m;` in the {m} block")
        };
        errors.at(
            t.key.span(),
            format!("`timeout {key}` is not available in {m}: {why}"),
        );
    }
    for retry in &up.retry {
        if kind == Kind::Udp {
            errors.at(
                retry.keyword.span(),
                "`retry` is not available in udp_proxy!: a UDP proxy opens no connection that could fail and be retried",
            );
            continue;
        }
        if let Some(backoff) = &retry.backoff {
            errors.at(
                backoff.span(),
                "`backoff` is not available in tcp_proxy!: a failed connect goes to the next peer at once; keep only `retry N;`",
            );
        }
        if let Some(replay) = &retry.replay {
            errors.at(
                replay.span(),
                "`replay` is not available in tcp_proxy!: bytes are relayed, never replayed; keep only `retry N;`",
            );
        }
        if let Some(any) = &retry.any_method {
            errors.at(
                any.span(),
                "`any_method` is not available in tcp_proxy!: a relay has no HTTP methods; keep only `retry N;`",
            );
        }
    }
}

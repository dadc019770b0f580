//! Semantics: checks the whole model, reporting every problem at the token that causes it,
//! and fills in the checked values (addresses, durations, weights) the expansion uses.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use proc_macro2::Span;
use syn::{LitInt, LitStr};

use crate::diagnostic::{closest, hint, Errors};
use crate::model::*;
use crate::phase::Phase;

const STRATEGIES: &[&str] = &[
    "round_robin",
    "random",
    "least_conn",
    "consistent_hash",
    "hash",
    "custom",
];
const KEYED_STRATEGIES: &[&str] = &["consistent_hash", "hash"];
const KEYS: &[&str] = &["header", "cookie", "path", "client_ip"];
const HEALTH_OPTIONS: &[&str] = &["every", "timeout", "rise", "fall", "host", "status"];
const PEER_TIMEOUTS: &[&str] = &["connect", "read", "write", "idle"];
const CLIENT_TIMEOUTS: &[&str] = &["header_read", "body_read", "body_total", "write"];
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// Mirrors the runtime's `MAX_WEIGHT` and `MAX_CONNECT_RETRIES`.
const MAX_WEIGHT: u32 = 256;
const MAX_RETRIES: u32 = 16;
/// Headers whose framing or connection meaning the proxy owns.
const MANAGED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Checks every proxy of the invocation.
pub fn validate(proxies: &mut Proxies, errors: &mut Errors) {
    let mut names = HashSet::new();
    for proxy in &mut proxies.proxies {
        if !names.insert(proxy.name.to_string()) {
            errors.at(
                proxy.name.span(),
                format!(
                    "a proxy named `{}` is already declared in this invocation: give each proxy its own name",
                    proxy.name
                ),
            );
        }
        validate_proxy(proxy, errors);
    }
}

fn validate_tls(tls: &TlsDecl, errors: &mut Errors) {
    if tls.certs.is_empty() && !tls.malformed {
        errors.at(
            tls.keyword.span(),
            "a TLS listener needs a certificate: `cert \"server.crt\" key \"server.key\"`",
        );
    }
    for (cert, key) in &tls.certs {
        for lit in [cert, key] {
            if lit.value().trim().is_empty() {
                errors.at(lit.span(), "empty file name: give the path of a PEM file");
            }
        }
    }
    for (_, lit) in &tls.client_ca {
        if lit.value().trim().is_empty() {
            errors.at(lit.span(), "empty file name: give the path of a PEM file");
        }
    }
    for (kw, _) in tls.client_ca.iter().skip(1) {
        errors.at(
            kw.span(),
            "`client_ca` is given twice: put every accepted CA in one PEM file",
        );
    }
}

/// What only one kind of proxy may declare.
fn validate_kind(proxy: &Proxy, errors: &mut Errors) {
    let m = proxy.kind.macro_name();
    if proxy.kind == Kind::Http {
        for (keyword, _) in &proxy.idle {
            errors.at(
                keyword.span(),
                "`idle` is a setting of tcp_proxy!/udp_proxy!: an HTTP proxy has `client_timeout` and upstream `timeout`",
            );
        }
        return;
    }
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
    for layer in &proxy.layers {
        errors.at(
            syn::spanned::Spanned::span(layer),
            format!("`layer` is not available in {m}: tower layers wrap HTTP requests"),
        );
    }
    for setting in &proxy.settings {
        let keyword = match setting {
            Setting::Via(k, _)
            | Setting::ForwardedFor(k, _)
            | Setting::Keepalive(k, _)
            | Setting::MaxHeaderBytes(k, _)
            | Setting::MaxIdlePerPeer(k, _)
            | Setting::ClientTimeouts(k, _)
            | Setting::TunnelIdle(k, _)
            | Setting::AllowUpgrade(k, _)
            | Setting::AccessLog(k, _, _) => k,
        };
        errors.at(
            keyword.span(),
            format!("`{keyword}` is an HTTP setting, not available in {m}"),
        );
    }
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
    for up in &proxy.upstreams {
        for (keyword, _) in &up.http2 {
            errors.at(
                keyword.span(),
                format!("`http2` is an HTTP setting, not available in {m}"),
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
        }
    }
    for (keyword, _) in proxy.idle.iter().skip(1) {
        errors.at(keyword.span(), "`idle` is set twice: keep one");
    }
    if let Some((_, d)) = proxy.idle.first() {
        check_duration(d, errors);
    }
}

/// What a layer-4 upstream cannot honour: read, write and pool-idle timeouts (a relay has
/// the proxy's `idle`), retry backoff and replay, and for UDP connect timeouts and retries.
fn validate_l4_upstream(kind: Kind, up: &Upstream, errors: &mut Errors) {
    let m = kind.macro_name();
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

fn validate_rate_limits(limits: &[RateLimitDecl], errors: &mut Errors) {
    for decl in limits {
        if !matches!(decl.limit.base10_parse::<u64>(), Ok(n) if n >= 1) {
            errors.at(
                decl.limit.span(),
                "a rate limit is a count of requests of at least 1",
            );
        }
        if let Some(d) = check_duration(&decl.per, errors) {
            if d.is_zero() {
                errors.at(
                    decl.per.span(),
                    "a rate limit's window must be longer than 0",
                );
            }
        }
        match &decl.by {
            None => {}
            Some((kind, name)) => match kind.to_string().as_str() {
                "client_ip" | "route" => {}
                "header" => {
                    if let Some(name) = name {
                        if http_header_name_invalid(&name.value()) {
                            errors.at(name.span(), "not a valid header name: e.g. \"x-api-key\"");
                        }
                    }
                }
                other => errors.at(
                    kind.span(),
                    format!("unknown rate limit key `{other}`: write `by client_ip`, `by header \"NAME\"` or `by route`"),
                ),
            },
        }
    }
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_proxy(proxy: &mut Proxy, errors: &mut Errors) {
    validate_kind(proxy, errors);
    validate_rate_limits(&proxy.rate_limits, errors);
    if proxy.listens.is_empty() && !proxy.malformed_listen {
        errors.at(
            proxy.name.span(),
            format!(
                "proxy `{}` has no listener: add `listen \"127.0.0.1:6188\";`",
                proxy.name
            ),
        );
    }
    for (i, (keyword, addr)) in proxy.admin.iter().enumerate() {
        if i > 0 {
            errors.at(
                keyword.span(),
                "`admin` is declared twice: one admin listener serves the whole process",
            );
        } else if let Some(admin) = check_addr(addr, "admin", errors) {
            if proxy
                .listens
                .iter()
                .any(|l| l.lit.value().parse().ok() == Some(admin))
            {
                errors.at(
                    addr.span(),
                    format!("the admin listener \"{admin}\" is also a `listen` address: give it its own port"),
                );
            }
        }
    }
    let mut seen = HashSet::new();
    for listen in &mut proxy.listens {
        if let Some(tls) = &listen.tls {
            validate_tls(tls, errors);
        }
        listen.addr = check_addr(&listen.lit, "listen", errors);
        if let Some(addr) = listen.addr {
            if !seen.insert(addr) {
                errors.at(
                    listen.lit.span(),
                    format!("`listen \"{addr}\"` is declared twice: remove one"),
                );
            }
        }
    }
    for (keyword, _) in proxy.ctx.iter().skip(1) {
        errors.at(
            keyword.span(),
            "`ctx` is declared twice: a proxy has one context type (put both in one struct)",
        );
    }

    let mut upstream_names = HashSet::new();
    for up in &mut proxy.upstreams {
        if !upstream_names.insert(up.name.to_string()) {
            errors.at(
                up.name.span(),
                format!(
                    "an upstream named `{}` is already declared: give each its own name",
                    up.name
                ),
            );
        }
        validate_upstream(up, errors);
    }

    let user_peer = proxy
        .phases
        .iter()
        .find(|p| p.phase == Phase::UpstreamPeer)
        .map(|p| p.keyword.span());
    let names: Vec<String> = proxy.upstreams.iter().map(|u| u.name.to_string()).collect();
    for route in &proxy.routes {
        validate_route(route, &names, user_peer.is_some(), errors);
    }
    check_shadowing(&proxy.routes, errors);

    for edit in &proxy.edits {
        check_edit(edit, errors);
    }
    validate_phases(&proxy.phases, errors);
    validate_settings(&mut proxy.settings, errors);
    if proxy.kind == Kind::Http {
        check_forwarding(proxy, user_peer, errors);
    }
}

/// Checks that the proxy has somewhere to send requests and that no upstream is dead code.
fn check_forwarding(proxy: &Proxy, user_peer: Option<Span>, errors: &mut Errors) {
    if let Some(span) = user_peer {
        for up in &proxy.upstreams {
            errors.at(
                up.name.span(),
                format!(
                    "upstream `{}` is never used: the `upstream_peer` phase picks every peer (remove it, or remove `upstream_peer` and route to the upstream)",
                    up.name
                ),
            );
        }
        let _ = span;
        return;
    }
    let distinct: HashSet<String> = proxy.upstreams.iter().map(|u| u.name.to_string()).collect();
    if proxy.routes.is_empty() {
        match distinct.len() {
            0 => errors.at(
                proxy.name.span(),
                format!(
                    "proxy `{}` has nowhere to send requests: declare `upstream NAME {{ peers [\"127.0.0.1:8001\"]; }}`, a `route`, or an `upstream_peer` phase",
                    proxy.name
                ),
            ),
            1 => {}
            _ => errors.at(
                proxy.upstreams[proxy.upstreams.len() - 1].name.span(),
                "with several upstreams, say which requests go where: add `route path \"/api\" => upstream api;` lines",
            ),
        }
        return;
    }
    // A route naming an unknown upstream is most likely a typo of an "unused" one: that
    // error is reported already.
    let dangling = proxy.routes.iter().any(
        |r| matches!(&r.target, Target::Upstream(name) if !distinct.contains(&name.to_string())),
    );
    if dangling {
        return;
    }
    for up in &proxy.upstreams {
        let used = proxy
            .routes
            .iter()
            .any(|r| matches!(&r.target, Target::Upstream(name) if *name == up.name));
        if !used {
            errors.at(
                up.name.span(),
                format!(
                    "upstream `{}` is never used: add `route ... => upstream {};` or remove it",
                    up.name, up.name
                ),
            );
        }
    }
}

fn validate_upstream(up: &mut Upstream, errors: &mut Errors) {
    match &mut up.peers {
        None if up.had_errors || !up.discover.is_empty() => {}
        None => errors.at(
            up.name.span(),
            format!(
                "upstream `{}` has no peers: add `peers [\"127.0.0.1:8001\"];`",
                up.name
            ),
        ),
        Some((keyword, peers)) => {
            if peers.is_empty() {
                errors.at(
                    keyword.span(),
                    "an upstream needs at least one peer: `peers [\"127.0.0.1:8001\"];`",
                );
            }
            let mut seen = HashSet::new();
            for peer in peers.iter_mut() {
                peer.addr = check_addr(&peer.lit, "peer", errors);
                if let Some(addr) = peer.addr {
                    if !seen.insert(addr) {
                        errors.at(
                            peer.lit.span(),
                            format!("peer \"{addr}\" is listed twice: give it a weight instead (`\"{addr}\" weight 2`)"),
                        );
                    }
                }
                if let Some(w) = &peer.weight {
                    match w.base10_parse::<u32>() {
                        Ok(0) => errors.at(
                            w.span(),
                            "weight 0 would send this peer nothing: use a weight from 1 to 256, or remove the peer",
                        ),
                        Ok(n) if n > MAX_WEIGHT => errors.at(
                            w.span(),
                            format!("weight {n} is too large: weights go from 1 to {MAX_WEIGHT}"),
                        ),
                        Ok(n) => peer.weight_value = n,
                        Err(_) => errors.at(w.span(), "a weight is a whole number from 1 to 256"),
                    }
                }
            }
        }
    }
    for (i, select) in up.select.iter().enumerate() {
        let strategy = &select.name;
        if i > 0 {
            errors.at(
                strategy.span(),
                "`select` is given twice in this upstream: keep one",
            );
        }
        let s = strategy.to_string();
        if !STRATEGIES.contains(&s.as_str()) {
            errors.at(
                strategy.span(),
                format!("unknown selection strategy `{s}`: {}", hint(&s, STRATEGIES)),
            );
            continue;
        }
        if s == "custom" {
            continue;
        }
        let keyed = KEYED_STRATEGIES.contains(&s.as_str());
        match (&select.key, keyed) {
            (None, true) => errors.at(
                strategy.span(),
                format!("`{s}` needs a key to hash: `{s}(header \"x-user\")`, `{s}(cookie \"session\")`, `{s}(path)` or `{s}(client_ip)`"),
            ),
            (Some(key), false) => errors.at(
                key.kind.span(),
                format!("`{s}` takes no key: only consistent_hash(...) and hash(...) do"),
            ),
            (Some(key), true) => check_key(key, errors),
            (None, false) => {}
        }
    }
    check_timeouts(&mut up.timeouts, PEER_TIMEOUTS, "upstream timeout", errors);
    for (i, retry) in up.retry.iter().enumerate() {
        if i > 0 {
            errors.at(
                retry.keyword.span(),
                "`retry` is given twice in this upstream: keep one",
            );
        }
        match retry.count.base10_parse::<u32>() {
            Ok(r) if r <= MAX_RETRIES => up.retries = r,
            _ => errors.at(
                retry.count.span(),
                format!("retry takes a count from 0 to {MAX_RETRIES} (tries on other peers after a failed connect)"),
            ),
        }
        if let Some(b) = &retry.backoff {
            check_duration(b, errors);
        }
        if let (Some(Err(e)), Some(lit)) = (retry.replay_bytes(), &retry.replay) {
            errors.at(lit.span(), e);
        }
    }
    for (i, health) in up.health.iter().enumerate() {
        if i > 0 {
            errors.at(
                health.keyword.span(),
                "`health` is given twice in this upstream: one check per upstream",
            );
        }
        check_health(health, errors);
    }
    for (i, passive) in up.passive.iter().enumerate() {
        if i > 0 {
            errors.at(
                passive.keyword.span(),
                "`passive` is given twice in this upstream: keep one",
            );
        }
        match passive.failures.base10_parse::<u32>() {
            Ok(1..=100) => {}
            _ => errors.at(
                passive.failures.span(),
                "passive failures takes a count from 1 to 100 (failed requests in a row that eject a peer)",
            ),
        }
        check_duration(&passive.eject, errors);
    }
    for (i, d) in up.discover.iter().enumerate() {
        if i > 0 {
            errors.at(
                d.keyword.span(),
                "`discover` is given twice in this upstream: one source per upstream",
            );
        }
        let target = d.target.value();
        match d.kind.to_string().as_str() {
            "dns" => {
                let valid = target.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty()
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                        && matches!(port.parse::<u16>(), Ok(1..))
                });
                if !valid {
                    errors.at(
                        d.target.span(),
                        format!("invalid DNS target \"{target}\": write NAME:PORT, e.g. \"backend.internal:8080\""),
                    );
                }
            }
            "file" => {
                if target.trim().is_empty() {
                    errors.at(d.target.span(), "the peers file needs a path");
                }
            }
            other => errors.at(
                d.kind.span(),
                format!(
                    "unknown discovery `{other}`: {}",
                    hint(other, &["dns", "file"])
                ),
            ),
        }
        if let Some(every) = &d.every {
            check_duration(every, errors);
        }
    }
    for (keyword, _) in up.http2.iter().skip(1) {
        errors.at(keyword.span(), "`http2` is given twice in this upstream");
    }
    if let (Some((keyword, true)), None) = (up.http2.first(), up.tls.first()) {
        errors.at(
            keyword.span(),
            "`http2 negotiate` needs TLS (ALPN): add `tls ...;`, or write `http2;` for cleartext HTTP/2 (h2c)",
        );
    }
    for decl in up.tls.iter().skip(1) {
        errors.at(
            decl.keyword.span(),
            "`tls` is given twice in this upstream: put every TLS setting in one `tls ...;`",
        );
    }
    for decl in &up.tls {
        if let (Some(insecure), Some(_)) = (&decl.insecure, &decl.ca) {
            errors.at(
                insecure.span(),
                "`insecure` skips certificate verification, so `ca` would have no effect: remove one",
            );
        }
        if let Some(sni) = &decl.sni {
            let name = sni.value();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                errors.at(
                    sni.span(),
                    format!(
                        "`sni \"{name}\"` is not a DNS name: write e.g. `sni \"api.example.com\"`"
                    ),
                );
            }
        }
        let files = decl
            .ca
            .iter()
            .chain(decl.cert.iter().flat_map(|(c, k)| [c, k]));
        for lit in files {
            if lit.value().trim().is_empty() {
                errors.at(lit.span(), "empty file name: give the path of a PEM file");
            }
        }
    }
    for keyword in up.fail_open.iter().skip(1) {
        errors.at(
            keyword.span(),
            "`fail_open` is given twice in this upstream",
        );
    }
}

fn check_key(key: &KeyDecl, errors: &mut Errors) {
    let kind = key.kind.to_string();
    match (kind.as_str(), &key.arg) {
        ("header", Some(name)) => {
            if http::header::HeaderName::from_bytes(name.value().as_bytes()).is_err() {
                errors.at(
                    name.span(),
                    format!("invalid header name \"{}\"", name.value()),
                );
            }
        }
        ("cookie", Some(name)) => {
            let n = name.value();
            if n.is_empty()
                || n.bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'=' || b == b';')
            {
                errors.at(name.span(), format!("invalid cookie name \"{n}\""));
            }
        }
        ("header" | "cookie", None) => errors.at(
            key.kind.span(),
            format!(
                "`{kind}` needs a name, e.g. `({kind} \"{}\")`",
                if kind == "header" {
                    "x-user"
                } else {
                    "session"
                }
            ),
        ),
        ("path" | "client_ip", None) => {}
        ("path" | "client_ip", Some(arg)) => {
            errors.at(arg.span(), format!("`{kind}` takes no name"))
        }
        (other, _) => errors.at(
            key.kind.span(),
            format!("unknown key `{other}`: {}", hint(other, KEYS)),
        ),
    }
}

fn check_health(health: &HealthDecl, errors: &mut Errors) {
    let kind = health.kind.to_string();
    match (kind.as_str(), &health.path) {
        ("tcp", None) => {}
        ("tcp", Some(path)) => errors.at(path.span(), "a tcp check takes no path"),
        ("http", None) => errors.at(
            health.kind.span(),
            "an http check needs a path: `health http \"/health\" every 5s;`",
        ),
        ("http", Some(path)) => {
            let p = path.value();
            if !p.starts_with('/') || p.bytes().any(|b| b.is_ascii_whitespace()) {
                errors.at(
                    path.span(),
                    format!("invalid health check path \"{p}\": e.g. \"/health\""),
                );
            }
        }
        (other, _) => {
            errors.at(
                health.kind.span(),
                format!(
                    "unknown health check `{other}`: {}",
                    hint(other, &["tcp", "http"])
                ),
            );
            return;
        }
    }
    let mut seen = HashSet::new();
    let (mut every, mut timeout) = (None, None);
    for (option, value) in &health.options {
        let name = option.to_string();
        if !seen.insert(name.clone()) {
            errors.at(
                option.span(),
                format!("`{name}` is given twice in this check"),
            );
        }
        match (name.as_str(), value) {
            ("every", HealthValue::Duration(d)) => every = check_duration(d, errors),
            ("timeout", HealthValue::Duration(d)) => timeout = check_duration(d, errors),
            ("rise" | "fall", HealthValue::Count(n)) => {
                if !matches!(n.base10_parse::<u32>(), Ok(1..=100)) {
                    errors.at(n.span(), format!("`{name}` takes a count from 1 to 100"));
                }
            }
            ("host", HealthValue::Text(h)) if kind == "http" => {
                if !valid_header_value(&h.value()) || h.value().is_empty() {
                    errors.at(h.span(), "invalid Host for the check");
                }
            }
            ("status", HealthValue::Status(low, high)) if kind == "http" => {
                check_health_status(low, high.as_ref(), errors)
            }
            ("every" | "timeout" | "rise" | "fall" | "host" | "status", _) => errors.at(
                option.span(),
                match name.as_str() {
                    "every" | "timeout" => format!("`{name}` takes a duration, e.g. `{name} 2s`"),
                    "rise" | "fall" => format!("`{name}` takes a count, e.g. `{name} 3`"),
                    _ if kind == "tcp" => format!("`{name}` applies to http checks only"),
                    "host" => "`host` takes a string, e.g. `host \"api.local\"`".to_owned(),
                    _ => "`status` takes a code or a range, e.g. `status 200..=299`".to_owned(),
                },
            ),
            (other, _) => errors.at(
                option.span(),
                format!(
                    "unknown health check option `{other}`: {}",
                    hint(other, HEALTH_OPTIONS)
                ),
            ),
        }
    }
    if let (Some(every), Some(timeout)) = (every, timeout) {
        if timeout > every {
            errors.at(
                health.keyword.span(),
                "the check's timeout is longer than its interval: checks would overlap",
            );
        }
    }
}

/// What `status` takes.
const STATUS_RANGE: &str =
    "status takes a code or an inclusive range of codes from 100 to 599, e.g. `status 200..=299`";

/// `status A..=B` (or `status A`) of an http check: codes from 100 to 599, and not only
/// informational ones.
fn check_health_status(low: &LitInt, high: Option<&LitInt>, errors: &mut Errors) {
    let lo = low.base10_parse::<u16>().ok();
    let hi = high.map_or(lo, |h| h.base10_parse::<u16>().ok());
    match (lo, hi) {
        // A probe's answer is final: interim 1xx are skipped, HTTP/2 has no 101 and
        // HTTP/1.1 sends one only to an Upgrade, which a probe never asks for.
        (Some(lo @ 100..=599), Some(hi)) if (lo..=199).contains(&hi) => errors.at(
            low.span(),
            "a health check never sees a 1xx status (its answer is final, and interim ones are skipped): give final statuses, e.g. `status 200..=399`",
        ),
        (Some(lo @ 100..=599), Some(hi)) if (lo..=599).contains(&hi) => {}
        (Some(100..=599), _) => errors.at(high.map_or(low.span(), LitInt::span), STATUS_RANGE),
        _ => errors.at(low.span(), STATUS_RANGE),
    }
}

fn check_timeouts(list: &mut [TimeoutDecl], keys: &[&str], what: &str, errors: &mut Errors) {
    let mut seen = HashSet::new();
    for t in list {
        let key = t.key.to_string();
        if !keys.contains(&key.as_str()) {
            errors.at(
                t.key.span(),
                format!("unknown {what} `{key}`: {}", hint(&key, keys)),
            );
        } else if !seen.insert(key.clone()) {
            errors.at(
                t.key.span(),
                format!("timeout `{key}` is given twice: keep one"),
            );
        }
        t.duration = check_duration(&t.value, errors);
    }
}

/// `500ms`, `30s`, `1.5s`, `2m`, `1h`: a positive number with a unit suffix.
fn check_duration(lit: &DurationLit, errors: &mut Errors) -> Option<Duration> {
    lit.value().map_err(|e| errors.at(lit.span(), e)).ok()
}

/// Parses an `IP:port` literal, explaining what is wrong with a bad one.
fn check_addr(lit: &LitStr, what: &str, errors: &mut Errors) -> Option<SocketAddr> {
    let text = lit.value();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            errors.at(
                lit.span(),
                format!("{what} address \"{text}\" has port 0: give a port from 1 to 65535"),
            );
            return None;
        }
        return Some(addr);
    }
    let message = match text.rsplit_once(':') {
        None => format!("{what} address \"{text}\" has no port: write it as \"IP:PORT\", e.g. \"127.0.0.1:8080\""),
        Some((host, port)) => match port.parse::<u64>() {
            Ok(p) if p > 65535 => format!(
                "port {p} in \"{text}\" is out of range: ports go from 1 to 65535"
            ),
            Ok(_) if host.parse::<std::net::IpAddr>().is_err()
                && host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_err() =>
            {
                format!("\"{host}\" is not an IP address: {what} addresses are \"IP:PORT\" literals (\"127.0.0.1:8080\", \"[::1]:8080\")")
            }
            _ => format!("invalid {what} address \"{text}\": write it as \"IP:PORT\", e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
        },
    };
    errors.at(lit.span(), message);
    None
}

fn validate_route(route: &RouteDecl, upstreams: &[String], user_peer: bool, errors: &mut Errors) {
    if let Some(host) = &route.host {
        let h = host.value();
        let bare = h.strip_prefix("*.").unwrap_or(&h);
        let valid = !bare.is_empty()
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            errors.at(
                host.span(),
                format!("invalid host \"{h}\": write a host name (\"api.example.com\") or a wildcard (\"*.example.com\"), without port"),
            );
        }
    }
    if let Some(path) = &route.path {
        let p = path.value();
        if !p.starts_with('/')
            || p.bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'?' || b == b'#')
        {
            errors.at(
                path.span(),
                format!("invalid path prefix \"{p}\": it starts with `/` and has no query or spaces, e.g. \"/api\""),
            );
        } else if !p.is_ascii() {
            errors.at(
                path.span(),
                format!("path prefix \"{p}\" has non-ASCII characters, which request paths never contain: percent-encode them (\"/caf%C3%A9\")"),
            );
        }
    }
    let mut seen = HashSet::new();
    for m in &route.methods {
        let name = m.to_string();
        if !METHODS.contains(&name.as_str()) {
            let upper = name.to_ascii_uppercase();
            let suggestion = if METHODS.contains(&upper.as_str()) {
                format!("did you mean `{upper}`?")
            } else {
                hint(&upper, METHODS)
            };
            errors.at(m.span(), format!("unknown method `{name}`: {suggestion}"));
        } else if !seen.insert(name.clone()) {
            errors.at(m.span(), format!("method `{name}` is listed twice"));
        }
    }
    match &route.target {
        Target::Upstream(name) => {
            let n = name.to_string();
            if user_peer {
                errors.at(
                    name.span(),
                    "this proxy picks peers in its `upstream_peer` phase, so a route cannot name an upstream: use `respond`/`redirect` routes, or drop `upstream_peer`",
                );
            } else if !upstreams.contains(&n) {
                let names: Vec<&str> = upstreams.iter().map(String::as_str).collect();
                let help = match closest(&n, &names) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if names.is_empty() => {
                        "declare it: `upstream NAME { peers [...]; }`".to_owned()
                    }
                    None => format!("declared upstreams: {}", names.join(", ")),
                };
                errors.at(name.span(), format!("no upstream named `{n}`: {help}"));
            }
        }
        Target::Respond { status, .. } => {
            check_status(status, errors);
        }
        Target::Redirect {
            status, location, ..
        } => {
            if let Ok(code) = status.base10_parse::<u16>() {
                if ![301, 302, 303, 307, 308].contains(&code) {
                    errors.at(
                        status.span(),
                        format!("`redirect {code}` is not a redirect status: use 301, 302, 303, 307 or 308"),
                    );
                }
            } else {
                errors.at(status.span(), "a status is a number such as 301");
            }
            let loc = location.value();
            if loc.is_empty() || !valid_header_value(&loc) {
                errors.at(
                    location.span(),
                    "invalid redirect location: a non-empty URL of visible ASCII characters",
                );
            }
        }
    }
    for edit in &route.edits {
        check_edit(edit, errors);
        if edit.side == EditSide::Request && !matches!(route.target, Target::Upstream(_)) {
            errors.at(
                edit.keyword.span(),
                format!(
                    "`{}` has no effect here: this route answers itself and sends nothing upstream",
                    edit.keyword
                ),
            );
        }
    }
}

fn check_status(status: &LitInt, errors: &mut Errors) {
    match status.base10_parse::<u16>() {
        Ok(code) if (200..=599).contains(&code) => {}
        Ok(code) if (100..200).contains(&code) => errors.at(
            status.span(),
            format!("status {code} is informational and cannot end a request: use 200-599"),
        ),
        _ => errors.at(
            status.span(),
            format!(
                "invalid status code `{}`: use a number from 200 to 599",
                status
            ),
        ),
    }
}

fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn check_edit(edit: &HeaderEditDecl, errors: &mut Errors) {
    let name = edit.name.value();
    match http::header::HeaderName::from_bytes(name.as_bytes()) {
        Err(_) => errors.at(
            edit.name.span(),
            format!("invalid header name \"{name}\": use letters, digits and `-` (e.g. \"x-request-id\")"),
        ),
        Ok(h) if MANAGED_HEADERS.contains(&h.as_str()) => errors.at(
            edit.name.span(),
            format!("\"{name}\" is managed by the proxy (framing and connection handling) and cannot be edited"),
        ),
        Ok(_) => {}
    }
    if let Some(value) = &edit.value {
        if !valid_header_value(&value.value()) {
            errors.at(
                value.span(),
                "invalid header value: use visible ASCII characters, spaces and tabs (no line breaks)",
            );
        }
    }
}

fn validate_phases(phases: &[PhaseDecl], errors: &mut Errors) {
    let mut seen = HashSet::new();
    for decl in phases {
        let name = decl.phase.name();
        if !seen.insert(name) {
            errors.at(
                decl.keyword.span(),
                format!("phase `{name}` is declared twice: merge the two into one"),
            );
        }
        if let PhaseBody::Inline {
            params,
            params_span,
            ..
        } = &decl.body
        {
            let expected = decl.phase.params();
            if params.len() != expected.len() {
                errors.at(
                    *params_span,
                    format!(
                        "`{name}` takes {} parameters, ({}), found {}: its signature is `{}`",
                        expected.len(),
                        expected.join(", "),
                        params.len(),
                        decl.phase.signature()
                    ),
                );
            }
            let mut names = HashSet::new();
            for p in params {
                if !names.insert(p.to_string()) {
                    errors.at(p.span(), format!("parameter `{p}` is named twice"));
                }
            }
        }
    }
}

fn validate_settings(settings: &mut [Setting], errors: &mut Errors) {
    let mut seen = HashSet::new();
    for setting in settings {
        let (keyword, name) = match setting {
            Setting::Via(k, _) => (k.clone(), "via"),
            Setting::ForwardedFor(k, _) => (k.clone(), "forwarded_for"),
            Setting::Keepalive(k, _) => (k.clone(), "keepalive"),
            Setting::MaxHeaderBytes(k, _) => (k.clone(), "max_header_bytes"),
            Setting::MaxIdlePerPeer(k, _) => (k.clone(), "max_idle_per_peer"),
            Setting::ClientTimeouts(k, _) => (k.clone(), "client_timeout"),
            Setting::TunnelIdle(k, _) => (k.clone(), "tunnel_idle"),
            Setting::AllowUpgrade(k, _) => (k.clone(), "allow_upgrade"),
            Setting::AccessLog(k, _, _) => (k.clone(), "access_log"),
        };
        if name != "client_timeout" && !seen.insert(name) {
            errors.at(keyword.span(), format!("`{name}` is set twice: keep one"));
        }
        match setting {
            Setting::AccessLog(_, target, format) => {
                if target.value().trim().is_empty() {
                    errors.at(
                        target.span(),
                        "the access log needs a target: \"stdout\" or a file path",
                    );
                }
                if let Some(f) = format {
                    if f != "combined" && f != "json" {
                        errors.at(
                            f.span(),
                            format!("unknown access log format `{f}`: use `combined` or `json`"),
                        );
                    }
                }
            }
            Setting::Via(_, lit) => {
                let v = lit.value();
                if v.is_empty() || !valid_header_value(&v) {
                    errors.at(lit.span(), "invalid `via` value: e.g. \"1.1 edge-proxy\"");
                }
            }
            Setting::MaxHeaderBytes(_, n) => match n.base10_parse::<usize>() {
                Ok(v) if (8192..=1 << 20).contains(&v) => {}
                _ => errors.at(
                    n.span(),
                    "max_header_bytes takes a size from 8192 (hyper's smallest buffer) to 1048576 bytes",
                ),
            },
            Setting::MaxIdlePerPeer(_, n) => {
                if n.base10_parse::<usize>().is_err() {
                    errors.at(n.span(), "max_idle_per_peer takes a count, e.g. 1024");
                }
            }
            Setting::ClientTimeouts(_, list) => {
                check_timeouts(list, CLIENT_TIMEOUTS, "client timeout", errors)
            }
            Setting::TunnelIdle(_, d) => {
                check_duration(d, errors);
            }
            Setting::AllowUpgrade(_, protocols) => check_upgrade_protocols(protocols, errors),
            Setting::ForwardedFor(..) | Setting::Keepalive(..) => {}
        }
    }
}

/// Each protocol of `allow_upgrade` is an RFC 9110 `token ["/" token]`, named once, and not
/// `h2c` (the runtime's `AllowedUpgrades::new` applies the same rule to the config file).
fn check_upgrade_protocols(protocols: &[LitStr], errors: &mut Errors) {
    let mut seen = HashSet::new();
    for lit in protocols {
        let v = lit.value();
        let mut parts = v.split('/');
        let valid = parts.next().is_some_and(is_token)
            && parts.next().is_none_or(is_token)
            && parts.next().is_none();
        if !valid {
            errors.at(
                lit.span(),
                format!("invalid upgrade protocol {v:?}: write a token such as \"websocket\" (optionally with a version, \"name/1\")"),
            );
        } else if v
            .split('/')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("h2c"))
        {
            errors.at(
                lit.span(),
                "the h2c upgrade cannot be allowed: its tunnel would carry requests past every filter (RFC 9113 §3.1 deprecates it); clients that want cleartext HTTP/2 send its preface, which the proxy serves itself",
            );
        } else if !seen.insert(v.to_ascii_lowercase()) {
            errors.at(
                lit.span(),
                format!("upgrade protocol {v:?} is listed twice: keep one"),
            );
        }
    }
}

/// An RFC 9110 token: visible characters that are not delimiters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reports every route that an earlier route already matches completely.
fn check_shadowing(routes: &[RouteDecl], errors: &mut Errors) {
    for (j, later) in routes.iter().enumerate() {
        if let Some(earlier) = routes[..j].iter().find(|e| covers(e, later)) {
            errors.at(
                later.keyword.span(),
                "this route can never match: an earlier route matches every request it would (put the more specific route first)",
            );
            errors.at(
                earlier.keyword.span(),
                "...because this earlier route comes first",
            );
        }
    }
}

/// Whether every request `b` matches is also matched by `a`.
fn covers(a: &RouteDecl, b: &RouteDecl) -> bool {
    let host = match (&a.host, &b.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => host_covers(&a.value(), &b.value()),
    };
    let path = match (&a.path, &b.path) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => path_has_prefix(&b.value(), &a.value()),
    };
    let methods = a.methods.is_empty()
        || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    host && path && methods
}

fn host_covers(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    match a.strip_prefix("*.") {
        None => a == b,
        Some(suffix) => {
            let b_name = b.strip_prefix("*.").unwrap_or(&b);
            b_name.len() > suffix.len() && b_name.ends_with(&format!(".{suffix}"))
                || (b.starts_with("*.") && b_name == suffix)
        }
    }
}

/// The runtime's segment-boundary prefix rule (`route::path_has_prefix`), repeated here
/// because a proc-macro crate cannot use the runtime.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

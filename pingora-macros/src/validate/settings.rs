//! Proxy-wide settings (`via`, `keepalive`, `client_timeout`, `allow_upgrade`,
//! `access_log`, ...), rate limits, and the TLS settings of listeners and upstreams.

use std::collections::HashSet;

use pingora_dsl_rules::{self as rules, UpgradeError};
use syn::LitStr;

use crate::diagnostic::Errors;
use crate::model;
use crate::syntax::{RateLimitDecl, Setting, SharedDecl, TlsDecl, UpstreamTlsDecl};

use super::values::{check_duration, check_timeouts};

const CLIENT_TIMEOUTS: &[&str] = &["header_read", "body_read", "body_total", "write"];

/// A TLS listener: a certificate, file names, one client CA.
pub fn validate_tls(tls: &TlsDecl, errors: &mut Errors) {
    if tls.certs.is_empty() && !tls.malformed {
        errors.at(
            tls.keyword.span(),
            "a TLS listener needs a certificate: `cert \"server.crt\" key \"server.key\"`",
        );
    }
    let files = tls
        .certs
        .iter()
        .flat_map(|(cert, key)| [cert, key])
        .chain(tls.client_ca.iter().map(|(_, ca)| ca));
    check_files(files, errors);
    for (kw, _) in tls.client_ca.iter().skip(1) {
        errors.at(
            kw.span(),
            "`client_ca` is given twice: put every accepted CA in one PEM file",
        );
    }
}

fn check_files<'a>(files: impl Iterator<Item = &'a LitStr>, errors: &mut Errors) {
    for lit in files {
        if lit.value().trim().is_empty() {
            errors.at(lit.span(), "empty file name: give the path of a PEM file");
        }
    }
}

/// An upstream's `tls`: `insecure` without `ca`, a DNS name as SNI, file names.
pub fn check_upstream_tls(decl: &UpstreamTlsDecl, errors: &mut Errors) {
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
                format!("`sni \"{name}\"` is not a DNS name: write e.g. `sni \"api.example.com\"`"),
            );
        }
    }
    let files = decl
        .ca
        .iter()
        .chain(decl.cert.iter().flat_map(|(c, k)| [c, k]));
    check_files(files, errors);
}

/// `rate_limit N per D [by KEY]`: a count of at least 1, a window, a known key.
pub fn validate_rate_limits(
    limits: &[RateLimitDecl],
    errors: &mut Errors,
) -> Vec<model::RateLimit> {
    let mut checked = Vec::new();
    for decl in limits {
        let limit = match decl.limit.base10_parse::<u64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                errors.at(
                    decl.limit.span(),
                    "a rate limit is a count of requests of at least 1",
                );
                None
            }
        };
        let per = check_duration(&decl.per, errors);
        let key = match &decl.by {
            None => Some(model::RateKey::ClientIp),
            Some((kind, name)) => match (kind.to_string().as_str(), name) {
                ("client_ip", _) => Some(model::RateKey::ClientIp),
                ("route", _) => Some(model::RateKey::Route),
                ("header", Some(name)) if !rules::is_token(&name.value()) => {
                    errors.at(name.span(), "not a valid header name: e.g. \"x-api-key\"");
                    None
                }
                ("header", Some(name)) => {
                    Some(model::RateKey::Header(name.value().to_ascii_lowercase()))
                }
                ("header", None) => None,
                (other, _) => {
                    errors.at(
                        kind.span(),
                        format!("unknown rate limit key `{other}`: write `by client_ip`, `by header \"NAME\"` or `by route`"),
                    );
                    None
                }
            },
        };
        let shared = match &decl.shared {
            None => Some(None),
            Some(shared) => check_shared(shared, errors).map(Some),
        };
        if let (Some(limit), Some(per), Some(key), Some(shared)) = (limit, per, key, shared) {
            checked.push(model::RateLimit {
                limit,
                per,
                key,
                shared,
            });
        }
    }
    checked
}

/// `shared "redis://..." [timeout D] [fallback MODE]`: a Redis URL without TLS, a timeout
/// of at most 1s (a request may wait that long), a known fallback. `None`: invalid.
fn check_shared(decl: &SharedDecl, errors: &mut Errors) -> Option<model::SharedLimit> {
    let url = decl.url.value();
    let mut valid = true;
    if url.starts_with("rediss://") {
        errors.at(
            decl.url.span(),
            "TLS to Redis (`rediss://`) is not built in: write `redis://HOST:PORT/DB` (a private network, or a local TLS tunnel)",
        );
        valid = false;
    } else if !(url.starts_with("redis://") || url.starts_with("redis+unix://"))
        || url.len() <= "redis://".len()
    {
        errors.at(
            decl.url.span(),
            "expected a Redis URL: `shared \"redis://127.0.0.1:6379/0\"` (or `redis+unix:///PATH`)",
        );
        valid = false;
    }
    let timeout = decl.timeout.as_ref().and_then(|(_, lit)| {
        let d = check_duration(lit, errors)?;
        if d.is_zero() || d > std::time::Duration::from_secs(1) {
            errors.at(
                lit.span(),
                "a shared limit's timeout is from 1ms to 1s (a request waits that long for Redis): e.g. `timeout 5ms`",
            );
            valid = false;
            return None;
        }
        Some(d)
    });
    let fallback = decl.fallback.as_ref().and_then(|(_, ident)| {
        let mode = ident.to_string();
        if matches!(mode.as_str(), "local" | "open" | "closed") {
            Some(mode)
        } else {
            errors.at(
                ident.span(),
                format!("unknown fallback `{mode}`: write `fallback local` (this instance's count), `fallback open` (admit) or `fallback closed` (refuse)"),
            );
            valid = false;
            None
        }
    });
    valid.then_some(model::SharedLimit {
        url,
        timeout,
        fallback,
    })
}

/// Every proxy-wide setting: each set once (`client_timeout` may repeat with other keys),
/// each value valid.
pub fn validate_settings(settings: &[Setting], errors: &mut Errors) -> model::Options {
    let mut seen = HashSet::new();
    let mut checked = Vec::new();
    for setting in settings {
        let keyword = setting.keyword();
        let name = keyword.to_string();
        if name != "client_timeout" && !seen.insert(name.clone()) {
            errors.at(keyword.span(), format!("`{name}` is set twice: keep one"));
        }
        check_setting(setting, &mut checked, errors);
    }
    check_fips_groups(settings, errors);
    model::Options { settings: checked }
}

fn check_setting(setting: &Setting, checked: &mut Vec<model::Setting>, errors: &mut Errors) {
    let value = match setting {
        Setting::AccessLog(_, target, format) => check_access_log(target, format.as_ref(), errors),
        Setting::Via(_, lit) => {
            let v = lit.value();
            if v.is_empty() || !rules::is_header_value(&v) {
                errors.at(lit.span(), "invalid `via` value: e.g. \"1.1 edge-proxy\"");
                None
            } else {
                Some(model::Setting::Via(lit.clone()))
            }
        }
        Setting::MaxHeaderBytes(_, n) => match n.base10_parse::<usize>() {
            Ok(v) if (8192..=1 << 20).contains(&v) => Some(model::Setting::MaxHeaderBytes(v)),
            _ => {
                errors.at(
                    n.span(),
                    "max_header_bytes takes a size from 8192 (hyper's smallest buffer) to 1048576 bytes",
                );
                None
            }
        },
        Setting::MaxIdlePerPeer(_, n) => match n.base10_parse::<usize>() {
            Ok(v) => Some(model::Setting::MaxIdlePerPeer(v)),
            Err(_) => {
                errors.at(n.span(), "max_idle_per_peer takes a count, e.g. 1024");
                None
            }
        },
        Setting::ClientTimeouts(_, list) => {
            let list = check_timeouts(list, CLIENT_TIMEOUTS, "client timeout", errors);
            checked.extend(
                list.into_iter()
                    .map(|(key, d)| model::Setting::ClientTimeout(key, d)),
            );
            None
        }
        Setting::TunnelIdle(_, d) => check_duration(d, errors).map(model::Setting::TunnelIdle),
        Setting::AllowUpgrade(_, protocols) => check_upgrade_protocols(protocols, errors)
            .then(|| model::Setting::AllowUpgrade(protocols.clone())),
        Setting::ForwardedFor(_, on) => Some(model::Setting::ForwardedFor(*on)),
        Setting::Keepalive(_, on) => Some(model::Setting::Keepalive(*on)),
        Setting::FilterLocalAnswers(_, on) => Some(model::Setting::FilterLocalAnswers(*on)),
        Setting::TlsGroups(keyword, groups) => check_tls_groups(keyword, groups, errors),
        Setting::Fips(_, on) => Some(model::Setting::Fips(*on)),
        Setting::ProxyProtocol(_, mode) => {
            check_proxy_protocol_mode(mode, errors).map(model::Setting::ProxyProtocol)
        }
    };
    checked.extend(value);
}

/// With `fips on`, `tls_groups` names only groups FIPS mode approves.
fn check_fips_groups(settings: &[Setting], errors: &mut Errors) {
    if !settings.iter().any(|s| matches!(s, Setting::Fips(_, true))) {
        return;
    }
    let groups = settings.iter().find_map(|s| match s {
        Setting::TlsGroups(_, groups) => Some(groups),
        _ => None,
    });
    for lit in groups.into_iter().flatten() {
        let v = lit.value();
        let approved = rules::FIPS_TLS_GROUPS
            .iter()
            .any(|g| g.eq_ignore_ascii_case(&v));
        if !approved && rules::TLS_GROUPS.iter().any(|g| g.eq_ignore_ascii_case(&v)) {
            errors.at(
                lit.span(),
                format!(
                    "`{v}` is not approved in FIPS mode (`fips on`): use {}",
                    rules::FIPS_TLS_GROUPS.join(", ")
                ),
            );
        }
    }
}

/// Each group of `tls_groups` is one the TLS libraries know, named once (whether the
/// library in use has it is checked at start).
fn check_tls_groups(
    keyword: &syn::Ident,
    groups: &[LitStr],
    errors: &mut Errors,
) -> Option<model::Setting> {
    if groups.is_empty() {
        errors.at(
            keyword.span(),
            "`tls_groups []` offers no key exchange: name at least one, e.g. `tls_groups [\"X25519MLKEM768\", \"X25519\"];`",
        );
        return None;
    }
    let mut valid = true;
    let mut seen = HashSet::new();
    for lit in groups {
        let v = lit.value();
        match rules::TLS_GROUPS
            .iter()
            .find(|g| g.eq_ignore_ascii_case(&v))
        {
            None => errors.at(
                lit.span(),
                format!(
                    "unknown TLS key-exchange group `{v}`: {}",
                    crate::diagnostic::hint(&v, rules::TLS_GROUPS)
                ),
            ),
            Some(known) if !seen.insert(*known) => errors.at(
                lit.span(),
                format!("`{v}` is named twice in `tls_groups`: keep one"),
            ),
            Some(_) => continue,
        }
        valid = false;
    }
    valid.then(|| model::Setting::TlsGroups(groups.to_vec()))
}

fn check_access_log(
    target: &LitStr,
    format: Option<&syn::Ident>,
    errors: &mut Errors,
) -> Option<model::Setting> {
    let mut valid = true;
    if target.value().trim().is_empty() {
        errors.at(
            target.span(),
            "the access log needs a target: \"stdout\", a file path or \"syslog:udp://IP:PORT\"",
        );
        valid = false;
    }
    if let Some(Err(e)) = rules::parse_syslog(&target.value()) {
        errors.at(target.span(), format!("invalid syslog destination: {e}"));
        valid = false;
    }
    if let Some(f) = format {
        if f != "combined" && f != "json" {
            errors.at(
                f.span(),
                format!("unknown access log format `{f}`: use `combined` or `json`"),
            );
            valid = false;
        }
    }
    valid.then(|| model::Setting::AccessLog {
        target: target.clone(),
        json: format.is_some_and(|f| f == "json"),
    })
}

/// Each protocol of `allow_upgrade` is an RFC 9110 `token ["/" token]`, named once, and not
/// `h2c` (the runtime's `AllowedUpgrades::new` applies the same rule to the config file).
fn check_upgrade_protocols(protocols: &[LitStr], errors: &mut Errors) -> bool {
    let mut seen = HashSet::new();
    let mut valid = true;
    for lit in protocols {
        let v = lit.value();
        match rules::check_upgrade_protocol(&v) {
            Err(UpgradeError::Syntax) => errors.at(
                lit.span(),
                format!("invalid upgrade protocol {v:?}: write a token such as \"websocket\" (optionally with a version, \"name/1\")"),
            ),
            Err(UpgradeError::H2c) => errors.at(
                lit.span(),
                "the h2c upgrade cannot be allowed: its tunnel would carry requests past every filter (RFC 9113 §3.1 deprecates it); clients that want cleartext HTTP/2 send its preface, which the proxy serves itself",
            ),
            Ok(()) if !seen.insert(v.to_ascii_lowercase()) => errors.at(
                lit.span(),
                format!("upgrade protocol {v:?} is listed twice: keep one"),
            ),
            Ok(()) => continue,
        }
        valid = false;
    }
    valid
}

/// `required` (`true`) or `optional` (`false`), the modes of `proxy_protocol` on a proxy or
/// a listener.
pub fn check_proxy_protocol_mode(mode: &syn::Ident, errors: &mut Errors) -> Option<bool> {
    match mode.to_string().as_str() {
        "required" => Some(true),
        "optional" => Some(false),
        other => {
            errors.at(
                mode.span(),
                format!("`proxy_protocol {other}`: write `required` (every connection starts with a PROXY header, others are closed) or `optional` (a header when one is sent)"),
            );
            None
        }
    }
}

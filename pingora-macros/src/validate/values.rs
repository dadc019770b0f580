//! Checks of single values, each returning the typed value or reporting what is wrong at
//! the literal: durations, addresses, statuses, sizes, timeout lists. The rules shared with
//! the runtime come from `pingora_dsl_rules`; the wording (naming tokens) is the macro's.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use pingora_dsl_rules::{self as rules, DurationError};
use syn::{Ident, LitInt, LitStr};

use crate::diagnostic::{hint, Errors};
use crate::syntax::{DurationLit, TimeoutDecl};

/// `500ms`, `30s`, `1.5s`, `2m`, `1h`: a positive number with a unit suffix.
pub fn check_duration(lit: &DurationLit, errors: &mut Errors) -> Option<Duration> {
    let (digits, suffix) = lit.parts();
    match rules::duration(digits, suffix) {
        Ok(d) => Some(d),
        Err(DurationError::Unit) => {
            errors.at(
                lit.span(),
                format!("invalid duration `{digits}{suffix}`: write a number with a unit, ms, s, m or h (e.g. `500ms`, `30s`)"),
            );
            None
        }
        Err(DurationError::Range | DurationError::Number) => {
            errors.at(
                lit.span(),
                format!("duration `{digits}{suffix}` is out of range: use at least 1ms and at most 7 days (a timeout of 0 would never let a request through)"),
            );
            None
        }
    }
}

/// The replay limit in bytes: `65536`, `64KiB`, `1MiB`, up to 16 MiB.
pub fn check_replay_bytes(lit: &LitInt, errors: &mut Errors) -> Option<usize> {
    let Some(unit) = rules::size_unit(lit.suffix()) else {
        errors.at(
            lit.span(),
            format!(
                "invalid size unit `{}`: write bytes, KiB or MiB (e.g. `64KiB`)",
                lit.suffix()
            ),
        );
        return None;
    };
    let n: usize = lit.base10_digits().parse().unwrap_or(usize::MAX / unit);
    let bytes = n.saturating_mul(unit);
    if bytes > rules::MAX_REPLAY_BYTES {
        errors.at(
            lit.span(),
            "a replay buffer goes up to 16MiB (it is held per request)",
        );
        return None;
    }
    Some(bytes)
}

/// Parses an `IP:port` literal, explaining what is wrong with a bad one.
pub fn check_addr(lit: &LitStr, what: &str, errors: &mut Errors) -> Option<SocketAddr> {
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
                if what == "peer" {
                    format!("\"{host}\" is neither an IP address nor a host name: write \"IP:PORT\" (\"127.0.0.1:8080\") or \"NAME:PORT\" with letters, digits, `-` and dots (\"api.internal:8080\")")
                } else {
                    format!("\"{host}\" is not an IP address: {what} addresses are \"IP:PORT\" literals (\"127.0.0.1:8080\", \"[::1]:8080\")")
                }
            }
            _ => format!("invalid {what} address \"{text}\": write it as \"IP:PORT\", e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
        },
    };
    errors.at(lit.span(), message);
    None
}

/// A status a route answers with: 200 to 599.
pub fn check_status(status: &LitInt, errors: &mut Errors) -> Option<u16> {
    match status.base10_parse::<u16>() {
        Ok(code) if (200..=599).contains(&code) => return Some(code),
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
    None
}

/// A list of `KEY DURATION` whose keys are among `keys`, each given once; returns the
/// valid entries in order.
pub fn check_timeouts(
    list: &[TimeoutDecl],
    keys: &[&str],
    what: &str,
    errors: &mut Errors,
) -> Vec<(Ident, Duration)> {
    let mut seen = HashSet::new();
    let mut checked = Vec::new();
    for t in list {
        let key = t.key.to_string();
        let known = keys.contains(&key.as_str());
        if !known {
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
        if let (Some(d), true) = (check_duration(&t.value, errors), known) {
            checked.push((t.key.clone(), d));
        }
    }
    checked
}

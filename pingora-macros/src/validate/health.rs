//! Active health checks: `health tcp ...;` and `health http "/path" ...;` with their options.

use std::collections::HashSet;

use syn::LitInt;

use crate::diagnostic::{hint, Errors};
use crate::model;
use crate::syntax::{HealthDecl, HealthValue};

use super::values::check_duration;

const HEALTH_OPTIONS: &[&str] = &["every", "timeout", "rise", "fall", "host", "status"];

/// What `status` takes.
const STATUS_RANGE: &str =
    "status takes a code or an inclusive range of codes from 100 to 599, e.g. `status 200..=299`";

/// Checks one health check; `None` if its kind or path is wrong (options are still checked
/// for a known kind, and a wrong option is reported and left to the default).
pub fn check_health(health: &HealthDecl, errors: &mut Errors) -> Option<model::Health> {
    let kind = health.kind.to_string();
    let mut model_kind = match (kind.as_str(), &health.path) {
        ("tcp", None) => Some(model::HealthKind::Tcp),
        ("tcp", Some(path)) => {
            errors.at(path.span(), "a tcp check takes no path");
            None
        }
        ("http", None) => {
            errors.at(
                health.kind.span(),
                "an http check needs a path: `health http \"/health\" every 5s;`",
            );
            None
        }
        ("http", Some(path)) => check_http_path(path, errors),
        (other, _) => {
            errors.at(
                health.kind.span(),
                format!(
                    "unknown health check `{other}`: {}",
                    hint(other, &["tcp", "http"])
                ),
            );
            return None;
        }
    };
    let mut checked = model::Health {
        kind: model::HealthKind::Tcp,
        every: None,
        timeout: None,
        rise: None,
        fall: None,
    };
    let mut seen = HashSet::new();
    for (option, value) in &health.options {
        let name = option.to_string();
        if !seen.insert(name.clone()) {
            errors.at(
                option.span(),
                format!("`{name}` is given twice in this check"),
            );
        }
        check_option(&kind, option, value, &mut checked, &mut model_kind, errors);
    }
    if let (Some(every), Some(timeout)) = (checked.every, checked.timeout) {
        if timeout > every {
            let at = health
                .options
                .iter()
                .find(|(option, _)| option == "timeout")
                .map_or(health.keyword.span(), |(option, _)| option.span());
            errors.at(
                at,
                format!(
                    "the check's timeout ({timeout:?}) is longer than its interval ({every:?}): checks would overlap; give it at most the interval, e.g. `every {every:?} timeout {every:?}`"
                ),
            );
        }
    }
    checked.kind = model_kind?;
    Some(checked)
}

fn check_http_path(path: &syn::LitStr, errors: &mut Errors) -> Option<model::HealthKind> {
    let p = path.value();
    if !p.starts_with('/') || p.bytes().any(|b| b.is_ascii_whitespace()) {
        errors.at(
            path.span(),
            format!("invalid health check path \"{p}\": e.g. \"/health\""),
        );
        return None;
    }
    Some(model::HealthKind::Http {
        path: path.clone(),
        host: None,
        status: None,
    })
}

/// One option of a check, recorded into `checked` (or `kind`'s HTTP fields) when valid.
fn check_option(
    kind: &str,
    option: &syn::Ident,
    value: &HealthValue,
    checked: &mut model::Health,
    model_kind: &mut Option<model::HealthKind>,
    errors: &mut Errors,
) {
    let name = option.to_string();
    match (name.as_str(), value) {
        ("every", HealthValue::Duration(d)) => checked.every = check_duration(d, errors),
        ("timeout", HealthValue::Duration(d)) => checked.timeout = check_duration(d, errors),
        ("rise" | "fall", HealthValue::Count(n)) => {
            let count = check_count(&name, n, errors);
            if name == "rise" {
                checked.rise = count;
            } else {
                checked.fall = count;
            }
        }
        ("host", HealthValue::Text(h)) if kind == "http" => {
            if !pingora_dsl_rules::is_header_value(&h.value()) || h.value().is_empty() {
                errors.at(h.span(), "invalid Host for the check");
            } else if let Some(model::HealthKind::Http { host, .. }) = model_kind {
                *host = Some(h.clone());
            }
        }
        ("status", HealthValue::Status(low, high)) if kind == "http" => {
            let range = check_health_status(low, high.as_ref(), errors);
            if let (Some(range), Some(model::HealthKind::Http { status, .. })) = (range, model_kind)
            {
                *status = Some(range);
            }
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

/// `rise N` / `fall N`: 1 to 100.
fn check_count(name: &str, n: &LitInt, errors: &mut Errors) -> Option<u32> {
    match n.base10_parse::<u32>() {
        Ok(count @ 1..=100) => Some(count),
        _ => {
            errors.at(n.span(), format!("`{name}` takes a count from 1 to 100"));
            None
        }
    }
}

/// `status A..=B` (or `status A`) of an http check: codes from 100 to 599, and not only
/// informational ones.
fn check_health_status(
    low: &LitInt,
    high: Option<&LitInt>,
    errors: &mut Errors,
) -> Option<(u16, u16)> {
    let lo = low.base10_parse::<u16>().ok();
    let hi = high.map_or(lo, |h| h.base10_parse::<u16>().ok());
    match (lo, hi) {
        // A probe's answer is final: interim 1xx are skipped, HTTP/2 has no 101 and
        // HTTP/1.1 sends one only to an Upgrade, which a probe never asks for.
        (Some(lo @ 100..=599), Some(hi)) if (lo..=199).contains(&hi) => errors.at(
            low.span(),
            "a health check never sees a 1xx status (its answer is final, and interim ones are skipped): give final statuses, e.g. `status 200..=399`",
        ),
        (Some(lo @ 100..=599), Some(hi)) if (lo..=599).contains(&hi) => return Some((lo, hi)),
        (Some(100..=599), _) => errors.at(high.map_or(low.span(), LitInt::span), STATUS_RANGE),
        _ => errors.at(low.span(), STATUS_RANGE),
    }
    None
}

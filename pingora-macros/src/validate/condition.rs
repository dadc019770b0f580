//! Route conditions beyond host, path prefix and methods (exact and regex paths, headers,
//! query parameters, cookies, address blocks, scheme, negations) and path rewrites: each
//! value checked here, so the runtime builds them without a failure path (a regex that
//! compiles here compiles the same at start).

use pingora_dsl_rules::{self as rules, Cidr, CidrError, PathPrefixError};
use syn::LitStr;

use crate::diagnostic::Errors;
use crate::model;
use crate::syntax::{ConditionDecl, RewriteDecl, RewriteKind, TestDecl, ValueDecl};

use super::route::{check_host, check_method_list};

/// A condition, or `None` (with errors) if a value is invalid.
pub fn check_condition(c: &ConditionDecl, errors: &mut Errors) -> Option<model::Condition> {
    let test = match &c.test {
        TestDecl::Host(h) => {
            check_host(h, errors);
            model::Test::Host(h.value())
        }
        TestDecl::PathPrefix(p) => model::Test::PathPrefix(check_path(p, "path prefix", errors)?),
        TestDecl::PathExact(p) => model::Test::PathExact(check_path(p, "path", errors)?),
        TestDecl::PathRegex(r) => model::Test::PathRegex(check_regex(r, errors)?),
        TestDecl::Method(methods) => {
            check_method_list(methods, errors);
            model::Test::Method(methods.clone())
        }
        TestDecl::Value { name, value } => {
            check_value_test(&c.keyword.to_string(), name, value, errors)?
        }
        TestDecl::Client(blocks) => model::Test::Client(check_blocks(blocks, errors)?),
        TestDecl::Scheme(s) => match s.to_string().as_str() {
            "https" => model::Test::Https(true),
            "http" => model::Test::Https(false),
            other => {
                errors.at(
                    s.span(),
                    format!("unknown scheme `{other}`: write `scheme http` or `scheme https`"),
                );
                return None;
            }
        },
    };
    Some(model::Condition {
        negated: c.not.is_some(),
        test,
    })
}

/// `header|query|cookie|claim "NAME" [== "VALUE" | ~ "REGEX"]`.
fn check_value_test(
    word: &str,
    name: &LitStr,
    value: &ValueDecl,
    errors: &mut Errors,
) -> Option<model::Test> {
    let n = name.value();
    let checked_name = match word {
        "header" => match http::header::HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) => Some(h.as_str().to_owned()),
            Err(_) => {
                errors.at(name.span(), format!("invalid header name \"{n}\": use letters, digits and `-` (e.g. \"x-canary\")"));
                None
            }
        },
        _ if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"=&;\"".contains(&b)) =>
        {
            errors.at(
                name.span(),
                format!("invalid {word} name \"{n}\": a name without spaces, `=`, `&` or `;`"),
            );
            None
        }
        _ => Some(n),
    };
    let value = match value {
        ValueDecl::Present => model::ValueTest::Present,
        ValueDecl::Equals(v) => {
            if word == "header" && !rules::is_header_value(&v.value()) {
                errors.at(
                    v.span(),
                    "invalid header value: use visible ASCII characters, spaces and tabs",
                );
                return None;
            }
            model::ValueTest::Equals(v.value())
        }
        ValueDecl::Matches(r) => model::ValueTest::Matches(check_regex(r, errors)?),
    };
    let name = checked_name?;
    Some(match word {
        "header" => model::Test::Header(name, value),
        "query" => model::Test::Query(name, value),
        "claim" => model::Test::Claim(name, value),
        _ => model::Test::Cookie(name, value),
    })
}

/// A regex the runtime's `regex` crate compiles.
fn check_regex(r: &LitStr, errors: &mut Errors) -> Option<String> {
    let pattern = r.value();
    match regex::Regex::new(&pattern) {
        Ok(_) => Some(pattern),
        Err(e) => {
            // The crate's message spans lines (the pattern, a caret, the reason): keep the
            // reason, on one line.
            let reason = e.to_string();
            let reason = reason
                .lines()
                .last()
                .unwrap_or("invalid")
                .trim()
                .trim_start_matches("error: ");
            errors.at(r.span(), format!("invalid regex: {reason} (the `regex` crate's syntax; escape a literal `.` as `\\\\.`)"));
            None
        }
    }
}

/// A path (or prefix): starts with `/`, ASCII, no query or spaces.
fn check_path(p: &LitStr, what: &str, errors: &mut Errors) -> Option<String> {
    let v = p.value();
    match rules::check_path_prefix(&v) {
        Ok(()) => Some(v),
        Err(PathPrefixError::Syntax) => {
            errors.at(p.span(), format!("invalid {what} \"{v}\": it starts with `/` and has no query or spaces, e.g. \"/api\""));
            None
        }
        Err(PathPrefixError::NonAscii) => {
            errors.at(p.span(), format!("{what} \"{v}\" has non-ASCII characters, which request paths never contain: percent-encode them (\"/caf%C3%A9\")"));
            None
        }
    }
}

/// Address blocks, each `ADDR/BITS` or a bare address.
pub(super) fn check_blocks(
    blocks: &[LitStr],
    errors: &mut Errors,
) -> Option<Vec<(std::net::IpAddr, u8)>> {
    if blocks.is_empty() {
        return None;
    }
    let mut checked = Vec::new();
    for b in blocks {
        let v = b.value();
        match Cidr::parse(&v) {
            Ok(c) => checked.push((c.network(), c.prefix())),
            Err(CidrError::Address) => errors.at(b.span(), format!("\"{v}\" is not an address block: write \"10.0.0.0/8\", \"2001:db8::/32\" or one address")),
            Err(CidrError::Prefix) => errors.at(b.span(), format!("\"{v}\": the prefix length is at most 32 for IPv4 and 128 for IPv6")),
            Err(CidrError::HostBits) => errors.at(b.span(), format!("\"{v}\" has bits set past its prefix: write the block's first address (e.g. \"10.0.0.0/8\")")),
        }
    }
    (checked.len() == blocks.len()).then_some(checked)
}

/// The route's one path rewrite, checked against what the route matches: a prefix rewrite
/// that can never apply to its requests is an error.
pub fn check_rewrites(
    rewrites: &[RewriteDecl],
    route_prefix: Option<&LitStr>,
    errors: &mut Errors,
) -> Option<model::Rewrite> {
    let first = rewrites.first()?;
    for extra in &rewrites[1..] {
        errors.at(extra.keyword.span(), format!("a route rewrites its path once: `{}` follows `{}` (use one `rewrite_path` regex for a combined change)", extra.keyword, first.keyword));
    }
    match &first.kind {
        RewriteKind::StripPrefix(from) | RewriteKind::ReplacePrefix(from, _) => {
            let checked = check_path(from, "prefix", errors)?;
            if let Some(route) = route_prefix.map(LitStr::value) {
                if !rules::path_has_prefix(&route, &checked)
                    && !rules::path_has_prefix(&checked, &route)
                {
                    errors.at(from.span(), format!("this rewrite never applies: the route only matches paths under \"{route}\", none of which starts with \"{checked}\""));
                    return None;
                }
            }
            let to = match &first.kind {
                RewriteKind::ReplacePrefix(_, to) => check_path(to, "prefix", errors)?,
                _ => String::new(),
            };
            Some(model::Rewrite::Prefix { from: checked, to })
        }
        RewriteKind::Regex(pattern, with) => {
            let checked = check_regex(pattern, errors)?;
            check_replacement(&checked, with, errors)?;
            Some(model::Rewrite::Regex {
                pattern: checked,
                with: with.value(),
            })
        }
        RewriteKind::SetPath(p) => Some(model::Rewrite::Set(check_path(p, "path", errors)?)),
    }
}

/// A regex replacement names only captures the regex has (`$1`, `${name}`).
fn check_replacement(pattern: &str, with: &LitStr, errors: &mut Errors) -> Option<()> {
    let Ok(re) = regex::Regex::new(pattern) else {
        return None;
    };
    let names: Vec<&str> = re.capture_names().flatten().collect();
    let text = with.value();
    let mut rest = text.as_str();
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let braced = rest.starts_with('{');
        let (name, after) = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            (&inner[..end], &inner[(end + 1).min(inner.len())..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        rest = after;
        if name.is_empty() {
            continue;
        }
        let known = match name.parse::<usize>() {
            Ok(i) => i < re.captures_len(),
            Err(_) => names.contains(&name),
        };
        if !known {
            let have = if names.is_empty() {
                format!("groups 0 to {}", re.captures_len() - 1)
            } else {
                format!(
                    "groups 0 to {} and names {}",
                    re.captures_len() - 1,
                    names.join(", ")
                )
            };
            let written = if braced {
                format!("${{{name}}}")
            } else {
                format!("${name}")
            };
            errors.at(with.span(), format!("the replacement names `{written}`, which the regex does not capture (it has {have}); write `${{name}}` when letters follow"));
            return None;
        }
    }
    Some(())
}

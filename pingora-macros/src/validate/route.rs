//! Routes (conditions, action, their header edits), routes that can never match, and
//! header edits.

use std::collections::HashSet;

use pingora_dsl_rules::{self as rules, PathPrefixError};
use proc_macro2::Span;

use crate::diagnostic::{closest, hint, Errors};
use crate::model;
use crate::syntax::{EditSide, HeaderEditDecl, RouteDecl, Target, Upstream};

use super::condition::{check_condition, check_rewrites};
use super::policy::check_policy;
use super::template::{check_template, Scope};
use super::upstream::check_key;
use super::values::check_status;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Every route, then the routes an earlier one shadows.
pub fn validate_routes(
    routes: &[RouteDecl],
    upstreams: &[Upstream],
    user_peer: Option<Span>,
    errors: &mut Errors,
) -> Vec<model::Route> {
    let checked = routes
        .iter()
        .filter_map(|route| validate_route(route, upstreams, user_peer.is_some(), errors))
        .collect();
    check_shadowing(routes, errors);
    checked
}

fn validate_route(
    route: &RouteDecl,
    upstreams: &[Upstream],
    user_peer: bool,
    errors: &mut Errors,
) -> Option<model::Route> {
    if let Some(host) = &route.host {
        check_host(host, errors);
    }
    if let Some(path) = &route.path {
        let p = path.value();
        match rules::check_path_prefix(&p) {
            Ok(()) => {}
            Err(PathPrefixError::Syntax) => errors.at(
                path.span(),
                format!("invalid path prefix \"{p}\": it starts with `/` and has no query or spaces, e.g. \"/api\""),
            ),
            Err(PathPrefixError::NonAscii) => errors.at(
                path.span(),
                format!("path prefix \"{p}\" has non-ASCII characters, which request paths never contain: percent-encode them (\"/caf%C3%A9\")"),
            ),
        }
    }
    check_method_list(&route.methods, errors);
    let conditions: Vec<model::Condition> = route
        .conditions
        .iter()
        .filter_map(|c| check_condition(c, errors))
        .collect();
    let path_regex = conditions.iter().find_map(|c| match (&c.test, c.negated) {
        (model::Test::PathRegex(p), false) => Some(p.as_str()),
        _ => None,
    });
    let action = check_target(&route.target, upstreams, user_peer, path_regex, errors);
    let forwards = matches!(route.target, Target::Upstream(_) | Target::Split { .. });
    let mut edits = Vec::new();
    for edit in &route.edits {
        edits.extend(check_edit(edit, path_regex, errors));
        if edit.side == EditSide::Request && !forwards {
            answers_itself(&edit.keyword, errors);
        }
    }
    if let (Some(rewrite), false) = (route.rewrites.first(), forwards) {
        answers_itself(&rewrite.keyword, errors);
    }
    let rewrite = check_rewrites(&route.rewrites, route.path.as_ref(), errors);
    let policy = check_policy(&route.policy, forwards, upstreams, errors);
    let mirror = check_mirror(route, upstreams, forwards, errors);
    Some(model::Route {
        host: route.host.clone(),
        path: route.path.clone(),
        methods: route.methods.clone(),
        conditions,
        action: action?,
        rewrite,
        edits,
        policy,
        mirror,
    })
}

/// `mirror POOL [N%]`: once, on a forwarding route, a declared pool, 1 to 100 percent.
fn check_mirror(
    route: &RouteDecl,
    upstreams: &[Upstream],
    forwards: bool,
    errors: &mut Errors,
) -> Option<(usize, u32)> {
    for again in route.mirror.iter().skip(1) {
        errors.at(
            again.keyword.span(),
            "`mirror` is given twice in this route: one shadow pool per route",
        );
    }
    let decl = route.mirror.first()?;
    if !forwards {
        answers_itself(&decl.keyword, errors);
    }
    let index = upstreams.iter().position(|u| u.name == decl.pool);
    if index.is_none() {
        let names: Vec<String> = upstreams.iter().map(|u| u.name.to_string()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        errors.at(
            decl.pool.span(),
            format!(
                "no upstream named `{}` to mirror to: {}",
                decl.pool,
                hint(&decl.pool.to_string(), &names)
            ),
        );
    }
    let percent = match &decl.percent {
        None => Some(100),
        Some(n) => match n.base10_parse::<u32>() {
            Ok(p) if (1..=100).contains(&p) => Some(p),
            _ => {
                errors.at(n.span(), "a mirror copies 1% to 100% of the requests: write e.g. `mirror shadow 10%;` (no share copies them all)");
                None
            }
        },
    };
    Some((index?, percent?))
}

/// `keyword` changes the request sent upstream, on a route that sends none.
fn answers_itself(keyword: &syn::Ident, errors: &mut Errors) {
    errors.at(
        keyword.span(),
        format!(
            "`{keyword}` has no effect here: this route answers itself and sends nothing upstream; remove it"
        ),
    );
}

/// A host name (`api.example.com`) or a wildcard (`*.example.com`), without port.
pub(super) fn check_host(host: &syn::LitStr, errors: &mut Errors) {
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

/// Known methods, each listed once.
pub(super) fn check_method_list(methods: &[syn::Ident], errors: &mut Errors) -> bool {
    let mut seen = HashSet::new();
    let mut valid = true;
    for m in methods {
        let name = m.to_string();
        if !METHODS.contains(&name.as_str()) {
            let upper = name.to_ascii_uppercase();
            let suggestion = if METHODS.contains(&upper.as_str()) {
                format!("did you mean `{upper}`?")
            } else {
                hint(&upper, METHODS)
            };
            errors.at(m.span(), format!("unknown method `{name}`: {suggestion}"));
            valid = false;
        } else if !seen.insert(name.clone()) {
            errors.at(m.span(), format!("method `{name}` is listed twice"));
            valid = false;
        }
    }
    valid
}

/// What the route does: a declared upstream (unless `upstream_peer` picks peers), an
/// answer with a final status, or a redirect with a redirect status and a valid location.
fn check_target(
    target: &Target,
    upstreams: &[Upstream],
    user_peer: bool,
    path_regex: Option<&str>,
    errors: &mut Errors,
) -> Option<model::Action> {
    let scope = Scope {
        headers: true,
        path_regex,
    };
    match target {
        Target::Upstream(name) => {
            upstream_index(name, upstreams, user_peer, errors).map(model::Action::Upstream)
        }
        Target::Split { keyword, arms, key } => {
            check_split(keyword, arms, upstreams, user_peer, errors).map(|arms| {
                model::Action::Split {
                    arms,
                    key: key.as_ref().and_then(|k| check_key(k, errors)),
                }
            })
        }
        Target::Respond { status, body } => {
            let template = body
                .as_ref()
                .and_then(|b| check_template(b, &scope, errors));
            let status = check_status(status, errors)?;
            let body = body.as_ref().map(|b| b.value()).unwrap_or_default();
            Some(model::Action::Respond {
                status,
                body,
                template,
            })
        }
        Target::Redirect { status, location } => {
            let template = check_template(location, &scope, errors);
            check_redirect(status, location, template, errors)
        }
    }
}

/// The index of the upstream `name` a route forwards to.
fn upstream_index(
    name: &syn::Ident,
    upstreams: &[Upstream],
    user_peer: bool,
    errors: &mut Errors,
) -> Option<usize> {
    let n = name.to_string();
    let index = upstreams.iter().position(|u| u.name == *name);
    if user_peer {
        errors.at(
            name.span(),
            "this proxy picks peers in its `upstream_peer` phase, so a route cannot name an upstream: use `respond`/`redirect` routes, or drop `upstream_peer`",
        );
        return None;
    }
    if index.is_none() {
        let names: Vec<String> = upstreams.iter().map(|u| u.name.to_string()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let help = match closest(&n, &names) {
            Some(c) => format!("did you mean `{c}`?"),
            None if names.is_empty() => "declare it: `upstream NAME { peers [...]; }`".to_owned(),
            None => format!("declared upstreams: {}", names.join(", ")),
        };
        errors.at(name.span(), format!("no upstream named `{n}`: {help}"));
    }
    index
}

/// The arms of a split: declared upstreams, each once, with shares of 1% or more adding
/// up to 100%.
fn check_split(
    keyword: &syn::Ident,
    arms: &[(syn::LitInt, syn::Ident)],
    upstreams: &[Upstream],
    user_peer: bool,
    errors: &mut Errors,
) -> Option<Vec<(usize, u32)>> {
    if arms.len() < 2 {
        errors.at(keyword.span(), "a split needs two arms or more: `split { 90% stable, 10% canary }` (for one upstream, write `upstream NAME`)");
        return None;
    }
    let mut checked = Vec::new();
    let mut total = 0u32;
    let mut seen = HashSet::new();
    for (share, pool) in arms {
        if !seen.insert(pool.to_string()) {
            errors.at(
                pool.span(),
                format!(
                    "`{pool}` is in this split twice: give it one arm with the sum of the shares"
                ),
            );
        }
        let weight = match share.base10_parse::<u32>() {
            Ok(w) if (1..=100).contains(&w) => Some(w),
            _ => {
                errors.at(
                    share.span(),
                    "a share is a whole percentage from 1 to 100, e.g. `10%`",
                );
                None
            }
        };
        total += weight.unwrap_or(0);
        if let (Some(w), Some(i)) = (weight, upstream_index(pool, upstreams, user_peer, errors)) {
            checked.push((i, w));
        }
    }
    if checked.len() == arms.len() && total != 100 {
        errors.at(
            keyword.span(),
            format!("the shares of this split add up to {total}%, not 100%"),
        );
        return None;
    }
    (checked.len() == arms.len()).then_some(checked)
}

fn check_redirect(
    status: &syn::LitInt,
    location: &syn::LitStr,
    template: Option<model::Template>,
    errors: &mut Errors,
) -> Option<model::Action> {
    let code = match status.base10_parse::<u16>() {
        Ok(code) if [301, 302, 303, 307, 308].contains(&code) => Some(code),
        Ok(code) => {
            errors.at(
                status.span(),
                format!(
                    "`redirect {code}` is not a redirect status: use 301, 302, 303, 307 or 308"
                ),
            );
            None
        }
        Err(_) => {
            errors.at(status.span(), "a status is a number such as 301");
            None
        }
    };
    let loc = location.value();
    if loc.is_empty() || !rules::is_header_value(&loc) {
        errors.at(
            location.span(),
            "invalid redirect location: a non-empty URL of visible ASCII characters",
        );
        return None;
    }
    Some(model::Action::Redirect {
        status: code?,
        location: location.clone(),
        template,
    })
}

/// A header edit: a valid name the proxy does not manage, a valid value (whose
/// `${VARIABLE}`s may use captures of `path_regex`, the route's).
pub fn check_edit(
    edit: &HeaderEditDecl,
    path_regex: Option<&str>,
    errors: &mut Errors,
) -> Option<model::HeaderEdit> {
    let name = edit.name.value();
    let checked = match http::header::HeaderName::from_bytes(name.as_bytes()) {
        Err(_) => {
            errors.at(
                edit.name.span(),
                format!("invalid header name \"{name}\": use letters, digits and `-` (e.g. \"x-request-id\")"),
            );
            None
        }
        Ok(h) if rules::is_managed_header(h.as_str()) => {
            errors.at(
                edit.name.span(),
                format!("\"{name}\" is managed by the proxy (framing and connection handling) and cannot be edited"),
            );
            None
        }
        Ok(h) => Some(h.as_str().to_owned()),
    };
    let mut template = None;
    if let Some(value) = &edit.value {
        if !rules::is_header_value(&value.value()) {
            errors.at(
                value.span(),
                "invalid header value: use visible ASCII characters, spaces and tabs (no line breaks)",
            );
            return None;
        }
        let scope = Scope {
            headers: edit.side == EditSide::Request,
            path_regex,
        };
        template = check_template(value, &scope, errors);
    }
    Some(model::HeaderEdit {
        side: edit.side,
        name: checked?,
        value: edit.value.clone(),
        template,
    })
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
        (Some(a), Some(b)) => rules::path_has_prefix(&b.value(), &a.value()),
    };
    let methods = a.methods.is_empty()
        || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    // A further condition of `a` may refuse what `b` matches (not decided here).
    host && path && methods && a.conditions.is_empty()
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

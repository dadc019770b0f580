//! A route's own limits and policies: `timeout`, `retry`, `rate_limit`, `max_body`,
//! `cors`, `allow` and `deny` in its block.

use pingora_dsl_rules::{self as rules, MAX_RETRIES};
use syn::{Ident, LitInt};

use crate::diagnostic::Errors;
use crate::model;
use crate::model::Choice;
use crate::syntax::{AccessDecl, PolicyDecl};

use super::settings::validate_rate_limits;
use super::values::check_timeouts;

const ROUTE_TIMEOUTS: &[&str] = &["connect", "read", "write"];

/// The route's limits, each kind given once (rate limits may be several); `forwards`
/// says whether the route sends requests upstream, without which only rate limits and
/// `max_body` mean something.
pub fn check_policy(
    items: &[PolicyDecl],
    forwards: bool,
    upstreams: &[crate::syntax::Upstream],
    errors: &mut Errors,
) -> Option<model::Policy> {
    if items.is_empty() {
        return None;
    }
    let mut policy = model::Policy::default();
    let mut seen: Vec<String> = Vec::new();
    for item in items {
        let keyword = item.keyword();
        let name = keyword.to_string();
        if !matches!(item, PolicyDecl::RateLimit(_) | PolicyDecl::Access(_)) && seen.contains(&name)
        {
            errors.at(
                keyword.span(),
                format!("`{name}` is given twice in this route: keep one"),
            );
            continue;
        }
        seen.push(name);
        match item {
            PolicyDecl::Timeout(k, list) => {
                upstream_only(k, forwards, errors);
                for (key, d) in check_timeouts(list, ROUTE_TIMEOUTS, "route timeout", errors) {
                    match key.to_string().as_str() {
                        "connect" => policy.connect = Some(d),
                        "read" => policy.read = Some(d),
                        _ => policy.write = Some(d),
                    }
                }
            }
            PolicyDecl::Retry(k, count) => {
                upstream_only(k, forwards, errors);
                policy.retries = check_retries(count, errors);
            }
            PolicyDecl::RateLimit(decl) => policy
                .rate_limits
                .extend(validate_rate_limits(std::slice::from_ref(decl), errors)),
            PolicyDecl::MaxBody(_, size) => policy.max_body = check_body_size(size, errors),
            PolicyDecl::Cors(decl) => {
                policy.cors = route_policy(decl, errors, super::cors::check_cors)
            }
            // Checked together below.
            PolicyDecl::Access(_) => {}
            PolicyDecl::Auth(decl) => {
                policy.auth = super::auth::check_auth(decl, upstreams, errors)
            }
            PolicyDecl::Compress(decl) => {
                upstream_only(&decl.keyword, forwards, errors);
                policy.compress = route_policy(decl, errors, super::compress::check_compress);
            }
            PolicyDecl::Cache(decl) => {
                upstream_only(&decl.keyword, forwards, errors);
                policy.cache = route_policy(decl, errors, super::cache::check_cache);
            }
        }
    }
    let access: Vec<&AccessDecl> = items
        .iter()
        .filter_map(|item| match item {
            PolicyDecl::Access(decl) => Some(decl),
            _ => None,
        })
        .collect();
    if !access.is_empty() {
        if let Some(checked) = super::access::check_access(&access, errors) {
            policy.access = Choice::Own(checked);
        }
    }
    Some(policy)
}

/// `keyword` is about the upstream, on a route that has none.
fn upstream_only(keyword: &Ident, forwards: bool, errors: &mut Errors) {
    if !forwards {
        errors.at(
            keyword.span(),
            format!("`{keyword}` has no effect here: this route answers itself and sends nothing upstream; remove it"),
        );
    }
}

/// `retry N` of a route: 0 to [`MAX_RETRIES`].
fn check_retries(count: &LitInt, errors: &mut Errors) -> Option<u32> {
    match count.base10_parse::<u32>() {
        Ok(n) if n <= MAX_RETRIES => Some(n),
        _ => {
            errors.at(
                count.span(),
                format!("a route's `retry` takes a count from 0 to {MAX_RETRIES} (resends after a broken connection)"),
            );
            None
        }
    }
}

/// `max_body SIZE`: bytes with an optional unit (`b`, `KiB`, `MiB`, `GiB`), at least 1.
fn check_body_size(size: &LitInt, errors: &mut Errors) -> Option<u64> {
    let Some(unit) = rules::size_unit(size.suffix()) else {
        errors.at(
            size.span(),
            format!(
                "invalid size unit `{}`: write bytes, KiB, MiB or GiB (e.g. `max_body 1MiB;`)",
                size.suffix()
            ),
        );
        return None;
    };
    match size.base10_digits().parse::<u64>() {
        Ok(n) if n >= 1 => n.checked_mul(unit as u64).or_else(|| {
            errors.at(size.span(), "this size is too large: use at most a few GiB");
            None
        }),
        _ => {
            errors.at(
                size.span(),
                "`max_body` takes a size of at least 1 byte (to refuse every body, answer from a route)",
            );
            None
        }
    }
}

/// A policy declaration that stands at the proxy level or in a route, where `off` turns the
/// proxy's off.
pub trait Switchable {
    /// The keyword that starts it.
    fn keyword(&self) -> &Ident;
    /// Whether it says `off`.
    fn is_off(&self) -> bool;
}

macro_rules! switchable {
    ($($decl:ty),*) => {$(
        impl Switchable for $decl {
            fn keyword(&self) -> &Ident {
                &self.keyword
            }
            fn is_off(&self) -> bool {
                self.off
            }
        }
    )*};
}

switchable!(
    crate::syntax::CorsDecl,
    crate::syntax::CompressDecl,
    crate::syntax::CacheDecl
);

/// The proxy's declaration of a switchable policy (once, not `off`), checked by `check`.
pub fn proxy_policy<D: Switchable, T>(
    decls: &[D],
    errors: &mut Errors,
    check: fn(&D, &mut Errors) -> Option<T>,
) -> Option<T> {
    let decl = proxy_level(
        decls,
        D::keyword,
        |d| d.is_off().then(|| d.keyword()),
        errors,
    )?;
    check(decl, errors)
}

/// A route's declaration of a switchable policy: `off`, its own (checked by `check`), or,
/// when it has errors, the proxy's (the errors are reported).
pub fn route_policy<D: Switchable, T>(
    decl: &D,
    errors: &mut Errors,
    check: fn(&D, &mut Errors) -> Option<T>,
) -> Choice<T> {
    if decl.is_off() {
        return Choice::Off;
    }
    check(decl, errors).map_or(Choice::Inherit, Choice::Own)
}

/// The proxy-level declaration of a policy a route may override: the first of `decls`,
/// with an error at every repeat, and none (with an error) when it says `off`, which only
/// a route may.
pub fn proxy_level<'a, D>(
    decls: &'a [D],
    keyword: impl Fn(&D) -> &Ident,
    off: impl Fn(&D) -> Option<&Ident>,
    errors: &mut Errors,
) -> Option<&'a D> {
    for again in decls.iter().skip(1) {
        let k = keyword(again);
        errors.at(
            k.span(),
            format!("`{k}` is declared twice: a proxy has one (a route may declare its own); merge them"),
        );
    }
    let decl = decls.first()?;
    if let Some(at) = off(decl) {
        let k = keyword(decl);
        errors.at(
            at.span(),
            format!("`{k} off;` belongs in a route, turning the proxy's `{k}` off there; a proxy without it simply declares none"),
        );
        return None;
    }
    Some(decl)
}

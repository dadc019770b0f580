//! `auth ...`: files and realms that are not empty, tokens that are tokens, JWT algorithms
//! this crate verifies, header names that are names, a declared pool for `external`, each
//! setting once.

use std::collections::HashSet;

use syn::{Ident, LitStr};

use crate::diagnostic::{hint, Errors};
use crate::model::{self, Choice};
use crate::syntax::{AuthDecl, AuthKind, AuthSetting, AuthValue, Upstream};

use super::values::check_duration;

/// The JWT algorithms a `key` may name.
pub const JWT_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The proxy's `auth`: declared once, not `off`.
pub fn check_proxy_auth(
    decls: &[AuthDecl],
    upstreams: &[Upstream],
    errors: &mut Errors,
) -> Option<model::Auth> {
    let decl = super::policy::proxy_level(
        decls,
        |d| &d.keyword,
        |d| matches!(d.kind, AuthKind::Off).then_some(&d.method),
        errors,
    )?;
    match check_auth(decl, upstreams, errors) {
        Choice::Own(auth) => Some(auth),
        Choice::Off | Choice::Inherit => None,
    }
}

/// One `auth`: `Off`, the checked method, or `Inherit` after an error.
pub fn check_auth(
    decl: &AuthDecl,
    upstreams: &[Upstream],
    errors: &mut Errors,
) -> Choice<model::Auth> {
    let checked = match &decl.kind {
        AuthKind::Off => return Choice::Off,
        AuthKind::Basic { realm, file } => {
            let realm_ok = non_empty(realm, "the realm (shown by browsers)", errors);
            let file = file_path(file, errors);
            realm_ok.and(file).map(|file| model::Auth::Basic {
                realm: realm.value(),
                file,
            })
        }
        AuthKind::BearerList(tokens) => {
            check_tokens(&decl.method, tokens, errors).map(model::Auth::BearerList)
        }
        AuthKind::BearerFile(file) => file_path(file, errors).map(model::Auth::BearerFile),
        AuthKind::Jwt(settings) => check_jwt(&decl.method, settings, errors).map(model::Auth::Jwt),
        AuthKind::ApiKey {
            source,
            name,
            file,
            rate,
        } => {
            let header = source == "header";
            let name_ok = if header {
                header_name(name, errors)
            } else {
                non_empty(name, "the query parameter's name", errors).map(|()| name.value())
            };
            let rate = match rate {
                None => Some(None),
                Some((n, per)) => {
                    let n = match n.base10_parse::<u64>() {
                        Ok(n) if n > 0 => Some(n),
                        _ => {
                            errors.at(
                                n.span(),
                                "a key's rate takes a count of at least 1: `rate 100 per 1m`",
                            );
                            None
                        }
                    };
                    let per = check_duration(per, errors);
                    n.zip(per).map(Some)
                }
            };
            let file = file_path(file, errors);
            match (name_ok, file, rate) {
                (Some(name), Some(file), Some(rate)) => Some(model::Auth::ApiKey {
                    header,
                    name,
                    file,
                    rate,
                }),
                _ => None,
            }
        }
        AuthKind::External { pool, settings } => {
            check_external(pool, settings, upstreams, errors).map(model::Auth::External)
        }
    };
    checked.map_or(Choice::Inherit, Choice::Own)
}

fn check_tokens(method: &Ident, tokens: &[LitStr], errors: &mut Errors) -> Option<Vec<String>> {
    if tokens.is_empty() {
        errors.at(method.span(), "`auth bearer []` accepts no token: list some, or read them from a file with `auth bearer file \"FILE\";`");
        return None;
    }
    let mut valid = true;
    for t in tokens {
        let v = t.value();
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errors.at(t.span(), "a bearer token is one word of visible characters");
            valid = false;
        }
    }
    valid.then(|| tokens.iter().map(LitStr::value).collect())
}

fn check_jwt(method: &Ident, settings: &[AuthSetting], errors: &mut Errors) -> Option<model::Jwt> {
    let mut jwt = model::Jwt::default();
    let mut valid = once_each(settings, &["key"], errors);
    for s in settings {
        match (s.key.to_string().as_str(), &s.value) {
            ("key", AuthValue::Key(alg, file)) => {
                let name = alg.to_string();
                if !JWT_ALGORITHMS.contains(&name.as_str()) {
                    let upper = name.to_ascii_uppercase();
                    let close = JWT_ALGORITHMS
                        .iter()
                        .find(|a| a.eq_ignore_ascii_case(&name))
                        .copied();
                    let help = close.map_or_else(
                        || hint(&upper, JWT_ALGORITHMS),
                        |c| format!("did you mean `{c}`?"),
                    );
                    errors.at(
                        alg.span(),
                        format!("unknown JWT algorithm `{name}`: {help}"),
                    );
                    valid = false;
                } else if let Some(file) = file_path(file, errors) {
                    jwt.keys.push((Some(name), file));
                }
            }
            ("jwks", AuthValue::Text(file)) => {
                if let Some(file) = file_path(file, errors) {
                    jwt.keys.push((None, file));
                }
            }
            ("issuer" | "audience" | "require", v) => {
                let list = strings(&s.key, v, errors);
                valid &= list.is_some();
                let list = list.unwrap_or_default();
                match s.key.to_string().as_str() {
                    "issuer" => jwt.issuers = list,
                    "audience" => jwt.audiences = list,
                    _ => jwt.require = list,
                }
            }
            // No clock skew allowed at all is a choice, not a mistake.
            ("leeway", AuthValue::Duration(d)) if d.parts().0 == "0" => {
                jwt.leeway = Some(std::time::Duration::ZERO);
            }
            ("leeway", AuthValue::Duration(d)) => {
                jwt.leeway = check_duration(d, errors);
                valid &= jwt.leeway.is_some();
            }
            (key, _) => {
                errors.at(
                    s.key.span(),
                    format!("`{key}` takes {}", jwt_value_shape(key)),
                );
                valid = false;
            }
        }
    }
    if jwt.keys.is_empty() && valid {
        errors.at(method.span(), "`auth jwt` needs the keys that sign the tokens: add `jwks \"/etc/proxy/jwks.json\";` or `key RS256 \"/etc/proxy/idp.pem\";`");
        return None;
    }
    valid.then_some(jwt)
}

fn jwt_value_shape(key: &str) -> &'static str {
    match key {
        "key" => "an algorithm and a file: `key RS256 \"/etc/proxy/idp.pem\";`",
        "jwks" => "a file: `jwks \"/etc/proxy/jwks.json\";`",
        "leeway" => "a duration: `leeway 30s;`",
        _ => "a string or a list of strings",
    }
}

fn check_external(
    pool: &Ident,
    settings: &[AuthSetting],
    upstreams: &[Upstream],
    errors: &mut Errors,
) -> Option<model::External> {
    let group = upstreams.iter().position(|u| u.name == *pool);
    if group.is_none() {
        let names: Vec<String> = upstreams.iter().map(|u| u.name.to_string()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        errors.at(
            pool.span(),
            format!(
                "no upstream named `{pool}` for the authorization service: {}",
                hint(&pool.to_string(), &names)
            ),
        );
    }
    let mut ext = model::External {
        group: group.unwrap_or_default(),
        ..model::External::default()
    };
    let mut valid = once_each(settings, &[], errors) && group.is_some();
    for s in settings {
        let key = s.key.to_string();
        match (key.as_str(), &s.value) {
            ("prefix", AuthValue::Text(p)) => {
                let v = p.value();
                if !v.starts_with('/') || v.contains(['?', ' ', '#']) {
                    errors.at(
                        p.span(),
                        format!(
                            "invalid prefix \"{v}\": a path that starts with `/`, e.g. \"/authz\""
                        ),
                    );
                    valid = false;
                }
                ext.prefix = Some(v.trim_end_matches('/').to_owned());
            }
            ("send" | "copy", AuthValue::List(names)) => {
                let checked: Vec<String> = names
                    .iter()
                    .filter_map(|n| header_name(n, errors))
                    .collect();
                valid &= checked.len() == names.len();
                if key == "send" {
                    ext.send = Some(checked);
                } else {
                    ext.copy = checked;
                }
            }
            ("user", AuthValue::Text(name)) => ext.user = header_name(name, errors),
            ("timeout", AuthValue::Duration(d)) => ext.timeout = check_duration(d, errors),
            ("cache", AuthValue::Cache(ttl, name)) => {
                ext.cache = header_name(name, errors).zip(check_duration(ttl, errors));
                valid &= ext.cache.is_some();
            }
            _ => {
                errors.at(
                    s.key.span(),
                    format!("`{key}` takes {}", external_value_shape(&key)),
                );
                valid = false;
            }
        }
    }
    valid.then_some(ext)
}

fn external_value_shape(key: &str) -> &'static str {
    match key {
        "prefix" => "a path: `prefix \"/authz\";`",
        "send" | "copy" => "a list of header names: `copy [\"x-user\"];`",
        "user" => "a header name: `user \"x-user\";`",
        "timeout" => "a duration: `timeout 500ms;`",
        _ => "a duration and a header: `cache 30s by header \"authorization\";`",
    }
}

/// Whether each setting but `repeatable` ones is given once (errors at the repeats).
fn once_each(settings: &[AuthSetting], repeatable: &[&str], errors: &mut Errors) -> bool {
    let mut seen = HashSet::new();
    let mut valid = true;
    for s in settings {
        let key = s.key.to_string();
        if !repeatable.contains(&key.as_str()) && !seen.insert(key.clone()) {
            errors.at(s.key.span(), format!("`{key}` is given twice: keep one"));
            valid = false;
        }
    }
    valid
}

/// A string or a list of non-empty strings.
fn strings(key: &Ident, value: &AuthValue, errors: &mut Errors) -> Option<Vec<String>> {
    let list = match value {
        AuthValue::Text(t) => vec![t.clone()],
        AuthValue::List(l) => l.clone(),
        _ => {
            errors.at(
                key.span(),
                format!("`{key}` takes a string or a list of strings"),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    for lit in &list {
        non_empty(lit, &format!("a `{key}` value"), errors)?;
        out.push(lit.value());
    }
    if out.is_empty() {
        errors.at(
            key.span(),
            format!("`{key} []` is empty: name at least one"),
        );
        return None;
    }
    Some(out)
}

fn non_empty(lit: &LitStr, what: &str, errors: &mut Errors) -> Option<()> {
    if lit.value().trim().is_empty() {
        errors.at(lit.span(), format!("{what} is empty"));
        return None;
    }
    Some(())
}

fn file_path(lit: &LitStr, errors: &mut Errors) -> Option<String> {
    non_empty(lit, "the file's path", errors)?;
    Some(lit.value())
}

fn header_name(lit: &LitStr, errors: &mut Errors) -> Option<String> {
    let name = lit.value();
    match http::header::HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) => Some(n.as_str().to_owned()),
        Err(_) => {
            errors.at(
                lit.span(),
                format!(
                    "invalid header name \"{name}\": use letters, digits and `-` (e.g. \"x-user\")"
                ),
            );
            None
        }
    }
}

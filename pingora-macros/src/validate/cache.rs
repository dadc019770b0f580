//! `cache`: sizes with units and within reason, durations, a header name, each setting
//! once (a key part may repeat).

use pingora_dsl_rules as rules;
use syn::LitInt;

use crate::diagnostic::Errors;
use crate::model;
use crate::syntax::{CacheDecl, CacheValue};

use super::values::check_duration;

/// A `cache` declaration checked into its model (at the proxy level or in a route).
pub(super) fn check_cache(decl: &CacheDecl, errors: &mut Errors) -> Option<model::Cache> {
    let mut cache = model::Cache::default();
    let mut valid = true;
    let mut seen: Vec<String> = Vec::new();
    for setting in &decl.settings {
        let word = setting.key.to_string();
        if word != "key" && seen.contains(&word) {
            errors.at(
                setting.key.span(),
                format!("`{word}` is given twice in this `cache` block: keep one"),
            );
            valid = false;
            continue;
        }
        seen.push(word.clone());
        let ok = match (&setting.value, word.as_str()) {
            (CacheValue::Size(lit), "memory") => {
                set(&mut cache.memory, size(lit, &word, "memory 64MiB", errors))
            }
            (CacheValue::Size(lit), _) => set(
                &mut cache.max_object,
                size(lit, &word, "max_object 8MiB", errors),
            ),
            (CacheValue::Duration(lit), key) => {
                let d = check_duration(lit, errors);
                let slot = match key {
                    "ttl" => &mut cache.ttl,
                    "stale_while_revalidate" => &mut cache.stale_while_revalidate,
                    "stale_if_error" => &mut cache.stale_if_error,
                    _ => &mut cache.lock_timeout,
                };
                set(slot, d)
            }
            (CacheValue::Str(name), _) => {
                let header = name.value().to_ascii_lowercase();
                let ok = header_name(&header);
                if ok {
                    cache.status_header = Some(header);
                } else {
                    errors.at(
                        name.span(),
                        format!(
                            "`{}` is not a header name: `status_header \"x-cache\";`",
                            name.value()
                        ),
                    );
                }
                ok
            }
            (CacheValue::Disk(dir, lit), _) => {
                let size = size(lit, "disk", "disk \"/var/cache/edge\" 10GiB", errors);
                let path = dir.value();
                if path.is_empty() {
                    errors.at(
                        dir.span(),
                        "the disk tier needs a directory: `disk \"/var/cache/edge\" 10GiB;`",
                    );
                }
                match size.filter(|_| !path.is_empty()) {
                    Some(n) => {
                        cache.disk = Some((path, n));
                        true
                    }
                    None => false,
                }
            }
            (CacheValue::KeyTemplate(lit), _) => {
                let scope = super::template::Scope {
                    headers: true,
                    path_regex: None,
                };
                let before = errors.len();
                match super::template::check_template(lit, &scope, errors) {
                    Some(template) if cache.key_template.is_none() => {
                        cache.key_template = Some(template);
                        true
                    }
                    Some(_) => {
                        errors.at(
                            lit.span(),
                            "a cache declares one `key \"TEMPLATE\"`: put every variable in it",
                        );
                        false
                    }
                    None if errors.len() > before => false,
                    None => {
                        errors.at(lit.span(), "this `key` has no variable: name one (`key \"${cookie.theme}\";`), or add a header or cookie with `key header \"NAME\";`");
                        false
                    }
                }
            }
            (CacheValue::Key(part, name), _) => {
                let value = name.value();
                let ok = if part == "header" {
                    header_name(&value.to_ascii_lowercase())
                } else {
                    !value.is_empty()
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';')
                };
                if !ok {
                    errors.at(name.span(), format!("`{value}` is not a {part} name"));
                } else if part == "header" {
                    cache.key_headers.push(value.to_ascii_lowercase());
                } else {
                    cache.key_cookies.push(value);
                }
                ok
            }
        };
        valid &= ok;
    }
    if let (Some(memory), Some(max)) = (cache.memory, cache.max_object) {
        if max > memory {
            let at = decl
                .settings
                .iter()
                .find(|s| s.key == "max_object")
                .map_or(decl.keyword.span(), |s| s.key.span());
            errors.at(
                at,
                "`max_object` is larger than `memory`: such an object could never be stored; lower it or give the cache more memory",
            );
            valid = false;
        }
    }
    valid.then_some(cache)
}

/// Sets `slot` to a checked value; whether there was one.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    let ok = value.is_some();
    if ok {
        *slot = value;
    }
    ok
}

/// A size in bytes, KiB, MiB or GiB, at least 1 byte.
fn size(lit: &LitInt, key: &str, example: &str, errors: &mut Errors) -> Option<u64> {
    let bytes = rules::size_unit(lit.suffix()).and_then(|unit| {
        lit.base10_digits()
            .parse::<u64>()
            .ok()?
            .checked_mul(unit as u64)
    });
    match bytes {
        Some(n) if n > 0 => Some(n),
        _ => {
            errors.at(
                lit.span(),
                format!(
                    "`{key}` takes a size above 0 in bytes, KiB, MiB or GiB (e.g. `{example};`)"
                ),
            );
            None
        }
    }
}

/// Whether `name` (lowercase) is a valid header field name.
fn header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

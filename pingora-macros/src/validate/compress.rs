//! `compress`: codings this proxy produces, each once; media types that are media types;
//! a size.

use std::collections::HashSet;

use pingora_dsl_rules as rules;

use crate::diagnostic::{hint, Errors};
use crate::model;
use crate::syntax::CompressDecl;

/// The codings `encodings` may list, as `Content-Encoding` names them.
const ENCODINGS: &[&str] = &["zstd", "br", "gzip"];

/// A `compress` declaration checked into its model (at the proxy level or in a route).
pub(super) fn check_compress(decl: &CompressDecl, errors: &mut Errors) -> Option<model::Compress> {
    let mut valid = true;
    let mut compress = model::Compress::default();
    if let Some((key, list)) = &decl.encodings {
        let mut seen = HashSet::new();
        if list.is_empty() {
            errors.at(
                key.span(),
                "`encodings []` lists none: name some, or use `compress off;`",
            );
            valid = false;
        }
        for e in list {
            let name = e.to_string();
            if !ENCODINGS.contains(&name.as_str()) {
                let help = if name == "brotli" {
                    "did you mean `br`?".to_owned()
                } else {
                    hint(&name, ENCODINGS)
                };
                errors.at(e.span(), format!("unknown encoding `{name}`: {help}"));
                valid = false;
            } else if !seen.insert(name.clone()) {
                errors.at(e.span(), format!("`{name}` is listed twice"));
                valid = false;
            }
        }
        compress.encodings = Some(list.iter().map(ToString::to_string).collect());
    }
    if let Some((key, list)) = &decl.types {
        if list.is_empty() {
            errors.at(
                key.span(),
                "`types []` lists none: name some, or use `compress off;`",
            );
            valid = false;
        }
        for t in list {
            let v = t.value();
            let ok = v.split_once('/').is_some_and(|(main, sub)| {
                rules::is_token(main) && (sub == "*" || rules::is_token(sub))
            });
            if !ok {
                errors.at(t.span(), format!("\"{v}\" is not a media type: write \"text/html\", or \"text/*\" for all of a type"));
                valid = false;
            }
        }
        compress.types = Some(
            list.iter()
                .map(|t| t.value().to_ascii_lowercase())
                .collect(),
        );
    }
    if let Some((_, size)) = &decl.min_size {
        match rules::size_unit(size.suffix()).and_then(|unit| {
            size.base10_digits()
                .parse::<u64>()
                .ok()?
                .checked_mul(unit as u64)
        }) {
            Some(n) => compress.min_size = Some(n),
            None => {
                errors.at(
                    size.span(),
                    "`min_size` takes a size in bytes, KiB or MiB (e.g. `min_size 1KiB;`)",
                );
                valid = false;
            }
        }
    }
    valid.then_some(compress)
}

//! `cache;`, `cache off;` (in a route) or `cache { SETTING* }`: the HTTP cache of a proxy
//! or a route.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{braced, Ident, LitStr};

use crate::diagnostic::hint;
use crate::syntax::{CacheDecl, CacheSetting, CacheValue};

use super::{keyword, kw, parse_block, semi};

/// The settings a `cache` block takes.
pub const CACHE_SETTINGS: &[&str] = &[
    "memory",
    "max_object",
    "ttl",
    "stale_while_revalidate",
    "stale_if_error",
    "lock_timeout",
    "status_header",
    "key",
    "disk",
];

impl Parse for CacheDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut decl = CacheDecl {
            keyword: keyword(input)?,
            off: false,
            settings: Vec::new(),
            errors: Vec::new(),
        };
        if input.peek(kw::off) {
            input.parse::<kw::off>()?;
            decl.off = true;
            semi(input, "cache off")?;
            return Ok(decl);
        }
        if !input.peek(syn::token::Brace) {
            semi(input, "cache")?;
            return Ok(decl);
        }
        let content;
        braced!(content in input);
        let mut settings = Vec::new();
        parse_block(&content, &mut decl.errors, |content| {
            settings.push(parse_setting(content)?);
            Ok(())
        });
        decl.settings = settings;
        Ok(decl)
    }
}

/// One `KEY VALUE;` of a `cache` block.
fn parse_setting(input: ParseStream<'_>) -> syn::Result<CacheSetting> {
    let key = Ident::parse_any(input)?;
    let word = key.to_string();
    let value = match word.as_str() {
        "memory" | "max_object" => {
            CacheValue::Size(input.parse().map_err(|e| {
                syn::Error::new(e.span(), format!("expected a size: `{word} 64MiB;`"))
            })?)
        }
        "ttl" | "stale_while_revalidate" | "stale_if_error" | "lock_timeout" => {
            CacheValue::Duration(input.parse()?)
        }
        "status_header" => CacheValue::Str(input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a header name: `status_header \"x-cache\";`",
            )
        })?),
        "disk" => {
            let dir: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected the directory and its size: `disk \"/var/cache/edge\" 10GiB;`",
                )
            })?;
            let size = input.parse().map_err(|e| {
                syn::Error::new(e.span(), "expected the disk tier's size after its directory: `disk \"/var/cache/edge\" 10GiB;`")
            })?;
            CacheValue::Disk(dir, size)
        }
        "key" if input.peek(LitStr) => CacheValue::KeyTemplate(input.parse()?),
        "key" => {
            let part = Ident::parse_any(input)?;
            if part != "header" && part != "cookie" {
                return Err(syn::Error::new(
                    part.span(),
                    format!("a cache key adds a `header` or a `cookie`, not `{part}`: `key header \"x-tenant\";`"),
                ));
            }
            let name: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected the {part}'s name: `key {part} \"NAME\";`"),
                )
            })?;
            CacheValue::Key(part, name)
        }
        _ => {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown `cache` setting `{word}`: {}",
                    hint(&word, CACHE_SETTINGS)
                ),
            ))
        }
    };
    semi(input, &word)?;
    Ok(CacheSetting { key, value })
}

/// Whether `cache` starts here.
pub fn peek_cache(input: ParseStream<'_>) -> bool {
    input.peek(kw::cache)
}

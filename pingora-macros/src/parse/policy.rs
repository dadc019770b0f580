//! Edge policies that stand at the proxy level or in a route's block: `cors { ... }`,
//! `allow [...]`, `deny [...]` (and the proxy's `trusted_proxies [...]`).

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, bracketed, Ident, Token};

use crate::diagnostic::hint;
use syn::LitStr;

use crate::syntax::{AccessDecl, CompressDecl, CorsDecl, CorsSetting, CorsValue};

use super::{keyword, kw, parse_block, parse_switch, semi};

/// The settings a `cors` block takes.
pub const CORS_SETTINGS: &[&str] = &[
    "origins",
    "methods",
    "headers",
    "expose",
    "credentials",
    "max_age",
];

const CORS_EXAMPLE: &str = "`cors { origins [\"https://app.example.com\"]; methods [GET, POST]; }`";

/// `cors { SETTING* }` or `cors off;`.
impl Parse for CorsDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = keyword(input)?;
        if input.peek(kw::off) {
            input.parse::<kw::off>()?;
            semi(input, "cors off")?;
            return Ok(CorsDecl {
                keyword,
                off: true,
                settings: Vec::new(),
                errors: Vec::new(),
            });
        }
        if !input.peek(syn::token::Brace) {
            return Err(input.error(format!(
                "expected the policy in braces: {CORS_EXAMPLE} (or `cors off;` in a route)"
            )));
        }
        let content;
        braced!(content in input);
        let (mut settings, mut errors) = (Vec::new(), Vec::new());
        parse_block(&content, &mut errors, |content| {
            settings.push(parse_cors_setting(content)?);
            Ok(())
        });
        Ok(CorsDecl {
            keyword,
            off: false,
            settings,
            errors,
        })
    }
}

/// One `KEY VALUE;` of a `cors` block.
fn parse_cors_setting(input: ParseStream<'_>) -> syn::Result<CorsSetting> {
    let key = Ident::parse_any(input)?;
    let word = key.to_string();
    let value = match word.as_str() {
        "origins" | "headers" if input.peek(kw::any) => {
            input.parse::<kw::any>()?;
            CorsValue::Any
        }
        "origins" | "headers" | "expose" => {
            let example = match word.as_str() {
                "origins" => "`origins [\"https://app.example.com\", \"https://*.example.com\"];` or `origins any;`",
                "headers" => "`headers [\"content-type\", \"authorization\"];` or `headers any;`",
                _ => "`expose [\"x-request-id\"];`",
            };
            CorsValue::Strings(bracketed_list(input, example)?)
        }
        "methods" => CorsValue::Methods(bracketed_list(input, "`methods [GET, POST, PUT];`")?),
        "credentials" => CorsValue::Switch(parse_switch(input)?),
        "max_age" => CorsValue::Duration(input.parse()?),
        _ => {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown `cors` setting `{word}`: {}",
                    hint(&word, CORS_SETTINGS)
                ),
            ))
        }
    };
    semi(input, &word)?;
    Ok(CorsSetting { key, value })
}

/// `[A, B, ...]`, explaining with `example` when it is not.
pub(super) fn bracketed_list<T: Parse>(
    input: ParseStream<'_>,
    example: &str,
) -> syn::Result<Vec<T>> {
    if !input.peek(syn::token::Bracket) {
        return Err(input.error(format!("expected a list in brackets: {example}")));
    }
    let list;
    bracketed!(list in input);
    let parsed = Punctuated::<T, Token![,]>::parse_terminated(&list)
        .map_err(|e| syn::Error::new(e.span(), format!("expected {example}")))?;
    Ok(parsed.into_iter().collect())
}

/// `allow ["BLOCK", ...];` or `deny ["BLOCK", ...];`
impl Parse for AccessDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let allow = input.peek(kw::allow);
        let keyword = keyword(input)?;
        let example = format!("`{keyword} [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"];`");
        let blocks = bracketed_list::<LitStr>(input, &example)?;
        semi(input, &keyword.to_string())?;
        Ok(AccessDecl {
            keyword,
            allow,
            blocks,
        })
    }
}

/// `trusted_proxies ["BLOCK", ...];`
pub fn parse_trusted_proxies(input: ParseStream<'_>) -> syn::Result<(Ident, Vec<LitStr>)> {
    let keyword = keyword(input)?;
    let blocks = bracketed_list::<LitStr>(
        input,
        "`trusted_proxies [\"10.0.0.0/8\"];` (the load balancers in front)",
    )?;
    semi(input, "trusted_proxies")?;
    Ok((keyword, blocks))
}

/// The settings a `compress` block takes.
pub const COMPRESS_SETTINGS: &[&str] = &["encodings", "types", "min_size"];

/// `compress;`, `compress off;` or `compress { encodings [...]; types [...]; min_size N; }`.
impl Parse for CompressDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut decl = CompressDecl {
            keyword: keyword(input)?,
            off: false,
            encodings: None,
            types: None,
            min_size: None,
            errors: Vec::new(),
        };
        if input.peek(kw::off) {
            input.parse::<kw::off>()?;
            decl.off = true;
            semi(input, "compress off")?;
            return Ok(decl);
        }
        if !input.peek(syn::token::Brace) {
            semi(input, "compress")?;
            return Ok(decl);
        }
        let content;
        braced!(content in input);
        let mut errors = Vec::new();
        parse_block(&content, &mut errors, |content| {
            parse_compress_setting(content, &mut decl)
        });
        decl.errors = errors;
        Ok(decl)
    }
}

/// One `KEY VALUE;` of a `compress` block (a repeated one is an error at its key).
fn parse_compress_setting(input: ParseStream<'_>, decl: &mut CompressDecl) -> syn::Result<()> {
    let key = Ident::parse_any(input)?;
    let word = key.to_string();
    let again = || {
        syn::Error::new(
            key.span(),
            format!("`{word}` is given twice in this `compress` block: keep one"),
        )
    };
    match word.as_str() {
        "encodings" => {
            let list = bracketed_list::<Ident>(input, "`encodings [zstd, br, gzip];`")?;
            if decl.encodings.replace((key.clone(), list)).is_some() {
                return Err(again());
            }
        }
        "types" => {
            let list =
                bracketed_list::<LitStr>(input, "`types [\"text/*\", \"application/json\"];`")?;
            if decl.types.replace((key.clone(), list)).is_some() {
                return Err(again());
            }
        }
        "min_size" => {
            let size = input
                .parse()
                .map_err(|e| syn::Error::new(e.span(), "expected a size: `min_size 1KiB;`"))?;
            if decl.min_size.replace((key.clone(), size)).is_some() {
                return Err(again());
            }
        }
        _ => {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown `compress` setting `{word}`: {}",
                    hint(&word, COMPRESS_SETTINGS)
                ),
            ))
        }
    }
    semi(input, &word)
}

/// Whether `compress` starts here.
pub fn peek_compress(input: ParseStream<'_>) -> bool {
    input.peek(kw::compress)
}

/// Whether `allow` or `deny` starts here.
pub fn peek_access(input: ParseStream<'_>) -> bool {
    input.peek(kw::allow) || input.peek(kw::deny)
}

/// Whether `cors` starts here.
pub fn peek_cors(input: ParseStream<'_>) -> bool {
    input.peek(kw::cors)
}

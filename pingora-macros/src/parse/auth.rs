//! `auth METHOD ...;` at the proxy level or in a route: `basic`, `bearer`, `jwt { ... }`,
//! `api_key ...`, `external POOL [{ ... }]`, or `off` (in a route).

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{braced, Ident, LitInt, LitStr};

use crate::diagnostic::hint;
use crate::syntax::{AuthDecl, AuthKind, AuthSetting, AuthValue};

use super::policy::bracketed_list;
use super::{expect, keyword, kw, parse_block, semi};

/// The methods `auth` takes.
pub const METHODS: &[&str] = &["basic", "bearer", "jwt", "api_key", "external", "off"];

/// The settings of `auth jwt { ... }`.
pub const JWT_SETTINGS: &[&str] = &["key", "jwks", "issuer", "audience", "require", "leeway"];

/// The settings of `auth external POOL { ... }`.
pub const EXTERNAL_SETTINGS: &[&str] = &["prefix", "send", "copy", "user", "timeout", "cache"];

impl Parse for AuthDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = keyword(input)?;
        let method = Ident::parse_any(input).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected a method after `auth`: {}", METHODS.join(", ")),
            )
        })?;
        let mut errors = Vec::new();
        let block = input.peek(syn::token::Brace) || input.peek2(syn::token::Brace);
        let kind = match method.to_string().as_str() {
            "off" => AuthKind::Off,
            "basic" => parse_basic(input)?,
            "bearer" => parse_bearer(input)?,
            "jwt" => AuthKind::Jwt(parse_settings(input, JWT_SETTINGS, "jwt", &mut errors)?),
            "api_key" => parse_api_key(input)?,
            "external" => {
                let pool = expect(
                    input,
                    "expected the authorization service's pool: `auth external authz;`",
                )?;
                let settings = if input.peek(syn::token::Brace) {
                    parse_settings(input, EXTERNAL_SETTINGS, "external", &mut errors)?
                } else {
                    Vec::new()
                };
                AuthKind::External { pool, settings }
            }
            other => {
                return Err(syn::Error::new(
                    method.span(),
                    format!("unknown authentication `{other}`: {}", hint(other, METHODS)),
                ))
            }
        };
        // A block ends the item as a route's does; otherwise `;` does.
        if !block || input.peek(syn::Token![;]) {
            semi(input, &format!("auth {method}"))?;
        }
        Ok(AuthDecl {
            keyword,
            method,
            kind,
            errors,
        })
    }
}

/// `"REALM" htpasswd "FILE"`
fn parse_basic(input: ParseStream<'_>) -> syn::Result<AuthKind> {
    let example = "`auth basic \"Staff\" htpasswd \"/etc/proxy/users.htpasswd\";`";
    let realm = expect(input, &format!("expected the realm: {example}"))?;
    let word = Ident::parse_any(input).map_err(|e| {
        syn::Error::new(e.span(), format!("expected `htpasswd \"FILE\"`: {example}"))
    })?;
    if word != "htpasswd" {
        return Err(syn::Error::new(
            word.span(),
            format!("expected `htpasswd \"FILE\"`: {example}"),
        ));
    }
    let file = expect(input, &format!("expected the htpasswd file: {example}"))?;
    Ok(AuthKind::Basic { realm, file })
}

/// `["TOKEN", ...]` or `file "FILE"`
fn parse_bearer(input: ParseStream<'_>) -> syn::Result<AuthKind> {
    if input.peek(Ident::peek_any) {
        let word = Ident::parse_any(input)?;
        if word != "file" {
            return Err(syn::Error::new(
                word.span(),
                "expected the tokens `[\"...\"]` or `file \"FILE\"`: `auth bearer file \"/etc/proxy/tokens\";`",
            ));
        }
        return Ok(AuthKind::BearerFile(expect(
            input,
            "expected the tokens file: `auth bearer file \"/etc/proxy/tokens\";`",
        )?));
    }
    Ok(AuthKind::BearerList(bracketed_list(
        input,
        "`auth bearer [\"TOKEN\", ...];` or `auth bearer file \"FILE\";`",
    )?))
}

/// `header|query "NAME" file "FILE" [rate N per D]`
fn parse_api_key(input: ParseStream<'_>) -> syn::Result<AuthKind> {
    let example = "`auth api_key header \"x-api-key\" file \"/etc/proxy/keys\" rate 100 per 1m;`";
    let source = Ident::parse_any(input).map_err(|e| {
        syn::Error::new(e.span(), format!("expected `header` or `query`: {example}"))
    })?;
    if source != "header" && source != "query" {
        return Err(syn::Error::new(
            source.span(),
            format!("expected `header` or `query`: {example}"),
        ));
    }
    let name = expect(input, &format!("expected the {source}'s name: {example}"))?;
    let word = Ident::parse_any(input)
        .map_err(|e| syn::Error::new(e.span(), format!("expected `file \"FILE\"`: {example}")))?;
    if word != "file" {
        return Err(syn::Error::new(
            word.span(),
            format!("expected `file \"FILE\"`: {example}"),
        ));
    }
    let file = expect(input, &format!("expected the keys file: {example}"))?;
    let rate = if input.peek(kw::rate) {
        input.parse::<kw::rate>()?;
        let n: LitInt = expect(input, &format!("expected a count: {example}"))?;
        if !input.peek(kw::per) {
            return Err(input.error(format!("expected `per DURATION`: {example}")));
        }
        input.parse::<kw::per>()?;
        Some((n, input.parse()?))
    } else {
        None
    };
    Ok(AuthKind::ApiKey {
        source,
        name,
        file,
        rate,
    })
}

/// `{ KEY VALUE; ... }` of `jwt` or `external`, each setting's errors recorded and skipped.
fn parse_settings(
    input: ParseStream<'_>,
    known: &[&str],
    method: &str,
    errors: &mut Vec<syn::Error>,
) -> syn::Result<Vec<AuthSetting>> {
    if !input.peek(syn::token::Brace) {
        return Err(input.error(format!(
            "expected the settings in braces: `auth {method} {{ {}; }}`",
            if method == "jwt" {
                "jwks \"/etc/proxy/jwks.json\""
            } else {
                "timeout 500ms"
            }
        )));
    }
    let content;
    braced!(content in input);
    let mut settings = Vec::new();
    parse_block(&content, errors, |content| {
        settings.push(parse_setting(content, known, method)?);
        Ok(())
    });
    Ok(settings)
}

fn parse_setting(input: ParseStream<'_>, known: &[&str], method: &str) -> syn::Result<AuthSetting> {
    let key = Ident::parse_any(input)?;
    let word = key.to_string();
    if !known.contains(&word.as_str()) {
        return Err(syn::Error::new(
            key.span(),
            format!(
                "unknown `auth {method}` setting `{word}`: {}",
                hint(&word, known)
            ),
        ));
    }
    let value = match word.as_str() {
        "key" => {
            let alg = Ident::parse_any(input).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected the algorithm and the file: `key RS256 \"/etc/proxy/idp.pem\";`",
                )
            })?;
            AuthValue::Key(
                alg,
                expect(
                    input,
                    "expected the key file: `key RS256 \"/etc/proxy/idp.pem\";`",
                )?,
            )
        }
        "leeway" | "timeout" => AuthValue::Duration(input.parse()?),
        "cache" => {
            let ttl = input.parse()?;
            let example = "`cache 30s by header \"authorization\";`";
            if !input.peek(kw::by) {
                return Err(input.error(format!("expected `by header \"NAME\"`: {example}")));
            }
            input.parse::<kw::by>()?;
            if !input.peek(kw::header) {
                return Err(input.error(format!("expected `header \"NAME\"`: {example}")));
            }
            input.parse::<kw::header>()?;
            AuthValue::Cache(
                ttl,
                expect(input, &format!("expected the header's name: {example}"))?,
            )
        }
        _ if input.peek(syn::token::Bracket) => {
            AuthValue::List(bracketed_list(input, &format!("`{word} [\"...\"];`"))?)
        }
        _ => AuthValue::Text(expect::<LitStr>(
            input,
            &format!("expected a string or a list: `{word} \"...\";`"),
        )?),
    };
    semi(input, &word)?;
    Ok(AuthSetting { key, value })
}

/// Whether `auth` starts here.
pub fn peek_auth(input: ParseStream<'_>) -> bool {
    input.peek(kw::auth)
}

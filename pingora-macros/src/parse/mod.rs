//! Syntax: tokens to the [`syntax`](crate::syntax) tree, one `syn::parse::Parse` impl per
//! node of the grammar, keywords as `syn` custom keywords ([`kw`]). Blocks recover at the
//! next `;` or `{...}` after an error, so one invocation reports every malformed item, not
//! only the first; a node with a block keeps the errors found inside it, and the invocation
//! collects them in order.

mod auth;
mod cache;
mod item;
mod kw;
mod phase;
mod policy;
mod route;
mod tls;
mod upstream;

use proc_macro2::{Delimiter, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::{braced, Attribute, Ident, LitInt, Token};

use crate::diagnostic::Errors;
use crate::syntax::{DurationLit, Kind, Proxies, Proxy};

use item::Item;

/// Parses a whole invocation of `kind`'s macro; syntax errors go to `errors`.
pub fn parse(tokens: proc_macro2::TokenStream, kind: Kind, errors: &mut Errors) -> Proxies {
    let mut proxies = Vec::new();
    let parser = |input: ParseStream<'_>| {
        while !input.is_empty() {
            match input.parse::<Proxy>() {
                Ok(mut p) => {
                    p.kind = kind;
                    for e in std::mem::take(&mut p.errors) {
                        errors.push(e);
                    }
                    proxies.push(p);
                }
                Err(e) => {
                    errors.push(e);
                    // Nothing sensible follows a broken proxy header.
                    input.step(|c| {
                        let mut rest = *c;
                        while let Some((_, next)) = rest.token_tree() {
                            rest = next;
                        }
                        Ok(((), rest))
                    })?;
                }
            }
        }
        Ok(())
    };
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    Proxies { proxies }
}

/// `#[attrs] VIS NAME { ITEM* }`. The kind is the invoking macro's, set by [`parse`].
impl Parse for Proxy {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let name: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a proxy name: `proxy! { pub MyProxy { ... } }`",
            )
        })?;
        let content;
        braced!(content in input);
        let mut proxy = Proxy {
            kind: Kind::Http,
            idle: Vec::new(),
            attrs,
            vis,
            name,
            listens: Vec::new(),
            malformed_listen: false,
            malformed_route: false,
            ctx: Vec::new(),
            upstreams: Vec::new(),
            routes: Vec::new(),
            edits: Vec::new(),
            phases: Vec::new(),
            layers: Vec::new(),
            settings: Vec::new(),
            rate_limits: Vec::new(),
            admin: Vec::new(),
            sentry: Vec::new(),
            cors: Vec::new(),
            access: Vec::new(),
            trusted_proxies: Vec::new(),
            auth: Vec::new(),
            compress: Vec::new(),
            cache: Vec::new(),
            errors: Vec::new(),
        };
        while !content.is_empty() {
            // Whatever fails in a `listen`, "no listener" must not follow.
            let is_listen = content.peek(kw::listen);
            let is_route = content.peek(kw::route);
            match content.parse::<Item>() {
                Ok(item) => item.add_to(&mut proxy),
                Err(e) => {
                    proxy.malformed_listen |= is_listen;
                    proxy.malformed_route |= is_route;
                    proxy.errors.push(e);
                    skip_item(&content);
                }
            }
        }
        Ok(proxy)
    }
}

/// Parses the items of a block with `item` until it ends; an item that fails is recorded
/// in `errors` and skipped to the next `;` or `{...}`. Returns whether any failed.
fn parse_block(
    content: ParseStream<'_>,
    errors: &mut Vec<syn::Error>,
    mut item: impl FnMut(ParseStream<'_>) -> syn::Result<()>,
) -> bool {
    let mut failed = false;
    while !content.is_empty() {
        if let Err(e) = item(content) {
            errors.push(e);
            failed = true;
            skip_item(content);
        }
    }
    failed
}

/// Skips to just after the next `;` or `{...}` group, to resume after an error.
fn skip_item(input: ParseStream<'_>) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            rest = next;
            match &tt {
                TokenTree::Punct(p) if p.as_char() == ';' => break,
                TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => break,
                _ => {}
            }
        }
        Ok(((), rest))
    });
}

/// The `;` that ends `after`.
fn semi(input: ParseStream<'_>, after: &str) -> syn::Result<()> {
    input
        .parse::<Token![;]>()
        .map(|_| ())
        .map_err(|e| syn::Error::new(e.span(), format!("expected `;` to end `{after}`")))
}

/// Parses a value, replacing syn's error by `message` at the same span.
fn expect<T: Parse>(input: ParseStream<'_>, message: &str) -> syn::Result<T> {
    input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), message))
}

/// Consumes the keyword the caller peeked, as an identifier with its span.
fn keyword(input: ParseStream<'_>) -> syn::Result<Ident> {
    Ident::parse_any(input)
}

/// A duration literal such as `500ms`, `30s`, `1.5s`, `2m` (checked by `validate`).
impl Parse for DurationLit {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitInt) {
            Ok(DurationLit::Int(input.parse()?))
        } else if input.peek(syn::LitFloat) {
            Ok(DurationLit::Float(input.parse()?))
        } else {
            Err(input.error("expected a duration such as `30s` or `500ms`"))
        }
    }
}

/// `on` or `off`.
fn parse_switch(input: ParseStream<'_>) -> syn::Result<bool> {
    if input.peek(kw::on) {
        input.parse::<kw::on>()?;
        return Ok(true);
    }
    if input.peek(kw::off) {
        input.parse::<kw::off>()?;
        return Ok(false);
    }
    let word = Ident::parse_any(input)?;
    Err(syn::Error::new(
        word.span(),
        format!("expected `on` or `off`, found `{word}`"),
    ))
}

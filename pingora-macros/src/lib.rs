//! Procedural macros of pingora-dsl. Use them through the `pingora-dsl` crate, whose
//! documentation is the reference of the language.
//!
//! `proxy!` works in three steps: `parse` (tokens to the [`syntax`] tree, recovering
//! after errors), `validate` (every semantic check, each error at its token, building the
//! typed [`model`]) and `expand` (wiring runtime types from the model; it cannot fail).
//! A user sees all problems at once, and on errors the proxy's type is still declared
//! (its constructor unreachable), so no use of it adds follow-on errors.

mod diagnostic;
mod expand;
mod model;
mod parse;
mod phase;
mod syntax;
mod validate;

use proc_macro::TokenStream;

/// Declares one or more proxies. See the `pingora-dsl` crate documentation.
#[proc_macro]
pub fn proxy(input: TokenStream) -> TokenStream {
    declare(input, syntax::Kind::Http)
}

/// Declares one or more TCP (layer 4) proxies. See the `pingora-dsl` crate documentation.
#[proc_macro]
pub fn tcp_proxy(input: TokenStream) -> TokenStream {
    declare(input, syntax::Kind::Tcp)
}

/// Declares one or more UDP (layer 4) proxies. See the `pingora-dsl` crate documentation.
#[proc_macro]
pub fn udp_proxy(input: TokenStream) -> TokenStream {
    declare(input, syntax::Kind::Udp)
}

fn declare(input: TokenStream, kind: syntax::Kind) -> TokenStream {
    expand_tokens(input.into(), kind).into()
}

/// The whole macro on `proc_macro2` tokens, so unit tests (the expansion snapshots) can
/// run it outside a compiler invocation.
fn expand_tokens(input: proc_macro2::TokenStream, kind: syntax::Kind) -> proc_macro2::TokenStream {
    let mut errors = diagnostic::Errors::default();
    let proxies = parse::parse(input, kind, &mut errors);
    let models = validate::validate(&proxies, &mut errors);
    let complete = errors.is_empty();
    let mut out = errors.into_compile_errors();
    out.extend(expand::expand(&models, complete));
    out
}

#[cfg(test)]
mod snapshots;

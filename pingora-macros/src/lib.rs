//! Procedural macros of pingora-dsl. Use them through the `pingora-dsl` crate, whose
//! documentation is the reference of the language.
//!
//! `proxy!` works in three steps, one module each: `parse` (tokens to a model,
//! recovering after errors), `validate` (every semantic check, each error
//! at its token) and `expand` (wiring runtime types). Nothing is expanded
//! while any error stands, so a user sees all problems at once and no follow-on noise.

mod diagnostic;
mod expand;
mod model;
mod parse;
mod phase;
mod validate;

use proc_macro::TokenStream;

/// Declares one or more proxies. See the `pingora-dsl` crate documentation.
#[proc_macro]
pub fn proxy(input: TokenStream) -> TokenStream {
    declare(input, model::Kind::Http)
}

/// Declares one or more TCP (layer 4) proxies. See the `pingora-dsl` crate documentation.
#[proc_macro]
pub fn tcp_proxy(input: TokenStream) -> TokenStream {
    declare(input, model::Kind::Tcp)
}

/// Declares one or more UDP (layer 4) proxies. See the `pingora-dsl` crate documentation.
#[proc_macro]
pub fn udp_proxy(input: TokenStream) -> TokenStream {
    declare(input, model::Kind::Udp)
}

fn declare(input: TokenStream, kind: model::Kind) -> TokenStream {
    expand_tokens(input.into(), kind).into()
}

/// The whole macro on `proc_macro2` tokens, so unit tests (the expansion snapshots) can
/// run it outside a compiler invocation.
fn expand_tokens(input: proc_macro2::TokenStream, kind: model::Kind) -> proc_macro2::TokenStream {
    let mut errors = diagnostic::Errors::default();
    let mut proxies = parse::parse(input, kind, &mut errors);
    validate::validate(&mut proxies, &mut errors);
    if !errors.is_empty() {
        return errors.into_compile_errors();
    }
    expand::expand(&proxies)
}

#[cfg(test)]
mod snapshots;

//! A phase, written inline (`request_filter(session, ctx) { ... }`) or as a function path
//! (`logging = my_logging;`).

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{parenthesized, Ident, Token};

use crate::phase::Phase;
use crate::syntax::{PhaseBody, PhaseDecl};

use super::semi;

impl Parse for PhaseDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = Ident::parse_any(input)?;
        let Some(phase) = Phase::from_name(&keyword.to_string()) else {
            return Err(syn::Error::new(keyword.span(), "expected a phase"));
        };
        let body = if input.peek(syn::token::Paren) {
            parse_inline(input)?
        } else if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let path = input.parse()?;
            semi(input, phase.name())?;
            PhaseBody::Path(path)
        } else {
            return Err(syn::Error::new(
                keyword.span(),
                format!(
                    "write `{name}({params}) {{ ... }}` or `{name} = path::to::function;`",
                    name = phase.name(),
                    params = phase.params().join(", ")
                ),
            ));
        };
        Ok(PhaseDecl {
            phase,
            keyword,
            body,
        })
    }
}

/// `(PARAM, ...) { BLOCK }`; `_` stands for a parameter the block does not use.
fn parse_inline(input: ParseStream<'_>) -> syn::Result<PhaseBody> {
    let list;
    let paren = parenthesized!(list in input);
    let mut params = Vec::new();
    let mut unnamed = 0;
    while !list.is_empty() {
        if list.peek(Token![_]) {
            let underscore: Token![_] = list.parse()?;
            unnamed += 1;
            params.push(Ident::new(&format!("_unused{unnamed}"), underscore.span));
        } else {
            params.push(list.parse::<Ident>().map_err(|e| {
                syn::Error::new(e.span(), "a phase parameter is a plain name (or `_`)")
            })?);
        }
        if !list.is_empty() {
            list.parse::<Token![,]>()?;
        }
    }
    let block = input.parse()?;
    Ok(PhaseBody::Inline {
        params,
        params_span: paren.span.join(),
        block: Box::new(block),
    })
}

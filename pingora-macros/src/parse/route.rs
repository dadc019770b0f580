//! Routes, `route CONDITIONS => ACTION;` or `route CONDITIONS => ACTION { EDIT* }`, and
//! header edits (`set_request_header "N" "V";` and its siblings).

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, bracketed, Ident, LitStr, Token};

use crate::diagnostic::hint;
use crate::syntax::{EditSide, HeaderEditDecl, RouteDecl, Target};

use super::{expect, keyword, kw, parse_block, semi};

const MATCHERS: &[&str] = &["host", "path", "method"];
const TARGETS: &[&str] = &["upstream", "respond", "redirect"];
const EDITS: &[&str] = &[
    "set_request_header",
    "remove_request_header",
    "set_response_header",
    "remove_response_header",
];

impl Parse for RouteDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut route = RouteDecl {
            keyword: keyword(input)?,
            host: None,
            path: None,
            methods: Vec::new(),
            target: Target::Upstream(Ident::new("_", input.span())),
            edits: Vec::new(),
            errors: Vec::new(),
        };
        let parsed = parse_head(input, &mut route).and_then(|()| {
            if input.peek(syn::token::Brace) {
                parse_edits(input, &mut route)
            } else {
                semi(input, "route")
            }
        });
        match parsed {
            Ok(()) => Ok(route),
            // A condition given twice may have been found before the error: report all of
            // them, in order, as one error (which shows each at its span).
            Err(e) => {
                let mut all = e;
                for earlier in route.errors.into_iter().rev() {
                    let mut combined = earlier;
                    combined.combine(all);
                    all = combined;
                }
                Err(all)
            }
        }
    }
}

/// The `{ EDIT* }` block of a route, each error recorded in the route and skipped.
fn parse_edits(input: ParseStream<'_>, route: &mut RouteDecl) -> syn::Result<()> {
    let content;
    braced!(content in input);
    let mut edits = Vec::new();
    parse_block(&content, &mut route.errors, |content| {
        if !HeaderEditDecl::peek(content) {
            let k = Ident::parse_any(content)?;
            let w = k.to_string();
            return Err(syn::Error::new(
                k.span(),
                format!(
                    "a route block holds header edits only; unknown `{w}`: {}",
                    hint(&w, EDITS)
                ),
            ));
        }
        edits.push(content.parse()?);
        Ok(())
    });
    route.edits = edits;
    Ok(())
}

/// The conditions, `=>` and the action of a route.
fn parse_head(input: ParseStream<'_>, route: &mut RouteDecl) -> syn::Result<()> {
    while !input.peek(Token![=>]) {
        if input.is_empty() || input.peek(Token![;]) {
            return Err(input.error(
                "expected `=>` and what the route does: `route path \"/api\" => upstream api;`",
            ));
        }
        parse_condition(input, route)?;
    }
    input.parse::<Token![=>]>()?;
    route.target = input.parse()?;
    Ok(())
}

/// One condition of a route: `host "NAME"`, `path "/PREFIX"`, `method M` or
/// `method [M, ...]`. A condition given twice is recorded as an error of the route.
fn parse_condition(input: ParseStream<'_>, route: &mut RouteDecl) -> syn::Result<()> {
    let (m, duplicate) = if input.peek(kw::host) {
        let m = keyword(input)?;
        (m, route.host.replace(input.parse()?).is_some())
    } else if input.peek(kw::path) {
        let m = keyword(input)?;
        (m, route.path.replace(input.parse()?).is_some())
    } else if input.peek(kw::method) {
        let m = keyword(input)?;
        let had = !route.methods.is_empty();
        if input.peek(syn::token::Bracket) {
            let list;
            bracketed!(list in input);
            let parsed =
                Punctuated::<Ident, Token![,]>::parse_terminated_with(&list, Ident::parse_any)?;
            route.methods.extend(parsed);
        } else {
            route.methods.push(Ident::parse_any(input)?);
        }
        (m, had)
    } else {
        let m = Ident::parse_any(input)?;
        return Err(syn::Error::new(
            m.span(),
            format!(
                "unknown route condition `{m}`: {}",
                hint(&m.to_string(), MATCHERS)
            ),
        ));
    };
    let word = m.to_string();
    if duplicate {
        route.errors.push(syn::Error::new(
            m.span(),
            format!("`{word}` is given twice in this route: a route matches one {word} (list methods as `method [GET, HEAD]`)"),
        ));
    }
    Ok(())
}

/// What a route does: `upstream NAME`, `respond STATUS ["BODY"]` or
/// `redirect STATUS "LOCATION"`.
impl Parse for Target {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(kw::upstream) {
            input.parse::<kw::upstream>()?;
            return Ok(Target::Upstream(expect(
                input,
                "expected the name of an upstream: `=> upstream api`",
            )?));
        }
        if input.peek(kw::respond) {
            input.parse::<kw::respond>()?;
            return Ok(Target::Respond {
                status: expect(
                    input,
                    "expected a status code: `=> respond 404 \"not here\"`",
                )?,
                body: if input.peek(LitStr) {
                    Some(input.parse()?)
                } else {
                    None
                },
            });
        }
        if input.peek(kw::redirect) {
            input.parse::<kw::redirect>()?;
            return Ok(Target::Redirect {
                status: expect(
                    input,
                    "expected a 3xx status: `=> redirect 301 \"https://example.com/\"`",
                )?,
                location: expect(
                    input,
                    "expected the location: `=> redirect 301 \"https://example.com/\"`",
                )?,
            });
        }
        let t = Ident::parse_any(input)?;
        Err(syn::Error::new(
            t.span(),
            format!(
                "unknown route action `{t}`: {}",
                hint(&t.to_string(), TARGETS)
            ),
        ))
    }
}

impl HeaderEditDecl {
    /// Whether a header edit starts here.
    pub fn peek(input: ParseStream<'_>) -> bool {
        input.peek(kw::set_request_header)
            || input.peek(kw::remove_request_header)
            || input.peek(kw::set_response_header)
            || input.peek(kw::remove_response_header)
    }
}

/// `set_request_header "N" "V";`, `remove_request_header "N";` and the response's pair.
impl Parse for HeaderEditDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let set = input.peek(kw::set_request_header) || input.peek(kw::set_response_header);
        let side = if input.peek(kw::set_request_header) || input.peek(kw::remove_request_header) {
            EditSide::Request
        } else {
            EditSide::Response
        };
        let keyword = keyword(input)?;
        let value_example = if set { " \"value\"" } else { "" };
        let name = expect(
            input,
            &format!("expected a header name: `{keyword} \"x-name\"{value_example}`"),
        )?;
        let value = if set {
            Some(expect(
                input,
                &format!("expected the header value: `{keyword} \"x-name\" \"value\"`"),
            )?)
        } else {
            None
        };
        semi(input, &keyword.to_string())?;
        Ok(HeaderEditDecl {
            keyword,
            side,
            name,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_condition_is_reported_with_a_later_syntax_error() {
        let tokens = quote::quote!(route host "a.example" host "b.example" upstream api;);
        let error = syn::parse2::<RouteDecl>(tokens)
            .err()
            .expect("a syntax error");
        let messages: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("`host` is given twice"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("unknown route condition `upstream`"),
            "{messages:?}"
        );
    }
}

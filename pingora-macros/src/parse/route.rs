//! Routes, `route CONDITIONS => ACTION;` or `route CONDITIONS => ACTION { EDIT* }`, and
//! header edits (`set_request_header "N" "V";` and its siblings).

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, bracketed, Ident, LitInt, LitStr, Token};

use crate::diagnostic::hint;
use crate::syntax::{
    ConditionDecl, EditSide, HeaderEditDecl, KeyDecl, MirrorDecl, PolicyDecl, RewriteDecl,
    RewriteKind, RouteDecl, Target, TestDecl, ValueDecl,
};

use super::{expect, keyword, kw, parse_block, semi};

const MATCHERS: &[&str] = &[
    "host", "path", "method", "header", "query", "cookie", "claim", "client", "scheme", "not",
];
const TARGETS: &[&str] = &["upstream", "split", "respond", "redirect"];
const BLOCK_ITEMS: &[&str] = &[
    "set_request_header",
    "remove_request_header",
    "set_response_header",
    "remove_response_header",
    "strip_prefix",
    "replace_prefix",
    "rewrite_path",
    "set_path",
    "timeout",
    "retry",
    "rate_limit",
    "max_body",
    "mirror",
    "cors",
    "allow",
    "deny",
    "auth",
    "compress",
    "cache",
];

impl Parse for RouteDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut route = RouteDecl {
            keyword: keyword(input)?,
            host: None,
            path: None,
            methods: Vec::new(),
            conditions: Vec::new(),
            target: Target::Upstream(Ident::new("_", input.span())),
            edits: Vec::new(),
            rewrites: Vec::new(),
            policy: Vec::new(),
            mirror: Vec::new(),
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

/// The `{ ... }` block of a route (header edits and a path rewrite), each error recorded
/// in the route and skipped.
fn parse_edits(input: ParseStream<'_>, route: &mut RouteDecl) -> syn::Result<()> {
    let content;
    braced!(content in input);
    let (mut edits, mut rewrites, mut policy) = (Vec::new(), Vec::new(), Vec::new());
    let (mut mirror, mut inner_errors) = (Vec::new(), Vec::new());
    parse_block(&content, &mut route.errors, |content| {
        if content.peek(kw::mirror) {
            mirror.push(parse_mirror(content)?);
            return Ok(());
        }
        if RewriteDecl::peek(content) {
            rewrites.push(content.parse()?);
            return Ok(());
        }
        if let Some(mut item) = parse_policy(content)? {
            match &mut item {
                PolicyDecl::Cors(cors) => inner_errors.append(&mut cors.errors),
                PolicyDecl::Auth(auth) => inner_errors.append(&mut auth.errors),
                PolicyDecl::Compress(c) => inner_errors.append(&mut c.errors),
                PolicyDecl::Cache(c) => inner_errors.append(&mut c.errors),
                _ => {}
            }
            policy.push(item);
            return Ok(());
        }
        if !HeaderEditDecl::peek(content) {
            let k = Ident::parse_any(content)?;
            let w = k.to_string();
            return Err(syn::Error::new(
                k.span(),
                format!(
                    "a route block holds header edits, a path rewrite, limits, policies and a mirror; unknown `{w}`: {}",
                    hint(&w, BLOCK_ITEMS)
                ),
            ));
        }
        edits.push(content.parse()?);
        Ok(())
    });
    route.edits = edits;
    route.rewrites = rewrites;
    route.policy = policy;
    route.mirror = mirror;
    route.errors.append(&mut inner_errors);
    Ok(())
}

/// `mirror POOL [N%];`
fn parse_mirror(input: ParseStream<'_>) -> syn::Result<MirrorDecl> {
    let keyword = keyword(input)?;
    let pool = expect(input, "expected the shadow pool's name: `mirror shadow;`")?;
    let percent = if input.peek(LitInt) {
        let n = input.parse::<LitInt>()?;
        input.parse::<Token![%]>()?;
        Some(n)
    } else {
        None
    };
    semi(input, "mirror")?;
    Ok(MirrorDecl {
        keyword,
        pool,
        percent,
    })
}

/// A route's own limit, if one starts here: `timeout KEY D, ...;`, `retry N;`,
/// `rate_limit N per D [by ...];` or `max_body SIZE;`.
fn parse_policy(input: ParseStream<'_>) -> syn::Result<Option<PolicyDecl>> {
    let item = if input.peek(kw::rate_limit) {
        return Ok(Some(PolicyDecl::RateLimit(input.parse()?)));
    } else if super::policy::peek_cors(input) {
        return Ok(Some(PolicyDecl::Cors(input.parse()?)));
    } else if super::policy::peek_access(input) {
        return Ok(Some(PolicyDecl::Access(input.parse()?)));
    } else if super::auth::peek_auth(input) {
        return Ok(Some(PolicyDecl::Auth(input.parse()?)));
    } else if super::policy::peek_compress(input) {
        return Ok(Some(PolicyDecl::Compress(input.parse()?)));
    } else if super::cache::peek_cache(input) {
        return Ok(Some(PolicyDecl::Cache(input.parse()?)));
    } else if input.peek(kw::timeout) {
        let k = keyword(input)?;
        PolicyDecl::Timeout(k, super::item::parse_timeouts(input)?)
    } else if input.peek(kw::retry) {
        let k = keyword(input)?;
        PolicyDecl::Retry(k, expect(input, "expected a count: `retry 2;`")?)
    } else if input.peek(kw::max_body) {
        let k = keyword(input)?;
        PolicyDecl::MaxBody(k, expect(input, "expected a size: `max_body 1MiB;`")?)
    } else {
        return Ok(None);
    };
    semi(input, &item.keyword().to_string())?;
    Ok(Some(item))
}

impl RewriteDecl {
    /// Whether a path rewrite starts here.
    fn peek(input: ParseStream<'_>) -> bool {
        input.peek(kw::strip_prefix)
            || input.peek(kw::replace_prefix)
            || input.peek(kw::rewrite_path)
            || input.peek(kw::set_path)
    }
}

/// `strip_prefix "/v1";`, `replace_prefix "/v1" "/v2";`, `rewrite_path "REGEX" "WITH";`
/// or `set_path "/p";`.
impl Parse for RewriteDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let strip = input.peek(kw::strip_prefix);
        let replace = input.peek(kw::replace_prefix);
        let regex = input.peek(kw::rewrite_path);
        let keyword = keyword(input)?;
        let kind = if strip {
            RewriteKind::StripPrefix(expect(
                input,
                "expected the prefix: `strip_prefix \"/v1\";`",
            )?)
        } else if replace {
            let example = "`replace_prefix \"/v1\" \"/v2\";`";
            RewriteKind::ReplacePrefix(
                expect(input, &format!("expected the prefix to replace: {example}"))?,
                expect(input, &format!("expected what replaces it: {example}"))?,
            )
        } else if regex {
            let example = "`rewrite_path \"^/u/([0-9]+)$\" \"/users/$1\";`";
            RewriteKind::Regex(
                expect(input, &format!("expected a regex: {example}"))?,
                expect(input, &format!("expected the replacement: {example}"))?,
            )
        } else {
            RewriteKind::SetPath(expect(
                input,
                "expected the path: `set_path \"/index.html\";`",
            )?)
        };
        semi(input, &keyword.to_string())?;
        Ok(RewriteDecl { keyword, kind })
    }
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

/// One condition of a route. A plain `host "NAME"`, `path "/PREFIX"` and `method M` or
/// `method [M, ...]` fill the route's own fields (given twice: an error of the route);
/// anything else, or one of them after `not`, is a [`ConditionDecl`].
fn parse_condition(input: ParseStream<'_>, route: &mut RouteDecl) -> syn::Result<()> {
    let plain_path = input.peek(kw::path) && input.peek2(LitStr);
    let (m, duplicate) = if input.peek(kw::host) {
        let m = keyword(input)?;
        (m, route.host.replace(input.parse()?).is_some())
    } else if plain_path {
        let m = keyword(input)?;
        (m, route.path.replace(input.parse()?).is_some())
    } else if input.peek(kw::method) {
        let m = keyword(input)?;
        let had = !route.methods.is_empty();
        route.methods.extend(parse_methods(input)?);
        (m, had)
    } else {
        route.conditions.push(input.parse()?);
        return Ok(());
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

/// `M` or `[M, ...]`.
fn parse_methods(input: ParseStream<'_>) -> syn::Result<Vec<Ident>> {
    if input.peek(syn::token::Bracket) {
        let list;
        bracketed!(list in input);
        let parsed =
            Punctuated::<Ident, Token![,]>::parse_terminated_with(&list, Ident::parse_any)?;
        Ok(parsed.into_iter().collect())
    } else {
        Ok(vec![Ident::parse_any(input)?])
    }
}

/// `[not] host "H"`, `path [exact | regex] "P"`, `method ...`, `header|query|cookie "NAME"
/// [== "VALUE" | ~ "REGEX"]`, `client "CIDR"` or `client ["CIDR", ...]`, `scheme http|https`.
impl Parse for ConditionDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let not = if input.peek(kw::not) {
            Some(keyword(input)?)
        } else {
            None
        };
        let is = |k: &str| {
            input.peek(Ident::peek_any) && input.fork().call(Ident::parse_any).is_ok_and(|i| i == k)
        };
        let test_of = |keyword: &Ident| keyword.to_string();
        let keyword = if [
            "host", "path", "method", "header", "query", "cookie", "claim", "client", "scheme",
        ]
        .iter()
        .any(|k| is(k))
        {
            keyword(input)?
        } else if not.is_some() && !input.peek(Ident::peek_any) {
            return Err(input.error(
                "expected a condition after `not`: `not header \"x-canary\"`, `not path \"/admin\"`",
            ));
        } else {
            let m = Ident::parse_any(input)?;
            let help = hint(&m.to_string(), MATCHERS);
            return Err(syn::Error::new(
                m.span(),
                format!("unknown route condition `{m}`: {help}"),
            ));
        };
        let test = match test_of(&keyword).as_str() {
            "host" => TestDecl::Host(expect(
                input,
                "expected a host: `host \"api.example.com\"`",
            )?),
            "path" => parse_path_test(input)?,
            "method" => TestDecl::Method(parse_methods(input)?),
            "client" => TestDecl::Client(parse_blocks(input)?),
            "scheme" => {
                TestDecl::Scheme(expect(input, "expected `http` or `https`: `scheme https`")?)
            }
            word => TestDecl::Value {
                name: expect(input, &format!("expected a name: `{word} \"x-name\"`"))?,
                value: parse_value_test(input, word)?,
            },
        };
        Ok(ConditionDecl { not, keyword, test })
    }
}

/// After `path`: `"/PREFIX"`, `exact "/PATH"` or `regex "REGEX"`.
fn parse_path_test(input: ParseStream<'_>) -> syn::Result<TestDecl> {
    if input.peek(kw::exact) {
        input.parse::<kw::exact>()?;
        return Ok(TestDecl::PathExact(expect(
            input,
            "expected a path: `path exact \"/login\"`",
        )?));
    }
    if input.peek(kw::regex) {
        input.parse::<kw::regex>()?;
        return Ok(TestDecl::PathRegex(expect(
            input,
            "expected a regex: `path regex \"^/users/[0-9]+$\"`",
        )?));
    }
    Ok(TestDecl::PathPrefix(expect(
        input,
        "expected a path prefix (`path \"/api\"`), `path exact \"/login\"` or `path regex \"^/u/[0-9]+$\"`",
    )?))
}

/// After `header|query|cookie "NAME"`: nothing (present), `== "VALUE"` or `~ "REGEX"`.
fn parse_value_test(input: ParseStream<'_>, word: &str) -> syn::Result<ValueDecl> {
    if input.peek(Token![==]) {
        input.parse::<Token![==]>()?;
        return Ok(ValueDecl::Equals(expect(
            input,
            &format!("expected the value: `{word} \"x-name\" == \"1\"`"),
        )?));
    }
    if input.peek(Token![~]) {
        input.parse::<Token![~]>()?;
        return Ok(ValueDecl::Matches(expect(
            input,
            &format!("expected a regex: `{word} \"x-name\" ~ \"^v[0-9]+$\"`"),
        )?));
    }
    if input.peek(Token![=]) && !input.peek(Token![=>]) {
        return Err(input.error(format!("compare with `==`: `{word} \"x-name\" == \"1\"`")));
    }
    Ok(ValueDecl::Present)
}

/// After `client`: `"CIDR"` or `["CIDR", ...]`.
fn parse_blocks(input: ParseStream<'_>) -> syn::Result<Vec<LitStr>> {
    let example = "`client [\"10.0.0.0/8\", \"192.168.1.5\"]`";
    if input.peek(syn::token::Bracket) {
        let list;
        bracketed!(list in input);
        let parsed = Punctuated::<LitStr, Token![,]>::parse_terminated(&list).map_err(|e| {
            syn::Error::new(e.span(), format!("expected address blocks: {example}"))
        })?;
        return Ok(parsed.into_iter().collect());
    }
    Ok(vec![expect(
        input,
        &format!("expected an address block: {example}"),
    )?])
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
        if input.peek(kw::split) {
            return parse_split(input);
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

/// `split { 90% stable, 10% canary } [by header "NAME" | by cookie "NAME" | by client_ip |
/// by path]`.
fn parse_split(input: ParseStream<'_>) -> syn::Result<Target> {
    let keyword = keyword(input)?;
    let example = "`=> split { 90% stable, 10% canary }`";
    if !input.peek(syn::token::Brace) {
        return Err(input.error(format!("expected the arms in braces: {example}")));
    }
    let content;
    braced!(content in input);
    let arms = parse_arms(&content, example).inspect_err(|_| {
        // The rest of the braces is skipped: the error says what is wrong.
        let _ = content.parse::<proc_macro2::TokenStream>();
    })?;
    let key = if input.peek(kw::by) {
        input.parse::<kw::by>()?;
        Some(KeyDecl::parse_here(input)?)
    } else {
        None
    };
    Ok(Target::Split { keyword, arms, key })
}

/// `SHARE% NAME, ...` inside a split's braces.
fn parse_arms(content: ParseStream<'_>, example: &str) -> syn::Result<Vec<(LitInt, Ident)>> {
    let mut arms = Vec::new();
    while !content.is_empty() {
        let weight: LitInt = expect(
            content,
            &format!("expected a share such as `90%`: {example}"),
        )?;
        content.parse::<Token![%]>().map_err(|e| {
            syn::Error::new(e.span(), format!("expected `%` after the share: {example}"))
        })?;
        let pool: Ident = expect(content, &format!("expected the upstream's name: {example}"))?;
        arms.push((weight, pool));
        if !content.is_empty() {
            content.parse::<Token![,]>()?;
        }
    }
    Ok(arms)
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

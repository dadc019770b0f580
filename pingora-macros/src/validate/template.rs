//! Templates: `${VARIABLE}` in header values, redirect targets and answer bodies, split
//! here into text and variables so that nothing is parsed per request. `$${` writes a
//! literal `${`; a `$` not followed by `{` is text.

use pingora_dsl_rules as rules;
use syn::LitStr;

use crate::diagnostic::{closest, Errors};
use crate::model::{Template, TemplatePart, TemplateVar};

/// The variables that need no name after them.
const PLAIN: &[&str] = &[
    "host",
    "path",
    "query",
    "request_uri",
    "scheme",
    "method",
    "client_ip",
    "request_id",
    "user",
];

/// What a template may read where it is used.
pub struct Scope<'a> {
    /// Request headers and cookies are still there (not in response edits: the request's
    /// headers went upstream with it).
    pub headers: bool,
    /// The route's path regex, whose captures `${1}` or `${name}` name.
    pub path_regex: Option<&'a str>,
}

/// The template in `lit`: `None` when it has no variable (or an error was reported),
/// else its parts.
pub fn check_template(lit: &LitStr, scope: &Scope<'_>, errors: &mut Errors) -> Option<Template> {
    let text = lit.value();
    if !text.contains("${") {
        return None;
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text.as_str();
    let mut ok = true;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            // `$${`: a literal `${`.
            literal.push_str(&rest[..at]);
            literal.push('{');
            rest = &rest[at + 2..];
            continue;
        }
        literal.push_str(&rest[..at]);
        let inner = &rest[at + 2..];
        let Some(end) = inner.find('}') else {
            errors.at(
                lit.span(),
                "unclosed `${`: close the variable with `}`, or write `$${` for a literal `${`",
            );
            return None;
        };
        match check_var(&inner[..end], lit, scope, errors) {
            Some(var) => {
                if !literal.is_empty() {
                    parts.push(TemplatePart::Text(std::mem::take(&mut literal)));
                }
                parts.push(TemplatePart::Var(var));
            }
            None => ok = false,
        }
        rest = &inner[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(TemplatePart::Text(literal));
    }
    let captures = parts
        .iter()
        .any(|p| matches!(p, TemplatePart::Var(TemplateVar::Capture(_))));
    ok.then(|| Template {
        parts,
        captures: scope.path_regex.filter(|_| captures).map(str::to_owned),
    })
}

/// One variable, `NAME` of `${NAME}`.
fn check_var(
    name: &str,
    lit: &LitStr,
    scope: &Scope<'_>,
    errors: &mut Errors,
) -> Option<TemplateVar> {
    let plain = match name {
        "host" => Some(TemplateVar::Host),
        "path" => Some(TemplateVar::Path),
        "query" => Some(TemplateVar::Query),
        "request_uri" => Some(TemplateVar::RequestUri),
        "scheme" => Some(TemplateVar::Scheme),
        "method" => Some(TemplateVar::Method),
        "client_ip" => Some(TemplateVar::ClientIp),
        "request_id" => Some(TemplateVar::RequestId),
        "user" => Some(TemplateVar::User),
        _ => None,
    };
    if plain.is_some() {
        return plain;
    }
    if let Some((kind, field)) = name.split_once('.') {
        return check_named(kind, field, lit, scope, errors);
    }
    if let Some(var) = capture(name, scope) {
        return Some(var);
    }
    let captures: Vec<String> = match scope.path_regex.and_then(|r| regex::Regex::new(r).ok()) {
        Some(re) => (1..re.captures_len())
            .map(|i| i.to_string())
            .chain(re.capture_names().flatten().map(str::to_owned))
            .collect(),
        None => Vec::new(),
    };
    let mut candidates: Vec<&str> = PLAIN.to_vec();
    candidates.extend(captures.iter().map(String::as_str));
    let help = match closest(name, &candidates) {
        Some(c) => format!("did you mean `${{{c}}}`?"),
        None if scope.path_regex.is_some() => format!(
            "known are {}, header.NAME, cookie.NAME, query.NAME, claim.NAME and the path regex's captures {}",
            PLAIN.join(", "),
            captures.join(", ")
        ),
        None => format!(
            "known are {}, header.NAME, cookie.NAME, query.NAME, claim.NAME; captures (`${{1}}`, `${{name}}`) need a `path regex` condition on the route",
            PLAIN.join(", ")
        ),
    };
    errors.at(
        lit.span(),
        format!("unknown variable `${{{name}}}`: {help} (`$${{` writes a literal `${{`)"),
    );
    None
}

/// `header.NAME`, `cookie.NAME`, `query.NAME` or `claim.NAME`.
fn check_named(
    kind: &str,
    field: &str,
    lit: &LitStr,
    scope: &Scope<'_>,
    errors: &mut Errors,
) -> Option<TemplateVar> {
    let valid = match kind {
        "header" => http::header::HeaderName::from_bytes(field.as_bytes()).is_ok(),
        "cookie" | "query" => !field.is_empty() && rules::is_token(field),
        // A JWT claim, which the identity keeps past forwarding.
        "claim" if !field.is_empty() => return Some(TemplateVar::Claim(field.to_owned())),
        _ => {
            let c = closest(kind, &["header", "cookie", "query", "claim"]).unwrap_or("header");
            errors.at(
                lit.span(),
                format!("unknown variable `${{{kind}.{field}}}`: did you mean `${{{c}.{field}}}`?"),
            );
            return None;
        }
    };
    if !valid {
        errors.at(
            lit.span(),
            format!("`${{{kind}.{field}}}` does not name a {kind}: e.g. `${{{kind}.x-user}}`"),
        );
        return None;
    }
    if !scope.headers && kind != "query" {
        errors.at(
            lit.span(),
            format!("`${{{kind}.{field}}}` cannot be read here: a response edit runs after the request's headers went upstream; copy it in a request edit or read it in `response_filter`"),
        );
        return None;
    }
    Some(match kind {
        "header" => TemplateVar::Header(field.to_ascii_lowercase()),
        "cookie" => TemplateVar::Cookie(field.to_owned()),
        _ => TemplateVar::QueryParam(field.to_owned()),
    })
}

/// `${1}` or `${name}`: a capture the route's path regex has.
fn capture(name: &str, scope: &Scope<'_>) -> Option<TemplateVar> {
    let re = regex::Regex::new(scope.path_regex?).ok()?;
    let known = match name.parse::<usize>() {
        Ok(i) => i < re.captures_len(),
        Err(_) => re.capture_names().flatten().any(|n| n == name),
    };
    known.then(|| TemplateVar::Capture(name.to_owned()))
}

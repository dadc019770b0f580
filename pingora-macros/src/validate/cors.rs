//! `cors { ... }`: origins that are origins, methods that are methods, header names that
//! are header names, each setting once, and no credentials for every origin.

use std::collections::HashSet;

use syn::{Ident, LitStr};

use crate::diagnostic::Errors;
use crate::model;
use crate::syntax::{CorsDecl, CorsValue};

use super::route::check_method_list;
use super::values::check_duration;

/// A `cors` declaration checked into its model (at the proxy level or in a route).
pub(super) fn check_cors(decl: &CorsDecl, errors: &mut Errors) -> Option<model::Cors> {
    let mut seen = HashSet::new();
    let mut cors = model::Cors {
        origins: Vec::new(),
        methods: None,
        headers: None,
        expose: Vec::new(),
        credentials: false,
        max_age: None,
    };
    let mut origins_declared = false;
    let mut valid = true;
    for setting in &decl.settings {
        let key = setting.key.to_string();
        if !seen.insert(key.clone()) {
            errors.at(
                setting.key.span(),
                format!("`{key}` is given twice in this `cors` block: keep one"),
            );
            valid = false;
            continue;
        }
        match &setting.value {
            CorsValue::Any if key == "origins" => {
                origins_declared = true;
                cors.origins.push("*".to_owned());
            }
            CorsValue::Any => cors.headers = None,
            CorsValue::Strings(list) if key == "origins" => {
                origins_declared = true;
                valid &= check_origins(&setting.key, list, &mut cors.origins, errors);
            }
            CorsValue::Strings(list) => {
                let names = header_names(list, errors);
                valid &= names.len() == list.len();
                if key == "headers" {
                    cors.headers = Some(names);
                } else {
                    cors.expose = names;
                }
            }
            CorsValue::Methods(methods) => {
                valid &= check_method_list(methods, errors);
                cors.methods = Some(methods.clone());
            }
            CorsValue::Switch(on) => cors.credentials = *on,
            CorsValue::Duration(d) => {
                cors.max_age = check_duration(d, errors);
                valid &= cors.max_age.is_some();
            }
        }
    }
    if !origins_declared {
        errors.at(
            decl.keyword.span(),
            "a `cors` policy needs the origins it allows: add `origins [\"https://app.example.com\"];` (or `origins any;`)",
        );
        return None;
    }
    if cors.credentials && cors.origins.iter().any(|o| o == "*") {
        let at = decl
            .settings
            .iter()
            .find(|s| s.key == "credentials")
            .map_or(decl.keyword.span(), |s| s.key.span());
        errors.at(
            at,
            "`credentials on` with every origin would let any web site read answers made with your users' cookies: list the origins instead of `any`",
        );
        valid = false;
    }
    valid.then_some(cors)
}

/// Each origin: `*`, or `SCHEME://HOST[:PORT]` where HOST may start with `*.`.
fn check_origins(key: &Ident, list: &[LitStr], out: &mut Vec<String>, errors: &mut Errors) -> bool {
    if list.is_empty() {
        errors.at(
            key.span(),
            "`origins []` allows no origin: list some, or remove the `cors` policy",
        );
        return false;
    }
    let mut valid = true;
    for lit in list {
        let text = lit.value();
        match pingora_dsl_rules::check_cors_origin(&text) {
            Ok(()) => out.push(text),
            Err(problem) => {
                errors.at(lit.span(), format!("invalid origin \"{text}\": {problem}"));
                valid = false;
            }
        }
    }
    valid
}

/// The lowercase names of `list`, each checked.
fn header_names(list: &[LitStr], errors: &mut Errors) -> Vec<String> {
    let mut names = Vec::new();
    for lit in list {
        let name = lit.value();
        match http::header::HeaderName::from_bytes(name.as_bytes()) {
            Ok(checked) => names.push(checked.as_str().to_owned()),
            Err(_) => errors.at(
                lit.span(),
                format!("invalid header name \"{name}\": use letters, digits and `-` (e.g. \"content-type\")"),
            ),
        }
    }
    names
}

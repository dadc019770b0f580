//! Semantics: checks the syntax tree, reporting every problem at the token that causes it,
//! and builds the typed [`model`](crate::model) the expansion reads. Errors are collected,
//! not returned early, so one invocation shows all of them. The model of an invocation
//! with errors holds only what checked; `expand` then declares each proxy's type with
//! constructors that cannot be reached, and nothing is built from the incomplete model.

mod access;
mod auth;
mod cache;
mod compress;
mod condition;
mod cors;
mod health;
mod kind;
mod policy;
mod route;
mod settings;
mod template;
mod upstream;
mod values;

use std::collections::HashSet;

use proc_macro2::Span;

use crate::diagnostic::Errors;
use crate::model;
use crate::phase::Phase;
use crate::syntax::{Kind, PhaseBody, Proxies, Proxy};

use values::check_addr;

/// Checks every proxy of the invocation and returns their models.
pub fn validate(proxies: &Proxies, errors: &mut Errors) -> Vec<model::Proxy> {
    let mut names = HashSet::new();
    let mut models = Vec::new();
    for proxy in &proxies.proxies {
        let model = validate_proxy(proxy, errors);
        if names.insert(proxy.name.to_string()) {
            models.push(model);
        } else {
            // Its type is declared by the first of that name: expanding it again would
            // only add "defined multiple times" errors.
            errors.at(
                proxy.name.span(),
                format!(
                    "a proxy named `{}` is already declared in this invocation: give each proxy its own name",
                    proxy.name
                ),
            );
        }
    }
    models
}

fn validate_proxy(proxy: &Proxy, errors: &mut Errors) -> model::Proxy {
    let idle = kind::validate_kind(proxy, errors);
    let rate_limits = settings::validate_rate_limits(&proxy.rate_limits, errors);
    if proxy.listens.is_empty() && !proxy.malformed_listen {
        errors.at(
            proxy.name.span(),
            format!(
                "proxy `{}` has no listener: add `listen \"127.0.0.1:6188\";`",
                proxy.name
            ),
        );
    }
    validate_admin(proxy, errors);
    let listens = validate_listens(proxy, errors);
    for (keyword, _) in proxy.ctx.iter().skip(1) {
        errors.at(
            keyword.span(),
            "`ctx` is declared twice: a proxy has one context type (put both in one struct)",
        );
    }
    let upstreams = upstream::validate_upstreams(&proxy.upstreams, errors);
    let user_peer = proxy
        .phases
        .iter()
        .find(|p| p.phase == Phase::UpstreamPeer)
        .map(|p| p.keyword.span());
    let routes = route::validate_routes(&proxy.routes, &proxy.upstreams, user_peer, errors);
    let edits = proxy
        .edits
        .iter()
        .filter_map(|edit| route::check_edit(edit, None, errors))
        .collect();
    let phases_valid = validate_phases(proxy, errors);
    let options = settings::validate_settings(&proxy.settings, errors);
    if proxy.kind == Kind::Http {
        check_forwarding(proxy, user_peer, errors);
    }
    let auth = auth::check_proxy_auth(&proxy.auth, &proxy.upstreams, errors);
    check_claim_conditions(proxy, auth.as_ref(), errors);
    model::Proxy {
        kind: proxy.kind,
        attrs: proxy.attrs.clone(),
        vis: proxy.vis.clone(),
        name: proxy.name.clone(),
        listens,
        ctx: proxy.ctx.first().map(|(_, ty)| ty.clone()),
        upstreams,
        routes,
        edits,
        phases: proxy.phases.clone(),
        layers: proxy.layers.clone(),
        options,
        rate_limits,
        admin: proxy.admin.first().map(|(_, addr)| addr.clone()),
        sentry: validate_sentry(proxy, errors),
        cors: policy::proxy_policy(&proxy.cors, errors, cors::check_cors),
        access: (!proxy.access.is_empty())
            .then(|| access::check_access(&proxy.access.iter().collect::<Vec<_>>(), errors))
            .flatten(),
        trusted_proxies: access::check_trusted_proxies(&proxy.trusted_proxies, errors),
        auth,
        compress: policy::proxy_policy(&proxy.compress, errors, compress::check_compress),
        cache: policy::proxy_policy(&proxy.cache, errors, cache::check_cache),
        idle,
        phases_valid,
    }
}

/// A `claim` condition reads the JWT the proxy's `auth jwt` verifies before routing (a
/// route's own `auth` runs only once its route is chosen).
fn check_claim_conditions(proxy: &Proxy, auth: Option<&model::Auth>, errors: &mut Errors) {
    let message = match auth {
        Some(model::Auth::Jwt(_)) => return,
        // A proxy-level `auth` that did not check has its own error.
        None if !proxy.auth.is_empty() => return,
        Some(_) => "a `claim` condition reads a JWT's claims, but this proxy's `auth` is not `jwt`: declare `auth jwt { ... }` on the proxy",
        None => "a `claim` condition needs the proxy's JWT: declare `auth jwt { key ...; }` on the proxy, which verifies the token before routing (a route's own `auth` runs only once its route is chosen)",
    };
    for c in claim_conditions(proxy) {
        errors.at(c.keyword.span(), message);
    }
}

/// The `claim` conditions of a proxy's routes.
fn claim_conditions(proxy: &Proxy) -> impl Iterator<Item = &crate::syntax::ConditionDecl> {
    proxy
        .routes
        .iter()
        .flat_map(|r| &r.conditions)
        .filter(|c| c.keyword == "claim")
}

/// `sentry "DSN" [sample RATE] [environment "NAME"];`: declared once, a DSN, a rate from
/// 0 to 1, a non-empty environment.
fn validate_sentry(proxy: &Proxy, errors: &mut Errors) -> Option<model::Sentry> {
    for decl in proxy.sentry.iter().skip(1) {
        errors.at(
            decl.keyword.span(),
            "`sentry` is declared twice: one Sentry project receives the whole process's errors",
        );
    }
    let decl = proxy.sentry.first()?;
    let mut valid = true;
    if let Err(e) = pingora_dsl_rules::check_sentry_dsn(&decl.dsn.value()) {
        errors.at(decl.dsn.span(), format!("invalid Sentry DSN: {e}"));
        valid = false;
    }
    let sample = decl.sample.as_ref().and_then(|lit| {
        let rate = match lit {
            syn::Lit::Float(f) => f.base10_parse::<f32>().ok(),
            syn::Lit::Int(i) => i.base10_parse::<u8>().ok().map(f32::from),
            _ => None,
        };
        match rate {
            Some(rate) if (0.0..=1.0).contains(&rate) => Some(rate),
            _ => {
                errors.at(
                    lit.span(),
                    "`sample` takes the share of error events sent, from 0.0 to 1.0: e.g. `sample 0.25`",
                );
                valid = false;
                None
            }
        }
    });
    if let Some(env) = &decl.environment {
        if env.value().trim().is_empty() {
            errors.at(
                env.span(),
                "the environment's name is empty: e.g. `environment \"production\"`",
            );
            valid = false;
        }
    }
    valid.then(|| model::Sentry {
        dsn: decl.dsn.clone(),
        sample,
        environment: decl.environment.clone(),
    })
}

/// `admin "ADDR";`: declared once, a valid address, not one of the `listen` addresses.
fn validate_admin(proxy: &Proxy, errors: &mut Errors) {
    for (i, (keyword, addr)) in proxy.admin.iter().enumerate() {
        if i > 0 {
            errors.at(
                keyword.span(),
                "`admin` is declared twice: one admin listener serves the whole process",
            );
        } else if let Some(admin) = check_addr(addr, "admin", errors) {
            if proxy
                .listens
                .iter()
                .any(|l| l.lit.value().parse().ok() == Some(admin))
            {
                errors.at(
                    addr.span(),
                    format!("the admin listener \"{admin}\" is also a `listen` address: give it its own port"),
                );
            }
        }
    }
}

/// Every `listen`: a valid address, declared once, with valid TLS settings.
fn validate_listens(proxy: &Proxy, errors: &mut Errors) -> Vec<model::Listen> {
    let mut seen = HashSet::new();
    let mut listens = Vec::new();
    for listen in &proxy.listens {
        let tls = listen.tls.as_ref().and_then(|tls| {
            settings::validate_tls(tls, errors);
            // A UDP proxy has no TLS listener (`validate_kind` said so).
            (proxy.kind != Kind::Udp).then(|| model::ListenTls {
                certs: tls.certs.clone(),
                client_ca: tls.client_ca.first().map(|(_, ca)| ca.clone()),
            })
        });
        let Some(addr) = check_addr(&listen.lit, "listen", errors) else {
            continue;
        };
        // (A QUIC listener is UDP: it may share a TCP listener's address.)
        if !seen.insert((addr, listen.quic.is_some())) {
            errors.at(
                listen.lit.span(),
                format!("`listen \"{addr}\"` is declared twice: remove one"),
            );
        }
        let proxy_protocol = listen
            .proxy_protocol
            .as_ref()
            .and_then(|(_, mode)| settings::check_proxy_protocol_mode(mode, errors));
        listens.push(model::Listen {
            addr,
            tls,
            quic: listen.quic.is_some(),
            proxy_protocol,
        });
    }
    check_quic_listens(proxy, errors);
    listens
}

/// `listen quic`: an HTTP proxy's, beside a TLS listener whose certificates it serves.
fn check_quic_listens(proxy: &Proxy, errors: &mut Errors) {
    let has_tls = proxy.listens.iter().any(|l| l.tls.is_some());
    for quic in proxy.listens.iter().filter_map(|l| l.quic.as_ref()) {
        if proxy.kind != Kind::Http {
            errors.at(
                quic.span(),
                "`listen quic` is HTTP/3: it is for proxy!, not for layer-4 proxies",
            );
        } else if !has_tls {
            errors.at(
                quic.span(),
                "`listen quic` serves the certificates of the proxy's TLS listener: add `listen tls \"ADDR\" cert \"FILE\" key \"FILE\";`",
            );
        }
    }
}

/// Checks that the proxy has somewhere to send requests and that no upstream is dead code.
fn check_forwarding(proxy: &Proxy, user_peer: Option<Span>, errors: &mut Errors) {
    if user_peer.is_some() {
        for up in proxy
            .upstreams
            .iter()
            .filter(|up| !code_names_pool(proxy, up))
        {
            errors.at(
                up.name.span(),
                format!(
                    "upstream `{}` is never used: the `upstream_peer` phase picks every peer (return `Self::{}` from it to use the pool, or remove the upstream)",
                    up.name,
                    pool_const(&up.name)
                ),
            );
        }
        return;
    }
    let distinct: HashSet<String> = proxy.upstreams.iter().map(|u| u.name.to_string()).collect();
    if proxy.routes.is_empty() {
        match distinct.len() {
            0 => errors.at(
                proxy.name.span(),
                format!(
                    "proxy `{}` has nowhere to send requests: declare `upstream NAME {{ peers [\"127.0.0.1:8001\"]; }}`, a `route`, or an `upstream_peer` phase",
                    proxy.name
                ),
            ),
            1 => {}
            _ => errors.at(
                proxy.upstreams[proxy.upstreams.len() - 1].name.span(),
                "with several upstreams, say which requests go where: add `route path \"/api\" => upstream api;` lines",
            ),
        }
        return;
    }
    // A route naming an unknown upstream is most likely a typo of an "unused" one: that
    // error is reported already.
    let dangling = proxy
        .routes
        .iter()
        .flat_map(|r| r.upstream_names())
        .any(|name| !distinct.contains(&name.to_string()));
    if dangling || proxy.malformed_route {
        return;
    }
    for up in &proxy.upstreams {
        let used = proxy
            .routes
            .iter()
            .flat_map(|r| r.upstream_names())
            .chain(proxy.auth.iter().filter_map(|a| a.pool()))
            .any(|name| *name == up.name);
        if !used && !code_names_pool(proxy, up) {
            errors.at(
                up.name.span(),
                format!(
                    "upstream `{}` is never used: add `route ... => upstream {};` or remove it",
                    up.name, up.name
                ),
            );
        }
    }
}

/// `POOL_NAME`: the constant a declared proxy names its pool `name` by.
pub fn pool_const(name: &syn::Ident) -> String {
    format!("POOL_{}", name.to_string().to_ascii_uppercase())
}

/// Whether the proxy's code may pick the pool `up`: an inline phase names its constant,
/// or a phase is a function whose body the macro cannot see.
fn code_names_pool(proxy: &Proxy, up: &crate::syntax::Upstream) -> bool {
    let wanted = pool_const(&up.name);
    proxy.phases.iter().any(|decl| match &decl.body {
        PhaseBody::Path(_) => true,
        PhaseBody::Inline { block, .. } => {
            mentions(quote::ToTokens::to_token_stream(block), &wanted)
        }
    })
}

/// Whether `tokens` hold the identifier `wanted`, at any depth.
fn mentions(tokens: proc_macro2::TokenStream, wanted: &str) -> bool {
    tokens.into_iter().any(|tree| match tree {
        proc_macro2::TokenTree::Ident(i) => i == wanted,
        proc_macro2::TokenTree::Group(g) => mentions(g.stream(), wanted),
        _ => false,
    })
}

/// Each phase once; an inline phase names as many parameters as the phase has, each once.
/// Returns whether all phases are well formed.
fn validate_phases(proxy: &Proxy, errors: &mut Errors) -> bool {
    let mut seen = HashSet::new();
    let mut valid = true;
    for decl in &proxy.phases {
        let name = decl.phase.name();
        if !seen.insert(name) {
            valid = false;
            errors.at(
                decl.keyword.span(),
                format!("phase `{name}` is declared twice: merge the two into one"),
            );
        }
        if let crate::syntax::PhaseBody::Inline {
            params,
            params_span,
            ..
        } = &decl.body
        {
            let expected = decl.phase.params();
            if params.len() != expected.len() {
                valid = false;
                errors.at(
                    *params_span,
                    format!(
                        "`{name}` takes {} parameters, ({}), found {}: its signature is `{}`",
                        expected.len(),
                        expected.join(", "),
                        params.len(),
                        decl.phase.signature()
                    ),
                );
            }
            let mut names = HashSet::new();
            for p in params {
                if !names.insert(p.to_string()) {
                    valid = false;
                    errors.at(p.span(), format!("parameter `{p}` is named twice"));
                }
            }
        }
    }
    valid
}

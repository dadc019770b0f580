//! The router of an HTTP proxy (groups, routes, header edits, rate limits) and its
//! declared options; every `with_*` call stands for something the user wrote.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

use crate::model::{
    Access, Action, Cache, Choice, Compress, Condition, Cors, EditSide, HeaderEdit, Policy, Proxy,
    RateKey, RateLimit, Rewrite, Route, Setting, Template, TemplatePart, TemplateVar, Test,
    ValueTest,
};

use super::group::{expand_group, request_key};
use super::{duration, rt, status};

/// `Router::new(groups, routes)` with the proxy-wide edits and rate limits declared.
pub fn expand_router(p: &Proxy) -> TokenStream {
    let rt = rt();
    let groups = p.upstreams.iter().map(expand_group);
    let user_peer = p.user_peer();
    let routes: Vec<TokenStream> = if p.routes.is_empty() && !user_peer && p.upstreams.len() == 1 {
        vec![quote!(#rt::proxy::route::Route::new(
            #rt::proxy::route::RouteMatch::default(),
            #rt::proxy::route::RouteAction::Upstream(0),
        ))]
    } else {
        p.routes
            .iter()
            .enumerate()
            .map(|(i, r)| expand_route(r, &format!("{}:route{i}", p.name)))
            .collect()
    };
    let edits = edit_calls(&p.edits);
    let rate_limits = (!p.rate_limits.is_empty()).then(|| {
        let scope = format!("{}:proxy", p.name);
        let limits = rate_limits(&p.rate_limits, &scope);
        quote!(.with_rate_limits(::std::vec![#(#limits),*]))
    });
    let fallthrough = user_peer.then(|| quote!(.with_fallthrough(true)));
    let filtered = super::phases::router_filters_own_answers(p)
        .then(|| quote!(.with_local_answers_filtered(true)));
    let cors = p.cors.as_ref().map(|c| {
        let c = cors(c);
        quote!(.with_cors(#c))
    });
    let access = p.access.as_ref().map(|a| {
        let a = access(a);
        quote!(.with_access(#a))
    });
    let auth = p.auth.as_ref().map(|a| {
        let a = super::auth::expand_auth(a);
        quote!(.with_auth(#a))
    });
    let compress = p.compress.as_ref().map(|c| {
        let c = compress(c);
        quote!(.with_compress(#c))
    });
    let cache = p.cache.as_ref().map(|c| {
        let c = cache(c);
        quote!(.with_cache(#c))
    });
    quote! {
        #rt::proxy::route::Router::new(
            ::std::vec![#(#groups),*],
            ::std::vec![#(#routes),*],
        )
        #edits
        #rate_limits
        #fallthrough
        #filtered
        #cors
        #access
        #auth
        #compress
        #cache
    }
}

fn expand_route(route: &Route, scope: &str) -> TokenStream {
    let rt = rt();
    let host = match &route.host {
        Some(h) => quote!(::std::option::Option::Some(#rt::proxy::route::HostPattern::parse(#h))),
        None => quote!(::std::option::Option::None),
    };
    let path = match &route.path {
        Some(p) => quote!(::std::option::Option::Some(::std::string::String::from(#p))),
        None => quote!(::std::option::Option::None),
    };
    let methods = route.methods.iter().map(|m| quote!(#rt::Method::#m));
    let conditions = route.conditions.iter().map(expand_condition);
    let action = expand_action(&route.action);
    let edits = edit_calls(&route.edits);
    let rewrite = route.rewrite.as_ref().map(|r| {
        let r = expand_rewrite(r);
        quote!(.with_rewrite(#r))
    });
    let policy = route.policy.as_ref().map(|p| policy_call(p, scope));
    let mirror = route
        .mirror
        .map(|(i, p)| quote!(.with_mirror(#rt::proxy::route::Mirror::new(#i, #p))));
    quote! {
        #rt::proxy::route::Route::new(
            #rt::proxy::route::RouteMatch {
                host: #host,
                path_prefix: #path,
                methods: ::std::vec![#(#methods),*],
                conditions: ::std::vec![#(#conditions),*],
            },
            #action,
        )
        #rewrite
        #policy
        #mirror
        #edits
    }
}

/// What a route does, as a `RouteAction` value.
fn expand_action(action: &Action) -> TokenStream {
    let rt = rt();
    match action {
        Action::Upstream(index) => quote!(#rt::proxy::route::RouteAction::Upstream(#index)),
        Action::Split { arms, key } => {
            let arms = arms.iter().map(|(i, w)| quote!((#i, #w)));
            let key = match key {
                Some(k) => request_key(k),
                None => quote!(#rt::lb::RequestKey::None),
            };
            quote!(#rt::proxy::route::RouteAction::Split(::std::sync::Arc::new(
                #rt::proxy::route::Split::new(::std::vec![#(#arms),*], #key)
            )))
        }
        Action::Respond {
            status: s,
            template: Some(t),
            ..
        } => {
            let (s, t) = (status(*s), template(t));
            quote!(#rt::proxy::route::RouteAction::RespondTemplate(#s, ::std::boxed::Box::new(#t)))
        }
        Action::Respond {
            status: s, body, ..
        } => {
            let s = status(*s);
            let body = syn::LitByteStr::new(body.as_bytes(), Span::call_site());
            quote!(#rt::proxy::route::RouteAction::Respond(#s, #rt::Bytes::from_static(#body)))
        }
        Action::Redirect {
            status: s,
            template: Some(t),
            ..
        } => {
            let (s, t) = (status(*s), template(t));
            quote!(#rt::proxy::route::RouteAction::RedirectTemplate(#s, ::std::boxed::Box::new(#t)))
        }
        Action::Redirect {
            status: s,
            location,
            ..
        } => {
            let s = status(*s);
            quote!(#rt::proxy::route::RouteAction::Redirect(#s, #rt::HeaderValue::from_static(#location)))
        }
    }
}

/// Each declared rate limit as a `RateLimit` value; a shared one counts in Redis under
/// `SCOPE:N` (N: its place among the limits of its proxy or route), the same on every
/// instance of the proxy.
fn rate_limits<'a>(
    limits: &'a [RateLimit],
    scope: &'a str,
) -> impl Iterator<Item = TokenStream> + 'a {
    let rt = rt();
    limits.iter().enumerate().map(move |(i, limit)| {
        let (n, per) = (limit.limit, duration(limit.per));
        let key = match &limit.key {
            RateKey::Header(name) => {
                quote!(#rt::proxy::route::rate::RateKey::Header(#rt::HeaderName::from_static(#name)))
            }
            RateKey::Route => quote!(#rt::proxy::route::rate::RateKey::Route),
            RateKey::ClientIp => quote!(#rt::proxy::route::rate::RateKey::ClientIp),
        };
        let shared = limit.shared.as_ref().map(|shared| {
            let url = &shared.url;
            let scope = format!("{scope}:{i}");
            let timeout = shared.timeout.map(|d| {
                let d = duration(d);
                quote!(settings.timeout = #d;)
            });
            let fallback = shared.fallback.as_deref().map(|mode| {
                let mode = match mode {
                    "open" => quote!(Open),
                    "closed" => quote!(Closed),
                    _ => quote!(Local),
                };
                quote!(settings.fallback = #rt::proxy::route::rate::shared::Fallback::#mode;)
            });
            quote!(.shared({
                let mut settings = #rt::proxy::route::rate::shared::SharedSettings::new(#url);
                #timeout
                #fallback
                settings
            }, #scope))
        });
        quote!(#rt::proxy::route::rate::RateLimit::new(#n, #per, #key) #shared)
    })
}

/// `.with_policy(RoutePolicy { .. })` for a route with its own limits.
fn policy_call(policy: &Policy, scope: &str) -> TokenStream {
    let rt = rt();
    let some_duration = |d: Option<std::time::Duration>| match d {
        Some(d) => {
            let d = duration(d);
            quote!(::std::option::Option::Some(#d))
        }
        None => quote!(::std::option::Option::None),
    };
    let (connect, read, write) = (
        some_duration(policy.connect),
        some_duration(policy.read),
        some_duration(policy.write),
    );
    let retries = match policy.retries {
        Some(n) => quote!(::std::option::Option::Some(#n)),
        None => quote!(::std::option::Option::None),
    };
    let max_body = match policy.max_body {
        Some(n) => quote!(::std::option::Option::Some(#n)),
        None => quote!(::std::option::Option::None),
    };
    let limits = rate_limits(&policy.rate_limits, scope);
    let cors = choice(&policy.cors, |c| {
        let c = cors(c);
        quote!(::std::sync::Arc::new(#c))
    });
    let access = choice(&policy.access, |a| {
        let a = access(a);
        quote!(::std::sync::Arc::new(#a))
    });
    let auth = choice(&policy.auth, |a| {
        let a = super::auth::expand_auth(a);
        quote!(::std::sync::Arc::new(#a))
    });
    let compress = choice(&policy.compress, |c| {
        let c = compress(c);
        quote!(::std::sync::Arc::new(#c))
    });
    let cache = choice(&policy.cache, |c| {
        let c = cache(c);
        quote!(::std::sync::Arc::new(#c))
    });
    quote!(.with_policy(#rt::proxy::route::RoutePolicy {
        connect_timeout: #connect,
        read_timeout: #read,
        write_timeout: #write,
        retries: #retries,
        rate_limits: ::std::vec![#(::std::sync::Arc::new(#limits)),*],
        max_body: #max_body,
        cors: #cors,
        access: #access,
        auth: #auth,
        compress: #compress,
        cache: #cache,
    }))
}

/// An `HttpCache` value of a checked `cache` declaration.
fn cache(c: &Cache) -> TokenStream {
    let rt = rt();
    let cache = quote!(#rt::proxy::cache);
    let memory = match c.memory {
        Some(n) => quote!(#n),
        None => quote!(#cache::DEFAULT_MEMORY),
    };
    let max = c.max_object.map(|n| quote!(.max_object(#n)));
    let ttl = c.ttl.map(|d| {
        let d = duration(d);
        quote!(.default_ttl(#d))
    });
    let swr = c.stale_while_revalidate.map(|d| {
        let d = duration(d);
        quote!(.stale_while_revalidate(#d))
    });
    let sie = c.stale_if_error.map(|d| {
        let d = duration(d);
        quote!(.stale_if_error(#d))
    });
    let lock = c.lock_timeout.map(|d| {
        let d = duration(d);
        quote!(.lock_timeout(#d))
    });
    let header = c
        .status_header
        .as_ref()
        .map(|h| quote!(.status_header(#rt::HeaderName::from_static(#h))));
    let keys = c
        .key_headers
        .iter()
        .map(|h| quote!(.key_header(#rt::HeaderName::from_static(#h))));
    let cookies = c.key_cookies.iter().map(|name| quote!(.key_cookie(#name)));
    let disk = c
        .disk
        .as_ref()
        .map(|(dir, size)| quote!(.disk(#dir, #size)));
    let key_template = c.key_template.as_ref().map(|t| {
        let t = template(t);
        quote!(.key_with({
            let template = #t;
            move |session: &#rt::proxy::Session| template.render(session, session.headers())
        }))
    });
    quote!(#cache::HttpCache::new(#memory) #max #ttl #swr #sie #lock #header #(#keys)* #(#cookies)* #key_template #disk)
}

/// A `Compress` value of a checked `compress` declaration.
fn compress(c: &Compress) -> TokenStream {
    let rt = rt();
    let route = quote!(#rt::proxy::route);
    let base = match &c.encodings {
        None => quote!(<#route::Compress as ::std::default::Default>::default()),
        Some(list) => {
            let list = list.iter().map(|e| match e.as_str() {
                "gzip" => quote!(#route::Encoding::Gzip),
                "br" => quote!(#route::Encoding::Brotli),
                _ => quote!(#route::Encoding::Zstd),
            });
            quote!(#route::Compress::new([#(#list),*]))
        }
    };
    let types = c.types.as_ref().map(|t| quote!(.types([#(#t),*])));
    let min = c.min_size.map(|n| quote!(.min_size(#n)));
    quote!(#base #types #min)
}

/// An `AccessList` value of checked blocks.
fn access(a: &Access) -> TokenStream {
    let rt = rt();
    let allow = a.allow.iter().map(|(ip, prefix)| cidr(*ip, *prefix));
    let deny = a.deny.iter().map(|(ip, prefix)| cidr(*ip, *prefix));
    quote!(#rt::proxy::route::AccessList::new([#(#allow),*], [#(#deny),*]))
}

/// A `Cidr` value of a checked block.
fn cidr(ip: std::net::IpAddr, prefix: u8) -> TokenStream {
    let rt = rt();
    let ip = match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            quote!(::std::net::IpAddr::from([#(#o),*]))
        }
        std::net::IpAddr::V6(v6) => {
            let o = v6.octets();
            quote!(::std::net::IpAddr::from([#(#o),*]))
        }
    };
    quote!(#rt::proxy::route::Cidr::new(#ip, #prefix))
}

/// An `Override` value for a route's choice of a proxy-wide policy.
fn choice<T>(choice: &Choice<T>, own: impl FnOnce(&T) -> TokenStream) -> TokenStream {
    let rt = rt();
    match choice {
        Choice::Inherit => quote!(#rt::proxy::route::Override::Inherit),
        Choice::Off => quote!(#rt::proxy::route::Override::Off),
        Choice::Own(policy) => {
            let policy = own(policy);
            quote!(#rt::proxy::route::Override::Own(#policy))
        }
    }
}

/// A `Cors` value; origins, methods and names were checked by `validate`.
fn cors(c: &Cors) -> TokenStream {
    let rt = rt();
    let origins = &c.origins;
    let methods = c.methods.as_ref().map(|methods| {
        let methods = methods.iter().map(|m| quote!(#rt::Method::#m));
        quote!(.allow_methods([#(#methods),*]))
    });
    let headers = c
        .headers
        .as_ref()
        .map(|names| quote!(.allow_headers([#(#rt::HeaderName::from_static(#names)),*])));
    let expose = &c.expose;
    let expose = (!expose.is_empty())
        .then(|| quote!(.expose_headers([#(#rt::HeaderName::from_static(#expose)),*])));
    let credentials = c.credentials.then(|| quote!(.allow_credentials(true)));
    let max_age = c.max_age.map(|d| {
        let d = duration(d);
        quote!(.max_age(#d))
    });
    quote!(#rt::proxy::route::Cors::new([#(#origins),*]) #methods #headers #expose #credentials #max_age)
}

/// A `Template` value: its parts, and the path regex of its captures.
fn template(t: &Template) -> TokenStream {
    let rt = rt();
    let route = quote!(#rt::proxy::route);
    let parts = t.parts.iter().map(|part| match part {
        TemplatePart::Text(text) => quote!(#route::Part::Text(#text)),
        TemplatePart::Var(var) => {
            let var = match var {
                TemplateVar::Host => quote!(Host),
                TemplateVar::Path => quote!(Path),
                TemplateVar::Query => quote!(Query),
                TemplateVar::RequestUri => quote!(RequestUri),
                TemplateVar::Scheme => quote!(Scheme),
                TemplateVar::Method => quote!(Method),
                TemplateVar::ClientIp => quote!(ClientIp),
                TemplateVar::RequestId => quote!(RequestId),
                TemplateVar::Header(n) => quote!(Header(#rt::HeaderName::from_static(#n))),
                TemplateVar::Cookie(n) => quote!(Cookie(::std::boxed::Box::from(#n))),
                TemplateVar::QueryParam(n) => quote!(QueryParam(::std::boxed::Box::from(#n))),
                TemplateVar::Capture(n) => quote!(Capture(::std::boxed::Box::from(#n))),
                TemplateVar::User => quote!(User),
                TemplateVar::Claim(n) => quote!(Claim(::std::boxed::Box::from(#n))),
            };
            quote!(#route::Part::Var(#route::Var::#var))
        }
    });
    let captures = t
        .captures
        .as_ref()
        .map(|r| quote!(.with_captures(#route::checked_regex(#r))));
    quote!(#route::Template::new(::std::vec![#(#parts),*]) #captures)
}

/// A `Condition` value; regexes and names were checked by `validate`.
fn expand_condition(c: &Condition) -> TokenStream {
    let rt = rt();
    let route = quote!(#rt::proxy::route);
    let value = |v: &ValueTest| match v {
        ValueTest::Present => quote!(#route::ValueTest::Present),
        ValueTest::Equals(s) => quote!(#route::ValueTest::Equals(::std::string::String::from(#s))),
        ValueTest::Matches(r) => quote!(#route::ValueTest::Matches(#route::checked_regex(#r))),
    };
    let test = match &c.test {
        Test::Host(h) => quote!(#route::Test::Host(#route::HostPattern::parse(#h))),
        Test::PathPrefix(p) => quote!(#route::Test::PathPrefix(::std::string::String::from(#p))),
        Test::PathExact(p) => quote!(#route::Test::PathExact(::std::string::String::from(#p))),
        Test::PathRegex(r) => quote!(#route::Test::PathRegex(#route::checked_regex(#r))),
        Test::Method(methods) => {
            let methods = methods.iter().map(|m| quote!(#rt::Method::#m));
            quote!(#route::Test::Method(::std::vec![#(#methods),*]))
        }
        Test::Header(name, v) => {
            let v = value(v);
            quote!(#route::Test::Header(#rt::HeaderName::from_static(#name), #v))
        }
        Test::Query(name, v) => {
            let v = value(v);
            quote!(#route::Test::Query(::std::string::String::from(#name), #v))
        }
        Test::Cookie(name, v) => {
            let v = value(v);
            quote!(#route::Test::Cookie(::std::string::String::from(#name), #v))
        }
        Test::Claim(name, v) => {
            let v = value(v);
            quote!(#route::Test::Claim(::std::string::String::from(#name), #v))
        }
        Test::Client(blocks) => {
            let blocks = blocks.iter().map(|(ip, prefix)| cidr(*ip, *prefix));
            quote!(#route::Test::ClientIn(::std::vec![#(#blocks),*]))
        }
        Test::Https(https) => quote!(#route::Test::Https(#https)),
    };
    if c.negated {
        quote!(#route::Condition::not(#test))
    } else {
        quote!(#route::Condition::is(#test))
    }
}

/// A `PathRewrite` value.
fn expand_rewrite(r: &Rewrite) -> TokenStream {
    let rt = rt();
    let route = quote!(#rt::proxy::route);
    match r {
        Rewrite::Prefix { from, to } => quote!(#route::PathRewrite::Prefix {
            from: ::std::string::String::from(#from),
            to: ::std::string::String::from(#to),
        }),
        Rewrite::Regex { pattern, with } => quote!(#route::PathRewrite::Regex {
            pattern: #route::checked_regex(#pattern),
            with: ::std::string::String::from(#with),
        }),
        Rewrite::Set(p) => quote!(#route::PathRewrite::Set(::std::string::String::from(#p))),
    }
}

/// `.with_request_edits(...)` and `.with_response_edits(...)`, each only if it has edits.
/// Names and values were checked by `validate`, so `from_static` cannot fail.
fn edit_calls(edits: &[HeaderEdit]) -> TokenStream {
    let rt = rt();
    let of_side = |side: EditSide| {
        let list: Vec<TokenStream> = edits
            .iter()
            .filter(|e| e.side == side)
            .map(|edit| {
                let name = &edit.name;
                match (&edit.value, &edit.template) {
                    (Some(_), Some(t)) => {
                        let t = template(t);
                        quote!(#rt::proxy::route::HeaderEdit::SetTemplate(
                            #rt::HeaderName::from_static(#name),
                            ::std::boxed::Box::new(#t),
                        ))
                    }
                    (Some(v), None) => quote!(#rt::proxy::route::HeaderEdit::Set(
                        #rt::HeaderName::from_static(#name),
                        #rt::HeaderValue::from_static(#v),
                    )),
                    (None, _) => {
                        quote!(#rt::proxy::route::HeaderEdit::Remove(#rt::HeaderName::from_static(#name)))
                    }
                }
            })
            .collect();
        (!list.is_empty()).then_some(quote!(::std::vec![#(#list),*]))
    };
    let request = of_side(EditSide::Request).map(|v| quote!(.with_request_edits(#v)));
    let response = of_side(EditSide::Response).map(|v| quote!(.with_response_edits(#v)));
    quote!(#request #response)
}

/// The `ProxyOptions` expression: the runtime's default with the declared fields set.
pub fn expand_options(p: &Proxy) -> TokenStream {
    let rt = rt();
    let mut sets: Vec<TokenStream> = p.options.settings.iter().filter_map(option_set).collect();
    // A declared proxy's own answers get its response edits and `response_filter`, unless
    // it opts out.
    let opted_out = p
        .options
        .settings
        .iter()
        .any(|s| matches!(s, Setting::FilterLocalAnswers(false)));
    if !opted_out {
        sets.push(quote!(options.filter_local_answers = true;));
    }
    if !p.trusted_proxies.is_empty() {
        let blocks = p
            .trusted_proxies
            .iter()
            .map(|(ip, prefix)| cidr(*ip, *prefix));
        sets.push(quote!(
            options.trusted_proxies = ::std::option::Option::Some(::std::sync::Arc::new(
                #rt::proxy::TrustedProxies::new([#(#blocks),*]),
            ));
        ));
    }
    quote!({
        let mut options = #rt::proxy::ProxyOptions::default();
        #(#sets)*
        options
    })
}

fn option_set(setting: &Setting) -> Option<TokenStream> {
    let rt = rt();
    Some(match setting {
        Setting::Via(v) => quote!(
            options.via = ::std::option::Option::Some(#rt::HeaderValue::from_static(#v));
        ),
        Setting::ForwardedFor(on) => quote!(options.forwarded_for = #on;),
        // Applied by `expand_options` (on unless opted out).
        Setting::FilterLocalAnswers(_) => return None,
        // Process-wide: `impl Declared` carries them to the command line.
        Setting::TlsGroups(_) | Setting::Fips(_) => return None,
        // A listener setting: `expand_http_options`.
        Setting::ProxyProtocol(_) => return None,
        Setting::MaxIdlePerPeer(n) => quote!(options.client.max_idle_per_peer = #n;),
        Setting::ClientTimeout(key, d) if key == "body_read" || key == "body_total" => {
            let field = Ident::new(&format!("{key}_timeout"), Span::call_site());
            let d = duration(*d);
            quote!(options.#field = #d;)
        }
        Setting::TunnelIdle(d) => {
            let d = duration(*d);
            quote!(options.tunnel_idle_timeout = #d;)
        }
        Setting::AllowUpgrade(protocols) if protocols.is_empty() => quote!(
            options.allowed_upgrades = #rt::proxy::AllowedUpgrades::none();
        ),
        Setting::AllowUpgrade(protocols) => quote!(
            // Checked when the proxy was declared: the fallback cannot happen, and would
            // allow no upgrade rather than more.
            options.allowed_upgrades = #rt::proxy::AllowedUpgrades::new([#(#protocols),*])
                .unwrap_or_else(|_| #rt::proxy::AllowedUpgrades::none());
        ),
        Setting::AccessLog { target, json } => {
            let format = if *json {
                quote!(#rt::observe::access_log::AccessLogFormat::Json)
            } else {
                quote!(#rt::observe::access_log::AccessLogFormat::Combined)
            };
            let target = access_log_target(target);
            quote!(
                options.access_log = ::std::option::Option::Some(
                    #rt::observe::access_log::AccessLog::new(#target, #format),
                );
            )
        }
        _ => return None,
    })
}

/// An `AccessLogTarget` value for a checked target: stdout, a syslog destination (built
/// from its parts, parsed here) or a file.
fn access_log_target(target: &syn::LitStr) -> TokenStream {
    let rt = rt();
    let log = quote!(#rt::observe::access_log);
    let text = target.value();
    match pingora_dsl_rules::parse_syslog(&text) {
        Some(Ok(spec)) => {
            let transport = match spec.transport {
                pingora_dsl_rules::SyslogTransport::Udp => quote!(Udp),
                pingora_dsl_rules::SyslogTransport::Tcp => quote!(Tcp),
                pingora_dsl_rules::SyslogTransport::Unix => quote!(Unix),
            };
            let (address, facility, tag) = (&spec.address, spec.facility, &spec.tag);
            quote!(#log::AccessLogTarget::Syslog(#rt::observe::syslog::SyslogSpec {
                transport: #rt::observe::syslog::SyslogTransport::#transport,
                address: ::std::string::String::from(#address),
                facility: #facility,
                tag: ::std::string::String::from(#tag),
            }))
        }
        _ if text == "stdout" || text == "-" => quote!(#log::AccessLogTarget::Stdout),
        _ => quote!(#log::AccessLogTarget::File(::std::path::PathBuf::from(#target))),
    }
}

/// Statements setting the declared HTTP server options on `service`.
pub fn expand_http_options(p: &Proxy) -> TokenStream {
    let sets = p.options.settings.iter().filter_map(|s| match s {
        Setting::Keepalive(on) => Some(quote!(service.options_mut().keepalive = #on;)),
        Setting::MaxHeaderBytes(n) => Some(quote!(service.options_mut().max_header_bytes = #n;)),
        Setting::ProxyProtocol(required) => {
            let rt = rt();
            let mode = super::proxy_protocol_mode(*required);
            Some(quote!(
                service.options_mut().proxy_protocol =
                    #rt::listen::proxy_protocol::ProxyProtocol::#mode;
            ))
        }
        Setting::ClientTimeout(key, d) if key == "header_read" || key == "write" => {
            let field = Ident::new(&format!("{key}_timeout"), Span::call_site());
            let d = duration(*d);
            Some(quote!(service.options_mut().#field = #d;))
        }
        _ => None,
    });
    quote!(#(#sets)*)
}

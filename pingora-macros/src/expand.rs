//! Code generation: a checked model becomes a struct, its `ProxyHttp` impl and a few
//! constructors. The generated code only wires runtime types (`Router`, `UpstreamGroup`,
//! `ProxyPipeline`, the phase adapters) and names everything through
//! `::pingora_dsl::__private`, so a user crate needs no other dependency.

use std::net::SocketAddr;
use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use crate::model::*;
use crate::phase::Phase;

/// Expands every proxy of the invocation.
pub fn expand(proxies: &Proxies) -> TokenStream {
    proxies.proxies.iter().map(expand_proxy).collect()
}

fn rt() -> TokenStream {
    quote!(::pingora_dsl::__private::runtime)
}

fn expand_proxy(p: &Proxy) -> TokenStream {
    if p.kind != Kind::Http {
        return expand_l4(p);
    }
    let rt = rt();
    let name = &p.name;
    let vis = &p.vis;
    let attrs = &p.attrs;
    let name_str = name.to_string();
    let user_ctx = match p.ctx.first() {
        Some((_, ty)) => quote!(#ty),
        None => quote!(()),
    };
    let new_user_ctx = match p.ctx.first() {
        Some((_, ty)) => quote_spanned!(ty.span()=> <#ty as ::core::default::Default>::default()),
        None => quote!(()),
    };
    let user_peer = p.phases.iter().any(|d| d.phase == Phase::UpstreamPeer);
    let (listen, tls_listens) = expand_listens(p);

    let groups = p.upstreams.iter().map(expand_group);
    let routes: Vec<TokenStream> = if p.routes.is_empty() && !user_peer && p.upstreams.len() == 1 {
        vec![quote!(#rt::proxy::route::Route::new(
            #rt::proxy::route::RouteMatch::default(),
            #rt::proxy::route::RouteAction::Upstream(0),
        ))]
    } else {
        p.routes
            .iter()
            .map(|r| expand_route(r, &p.upstreams))
            .collect()
    };
    let (req_edits, resp_edits) = split_edits(&p.edits);
    let rate_limits: Vec<TokenStream> = p
        .rate_limits
        .iter()
        .map(|decl| {
            let limit = decl.limit.base10_parse::<u64>().unwrap_or(1);
            let per = duration(decl.per.value().unwrap_or(Duration::from_secs(1)));
            let key = match &decl.by {
                Some((kind, Some(name))) if kind == "header" => {
                    let name = name.value().to_ascii_lowercase();
                    quote!(#rt::proxy::route::rate::RateKey::Header(#rt::HeaderName::from_static(#name)))
                }
                Some((kind, _)) if kind == "route" => quote!(#rt::proxy::route::rate::RateKey::Route),
                _ => quote!(#rt::proxy::route::rate::RateKey::ClientIp),
            };
            quote!(#rt::proxy::route::rate::RateLimit::new(#limit, #per, #key))
        })
        .collect();
    let any_request_edits = !p.edits.is_empty()
        && p.edits.iter().any(|e| e.side == EditSide::Request)
        || p.routes
            .iter()
            .any(|r| r.edits.iter().any(|e| e.side == EditSide::Request));
    let any_response_edits = p.edits.iter().any(|e| e.side == EditSide::Response)
        || p.routes
            .iter()
            .any(|r| r.edits.iter().any(|e| e.side == EditSide::Response));
    // Resends after a broken connection need a copy of the request (and passive health
    // the outcome of a broken one). Whether a group retries is read per request, since the
    // config file may set `retry` where the declaration does not: a group with `retry 0`
    // asks for no copy, so a request to it pays one lookup.
    let router_peers = !p.phases.iter().any(|d| d.phase == Phase::UpstreamPeer);
    let any_retries = (router_peers && !p.upstreams.is_empty())
        || p.upstreams.iter().any(|u| !u.passive.is_empty());

    let phases = expand_phases(p, &user_ctx, any_request_edits, any_response_edits);
    let replay = any_retries.then(|| {
        quote! {
            fn replay_buffer(
                &self,
                session: &#rt::proxy::Session,
                ctx: &Self::Ctx,
            ) -> ::std::option::Option<usize> {
                self.router.replay_buffer(session, ctx)
            }

            fn error_while_proxy(
                &self,
                session: &mut #rt::proxy::Session,
                peer: &#rt::upstream::HttpPeer,
                ctx: &mut Self::Ctx,
                error: #rt::Error,
            ) -> #rt::Error {
                self.router.error_while_proxy(session, ctx, error)
            }
        }
    });
    let options = expand_options(&p.settings);
    let http_options = expand_http_options(&p.settings);
    let layers = expand_layers(&p.layers);
    let declare_admin = declare_admin(p);

    quote! {
        #(#attrs)*
        #[derive(Debug)]
        #vis struct #name {
            router: #rt::proxy::route::Router,
        }

        #[allow(dead_code)]
        impl #name {
            /// The cleartext listening addresses declared with `listen` (TLS ones are
            /// added by [`service`](Self::service)).
            pub const LISTEN: &'static [&'static str] = &[#(#listen),*];

            /// The proxy with its declared upstreams, routes and header edits.
            pub fn new() -> Self {
                #name {
                    router: #rt::proxy::route::Router::new(
                        ::std::vec![#(#groups),*],
                        ::std::vec![#(#routes),*],
                    )
                    .with_request_edits(::std::vec![#(#req_edits),*])
                    .with_response_edits(::std::vec![#(#resp_edits),*])
                    .with_rate_limits(::std::vec![#(#rate_limits),*])
                    .with_fallthrough(#user_peer),
                }
            }

            /// The router exactly as declared (what a config reload starts from).
            pub fn declared_router() -> #rt::proxy::route::Router {
                Self::new().router
            }

            /// The routes and upstream groups.
            pub fn router(&self) -> &#rt::proxy::route::Router {
                &self.router
            }

            /// Mutable routes and upstream groups, e.g. to replace peers before serving.
            pub fn router_mut(&mut self) -> &mut #rt::proxy::route::Router {
                &mut self.router
            }

            /// The proxy options declared (`via`, `forwarded_for`, `client_timeout body_read`/`body_total`,
            /// `max_idle_per_peer`), defaults elsewhere.
            pub fn options() -> #rt::proxy::ProxyOptions {
                #options
            }

            /// The per-connection pipeline: the declared layers, in order, around the phases.
            pub fn pipeline(
                self,
            ) -> #rt::proxy::ProxyPipeline<Self, impl #rt::proxy::ProxyLayer<Self>> {
                self.pipeline_with(Self::options())
            }

            /// The pipeline with `options` in place of the declared ones.
            pub fn pipeline_with(
                self,
                options: #rt::proxy::ProxyOptions,
            ) -> #rt::proxy::ProxyPipeline<Self, impl #rt::proxy::ProxyLayer<Self>> {
                #rt::proxy::ProxyPipeline::new(self, options, #layers)
            }

            /// A listening service on the declared addresses, for `Server::add_service`
            /// (or `spawn` in tests); replace the addresses with `clear_tcp`/`add_tcp`.
            pub fn service(
                self,
            ) -> #rt::downstream::HttpService<
                #rt::proxy::ProxyPipeline<Self, impl #rt::proxy::ProxyLayer<Self>>,
            > {
                self.service_with(Self::options())
            }

            /// The service with `options` in place of the declared ones.
            pub fn service_with(
                self,
                options: #rt::proxy::ProxyOptions,
            ) -> #rt::downstream::HttpService<
                #rt::proxy::ProxyPipeline<Self, impl #rt::proxy::ProxyLayer<Self>>,
            > {
                let mut service =
                    #rt::downstream::HttpService::new(#name_str, self.pipeline_with(options));
                for addr in Self::LISTEN {
                    service.add_tcp(addr);
                }
                #(#tls_listens)*
                #http_options
                service
            }

            /// A complete `main`: parses the command line (`-c FILE`, `-t`,
            /// `--print-config`, `-d`, `-u`, `--listen`, `--upstream`, `--threads`,
            /// `--help`), then serves until SIGINT or SIGTERM, or until SIGQUIT handed the
            /// listening sockets to a new process.
            pub fn run() -> ::std::process::ExitCode {
                Self::run_with(#rt::server::cli::ProxyCli::from_env())
            }

            /// Like [`run`](Self::run), with a command line built by the caller.
            pub fn run_with(mut cli: #rt::server::cli::ProxyCli) -> ::std::process::ExitCode {
                #declare_admin
                #rt::server::cli::run(#name_str, cli, |cli| {
                    let mut proxy = Self::new();
                    let mut options = Self::options();
                    cli.configure_options(#name_str, &mut options)?;
                    let d = cli.prepare(
                        #name_str,
                        proxy.router_mut(),
                        Self::declared_router,
                        Self::LISTEN,
                        &options,
                    )?;
                    let mut service = proxy.service_with(options);
                    service.clear_tcp();
                    for addr in &d.listen {
                        service.add_tcp(addr);
                    }
                    cli.apply_tls(&mut service)?;
                    ::std::result::Result::Ok((service, d.tasks, d.effective, d.reloader))
                })
            }
        }

        impl ::core::default::Default for #name {
            fn default() -> Self {
                Self::new()
            }
        }

        #[allow(unused_variables, clippy::let_unit_value, clippy::unit_arg, clippy::needless_return)]
        impl #rt::proxy::ProxyHttp for #name {
            type Ctx = #rt::proxy::route::RouteCtx<#user_ctx>;

            fn new_ctx(&self) -> Self::Ctx {
                #rt::proxy::route::RouteCtx::new(#new_user_ctx)
            }

            #phases
            #replay

            fn observed_routes(
                &self,
            ) -> ::std::option::Option<(
                ::std::vec::Vec<#rt::service::RouteView>,
                ::std::vec::Vec<#rt::lb::UpstreamGroup>,
            )> {
                ::std::option::Option::Some(self.router.observed())
            }
        }
    }
}

fn socket_addr(addr: &SocketAddr) -> TokenStream {
    match addr {
        SocketAddr::V4(a) => {
            let [o1, o2, o3, o4] = a.ip().octets();
            let port = a.port();
            quote!(::std::net::SocketAddr::new(
                ::std::net::IpAddr::V4(::std::net::Ipv4Addr::new(#o1, #o2, #o3, #o4)),
                #port,
            ))
        }
        SocketAddr::V6(a) => {
            let [s0, s1, s2, s3, s4, s5, s6, s7] = a.ip().segments();
            let (port, flow, scope) = (a.port(), a.flowinfo(), a.scope_id());
            quote!(::std::net::SocketAddr::V6(::std::net::SocketAddrV6::new(
                ::std::net::Ipv6Addr::new(#s0, #s1, #s2, #s3, #s4, #s5, #s6, #s7),
                #port,
                #flow,
                #scope,
            )))
        }
    }
}

fn duration(d: Duration) -> TokenStream {
    let micros = d.as_micros() as u64;
    quote!(::std::time::Duration::from_micros(#micros))
}

fn expand_group(up: &Upstream) -> TokenStream {
    let rt = rt();
    let name = up.name.to_string();
    let backends = up
        .peers
        .iter()
        .flat_map(|(_, peers)| peers)
        .filter_map(|peer| {
            let addr = socket_addr(&peer.addr?);
            let weight = peer.weight_value;
            Some(quote!(#rt::lb::Backend::weighted(#addr, #weight)))
        });
    let select = up.select.first();
    let strategy = match select.map(|s| s.name.to_string()).as_deref() {
        Some("random") => quote!(#rt::lb::Strategy::Random),
        Some("least_conn") => quote!(#rt::lb::Strategy::LeastConnections),
        Some("consistent_hash") => quote!(#rt::lb::Strategy::ConsistentHash),
        Some("hash") => quote!(#rt::lb::Strategy::Hash),
        Some("custom") => match select.and_then(|s| s.custom.as_ref()) {
            Some(expr) => quote_spanned!(expr.span()=>
                #rt::lb::Strategy::Custom(#rt::lb::custom_strategy(#expr))
            ),
            None => quote!(#rt::lb::Strategy::RoundRobin),
        },
        _ => quote!(#rt::lb::Strategy::RoundRobin),
    };
    let key = match select.and_then(|s| s.key.as_ref()) {
        None => quote!(#rt::lb::RequestKey::None),
        Some(k) => match (k.kind.to_string().as_str(), &k.arg) {
            ("header", Some(name)) => {
                let name = name.value().to_ascii_lowercase();
                quote!(#rt::lb::RequestKey::Header(#rt::HeaderName::from_static(#name)))
            }
            ("cookie", Some(name)) => {
                quote!(#rt::lb::RequestKey::Cookie(::std::string::String::from(#name)))
            }
            ("path", _) => quote!(#rt::lb::RequestKey::Path),
            _ => quote!(#rt::lb::RequestKey::ClientIp),
        },
    };
    let health = up.health.first().map(|h| {
        let option = |name: &str| h.options.iter().find(|(o, _)| o == name).map(|(_, v)| v);
        let duration_of = |name: &str, default_ms: u64| match option(name) {
            Some(HealthValue::Duration(d)) => {
                duration(d.value().unwrap_or(Duration::from_millis(default_ms)))
            }
            _ => duration(Duration::from_millis(default_ms)),
        };
        let count_of = |name: &str, default: u32| match option(name) {
            Some(HealthValue::Count(n)) => n.base10_parse::<u32>().unwrap_or(default),
            _ => default,
        };
        let every = match option("every") {
            Some(HealthValue::Duration(d)) => d.value().unwrap_or(Duration::from_secs(5)),
            _ => Duration::from_secs(5),
        };
        // Without an explicit timeout: 2 s, but never longer than the interval.
        let default_timeout = every.min(Duration::from_secs(2)).as_millis() as u64;
        let (interval, timeout) = (duration(every), duration_of("timeout", default_timeout));
        let (rise, fall) = (count_of("rise", 2), count_of("fall", 3));
        let kind = match &h.path {
            None => quote!(#rt::lb::HealthKind::Tcp),
            Some(path) => {
                let host = match option("host") {
                    Some(HealthValue::Text(t)) => {
                        quote!(::std::option::Option::Some(::std::string::String::from(#t)))
                    }
                    _ => quote!(::std::option::Option::None),
                };
                let (low, high) = match option("status") {
                    Some(HealthValue::Status(low, high)) => {
                        let lo = low.base10_parse::<u16>().unwrap_or(200);
                        (
                            lo,
                            high.as_ref()
                                .map_or(lo, |h| h.base10_parse::<u16>().unwrap_or(lo)),
                        )
                    }
                    _ => (200u16, 399u16),
                };
                quote!(#rt::lb::HealthKind::Http {
                    path: ::std::string::String::from(#path),
                    host: #host,
                    status: #low..=#high,
                })
            }
        };
        quote!(.with_health_check(#rt::lb::HealthCheck {
            kind: #kind,
            interval: #interval,
            timeout: #timeout,
            rise: #rise,
            fall: #fall,
        }))
    });
    let passive = up.passive.first().map(|p| {
        let failures = p.failures.base10_parse::<u32>().unwrap_or(3);
        let eject = duration(p.eject.value().unwrap_or(Duration::from_secs(10)));
        quote!(.with_passive_health(#rt::lb::PassiveHealth {
            failures: #failures,
            eject_for: #eject,
        }))
    });
    let fail_open = !up.fail_open.is_empty();
    let http2 = match up.http2.first() {
        None => quote!(),
        Some((_, false)) => quote!(.with_http(#rt::upstream::UpstreamHttp::Http2)),
        Some((_, true)) => quote!(.with_http(#rt::upstream::UpstreamHttp::Negotiate)),
    };
    let tls = match up.tls.first() {
        None => quote!(),
        Some(decl) => {
            let opt = |lit: &Option<syn::LitStr>| match lit {
                Some(l) => quote!(::std::option::Option::Some(#l.into())),
                None => quote!(::std::option::Option::None),
            };
            let sni = opt(&decl.sni);
            let ca = opt(&decl.ca);
            let insecure = decl.insecure.is_some();
            let cert = match &decl.cert {
                Some((c, k)) => quote!(::std::option::Option::Some(#rt::listen::tls::CertKey {
                    cert: #c.into(),
                    key: #k.into(),
                })),
                None => quote!(::std::option::Option::None),
            };
            quote!(.with_tls(&#rt::upstream::UpstreamTls {
                sni: #sni,
                ca_file: #ca,
                insecure: #insecure,
                client_cert: #cert,
            }))
        }
    };
    let discovery = up.discover.first().map(|d| {
        let target = d.target.value();
        let default_ms = if d.kind == "dns" { 30_000 } else { 5_000 };
        let every = duration(
            d.every
                .as_ref()
                .and_then(|e| e.value().ok())
                .unwrap_or(Duration::from_millis(default_ms)),
        );
        let source = if d.kind == "dns" {
            let (host, port) = target.rsplit_once(':').unwrap_or((target.as_str(), "80"));
            let port: u16 = port.parse().unwrap_or(80);
            quote!(#rt::lb::discovery::DnsDiscovery::new(#host, #port))
        } else {
            quote!(#rt::lb::discovery::FileDiscovery::new(#target))
        };
        quote!(.with_discovery(#source, #every))
    });
    let retry = up.retry.first();
    let backoff = retry
        .and_then(|r| r.backoff.as_ref())
        .and_then(|b| b.value().ok())
        .map(|d| {
            let d = duration(d);
            quote!(.with_retry_backoff(#d))
        });
    let replay = retry
        .and_then(RetryDecl::replay_bytes)
        .and_then(Result::ok)
        .map(|bytes| quote!(.with_replay_limit(#bytes)));
    let any_method = retry.is_some_and(|r| r.any_method.is_some());
    let timeouts = up.timeouts.iter().filter_map(|t| {
        let field = Ident::new(&t.key.to_string(), Span::call_site());
        let value = duration(t.duration?);
        Some(quote!(#field: #value,))
    });
    let retries = up.retries;
    quote! {
        #rt::lb::UpstreamGroup::new(
            #name,
            ::std::vec![#(#backends),*],
            #strategy,
        )
        .with_timeouts(#rt::upstream::PeerTimeouts {
            #(#timeouts)*
            ..::core::default::Default::default()
        })
        .with_retries(#retries)
        .with_key(#key)
        .with_fail_open(#fail_open)
        #tls
        #http2
        .with_retry_any_method(#any_method)
        #backoff
        #replay
        #health
        #passive
        #discovery
    }
}

fn status(lit: &syn::LitInt) -> TokenStream {
    let rt = rt();
    let code: u16 = lit.base10_parse().unwrap_or(500);
    // Checked at compile time, so the fallback is never taken.
    quote!(match #rt::StatusCode::from_u16(#code) {
        ::std::result::Result::Ok(status) => status,
        ::std::result::Result::Err(_) => #rt::StatusCode::INTERNAL_SERVER_ERROR,
    })
}

fn expand_route(route: &RouteDecl, upstreams: &[Upstream]) -> TokenStream {
    let rt = rt();
    let host = match &route.host {
        Some(h) => quote!(::std::option::Option::Some(#rt::proxy::route::HostPattern::parse(#h))),
        None => quote!(::std::option::Option::None),
    };
    let path = match &route.path {
        Some(p) => quote!(::std::option::Option::Some(::std::string::String::from(#p))),
        None => quote!(::std::option::Option::None),
    };
    let methods = route.methods.iter().map(|m| {
        let m = Ident::new(&m.to_string(), m.span());
        quote!(#rt::Method::#m)
    });
    let action = match &route.target {
        Target::Upstream(name) => {
            let index = upstreams.iter().position(|u| u.name == *name).unwrap_or(0);
            quote!(#rt::proxy::route::RouteAction::Upstream(#index))
        }
        Target::Respond {
            status: s, body, ..
        } => {
            let s = status(s);
            let body = body.as_ref().map(|b| b.value()).unwrap_or_default();
            let body = syn::LitByteStr::new(body.as_bytes(), Span::call_site());
            quote!(#rt::proxy::route::RouteAction::Respond(#s, #rt::Bytes::from_static(#body)))
        }
        Target::Redirect {
            status: s,
            location,
            ..
        } => {
            let s = status(s);
            quote!(#rt::proxy::route::RouteAction::Redirect(#s, #rt::HeaderValue::from_static(#location)))
        }
    };
    let (req, resp) = split_edits(&route.edits);
    quote! {
        #rt::proxy::route::Route::new(
            #rt::proxy::route::RouteMatch {
                host: #host,
                path_prefix: #path,
                methods: ::std::vec![#(#methods),*],
            },
            #action,
        )
        .with_request_edits(::std::vec![#(#req),*])
        .with_response_edits(::std::vec![#(#resp),*])
    }
}

/// Header edits as runtime values, split into request and response edits. Names and values
/// were checked by `validate`, so `from_static` cannot fail.
fn split_edits(edits: &[HeaderEditDecl]) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let rt = rt();
    let mut request = Vec::new();
    let mut response = Vec::new();
    for edit in edits {
        let name = edit.name.value().to_ascii_lowercase();
        let tokens = match &edit.value {
            Some(v) => quote!(#rt::proxy::route::HeaderEdit::Set(
                #rt::HeaderName::from_static(#name),
                #rt::HeaderValue::from_static(#v),
            )),
            None => {
                quote!(#rt::proxy::route::HeaderEdit::Remove(#rt::HeaderName::from_static(#name)))
            }
        };
        match edit.side {
            EditSide::Request => request.push(tokens),
            EditSide::Response => response.push(tokens),
        }
    }
    (request, response)
}

fn expand_options(settings: &[Setting]) -> TokenStream {
    let rt = rt();
    let mut sets = Vec::new();
    for s in settings {
        match s {
            Setting::Via(_, v) => sets.push(quote!(
                options.via = ::std::option::Option::Some(#rt::HeaderValue::from_static(#v));
            )),
            Setting::ForwardedFor(_, on) => sets.push(quote!(options.forwarded_for = #on;)),
            Setting::MaxIdlePerPeer(_, n) => {
                let n: usize = n.base10_parse().unwrap_or(1024);
                sets.push(quote!(options.client.max_idle_per_peer = #n;));
            }
            Setting::ClientTimeouts(_, list) => {
                for t in list {
                    let Some(d) = t.duration else { continue };
                    let d = duration(d);
                    if t.key == "body_read" {
                        sets.push(quote!(options.body_read_timeout = #d;));
                    } else if t.key == "body_total" {
                        sets.push(quote!(options.body_total_timeout = #d;));
                    }
                }
            }
            Setting::TunnelIdle(_, d) => {
                if let Ok(d) = d.value() {
                    let d = duration(d);
                    sets.push(quote!(options.tunnel_idle_timeout = #d;));
                }
            }
            Setting::AllowUpgrade(_, protocols) if protocols.is_empty() => sets.push(quote!(
                options.allowed_upgrades = #rt::proxy::AllowedUpgrades::none();
            )),
            Setting::AllowUpgrade(_, protocols) => sets.push(quote!(
                // Checked when the proxy was declared: the fallback cannot happen, and would
                // allow no upgrade rather than more.
                options.allowed_upgrades = #rt::proxy::AllowedUpgrades::new([#(#protocols),*])
                    .unwrap_or_else(|_| #rt::proxy::AllowedUpgrades::none());
            )),
            Setting::AccessLog(_, target, format) => {
                let format = match format.as_ref().map(|f| f.to_string()).as_deref() {
                    Some("json") => quote!(#rt::observe::access_log::AccessLogFormat::Json),
                    _ => quote!(#rt::observe::access_log::AccessLogFormat::Combined),
                };
                sets.push(quote!(
                    options.access_log = ::std::option::Option::Some(
                        #rt::observe::access_log::AccessLog::new(
                            #rt::observe::access_log::AccessLogTarget::parse(#target),
                            #format,
                        ),
                    );
                ));
            }
            Setting::Keepalive(..) | Setting::MaxHeaderBytes(..) => {}
        }
    }
    if sets.is_empty() {
        return quote!(::core::default::Default::default());
    }
    quote!({
        let mut options = #rt::proxy::ProxyOptions::default();
        #(#sets)*
        options
    })
}

fn expand_http_options(settings: &[Setting]) -> TokenStream {
    let mut sets = Vec::new();
    for s in settings {
        match s {
            Setting::Keepalive(_, on) => sets.push(quote!(service.options_mut().keepalive = #on;)),
            Setting::MaxHeaderBytes(_, n) => {
                let n: usize = n.base10_parse().unwrap_or(65536);
                sets.push(quote!(service.options_mut().max_header_bytes = #n;));
            }
            Setting::ClientTimeouts(_, list) => {
                for t in list {
                    let Some(d) = t.duration else { continue };
                    let d = duration(d);
                    if t.key == "header_read" {
                        sets.push(quote!(service.options_mut().header_read_timeout = #d;));
                    } else if t.key == "write" {
                        sets.push(quote!(service.options_mut().write_timeout = #d;));
                    }
                }
            }
            _ => {}
        }
    }
    quote!(#(#sets)*)
}

/// The declared layers, first declared outermost. Each is evaluated once, and checked
/// against the service it wraps so a type error points at that layer.
fn expand_layers(layers: &[syn::Expr]) -> TokenStream {
    let rt = rt();
    if layers.is_empty() {
        return quote!(#rt::proxy::Identity::new());
    }
    let names: Vec<Ident> = layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let span = Span::mixed_site().located_at(layer.span());
            Ident::new(&format!("__layer{i}"), span)
        })
        .collect();
    let service = Ident::new("__service", Span::mixed_site());
    let lets = names
        .iter()
        .zip(layers)
        .map(|(name, layer)| quote_spanned!(layer.span()=> let #name = #layer;));
    let checks = names.iter().zip(layers).rev().map(|(name, layer)| {
        quote_spanned!(layer.span()=> let #service = #rt::proxy::phase::check_layer(#service, &#name);)
    });
    // The innermost layer starts the stack (no `Identity` at its core, so error messages
    // name only the user's layers).
    let mut rest = names.iter().rev();
    let mut stack = match rest.next() {
        Some(innermost) => quote!(#innermost),
        None => quote!(#rt::proxy::Identity::new()),
    };
    for name in rest {
        stack = quote!(#rt::proxy::Stack::new(#stack, #name));
    }
    quote!({
        #(#lets)*
        let #service = ::std::marker::PhantomData::<#rt::proxy::HttpProxy<Self>>;
        #(#checks)*
        let _ = #service;
        #stack
    })
}

/// One argument of a generated phase method: its internal name, type, and the value a user
/// parameter in that position is bound to.
struct Arg {
    ident: Ident,
    ty: TokenStream,
    user_ty: TokenStream,
    user_value: TokenStream,
}

fn args(phase: Phase, user_ctx: &TokenStream) -> Vec<Arg> {
    let rt = rt();
    let arg = |name: &str, ty: TokenStream, user_ty: TokenStream| {
        let ident = Ident::new(&format!("__{name}"), Span::mixed_site());
        Arg {
            user_value: quote!(#ident),
            ident,
            ty,
            user_ty,
        }
    };
    let session_mut = || {
        arg(
            "session",
            quote!(&mut #rt::proxy::Session),
            quote!(&mut #rt::proxy::Session),
        )
    };
    let ctx = || {
        let mut a = arg("ctx", quote!(&mut Self::Ctx), quote!(&mut #user_ctx));
        let ident = &a.ident;
        a.user_value = quote!(&mut #ident.user);
        a
    };
    match phase {
        Phase::EarlyRequestFilter | Phase::RequestFilter | Phase::UpstreamPeer => {
            vec![session_mut(), ctx()]
        }
        Phase::UpstreamRequestFilter => vec![
            session_mut(),
            arg(
                "upstream_request",
                quote!(&mut #rt::proxy::RequestHeader),
                quote!(&mut #rt::proxy::RequestHeader),
            ),
            ctx(),
        ],
        Phase::FailToConnect => vec![
            session_mut(),
            arg(
                "peer",
                quote!(&#rt::upstream::HttpPeer),
                quote!(&#rt::upstream::HttpPeer),
            ),
            ctx(),
            arg("error", quote!(#rt::Error), quote!(#rt::Error)),
        ],
        Phase::UpstreamResponseFilter | Phase::ResponseFilter => {
            let name = if phase == Phase::ResponseFilter {
                "response"
            } else {
                "upstream_response"
            };
            vec![
                session_mut(),
                arg(
                    name,
                    quote!(&mut #rt::proxy::ResponseHeader),
                    quote!(&mut #rt::proxy::ResponseHeader),
                ),
                ctx(),
            ]
        }
        Phase::Logging => vec![
            arg(
                "session",
                quote!(&#rt::proxy::Session),
                quote!(&#rt::proxy::Session),
            ),
            arg(
                "error",
                quote!(::std::option::Option<&#rt::Error>),
                quote!(::std::option::Option<&#rt::Error>),
            ),
            ctx(),
        ],
    }
}

/// The user's code for `phase` as an expression of the phase method's return type, or
/// `None` if the phase was not declared.
fn user_call(p: &Proxy, phase: Phase, args: &[Arg]) -> Option<TokenStream> {
    let rt = rt();
    let decl = p.phases.iter().find(|d| d.phase == phase)?;
    Some(match &decl.body {
        PhaseBody::Inline { params, block, .. } => {
            let binds = params.iter().zip(args).map(|(param, arg)| {
                let (ty, value) = (&arg.user_ty, &arg.user_value);
                quote!(let #param: #ty = #value;)
            });
            let output = match phase {
                Phase::EarlyRequestFilter
                | Phase::UpstreamRequestFilter
                | Phase::UpstreamResponseFilter
                | Phase::ResponseFilter => {
                    quote_spanned!(block.span()=> #rt::proxy::phase::phase_result::<(), _>(#block))
                }
                Phase::RequestFilter => quote_spanned!(block.span()=>
                    #rt::proxy::phase::phase_result::<#rt::proxy::Flow, _>(#block)
                ),
                Phase::UpstreamPeer => quote_spanned!(block.span()=>
                    #rt::proxy::phase::phase_result::<#rt::upstream::HttpPeer, _>(#block)
                ),
                Phase::FailToConnect => quote!({
                    let error: #rt::Error = #block;
                    error
                }),
                Phase::Logging => quote!({
                    let () = #block;
                }),
            };
            quote!({
                #(#binds)*
                #output
            })
        }
        PhaseBody::Path(path) => {
            let trait_name = format_ident!(
                "{}Fn",
                phase
                    .name()
                    .split('_')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect::<String>()
            );
            let values = args.iter().map(|a| &a.user_value);
            let call = quote_spanned!(path.span()=> #rt::proxy::phase::#trait_name::call(#path, #(#values),*));
            match phase {
                Phase::FailToConnect | Phase::UpstreamResponseFilter | Phase::Logging => call,
                _ => quote_spanned!(path.span()=> #call.await),
            }
        }
    })
}

fn expand_phases(
    p: &Proxy,
    user_ctx: &TokenStream,
    request_edits: bool,
    response_edits: bool,
) -> TokenStream {
    let passive = p.upstreams.iter().any(|u| !u.passive.is_empty());
    let rt = rt();
    let user_peer = p.phases.iter().any(|d| d.phase == Phase::UpstreamPeer);
    let mut out = TokenStream::new();
    for phase in Phase::ALL {
        let args = args(phase, user_ctx);
        let user = user_call(p, phase, &args);
        let (s, x, c, e) = (
            &args[0].ident,
            args.get(1).map(|a| &a.ident),
            args.iter()
                .find(|a| a.ident.to_string().contains("ctx"))
                .map(|a| &a.ident),
            args.get(3).map(|a| &a.ident),
        );
        let body = match phase {
            Phase::RequestFilter => {
                let routed = !(user_peer && p.routes.is_empty());
                if !routed && user.is_none() {
                    continue;
                }
                let route = routed.then(|| {
                    quote!(if let ::std::option::Option::Some(flow) = self.router.request_filter(#s, #c) {
                        return ::std::result::Result::Ok(flow);
                    })
                });
                let rest =
                    user.unwrap_or(quote!(::std::result::Result::Ok(#rt::proxy::Flow::Continue)));
                quote!(#route #rest)
            }
            Phase::UpstreamPeer => user.unwrap_or(quote!(self.router.upstream_peer(#s, #c).await)),
            Phase::Logging => {
                if !passive && user.is_none() {
                    continue;
                }
                let record = passive.then(|| quote!(self.router.logging(#s, #x, #c);));
                let rest = user.unwrap_or_default();
                quote!(#record #rest)
            }
            Phase::UpstreamRequestFilter | Phase::ResponseFilter => {
                let edits = if phase == Phase::ResponseFilter {
                    response_edits
                } else {
                    request_edits
                };
                if !edits && user.is_none() {
                    continue;
                }
                let method = Ident::new(phase.name(), Span::call_site());
                let edit = edits.then(|| quote!(self.router.#method(#c, #x);));
                let rest = user.unwrap_or(quote!(::std::result::Result::Ok(())));
                quote!(#edit #rest)
            }
            Phase::FailToConnect => {
                // A failed connect sent nothing: the router tries the group's other peers
                // (and records it for passive health) whenever it chooses the peers.
                let router_peers = !user_peer;
                if !router_peers && user.is_none() {
                    continue;
                }
                let retry =
                    router_peers.then(|| quote!(let #e = self.router.fail_to_connect(#s, #c, #e);));
                let rest = user.unwrap_or(quote!(#e));
                quote!(#retry #rest)
            }
            _ => match user {
                Some(user) => user,
                None => continue,
            },
        };
        let method = Ident::new(phase.name(), Span::call_site());
        let params = args.iter().map(|a| {
            let (ident, ty) = (&a.ident, &a.ty);
            quote!(#ident: #ty)
        });
        let signature = match phase {
            Phase::EarlyRequestFilter | Phase::UpstreamRequestFilter | Phase::ResponseFilter => {
                quote!(async fn #method(&self, #(#params),*) -> #rt::Result<()>)
            }
            Phase::RequestFilter => {
                quote!(async fn #method(&self, #(#params),*) -> #rt::Result<#rt::proxy::Flow>)
            }
            Phase::UpstreamPeer => {
                quote!(async fn #method(&self, #(#params),*) -> #rt::Result<#rt::upstream::HttpPeer>)
            }
            Phase::UpstreamResponseFilter => {
                quote!(fn #method(&self, #(#params),*) -> #rt::Result<()>)
            }
            Phase::FailToConnect => quote!(fn #method(&self, #(#params),*) -> #rt::Error),
            Phase::Logging => quote!(fn #method(&self, #(#params),*)),
        };
        out.extend(quote!(#signature { #body }));
    }
    out
}

/// The cleartext listening addresses, and the statements adding the TLS listeners to a
/// `service` being built.
fn expand_listens(p: &Proxy) -> (Vec<String>, Vec<TokenStream>) {
    let rt = rt();
    let listen = p
        .listens
        .iter()
        .filter(|l| l.tls.is_none())
        .filter_map(|l| l.addr)
        .map(|a| a.to_string())
        .collect();
    let tls_listens = p
        .listens
        .iter()
        .filter_map(|l| Some((l.addr?, l.tls.as_ref()?)))
        .map(|(addr, tls)| {
            let addr = addr.to_string();
            let certs = tls.certs.iter().map(
                |(cert, key)| quote!(#rt::listen::tls::CertKey { cert: #cert.into(), key: #key.into() }),
            );
            let client_ca = match tls.client_ca.first() {
                Some((_, ca)) => quote!(::std::option::Option::Some(#ca.into())),
                None => quote!(::std::option::Option::None),
            };
            quote!(service.add_tls(#addr, #rt::listen::tls::TlsSettings {
                certs: ::std::vec![#(#certs),*],
                client_ca: #client_ca,
                handshake_timeout: ::std::option::Option::None,
            });)
        })
        .collect();
    (listen, tls_listens)
}

/// A `tcp_proxy!` or `udp_proxy!`: its one group (in a router, so the config file,
/// `--upstream` and SIGHUP reloads work as for HTTP proxies) and a layer-4 service.
/// `admin "ADDR";` becomes the command line's declared admin address.
fn declare_admin(p: &Proxy) -> TokenStream {
    match p.admin.first() {
        Some((_, addr)) => quote!(
            cli.declared_admin = ::std::option::Option::Some(::std::string::String::from(#addr));
        ),
        None => quote!(let _ = &mut cli;),
    }
}

fn expand_l4(p: &Proxy) -> TokenStream {
    let declare_admin = declare_admin(p);
    let rt = rt();
    let name = &p.name;
    let vis = &p.vis;
    let attrs = &p.attrs;
    let name_str = name.to_string();
    let (listen, tls_listens) = expand_listens(p);
    let groups = p.upstreams.iter().map(expand_group);
    let (service_ty, add, clear, transport) = if p.kind == Kind::Udp {
        (
            quote!(#rt::l4::udp::UdpProxyService),
            quote!(add_udp),
            quote!(clear_listen),
            quote!(#rt::server::layer4::Transport::Udp),
        )
    } else {
        (
            quote!(#rt::l4::tcp::TcpProxyService),
            quote!(add_tcp),
            quote!(clear_tcp),
            quote!(#rt::server::layer4::Transport::Tcp),
        )
    };
    let apply_tls = (p.kind == Kind::Tcp).then(|| quote!(cli.apply_tls(&mut service)?;));
    let idle = match p.idle.first().and_then(|(_, d)| d.value().ok()) {
        Some(d) => duration(d),
        None if p.kind == Kind::Udp => quote!(#rt::l4::udp::DEFAULT_IDLE_TIMEOUT),
        None => quote!(#rt::l4::tcp::DEFAULT_IDLE_TIMEOUT),
    };
    quote! {
        #(#attrs)*
        #[derive(Debug)]
        #vis struct #name {
            router: #rt::proxy::route::Router,
        }

        #[allow(dead_code)]
        impl #name {
            /// The cleartext listening addresses declared with `listen`.
            pub const LISTEN: &'static [&'static str] = &[#(#listen),*];

            /// How long a connection may carry nothing: declared with `idle`, or the
            /// default.
            pub const IDLE: ::std::time::Duration = #idle;

            /// The proxy with its declared upstream.
            pub fn new() -> Self {
                #name {
                    router: #rt::proxy::route::Router::new(::std::vec![#(#groups),*], ::std::vec![]),
                }
            }

            /// The upstream exactly as declared (what a config reload starts from).
            pub fn declared_router() -> #rt::proxy::route::Router {
                Self::new().router
            }

            /// The upstream group, in a router (for the config file and `--upstream`).
            pub fn router(&self) -> &#rt::proxy::route::Router {
                &self.router
            }

            /// Mutable access to the upstream group, e.g. to replace peers before serving.
            pub fn router_mut(&mut self) -> &mut #rt::proxy::route::Router {
                &mut self.router
            }

            /// A listening service on the declared addresses, for `Server::add_service`
            /// (or `spawn` in tests).
            pub fn service(self) -> #service_ty {
                let group = self.router.groups()[0].clone();
                let mut service = <#service_ty>::new(#name_str, group);
                for addr in Self::LISTEN {
                    service.#add(addr);
                }
                #(#tls_listens)*
                service.set_idle_timeout(Self::IDLE);
                service
            }

            /// A complete `main`: the command line of every declared proxy (`-c`, `-t`,
            /// `-d`, `-u`, `--listen`, `--upstream`, `--threads`, ...), then serves until
            /// SIGINT or SIGTERM.
            pub fn run() -> ::std::process::ExitCode {
                Self::run_with(#rt::server::cli::ProxyCli::from_env_layer4(#transport))
            }

            /// Like [`run`](Self::run), with a command line built by the caller.
            pub fn run_with(mut cli: #rt::server::cli::ProxyCli) -> ::std::process::ExitCode {
                #declare_admin
                #rt::server::cli::run(#name_str, cli, |cli| {
                    let mut proxy = Self::new();
                    let (d, relay) = cli.prepare_layer4(
                        #name_str,
                        #transport,
                        proxy.router_mut(),
                        Self::declared_router,
                        Self::LISTEN,
                        Self::IDLE,
                    )?;
                    let mut service = proxy.service();
                    service.#clear();
                    for addr in &d.listen {
                        service.#add(addr);
                    }
                    #apply_tls
                    service.set_idle_timeout(relay.idle_timeout);
                    service.set_access_log(relay.access_log);
                    ::std::result::Result::Ok((service, d.tasks, d.effective, d.reloader))
                })
            }
        }

        impl ::core::default::Default for #name {
            fn default() -> Self {
                Self::new()
            }
        }
    }
}

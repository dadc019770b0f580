//! An HTTP proxy (`proxy!`): the struct holding its router, its constructors and services,
//! a `run` that is a whole `main`, and its `ProxyHttp` impl.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use crate::model::Proxy;

use super::phases::{expand_phases, unreachable_phases};
use super::router::{expand_http_options, expand_options, expand_router};
use super::{declared_impl, expand_listens, router_methods, rt, unreachable_body};

/// The whole expansion of one HTTP proxy (see [`super::expand`] for `complete`).
pub fn expand_http(p: &Proxy, complete: bool) -> TokenStream {
    let rt = rt();
    let (name, vis, attrs) = (&p.name, &p.vis, &p.attrs);
    let (listen, _) = expand_listens(p);
    let (new, options) = if complete {
        let router = expand_router(p);
        (quote!(#name { router: #router }), expand_options(p))
    } else {
        (unreachable_body(p), unreachable_body(p))
    };
    let router_methods = router_methods(&new);
    let mut named = std::collections::HashSet::new();
    // A name declared twice is an error reported already: one constant for it.
    let pools = p.upstreams.iter().enumerate().filter(|(_, up)| named.insert(up.name.to_string())).map(|(i, up)| {
        let name = syn::Ident::new(&crate::validate::pool_const(&up.name), up.name.span());
        let doc = format!(
            "The declared pool `{}`: return it from `upstream_peer`, or give it to `Session::use_pool` in a filter, to send a request there.",
            up.name
        );
        let i = i as u32;
        quote!(#[doc = #doc] pub const #name: #rt::lb::PoolId = #rt::lb::PoolId::new(#i);)
    });
    let services = service_methods(p);
    let (run, declared) = run_methods(p);
    let proxy_http = proxy_http_impl(p, complete || p.phases_valid);
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

            #(#pools)*

            #router_methods

            /// The proxy options declared (`via`, `forwarded_for`, `client_timeout body_read`/`body_total`,
            /// `max_idle_per_peer`), defaults elsewhere.
            pub fn options() -> #rt::proxy::ProxyOptions {
                #options
            }

            #services
            #run
        }

        impl ::core::default::Default for #name {
            fn default() -> Self {
                Self::new()
            }
        }

        #proxy_http
        #declared
    }
}

/// `pipeline`, `pipeline_with`, `service` and `service_with`.
fn service_methods(p: &Proxy) -> TokenStream {
    let rt = rt();
    let name_str = p.name.to_string();
    let (_, tls_listens) = expand_listens(p);
    let quic_listens = p.listens.iter().filter(|l| l.quic).map(|l| {
        let addr = l.addr.to_string();
        quote!(service.add_quic(#addr);)
    });
    let http_options = expand_http_options(p);
    let layers = expand_layers(&p.layers);
    // A single layer that is not one is reported at its value, once (see `expand_layers`).
    let layer_span = match p.layers.as_slice() {
        [layer] => layer.span(),
        _ => Span::call_site(),
    };
    let proxy_layer = quote_spanned!(layer_span=> impl #rt::proxy::ProxyLayer<Self>);
    let listener_modes = super::listener_proxy_protocols(p);
    quote! {
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
        ) -> #rt::proxy::ProxyPipeline<Self, #proxy_layer> {
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
            #(#listener_modes)*
            for addr in Self::LISTEN {
                service.add_tcp(addr);
            }
            #(#tls_listens)*
            #(#quic_listens)*
            #http_options
            service
        }
    }
}

/// `run` and `run_with`, which hand over to the runtime's `DeclaredHttp` default method,
/// and the `Declared`/`DeclaredHttp` impls that give it the declaration.
fn run_methods(p: &Proxy) -> (TokenStream, TokenStream) {
    let rt = rt();
    let name = &p.name;
    let methods = quote! {
        /// A complete `main`: parses the command line (`-c FILE`, `-t`,
        /// `--print-config`, `-d`, `-u`, `--listen`, `--upstream`, `--threads`,
        /// `--help`), then serves until SIGINT or SIGTERM, or until SIGQUIT handed the
        /// listening sockets to a new process.
        pub fn run() -> ::std::process::ExitCode {
            Self::run_with(#rt::server::cli::ProxyCli::from_env())
        }

        /// Like [`run`](Self::run), with a command line built by the caller.
        pub fn run_with(cli: #rt::server::cli::ProxyCli) -> ::std::process::ExitCode {
            <Self as #rt::server::declared::DeclaredHttp>::run_declared(cli)
        }
    };
    let declared = declared_impl(p);
    let impls = quote! {
        #declared

        impl #rt::server::declared::DeclaredHttp for #name {
            fn declared_options() -> #rt::proxy::ProxyOptions {
                Self::options()
            }

            fn declared_service(
                self,
                options: #rt::proxy::ProxyOptions,
            ) -> #rt::downstream::HttpService<
                #rt::proxy::ProxyPipeline<Self, impl #rt::proxy::ProxyLayer<Self>>,
            > {
                self.service_with(options)
            }
        }
    };
    (methods, impls)
}

/// The user's context type, and the expression creating it.
fn user_ctx(p: &Proxy) -> (TokenStream, TokenStream) {
    match &p.ctx {
        Some(ty) => (
            quote!(#ty),
            quote_spanned!(ty.span()=> <#ty as ::core::default::Default>::default()),
        ),
        None => (quote!(()), quote!(())),
    }
}

/// `impl ProxyHttp`: the context, the phases (unless `with_phases` is false: malformed
/// phases would only add follow-on errors), and the router's retry hooks.
fn proxy_http_impl(p: &Proxy, with_phases: bool) -> TokenStream {
    let rt = rt();
    let name = &p.name;
    let (user_ctx, new_user_ctx) = user_ctx(p);
    let phases = if with_phases {
        expand_phases(p, &user_ctx)
    } else {
        unreachable_phases(&user_ctx)
    };
    // Resends after a broken connection need a copy of the request (and passive health
    // the outcome of a broken one). Whether a group retries is read per request, since the
    // config file may set `retry` where the declaration does not: a group with `retry 0`
    // asks for no copy, so a request to it pays one lookup.
    let any_retries = (!p.user_peer() && !p.upstreams.is_empty())
        || p.upstreams.iter().any(|u| u.passive.is_some());
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
    quote! {
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

            fn observed_caches(&self) -> ::std::vec::Vec<#rt::service::CacheView> {
                self.router.observed_caches()
            }

            fn observed_shared_limits(
                &self,
            ) -> ::std::vec::Vec<#rt::service::SharedLimitView> {
                self.router.observed_shared_limits()
            }
        }
    }
}

/// The declared layers, first declared outermost. Each is evaluated once, and checked
/// against the service it wraps so a type error points at that layer.
fn expand_layers(layers: &[syn::Expr]) -> TokenStream {
    let rt = rt();
    match layers {
        [] => return quote!(#rt::proxy::Identity::new()),
        // A single layer is checked only where the pipeline's type requires a `ProxyLayer`,
        // which `service_methods` places at its value: a check of its own would report a
        // value that is not a layer twice.
        [layer] => return quote!(#layer),
        _ => {}
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
    // Each of several layers is checked against the service it wraps (which gives the next
    // one its service), so a mistake is reported at its layer, not in the stack's type.
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

//! Code generation: a checked [`model`](crate::model) becomes a struct, its `ProxyHttp` impl
//! and a few constructors. The generated code only wires runtime types (`Router`,
//! `UpstreamGroup`, `ProxyPipeline`, the phase adapters) and names everything through
//! `::pingora_dsl::__private`, so a user crate needs no other dependency. Every value was
//! checked by `validate`, so nothing here can fail; what the user did not write is left to
//! the runtime's defaults (no builder call is generated for it).

mod auth;
mod group;
mod http;
mod l4;
mod phases;
mod router;

use std::net::SocketAddr;
use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

use crate::model::{Proxy, Setting};
use crate::syntax::Kind;

/// Expands every proxy of the invocation. When the invocation had errors (`complete` is
/// false), each proxy's type is still declared with its methods, so one mistake gives one
/// error rather than one at every use of the type (as `tokio::main` expands its function
/// on error); but its constructor's body cannot be reached, since part of the declaration
/// is missing from the model.
pub fn expand(proxies: &[Proxy], complete: bool) -> TokenStream {
    proxies
        .iter()
        .map(|p| match p.kind {
            Kind::Http => http::expand_http(p, complete),
            Kind::Tcp | Kind::Udp => l4::expand_l4(p, complete),
        })
        .collect()
}

/// The body of a constructor of a declaration with errors.
fn unreachable_body(p: &Proxy) -> TokenStream {
    let message = format!("`{}` has errors in its declaration", p.name);
    quote!(::core::unreachable!(#message))
}

/// The runtime, as the facade crate re-exports it for the expansion.
fn rt() -> TokenStream {
    quote!(::pingora_dsl::__private::runtime)
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

/// A status code checked by `validate` (so the fallback arm is never taken).
fn status(code: u16) -> TokenStream {
    let rt = rt();
    quote!(match #rt::StatusCode::from_u16(#code) {
        ::std::result::Result::Ok(status) => status,
        ::std::result::Result::Err(_) => #rt::StatusCode::INTERNAL_SERVER_ERROR,
    })
}

/// The cleartext listening addresses, and the statements adding the TLS listeners to a
/// `service` being built.
fn expand_listens(p: &Proxy) -> (Vec<String>, Vec<TokenStream>) {
    let rt = rt();
    let listen = p
        .listens
        .iter()
        .filter(|l| l.tls.is_none() && !l.quic)
        .map(|l| l.addr.to_string())
        .collect();
    let tls_listens = p
        .listens
        .iter()
        .filter_map(|l| Some((l.addr, l.tls.as_ref()?)))
        .map(|(addr, tls)| {
            let addr = addr.to_string();
            let certs = tls.certs.iter().map(
                |(cert, key)| quote!(#rt::listen::tls::CertKey { cert: #cert.into(), key: #key.into() }),
            );
            let client_ca = match &tls.client_ca {
                Some(ca) => quote!(::std::option::Option::Some(#ca.into())),
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

/// The declared PROXY protocol modes of single listeners, set on `service` before its
/// addresses are added.
fn listener_proxy_protocols(p: &Proxy) -> Vec<TokenStream> {
    let rt = rt();
    p.listens
        .iter()
        .filter_map(|l| {
            let mode = proxy_protocol_mode(l.proxy_protocol?);
            let (addr, tls) = (l.addr.to_string(), l.tls.is_some());
            Some(quote!(service.set_listener_proxy_protocol(#addr, #tls, #rt::listen::proxy_protocol::ProxyProtocol::#mode);))
        })
        .collect()
}

/// The runtime's name of a PROXY protocol mode: required or optional.
fn proxy_protocol_mode(required: bool) -> Ident {
    let mode = if required { "Required" } else { "Optional" };
    Ident::new(mode, Span::call_site())
}

/// `impl Declared`: what `run` needs of every declared proxy. `admin "ADDR";` becomes
/// the command line's declared admin address.
fn declared_impl(p: &Proxy) -> TokenStream {
    let rt = rt();
    let name = &p.name;
    let name_str = name.to_string();
    let admin = match &p.admin {
        Some(addr) => quote!(::std::option::Option::Some(#addr)),
        None => quote!(::std::option::Option::None),
    };
    let sentry = p.sentry.as_ref().map(|s| {
        let dsn = &s.dsn;
        let sample = match s.sample {
            Some(rate) => quote!(::std::option::Option::Some(#rate)),
            None => quote!(::std::option::Option::None),
        };
        let environment = match &s.environment {
            Some(env) => quote!(::std::option::Option::Some(#env)),
            None => quote!(::std::option::Option::None),
        };
        quote!(
            const SENTRY: ::std::option::Option<#rt::server::declared::DeclaredSentry> =
                ::std::option::Option::Some(#rt::server::declared::DeclaredSentry {
                    dsn: #dsn,
                    sample_rate: #sample,
                    environment: #environment,
                });
        )
    });
    let tls = p.options.settings.iter().filter_map(|s| match s {
        Setting::TlsGroups(groups) => {
            Some(quote!(const TLS_GROUPS: ::std::option::Option<&'static [&'static str]> = ::std::option::Option::Some(&[#(#groups),*]);))
        }
        Setting::Fips(on) => Some(quote!(const FIPS: bool = #on;)),
        _ => None,
    });
    quote! {
        impl #rt::server::declared::Declared for #name {
            const NAME: &'static str = #name_str;
            const LISTEN: &'static [&'static str] = #name::LISTEN;
            const ADMIN: ::std::option::Option<&'static str> = #admin;
            #(#tls)*
            #sentry

            fn declared() -> Self {
                Self::new()
            }

            fn declared_router() -> #rt::proxy::route::Router {
                Self::new().router
            }

            fn declared_router_mut(&mut self) -> &mut #rt::proxy::route::Router {
                &mut self.router
            }
        }
    }
}

/// The inherent methods every declared proxy has over its router: `new`, the declared
/// router, and access to the live one (`new` builds it with `new_body`).
fn router_methods(new_body: &TokenStream) -> TokenStream {
    let rt = rt();
    quote! {
        /// The proxy as declared: its upstream groups, and for HTTP its routes and header
        /// edits.
        pub fn new() -> Self {
            #new_body
        }

        /// The router exactly as declared (what a config reload starts from).
        pub fn declared_router() -> #rt::proxy::route::Router {
            Self::new().router
        }

        /// The routes and upstream groups (a layer-4 proxy has one group and no route).
        pub fn router(&self) -> &#rt::proxy::route::Router {
            &self.router
        }

        /// Mutable routes and upstream groups, e.g. to replace peers before serving.
        pub fn router_mut(&mut self) -> &mut #rt::proxy::route::Router {
            &mut self.router
        }
    }
}

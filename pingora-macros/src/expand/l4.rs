//! A `tcp_proxy!` or `udp_proxy!`: its one group (in a router, so the config file,
//! `--upstream` and SIGHUP reloads work as for HTTP proxies) and a layer-4 service.

use proc_macro2::TokenStream;
use quote::quote;

use crate::model::{Proxy, Setting};
use crate::syntax::Kind;

use super::group::expand_group;
use super::{
    declared_impl, duration, expand_listens, listener_proxy_protocols, proxy_protocol_mode,
    router_methods, rt, unreachable_body,
};

/// The service type, its method adding a listening address, and the transport, per kind.
struct L4Names {
    service_ty: TokenStream,
    add: TokenStream,
    transport: TokenStream,
}

fn names(kind: Kind) -> L4Names {
    let rt = rt();
    if kind == Kind::Udp {
        L4Names {
            service_ty: quote!(#rt::l4::udp::UdpProxyService),
            add: quote!(add_udp),
            transport: quote!(#rt::server::layer4::Transport::Udp),
        }
    } else {
        L4Names {
            service_ty: quote!(#rt::l4::tcp::TcpProxyService),
            add: quote!(add_tcp),
            transport: quote!(#rt::server::layer4::Transport::Tcp),
        }
    }
}

/// The whole expansion of one layer-4 proxy (see [`super::expand`] for `complete`).
pub fn expand_l4(p: &Proxy, complete: bool) -> TokenStream {
    let rt = rt();
    let (name, vis, attrs) = (&p.name, &p.vis, &p.attrs);
    let (listen, _) = expand_listens(p);
    let new = if complete {
        let groups = p.upstreams.iter().map(expand_group);
        quote!(#name {
            router: #rt::proxy::route::Router::new(::std::vec![#(#groups),*], ::std::vec![]),
        })
    } else {
        unreachable_body(p)
    };
    let idle = match p.idle {
        Some(d) => duration(d),
        None if p.kind == Kind::Udp => quote!(#rt::l4::udp::DEFAULT_IDLE_TIMEOUT),
        None => quote!(#rt::l4::tcp::DEFAULT_IDLE_TIMEOUT),
    };
    let router_methods = router_methods(&new);
    let service = service_method(p);
    let (run, declared) = run_methods(p);
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

            #router_methods

            #service
            #run
        }

        impl ::core::default::Default for #name {
            fn default() -> Self {
                Self::new()
            }
        }

        #declared
    }
}

/// `service`: the layer-4 service on the declared addresses.
fn service_method(p: &Proxy) -> TokenStream {
    let name_str = p.name.to_string();
    let (_, tls_listens) = expand_listens(p);
    let L4Names {
        service_ty, add, ..
    } = names(p.kind);
    let rt = rt();
    // A UDP proxy's `proxy_protocol` is a compile error already.
    let tcp = p.kind == Kind::Tcp;
    let proxy_protocol = p.options.settings.iter().filter(|_| tcp).find_map(|s| match s {
        Setting::ProxyProtocol(required) => {
            let mode = proxy_protocol_mode(*required);
            Some(quote!(service.set_proxy_protocol(#rt::listen::proxy_protocol::ProxyProtocol::#mode);))
        }
        _ => None,
    });
    let listener_modes = if tcp {
        listener_proxy_protocols(p)
    } else {
        Vec::new()
    };
    quote! {
    /// A listening service on the declared addresses, for `Server::add_service`
    /// (or `spawn` in tests).
    pub fn service(self) -> #service_ty {
        let group = self.router.groups()[0].clone();
        let mut service = <#service_ty>::new(#name_str, group);
        #proxy_protocol
        #(#listener_modes)*
        for addr in Self::LISTEN {
            service.#add(addr);
        }
        #(#tls_listens)*
        service.set_idle_timeout(Self::IDLE);
        service
    }
    }
}

/// `run` and `run_with`, which hand over to the runtime's `DeclaredLayer4` default
/// method, and the `Declared`/`DeclaredLayer4` impls that give it the declaration.
fn run_methods(p: &Proxy) -> (TokenStream, TokenStream) {
    let rt = rt();
    let name = &p.name;
    let L4Names {
        service_ty,
        transport,
        ..
    } = names(p.kind);
    let methods = quote! {
        /// A complete `main`: the command line of every declared proxy (`-c`, `-t`,
        /// `-d`, `-u`, `--listen`, `--upstream`, `--threads`, ...), then serves until
        /// SIGINT or SIGTERM.
        pub fn run() -> ::std::process::ExitCode {
            Self::run_with(#rt::server::cli::ProxyCli::from_env_layer4(#transport))
        }

        /// Like [`run`](Self::run), with a command line built by the caller.
        pub fn run_with(cli: #rt::server::cli::ProxyCli) -> ::std::process::ExitCode {
            <Self as #rt::server::declared::DeclaredLayer4>::run_declared(cli)
        }
    };
    let declared = declared_impl(p);
    let impls = quote! {
        #declared

        impl #rt::server::declared::DeclaredLayer4 for #name {
            type Service = #service_ty;
            const TRANSPORT: #rt::server::layer4::Transport = #transport;
            const IDLE: ::std::time::Duration = #name::IDLE;

            fn declared_service(self) -> #service_ty {
                self.service()
            }
        }
    };
    (methods, impls)
}

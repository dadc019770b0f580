//! A `tcp_proxy!` or `udp_proxy!`: its one group (in a router, so the config file,
//! `--upstream` and SIGHUP reloads work as for HTTP proxies) and a layer-4 service.

use proc_macro2::TokenStream;
use quote::quote;

use crate::model::Proxy;
use crate::syntax::Kind;

use super::group::expand_group;
use super::{declare_admin, duration, expand_listens, rt, unreachable_body};

/// The service type, its add/clear methods and the transport, per kind.
struct L4Names {
    service_ty: TokenStream,
    add: TokenStream,
    clear: TokenStream,
    transport: TokenStream,
}

fn names(kind: Kind) -> L4Names {
    let rt = rt();
    if kind == Kind::Udp {
        L4Names {
            service_ty: quote!(#rt::udp_proxy::UdpProxyService),
            add: quote!(add_udp),
            clear: quote!(clear_listen),
            transport: quote!(#rt::layer4::Transport::Udp),
        }
    } else {
        L4Names {
            service_ty: quote!(#rt::tcp_proxy::TcpProxyService),
            add: quote!(add_tcp),
            clear: quote!(clear_tcp),
            transport: quote!(#rt::layer4::Transport::Tcp),
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
            router: #rt::route::Router::new(::std::vec![#(#groups),*], ::std::vec![]),
        })
    } else {
        unreachable_body(p)
    };
    let idle = match p.idle {
        Some(d) => duration(d),
        None if p.kind == Kind::Udp => quote!(#rt::udp_proxy::DEFAULT_IDLE_TIMEOUT),
        None => quote!(#rt::tcp_proxy::DEFAULT_IDLE_TIMEOUT),
    };
    let service = service_method(p);
    let run = run_methods(p);
    quote! {
        #(#attrs)*
        #[derive(Debug)]
        #vis struct #name {
            router: #rt::route::Router,
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
                #new
            }

            /// The upstream exactly as declared (what a config reload starts from).
            pub fn declared_router() -> #rt::route::Router {
                Self::new().router
            }

            /// The upstream group, in a router (for the config file and `--upstream`).
            pub fn router(&self) -> &#rt::route::Router {
                &self.router
            }

            /// Mutable access to the upstream group, e.g. to replace peers before serving.
            pub fn router_mut(&mut self) -> &mut #rt::route::Router {
                &mut self.router
            }

            #service
            #run
        }

        impl ::core::default::Default for #name {
            fn default() -> Self {
                Self::new()
            }
        }
    }
}

/// `service`: the layer-4 service on the declared addresses.
fn service_method(p: &Proxy) -> TokenStream {
    let name_str = p.name.to_string();
    let (_, tls_listens) = expand_listens(p);
    let L4Names {
        service_ty, add, ..
    } = names(p.kind);
    quote! {
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
    }
}

/// `run` and `run_with` of a layer-4 proxy.
fn run_methods(p: &Proxy) -> TokenStream {
    let rt = rt();
    let name_str = p.name.to_string();
    let declare_admin = declare_admin(p);
    let L4Names {
        add,
        clear,
        transport,
        ..
    } = names(p.kind);
    let apply_tls = (p.kind == Kind::Tcp).then(|| quote!(cli.apply_tls(&mut service)?;));
    quote! {
        /// A complete `main`: the command line of every declared proxy (`-c`, `-t`,
        /// `-d`, `-u`, `--listen`, `--upstream`, `--threads`, ...), then serves until
        /// SIGINT or SIGTERM.
        pub fn run() -> ::std::process::ExitCode {
            Self::run_with(#rt::cli::ProxyCli::from_env_layer4(#transport))
        }

        /// Like [`run`](Self::run), with a command line built by the caller.
        pub fn run_with(mut cli: #rt::cli::ProxyCli) -> ::std::process::ExitCode {
            #declare_admin
            #rt::cli::run(#name_str, cli, |cli| {
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
}

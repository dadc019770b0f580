#[derive(Debug)]
pub struct Dns {
    router: ::pingora_dsl::__private::runtime::proxy::route::Router,
}
#[allow(dead_code)]
impl Dns {
    /// The cleartext listening addresses declared with `listen`.
    pub const LISTEN: &'static [&'static str] = &["127.0.0.1:5353"];
    /// How long a connection may carry nothing: declared with `idle`, or the
    /// default.
    pub const IDLE: ::std::time::Duration = ::pingora_dsl::__private::runtime::l4::udp::DEFAULT_IDLE_TIMEOUT;
    /// The proxy as declared: its upstream groups, and for HTTP its routes and header
    /// edits.
    pub fn new() -> Self {
        Dns {
            router: ::pingora_dsl::__private::runtime::proxy::route::Router::new(
                ::std::vec![
                    ::pingora_dsl::__private::runtime::lb::UpstreamGroup::new("resolvers",
                    ::std::vec![::pingora_dsl::__private::runtime::lb::Backend::weighted(::std::net::SocketAddr::new(::std::net::IpAddr::V4(::std::net::Ipv4Addr::new(127u8,
                    0u8, 0u8, 1u8)), 5300u16,), 1u32)],
                    ::pingora_dsl::__private::runtime::lb::Strategy::RoundRobin,)
                ],
                ::std::vec![],
            ),
        }
    }
    /// The router exactly as declared (what a config reload starts from).
    pub fn declared_router() -> ::pingora_dsl::__private::runtime::proxy::route::Router {
        Self::new().router
    }
    /// The routes and upstream groups (a layer-4 proxy has one group and no route).
    pub fn router(&self) -> &::pingora_dsl::__private::runtime::proxy::route::Router {
        &self.router
    }
    /// Mutable routes and upstream groups, e.g. to replace peers before serving.
    pub fn router_mut(
        &mut self,
    ) -> &mut ::pingora_dsl::__private::runtime::proxy::route::Router {
        &mut self.router
    }
    /// A listening service on the declared addresses, for `Server::add_service`
    /// (or `spawn` in tests).
    pub fn service(self) -> ::pingora_dsl::__private::runtime::l4::udp::UdpProxyService {
        let group = self.router.groups()[0].clone();
        let mut service = <::pingora_dsl::__private::runtime::l4::udp::UdpProxyService>::new(
            "Dns",
            group,
        );
        for addr in Self::LISTEN {
            service.add_udp(addr);
        }
        service.set_idle_timeout(Self::IDLE);
        service
    }
    /// A complete `main`: the command line of every declared proxy (`-c`, `-t`,
    /// `-d`, `-u`, `--listen`, `--upstream`, `--threads`, ...), then serves until
    /// SIGINT or SIGTERM.
    pub fn run() -> ::std::process::ExitCode {
        Self::run_with(
            ::pingora_dsl::__private::runtime::server::cli::ProxyCli::from_env_layer4(
                ::pingora_dsl::__private::runtime::server::layer4::Transport::Udp,
            ),
        )
    }
    /// Like [`run`](Self::run), with a command line built by the caller.
    pub fn run_with(
        cli: ::pingora_dsl::__private::runtime::server::cli::ProxyCli,
    ) -> ::std::process::ExitCode {
        <Self as ::pingora_dsl::__private::runtime::server::declared::DeclaredLayer4>::run_declared(
            cli,
        )
    }
}
impl ::core::default::Default for Dns {
    fn default() -> Self {
        Self::new()
    }
}
impl ::pingora_dsl::__private::runtime::server::declared::Declared for Dns {
    const NAME: &'static str = "Dns";
    const LISTEN: &'static [&'static str] = Dns::LISTEN;
    const ADMIN: ::std::option::Option<&'static str> = ::std::option::Option::None;
    fn declared() -> Self {
        Self::new()
    }
    fn declared_router() -> ::pingora_dsl::__private::runtime::proxy::route::Router {
        Self::new().router
    }
    fn declared_router_mut(
        &mut self,
    ) -> &mut ::pingora_dsl::__private::runtime::proxy::route::Router {
        &mut self.router
    }
}
impl ::pingora_dsl::__private::runtime::server::declared::DeclaredLayer4 for Dns {
    type Service = ::pingora_dsl::__private::runtime::l4::udp::UdpProxyService;
    const TRANSPORT: ::pingora_dsl::__private::runtime::server::layer4::Transport = ::pingora_dsl::__private::runtime::server::layer4::Transport::Udp;
    const IDLE: ::std::time::Duration = Dns::IDLE;
    fn declared_service(
        self,
    ) -> ::pingora_dsl::__private::runtime::l4::udp::UdpProxyService {
        self.service()
    }
}

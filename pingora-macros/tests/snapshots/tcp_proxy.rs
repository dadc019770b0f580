/// Round robin over TCP echo servers.
#[derive(Debug)]
pub struct TcpEcho {
    router: ::pingora_dsl::__private::runtime::proxy::route::Router,
}
#[allow(dead_code)]
impl TcpEcho {
    /// The cleartext listening addresses declared with `listen`.
    pub const LISTEN: &'static [&'static str] = &["127.0.0.1:6193"];
    /// How long a connection may carry nothing: declared with `idle`, or the
    /// default.
    pub const IDLE: ::std::time::Duration = ::std::time::Duration::from_micros(
        300000000u64,
    );
    /// The proxy as declared: its upstream groups, and for HTTP its routes and header
    /// edits.
    pub fn new() -> Self {
        TcpEcho {
            router: ::pingora_dsl::__private::runtime::proxy::route::Router::new(
                ::std::vec![
                    ::pingora_dsl::__private::runtime::lb::UpstreamGroup::new("echo",
                    ::std::vec![::pingora_dsl::__private::runtime::lb::Backend::weighted(::std::net::SocketAddr::new(::std::net::IpAddr::V4(::std::net::Ipv4Addr::new(127u8,
                    0u8, 0u8, 1u8)), 7001u16,), 1u32),
                    ::pingora_dsl::__private::runtime::lb::Backend::weighted(::std::net::SocketAddr::new(::std::net::IpAddr::V4(::std::net::Ipv4Addr::new(127u8,
                    0u8, 0u8, 1u8)), 7002u16,), 1u32)],
                    ::pingora_dsl::__private::runtime::lb::Strategy::RoundRobin,)
                    .with_timeouts(::pingora_dsl::__private::runtime::upstream::PeerTimeouts
                    { connect : ::std::time::Duration::from_micros(1000000u64), ..
                    ::core::default::Default::default() }).with_retries(1u32)
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
    pub fn service(self) -> ::pingora_dsl::__private::runtime::l4::tcp::TcpProxyService {
        let group = self.router.groups()[0].clone();
        let mut service = <::pingora_dsl::__private::runtime::l4::tcp::TcpProxyService>::new(
            "TcpEcho",
            group,
        );
        for addr in Self::LISTEN {
            service.add_tcp(addr);
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
                ::pingora_dsl::__private::runtime::server::layer4::Transport::Tcp,
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
impl ::core::default::Default for TcpEcho {
    fn default() -> Self {
        Self::new()
    }
}
impl ::pingora_dsl::__private::runtime::server::declared::Declared for TcpEcho {
    const NAME: &'static str = "TcpEcho";
    const LISTEN: &'static [&'static str] = TcpEcho::LISTEN;
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
impl ::pingora_dsl::__private::runtime::server::declared::DeclaredLayer4 for TcpEcho {
    type Service = ::pingora_dsl::__private::runtime::l4::tcp::TcpProxyService;
    const TRANSPORT: ::pingora_dsl::__private::runtime::server::layer4::Transport = ::pingora_dsl::__private::runtime::server::layer4::Transport::Tcp;
    const IDLE: ::std::time::Duration = TcpEcho::IDLE;
    fn declared_service(
        self,
    ) -> ::pingora_dsl::__private::runtime::l4::tcp::TcpProxyService {
        self.service()
    }
}

#[derive(Debug)]
pub struct Minimal {
    router: ::pingora_dsl::__private::runtime::proxy::route::Router,
}
#[allow(dead_code)]
impl Minimal {
    /// The cleartext listening addresses declared with `listen` (TLS ones are
    /// added by [`service`](Self::service)).
    pub const LISTEN: &'static [&'static str] = &["127.0.0.1:6188"];
    ///The declared pool `origin`: return it from `upstream_peer`, or give it to `Session::use_pool` in a filter, to send a request there.
    pub const POOL_ORIGIN: ::pingora_dsl::__private::runtime::lb::PoolId = ::pingora_dsl::__private::runtime::lb::PoolId::new(
        0u32,
    );
    /// The proxy as declared: its upstream groups, and for HTTP its routes and header
    /// edits.
    pub fn new() -> Self {
        Minimal {
            router: ::pingora_dsl::__private::runtime::proxy::route::Router::new(
                ::std::vec![
                    ::pingora_dsl::__private::runtime::lb::UpstreamGroup::new("origin",
                    ::std::vec![::pingora_dsl::__private::runtime::lb::Backend::weighted(::std::net::SocketAddr::new(::std::net::IpAddr::V4(::std::net::Ipv4Addr::new(127u8,
                    0u8, 0u8, 1u8)), 8001u16,), 1u32)],
                    ::pingora_dsl::__private::runtime::lb::Strategy::RoundRobin,)
                ],
                ::std::vec![
                    ::pingora_dsl::__private::runtime::proxy::route::Route::new(::pingora_dsl::__private::runtime::proxy::route::RouteMatch::default(),
                    ::pingora_dsl::__private::runtime::proxy::route::RouteAction::Upstream(0),)
                ],
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
    /// The proxy options declared (`via`, `forwarded_for`, `client_timeout body_read`/`body_total`,
    /// `max_idle_per_peer`), defaults elsewhere.
    pub fn options() -> ::pingora_dsl::__private::runtime::proxy::ProxyOptions {
        {
            let mut options = ::pingora_dsl::__private::runtime::proxy::ProxyOptions::default();
            options.filter_local_answers = true;
            options
        }
    }
    /// The per-connection pipeline: the declared layers, in order, around the phases.
    pub fn pipeline(
        self,
    ) -> ::pingora_dsl::__private::runtime::proxy::ProxyPipeline<
        Self,
        impl ::pingora_dsl::__private::runtime::proxy::ProxyLayer<Self>,
    > {
        self.pipeline_with(Self::options())
    }
    /// The pipeline with `options` in place of the declared ones.
    pub fn pipeline_with(
        self,
        options: ::pingora_dsl::__private::runtime::proxy::ProxyOptions,
    ) -> ::pingora_dsl::__private::runtime::proxy::ProxyPipeline<
        Self,
        impl ::pingora_dsl::__private::runtime::proxy::ProxyLayer<Self>,
    > {
        ::pingora_dsl::__private::runtime::proxy::ProxyPipeline::new(
            self,
            options,
            ::pingora_dsl::__private::runtime::proxy::Identity::new(),
        )
    }
    /// A listening service on the declared addresses, for `Server::add_service`
    /// (or `spawn` in tests); replace the addresses with `clear_tcp`/`add_tcp`.
    pub fn service(
        self,
    ) -> ::pingora_dsl::__private::runtime::downstream::HttpService<
        ::pingora_dsl::__private::runtime::proxy::ProxyPipeline<
            Self,
            impl ::pingora_dsl::__private::runtime::proxy::ProxyLayer<Self>,
        >,
    > {
        self.service_with(Self::options())
    }
    /// The service with `options` in place of the declared ones.
    pub fn service_with(
        self,
        options: ::pingora_dsl::__private::runtime::proxy::ProxyOptions,
    ) -> ::pingora_dsl::__private::runtime::downstream::HttpService<
        ::pingora_dsl::__private::runtime::proxy::ProxyPipeline<
            Self,
            impl ::pingora_dsl::__private::runtime::proxy::ProxyLayer<Self>,
        >,
    > {
        let mut service = ::pingora_dsl::__private::runtime::downstream::HttpService::new(
            "Minimal",
            self.pipeline_with(options),
        );
        for addr in Self::LISTEN {
            service.add_tcp(addr);
        }
        service
    }
    /// A complete `main`: parses the command line (`-c FILE`, `-t`,
    /// `--print-config`, `-d`, `-u`, `--listen`, `--upstream`, `--threads`,
    /// `--help`), then serves until SIGINT or SIGTERM, or until SIGQUIT handed the
    /// listening sockets to a new process.
    pub fn run() -> ::std::process::ExitCode {
        Self::run_with(
            ::pingora_dsl::__private::runtime::server::cli::ProxyCli::from_env(),
        )
    }
    /// Like [`run`](Self::run), with a command line built by the caller.
    pub fn run_with(
        cli: ::pingora_dsl::__private::runtime::server::cli::ProxyCli,
    ) -> ::std::process::ExitCode {
        <Self as ::pingora_dsl::__private::runtime::server::declared::DeclaredHttp>::run_declared(
            cli,
        )
    }
}
impl ::core::default::Default for Minimal {
    fn default() -> Self {
        Self::new()
    }
}
#[allow(
    unused_variables,
    clippy::let_unit_value,
    clippy::unit_arg,
    clippy::needless_return
)]
impl ::pingora_dsl::__private::runtime::proxy::ProxyHttp for Minimal {
    type Ctx = ::pingora_dsl::__private::runtime::proxy::route::RouteCtx<()>;
    fn new_ctx(&self) -> Self::Ctx {
        ::pingora_dsl::__private::runtime::proxy::route::RouteCtx::new(())
    }
    async fn request_filter(
        &self,
        __session: &mut ::pingora_dsl::__private::runtime::proxy::Session,
        __ctx: &mut Self::Ctx,
    ) -> ::pingora_dsl::__private::runtime::Result<
        ::pingora_dsl::__private::runtime::proxy::Flow,
    > {
        if let ::std::option::Option::Some(flow) = self
            .router
            .request_filter(__session, __ctx)
            .await
        {
            return ::std::result::Result::Ok(flow);
        }
        ::std::result::Result::Ok(
            ::pingora_dsl::__private::runtime::proxy::Flow::Continue,
        )
    }
    async fn upstream_peer(
        &self,
        __session: &mut ::pingora_dsl::__private::runtime::proxy::Session,
        __ctx: &mut Self::Ctx,
    ) -> ::pingora_dsl::__private::runtime::Result<
        ::pingora_dsl::__private::runtime::upstream::HttpPeer,
    > {
        self.router.upstream_peer(__session, __ctx).await
    }
    fn fail_to_connect(
        &self,
        __session: &mut ::pingora_dsl::__private::runtime::proxy::Session,
        __peer: &::pingora_dsl::__private::runtime::upstream::HttpPeer,
        __ctx: &mut Self::Ctx,
        __error: ::pingora_dsl::__private::runtime::Error,
    ) -> ::pingora_dsl::__private::runtime::Error {
        let __error = self.router.fail_to_connect(__session, __ctx, __error);
        __error
    }
    fn replay_buffer(
        &self,
        session: &::pingora_dsl::__private::runtime::proxy::Session,
        ctx: &Self::Ctx,
    ) -> ::std::option::Option<usize> {
        self.router.replay_buffer(session, ctx)
    }
    fn error_while_proxy(
        &self,
        session: &mut ::pingora_dsl::__private::runtime::proxy::Session,
        peer: &::pingora_dsl::__private::runtime::upstream::HttpPeer,
        ctx: &mut Self::Ctx,
        error: ::pingora_dsl::__private::runtime::Error,
    ) -> ::pingora_dsl::__private::runtime::Error {
        self.router.error_while_proxy(session, ctx, error)
    }
    fn observed_routes(
        &self,
    ) -> ::std::option::Option<
        (
            ::std::vec::Vec<::pingora_dsl::__private::runtime::service::RouteView>,
            ::std::vec::Vec<::pingora_dsl::__private::runtime::lb::UpstreamGroup>,
        ),
    > {
        ::std::option::Option::Some(self.router.observed())
    }
    fn observed_caches(
        &self,
    ) -> ::std::vec::Vec<::pingora_dsl::__private::runtime::service::CacheView> {
        self.router.observed_caches()
    }
    fn observed_shared_limits(
        &self,
    ) -> ::std::vec::Vec<::pingora_dsl::__private::runtime::service::SharedLimitView> {
        self.router.observed_shared_limits()
    }
}
impl ::pingora_dsl::__private::runtime::server::declared::Declared for Minimal {
    const NAME: &'static str = "Minimal";
    const LISTEN: &'static [&'static str] = Minimal::LISTEN;
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
impl ::pingora_dsl::__private::runtime::server::declared::DeclaredHttp for Minimal {
    fn declared_options() -> ::pingora_dsl::__private::runtime::proxy::ProxyOptions {
        Self::options()
    }
    fn declared_service(
        self,
        options: ::pingora_dsl::__private::runtime::proxy::ProxyOptions,
    ) -> ::pingora_dsl::__private::runtime::downstream::HttpService<
        ::pingora_dsl::__private::runtime::proxy::ProxyPipeline<
            Self,
            impl ::pingora_dsl::__private::runtime::proxy::ProxyLayer<Self>,
        >,
    > {
        self.service_with(options)
    }
}

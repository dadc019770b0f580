/// A gateway.
#[derive(Debug)]
pub struct Gateway {
    router: ::pingora_dsl::__private::runtime::proxy::route::Router,
}
#[allow(dead_code)]
impl Gateway {
    /// The cleartext listening addresses declared with `listen` (TLS ones are
    /// added by [`service`](Self::service)).
    pub const LISTEN: &'static [&'static str] = &["127.0.0.1:6190"];
    ///The declared pool `web`: return it from `upstream_peer`, or give it to `Session::use_pool` in a filter, to send a request there.
    pub const POOL_WEB: ::pingora_dsl::__private::runtime::lb::PoolId = ::pingora_dsl::__private::runtime::lb::PoolId::new(
        0u32,
    );
    ///The declared pool `api`: return it from `upstream_peer`, or give it to `Session::use_pool` in a filter, to send a request there.
    pub const POOL_API: ::pingora_dsl::__private::runtime::lb::PoolId = ::pingora_dsl::__private::runtime::lb::PoolId::new(
        1u32,
    );
    /// The proxy as declared: its upstream groups, and for HTTP its routes and header
    /// edits.
    pub fn new() -> Self {
        Gateway {
            router: ::pingora_dsl::__private::runtime::proxy::route::Router::new(
                    ::std::vec![
                        ::pingora_dsl::__private::runtime::lb::UpstreamGroup::new("web",
                        ::std::vec![::pingora_dsl::__private::runtime::lb::Backend::weighted(::std::net::SocketAddr::new(::std::net::IpAddr::V4(::std::net::Ipv4Addr::new(127u8,
                        0u8, 0u8, 1u8)), 8001u16,), 1u32)],
                        ::pingora_dsl::__private::runtime::lb::Strategy::RoundRobin,),
                        ::pingora_dsl::__private::runtime::lb::UpstreamGroup::new("api",
                        ::std::vec![::pingora_dsl::__private::runtime::lb::Backend::weighted(::std::net::SocketAddr::new(::std::net::IpAddr::V4(::std::net::Ipv4Addr::new(127u8,
                        0u8, 0u8, 1u8)), 9001u16,), 1u32),
                        ::pingora_dsl::__private::runtime::lb::Backend::weighted(::std::net::SocketAddr::V6(::std::net::SocketAddrV6::new(::std::net::Ipv6Addr::new(0u16,
                        0u16, 0u16, 0u16, 0u16, 0u16, 0u16, 1u16), 9002u16, 0u32,
                        0u32,)), 2u32)],
                        ::pingora_dsl::__private::runtime::lb::Strategy::ConsistentHash,)
                        .with_timeouts(::pingora_dsl::__private::runtime::upstream::PeerTimeouts
                        { connect : ::std::time::Duration::from_micros(500000u64), read :
                        ::std::time::Duration::from_micros(10000000u64), ..
                        ::core::default::Default::default() })
                        .with_key(::pingora_dsl::__private::runtime::lb::RequestKey::Header(::pingora_dsl::__private::runtime::HeaderName::from_static("x-user")))
                        .with_tls(&
                        ::pingora_dsl::__private::runtime::upstream::UpstreamTls { sni :
                        ::std::option::Option::Some("api.local".into()), ca_file :
                        ::std::option::Option::None, insecure : false, client_cert :
                        ::std::option::Option::None, }).with_retries(1u32)
                        .with_retry_backoff(::std::time::Duration::from_micros(20000u64))
                        .with_replay_limit(65536usize)
                        .with_health_check(::pingora_dsl::__private::runtime::lb::HealthCheck::new(::pingora_dsl::__private::runtime::lb::HealthKind::Http
                        { path : ::std::string::String::from("/health"), host :
                        ::std::option::Option::None, status : 200u16..= 299u16, })
                        .with_interval(::std::time::Duration::from_micros(2000000u64)))
                        .with_passive_health(::pingora_dsl::__private::runtime::lb::PassiveHealth
                        { failures : 3u32, eject_for :
                        ::std::time::Duration::from_micros(10000000u64), })
                    ],
                    ::std::vec![
                        ::pingora_dsl::__private::runtime::proxy::route::Route::new(::pingora_dsl::__private::runtime::proxy::route::RouteMatch
                        { host : ::std::option::Option::None, path_prefix :
                        ::std::option::Option::Some(::std::string::String::from("/old-docs")),
                        methods : ::std::vec![], conditions : ::std::vec![], },
                        ::pingora_dsl::__private::runtime::proxy::route::RouteAction::Redirect(match
                        ::pingora_dsl::__private::runtime::StatusCode::from_u16(301u16) {
                        ::std::result::Result::Ok(status) => status,
                        ::std::result::Result::Err(_) =>
                        ::pingora_dsl::__private::runtime::StatusCode::INTERNAL_SERVER_ERROR,
                        },
                        ::pingora_dsl::__private::runtime::HeaderValue::from_static("/docs/")),),
                        ::pingora_dsl::__private::runtime::proxy::route::Route::new(::pingora_dsl::__private::runtime::proxy::route::RouteMatch
                        { host : ::std::option::Option::None, path_prefix :
                        ::std::option::Option::Some(::std::string::String::from("/healthz")),
                        methods :
                        ::std::vec![::pingora_dsl::__private::runtime::Method::GET,
                        ::pingora_dsl::__private::runtime::Method::HEAD], conditions :
                        ::std::vec![], },
                        ::pingora_dsl::__private::runtime::proxy::route::RouteAction::Respond(match
                        ::pingora_dsl::__private::runtime::StatusCode::from_u16(200u16) {
                        ::std::result::Result::Ok(status) => status,
                        ::std::result::Result::Err(_) =>
                        ::pingora_dsl::__private::runtime::StatusCode::INTERNAL_SERVER_ERROR,
                        },
                        ::pingora_dsl::__private::runtime::Bytes::from_static(b"ok\n")),),
                        ::pingora_dsl::__private::runtime::proxy::route::Route::new(::pingora_dsl::__private::runtime::proxy::route::RouteMatch
                        { host : ::std::option::Option::None, path_prefix :
                        ::std::option::Option::Some(::std::string::String::from("/api")),
                        methods : ::std::vec![], conditions : ::std::vec![], },
                        ::pingora_dsl::__private::runtime::proxy::route::RouteAction::Upstream(1usize),)
                        .with_request_edits(::std::vec![::pingora_dsl::__private::runtime::proxy::route::HeaderEdit::Set(::pingora_dsl::__private::runtime::HeaderName::from_static("x-gateway-route"),
                        ::pingora_dsl::__private::runtime::HeaderValue::from_static("api"),)]),
                        ::pingora_dsl::__private::runtime::proxy::route::Route::new(::pingora_dsl::__private::runtime::proxy::route::RouteMatch
                        { host : ::std::option::Option::None, path_prefix :
                        ::std::option::Option::None, methods : ::std::vec![], conditions
                        : ::std::vec![], },
                        ::pingora_dsl::__private::runtime::proxy::route::RouteAction::Upstream(0usize),)
                    ],
                )
                .with_response_edits(
                    ::std::vec![
                        ::pingora_dsl::__private::runtime::proxy::route::HeaderEdit::Set(::pingora_dsl::__private::runtime::HeaderName::from_static("x-served-by"),
                        ::pingora_dsl::__private::runtime::HeaderValue::from_static("pingora-dsl-gateway"),),
                        ::pingora_dsl::__private::runtime::proxy::route::HeaderEdit::Remove(::pingora_dsl::__private::runtime::HeaderName::from_static("x-powered-by"))
                    ],
                )
                .with_rate_limits(
                    ::std::vec![
                        ::pingora_dsl::__private::runtime::proxy::route::rate::RateLimit::new(50u64,
                        ::std::time::Duration::from_micros(60000000u64),
                        ::pingora_dsl::__private::runtime::proxy::route::rate::RateKey::Header(::pingora_dsl::__private::runtime::HeaderName::from_static("x-api-key")))
                    ],
                )
                .with_local_answers_filtered(true),
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
            options.via = ::std::option::Option::Some(
                ::pingora_dsl::__private::runtime::HeaderValue::from_static(
                    "1.1 gateway",
                ),
            );
            options.body_read_timeout = ::std::time::Duration::from_micros(30000000u64);
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
            tower::limit::ConcurrencyLimitLayer::new(100),
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
            "Gateway",
            self.pipeline_with(options),
        );
        for addr in Self::LISTEN {
            service.add_tcp(addr);
        }
        service
            .add_tls(
                "127.0.0.1:6191",
                ::pingora_dsl::__private::runtime::listen::tls::TlsSettings {
                    certs: ::std::vec![
                        ::pingora_dsl::__private::runtime::listen::tls::CertKey { cert :
                        "server.crt".into(), key : "server.key".into() }
                    ],
                    client_ca: ::std::option::Option::None,
                    handshake_timeout: ::std::option::Option::None,
                },
            );
        service.options_mut().max_header_bytes = 32768usize;
        service.options_mut().header_read_timeout = ::std::time::Duration::from_micros(
            10000000u64,
        );
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
impl ::core::default::Default for Gateway {
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
impl ::pingora_dsl::__private::runtime::proxy::ProxyHttp for Gateway {
    type Ctx = ::pingora_dsl::__private::runtime::proxy::route::RouteCtx<GatewayCtx>;
    fn new_ctx(&self) -> Self::Ctx {
        ::pingora_dsl::__private::runtime::proxy::route::RouteCtx::new(
            <GatewayCtx as ::core::default::Default>::default(),
        )
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
        {
            let session: &mut ::pingora_dsl::__private::runtime::proxy::Session = __session;
            let ctx: &mut GatewayCtx = &mut __ctx.user;
            ::pingora_dsl::__private::runtime::proxy::phase::phase_result::<
                ::pingora_dsl::__private::runtime::proxy::Flow,
                _,
            >({
                if session.path() == "/admin" {
                    return respond(403);
                }
            })
        }
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
    async fn upstream_request_filter(
        &self,
        __session: &mut ::pingora_dsl::__private::runtime::proxy::Session,
        __upstream_request: &mut ::pingora_dsl::__private::runtime::proxy::RequestHeader,
        __ctx: &mut Self::Ctx,
    ) -> ::pingora_dsl::__private::runtime::Result<()> {
        self.router.upstream_request_filter(__session, __ctx, __upstream_request)?;
        ::std::result::Result::Ok(())
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
    async fn response_filter(
        &self,
        __session: &mut ::pingora_dsl::__private::runtime::proxy::Session,
        __response: &mut ::pingora_dsl::__private::runtime::proxy::ResponseHeader,
        __ctx: &mut Self::Ctx,
    ) -> ::pingora_dsl::__private::runtime::Result<()> {
        self.router.response_filter(__session, __ctx, __response);
        ::std::result::Result::Ok(())
    }
    fn logging(
        &self,
        __session: &::pingora_dsl::__private::runtime::proxy::Session,
        __error: ::std::option::Option<&::pingora_dsl::__private::runtime::Error>,
        __ctx: &mut Self::Ctx,
    ) {
        self.router.logging(__session, __error, __ctx);
        ::pingora_dsl::__private::runtime::proxy::phase::logging(
            log_request,
            __session,
            __error,
            &mut __ctx.user,
        )
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
impl ::pingora_dsl::__private::runtime::server::declared::Declared for Gateway {
    const NAME: &'static str = "Gateway";
    const LISTEN: &'static [&'static str] = Gateway::LISTEN;
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
impl ::pingora_dsl::__private::runtime::server::declared::DeclaredHttp for Gateway {
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

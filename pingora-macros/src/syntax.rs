//! The syntax tree: what a `proxy!` invocation wrote, as parsed, every literal with its
//! token (for error spans). `validate` turns it into the typed [`crate::model`]; nothing
//! here is checked beyond the grammar.

use proc_macro2::Span;
use syn::{Attribute, Block, Expr, ExprPath, Ident, LitInt, LitStr, Type, Visibility};

use crate::phase::Phase;

/// Every proxy of one invocation.
pub struct Proxies {
    pub proxies: Vec<Proxy>,
}

/// One declared proxy.
/// Which macro declared the proxy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `proxy!`: an HTTP proxy.
    Http,
    /// `tcp_proxy!`: a layer-4 TCP proxy.
    Tcp,
    /// `udp_proxy!`: a layer-4 UDP proxy.
    Udp,
}

impl Proxy {
    /// Whether an `upstream` block failed to parse (so "needs one upstream" is noise).
    pub fn upstreams_malformed(&self) -> bool {
        self.upstreams.iter().any(|u| u.had_errors)
    }
}

impl Kind {
    pub fn macro_name(self) -> &'static str {
        match self {
            Kind::Http => "proxy!",
            Kind::Tcp => "tcp_proxy!",
            Kind::Udp => "udp_proxy!",
        }
    }
}

pub struct Proxy {
    pub kind: Kind,
    /// `idle D;` of a layer-4 proxy.
    pub idle: Vec<(Ident, DurationLit)>,
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub listens: Vec<Listen>,
    /// A `listen` failed to parse (so "no listener" would be a follow-on error).
    pub malformed_listen: bool,
    /// A `route` failed to parse (so "upstream never used" may be a follow-on error).
    pub malformed_route: bool,
    pub ctx: Vec<(Ident, Type)>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<RouteDecl>,
    pub edits: Vec<HeaderEditDecl>,
    pub phases: Vec<PhaseDecl>,
    pub layers: Vec<Expr>,
    pub settings: Vec<Setting>,
    pub rate_limits: Vec<RateLimitDecl>,
    /// `admin "ADDR";`: where the admin listener serves metrics and the status page.
    pub admin: Vec<(Ident, LitStr)>,
    /// `sentry "DSN" [sample RATE] [environment "NAME"];`: errors and panics to Sentry.
    pub sentry: Vec<SentryDecl>,
    /// `cors { ... }`: the proxy's CORS policy.
    pub cors: Vec<CorsDecl>,
    /// `allow [...];` and `deny [...];`: client address blocks.
    pub access: Vec<AccessDecl>,
    /// `trusted_proxies [...];`: peers whose forwarding headers name the client.
    pub trusted_proxies: Vec<(Ident, Vec<LitStr>)>,
    /// `auth ...;`: the proxy's authentication.
    pub auth: Vec<AuthDecl>,
    /// `compress ...`: the proxy's response compression.
    pub compress: Vec<CompressDecl>,
    /// `cache ...`: the proxy's HTTP cache.
    pub cache: Vec<CacheDecl>,
    /// Syntax errors inside the proxy's block, each item skipped after its error.
    pub errors: Vec<syn::Error>,
}

/// `sentry "DSN" [sample RATE] [environment "NAME"];`
pub struct SentryDecl {
    pub keyword: Ident,
    pub dsn: LitStr,
    /// `sample 0.25`: the literal, checked by `validate`.
    pub sample: Option<syn::Lit>,
    pub environment: Option<LitStr>,
}

/// `compress;`, `compress { ... }`, or `compress off;` in a route.
pub struct CompressDecl {
    pub keyword: Ident,
    pub off: bool,
    /// `encodings [zstd, br, gzip];`
    pub encodings: Option<(Ident, Vec<Ident>)>,
    /// `types ["text/html", ...];`
    pub types: Option<(Ident, Vec<LitStr>)>,
    /// `min_size SIZE;`
    pub min_size: Option<(Ident, LitInt)>,
    /// Syntax errors inside its block, each setting skipped after its error.
    pub errors: Vec<syn::Error>,
}

/// `cache;`, `cache { ... }`, or `cache off;` in a route.
pub struct CacheDecl {
    pub keyword: Ident,
    pub off: bool,
    pub settings: Vec<CacheSetting>,
    /// Syntax errors inside its block, each setting skipped after its error.
    pub errors: Vec<syn::Error>,
}

/// `KEY VALUE;` in a `cache` block.
pub struct CacheSetting {
    pub key: Ident,
    pub value: CacheValue,
}

/// The value of a cache setting, as written.
pub enum CacheValue {
    /// `memory 64MiB`, `max_object 8MiB`
    Size(LitInt),
    /// `ttl 60s`, `stale_if_error 5m`, ...
    Duration(DurationLit),
    /// `status_header "x-cache"`
    Str(LitStr),
    /// `key header "NAME"` or `key cookie "NAME"`
    Key(Ident, LitStr),
    /// `disk "DIR" SIZE`
    Disk(LitStr, LitInt),
    /// `key "TEMPLATE"` (variables of the request)
    KeyTemplate(LitStr),
}

/// `auth METHOD ...;` (or `auth off;` in a route).
pub struct AuthDecl {
    pub keyword: Ident,
    /// The method's name (`basic`, `bearer`, `jwt`, `api_key`, `external`, `off`).
    pub method: Ident,
    pub kind: AuthKind,
    /// Syntax errors inside a `{ ... }` block, each setting skipped after its error.
    pub errors: Vec<syn::Error>,
}

/// What an `auth` declares.
pub enum AuthKind {
    Off,
    /// `basic "REALM" htpasswd "FILE"`
    Basic {
        realm: LitStr,
        file: LitStr,
    },
    /// `bearer ["TOKEN", ...]`
    BearerList(Vec<LitStr>),
    /// `bearer file "FILE"`
    BearerFile(LitStr),
    /// `jwt { ... }`
    Jwt(Vec<AuthSetting>),
    /// `api_key header|query "NAME" file "FILE" [rate N per D]`
    ApiKey {
        source: Ident,
        name: LitStr,
        file: LitStr,
        rate: Option<(LitInt, DurationLit)>,
    },
    /// `external POOL [{ ... }]`
    External {
        pool: Ident,
        settings: Vec<AuthSetting>,
    },
}

/// One `KEY VALUE;` of a `jwt` or `external` block.
pub struct AuthSetting {
    pub key: Ident,
    pub value: AuthValue,
}

/// The value of an `auth` block setting.
pub enum AuthValue {
    Text(LitStr),
    List(Vec<LitStr>),
    Duration(DurationLit),
    /// `key ALG "FILE"`
    Key(Ident, LitStr),
    /// `cache D by header "NAME"`
    Cache(DurationLit, LitStr),
}

/// `allow ["BLOCK", ...];` or `deny ["BLOCK", ...];`
pub struct AccessDecl {
    pub keyword: Ident,
    pub allow: bool,
    pub blocks: Vec<LitStr>,
}

/// `cors { origins [...]; methods [...]; ... }`, or `cors off;` in a route.
pub struct CorsDecl {
    pub keyword: Ident,
    /// `cors off;`: no CORS policy for the route.
    pub off: bool,
    pub settings: Vec<CorsSetting>,
    /// Syntax errors inside its block, each setting skipped after its error.
    pub errors: Vec<syn::Error>,
}

/// One setting of a `cors` block, its key kept for errors.
pub struct CorsSetting {
    pub key: Ident,
    pub value: CorsValue,
}

/// The value of a `cors` setting.
pub enum CorsValue {
    /// `any` (origins, headers).
    Any,
    /// `["...", ...]` (origins, headers, expose).
    Strings(Vec<LitStr>),
    /// `[GET, POST]` (methods).
    Methods(Vec<Ident>),
    /// `on` / `off` (credentials).
    Switch(bool),
    /// `10m` (max_age).
    Duration(DurationLit),
}

/// `rate_limit N per DURATION [by client_ip | by header "NAME" | by route];`
pub struct RateLimitDecl {
    pub keyword: Ident,
    pub limit: LitInt,
    pub per: DurationLit,
    /// `by KIND` and the header name for `by header`.
    pub by: Option<(Ident, Option<LitStr>)>,
    /// `shared "redis://..." [timeout D] [fallback MODE]`.
    pub shared: Option<SharedDecl>,
}

/// `shared "URL" [timeout D] [fallback local|open|closed]`: a rate limit counted in Redis.
pub struct SharedDecl {
    pub url: LitStr,
    pub timeout: Option<(Ident, DurationLit)>,
    pub fallback: Option<(Ident, Ident)>,
}

/// `listen "ADDR" [proxy_protocol MODE];` or `listen tls "ADDR" ...;`
pub struct Listen {
    pub lit: LitStr,
    pub tls: Option<TlsDecl>,
    /// `quic`: an HTTP/3 listener (UDP), serving the TLS listener's certificates.
    pub quic: Option<Ident>,
    /// `proxy_protocol required|optional` of this listener: keyword and mode.
    pub proxy_protocol: Option<(Ident, Ident)>,
}

/// `tls ... cert "FILE" key "FILE" ... client_ca "FILE"` of a listener.
pub struct TlsDecl {
    pub keyword: Ident,
    /// (certificate, key) pairs; the first is the default certificate.
    pub certs: Vec<(LitStr, LitStr)>,
    pub client_ca: Vec<(Ident, LitStr)>,
    /// `proxy_protocol MODE` among the settings (the listener's, read before TLS).
    pub proxy_protocol: Option<(Ident, Ident)>,
    /// A setting failed to parse (so "needs a certificate" would be a follow-on error).
    pub malformed: bool,
    /// Syntax errors inside a `{ ... }` block of settings.
    pub errors: Vec<syn::Error>,
}

/// `upstream NAME { ... }`
pub struct Upstream {
    pub name: Ident,
    pub peers: Option<(Ident, Vec<PeerLit>)>,
    pub select: Vec<SelectDecl>,
    pub timeouts: Vec<TimeoutDecl>,
    pub retry: Vec<RetryDecl>,
    pub health: Vec<HealthDecl>,
    pub passive: Vec<PassiveDecl>,
    pub fail_open: Vec<Ident>,
    /// `sticky cookie "NAME"`, each time given.
    pub sticky: Vec<(Ident, LitStr)>,
    pub discover: Vec<DiscoverDecl>,
    pub tls: Vec<UpstreamTlsDecl>,
    /// `http2;` (always) or `http2 negotiate;` (by ALPN).
    pub http2: Vec<(Ident, bool)>,
    /// `proxy_protocol v2;`: connections to the peers start with a PROXY header.
    pub proxy_protocol: Vec<Ident>,
    /// Whether parsing its block failed somewhere (then "no peers" would be noise).
    pub had_errors: bool,
    /// Syntax errors inside its block, each setting skipped after its error.
    pub errors: Vec<syn::Error>,
}

/// `tls [sni "NAME"] [ca "FILE"] [cert "FILE" key "FILE"] [insecure];` in an upstream.
pub struct UpstreamTlsDecl {
    pub keyword: Ident,
    pub sni: Option<LitStr>,
    pub ca: Option<LitStr>,
    pub cert: Option<(LitStr, LitStr)>,
    pub insecure: Option<Ident>,
}

/// `retry N [backoff D] [replay SIZE] [any_method];`
pub struct RetryDecl {
    pub keyword: Ident,
    pub count: LitInt,
    pub backoff: Option<DurationLit>,
    pub replay: Option<LitInt>,
    pub any_method: Option<Ident>,
}

/// `select STRATEGY;` or `select STRATEGY(KEY);`
pub struct SelectDecl {
    pub name: Ident,
    pub key: Option<KeyDecl>,
    /// `select custom(EXPR);`: a value implementing the runtime's `Selection`.
    pub custom: Option<Expr>,
}

/// What a key-based strategy hashes: `header "NAME"`, `cookie "NAME"`, `path`, `client_ip`.
pub struct KeyDecl {
    pub kind: Ident,
    pub arg: Option<LitStr>,
}

/// `health tcp ...;` or `health http "/path" ...;`
pub struct HealthDecl {
    pub keyword: Ident,
    pub kind: Ident,
    pub path: Option<LitStr>,
    pub options: Vec<(Ident, HealthValue)>,
}

/// The value of one `health` option.
pub enum HealthValue {
    Duration(DurationLit),
    Count(LitInt),
    Text(LitStr),
    /// `status N` or `status LOW..=HIGH`.
    Status(LitInt, Option<LitInt>),
}

/// `discover dns "NAME:PORT" [every D];`, `discover file "PATH" [every D];` or
/// `discover etcd "http://HOST:PORT" prefix "/KEY/PREFIX/";`
pub struct DiscoverDecl {
    pub keyword: Ident,
    pub kind: Ident,
    pub target: LitStr,
    pub every: Option<(Ident, DurationLit)>,
    pub prefix: Option<(Ident, LitStr)>,
}

/// `passive failures N eject DURATION;`
pub struct PassiveDecl {
    pub keyword: Ident,
    pub failures: LitInt,
    pub eject: DurationLit,
}

/// One entry of `peers [...]`.
pub struct PeerLit {
    pub lit: LitStr,
    pub weight: Option<LitInt>,
}

/// `KEY DURATION` inside a `timeout` list.
pub struct TimeoutDecl {
    pub key: Ident,
    pub value: DurationLit,
}

/// A duration literal such as `500ms`, `30s`, `1.5s`, `2m`.
pub enum DurationLit {
    Int(LitInt),
    Float(syn::LitFloat),
}

impl DurationLit {
    pub fn span(&self) -> Span {
        match self {
            DurationLit::Int(l) => l.span(),
            DurationLit::Float(l) => l.span(),
        }
    }

    /// The number and the unit as written: `("1.5", "s")`.
    pub fn parts(&self) -> (&str, &str) {
        match self {
            DurationLit::Int(l) => (l.base10_digits(), l.suffix()),
            DurationLit::Float(l) => (l.base10_digits(), l.suffix()),
        }
    }
}

/// `route MATCHERS => TARGET;` or `route MATCHERS => TARGET { edits }`.
pub struct RouteDecl {
    pub keyword: Ident,
    pub host: Option<LitStr>,
    pub path: Option<LitStr>,
    pub methods: Vec<Ident>,
    /// Every other condition (negated ones, exact and regex paths, headers, ...).
    pub conditions: Vec<ConditionDecl>,
    pub target: Target,
    pub edits: Vec<HeaderEditDecl>,
    /// `strip_prefix`, `replace_prefix`, `rewrite_path` or `set_path` in the block.
    pub rewrites: Vec<RewriteDecl>,
    /// `timeout`, `retry`, `rate_limit` and `max_body` in the block.
    pub policy: Vec<PolicyDecl>,
    /// `mirror POOL [N%];` in the block.
    pub mirror: Vec<MirrorDecl>,
    /// Syntax errors inside its block of edits.
    pub errors: Vec<syn::Error>,
}

/// A route condition beyond a plain host, path prefix and method list, optionally
/// negated with `not`.
pub struct ConditionDecl {
    pub not: Option<Ident>,
    /// `host`, `path`, `method`, `header`, `query`, `cookie`, `claim`, `client` or `scheme`.
    pub keyword: Ident,
    pub test: TestDecl,
}

/// What a condition tests.
pub enum TestDecl {
    Host(LitStr),
    PathPrefix(LitStr),
    PathExact(LitStr),
    PathRegex(LitStr),
    Method(Vec<Ident>),
    /// `header`/`query`/`cookie "NAME"` with what its value must be.
    Value {
        name: LitStr,
        value: ValueDecl,
    },
    Client(Vec<LitStr>),
    Scheme(Ident),
}

/// What a header, query parameter or cookie value must be.
pub enum ValueDecl {
    Present,
    Equals(LitStr),
    Matches(LitStr),
}

/// `mirror POOL [N%];`: copy the route's requests to a shadow pool.
pub struct MirrorDecl {
    pub keyword: Ident,
    pub pool: Ident,
    pub percent: Option<LitInt>,
}

/// A route's own limit, in its block.
pub enum PolicyDecl {
    /// `timeout connect 1s, read 5s;`
    Timeout(Ident, Vec<TimeoutDecl>),
    /// `retry N;`
    Retry(Ident, LitInt),
    /// `rate_limit N per D [by ...];`
    RateLimit(RateLimitDecl),
    /// `max_body SIZE;`
    MaxBody(Ident, LitInt),
    /// `cors { ... }` or `cors off;`
    Cors(CorsDecl),
    /// `allow [...];` or `deny [...];`
    Access(AccessDecl),
    /// `auth ...;`
    Auth(AuthDecl),
    /// `compress ...`
    Compress(CompressDecl),
    /// `cache ...`
    Cache(CacheDecl),
}

impl PolicyDecl {
    /// The keyword that starts it.
    pub fn keyword(&self) -> &Ident {
        match self {
            PolicyDecl::Timeout(k, _) | PolicyDecl::Retry(k, _) | PolicyDecl::MaxBody(k, _) => k,
            PolicyDecl::RateLimit(r) => &r.keyword,
            PolicyDecl::Cors(c) => &c.keyword,
            PolicyDecl::Access(a) => &a.keyword,
            PolicyDecl::Auth(a) => &a.keyword,
            PolicyDecl::Compress(c) => &c.keyword,
            PolicyDecl::Cache(c) => &c.keyword,
        }
    }
}

/// A path rewrite in a route's block.
pub struct RewriteDecl {
    pub keyword: Ident,
    pub kind: RewriteKind,
}

/// `strip_prefix "P"`, `replace_prefix "P" "Q"`, `rewrite_path "REGEX" "WITH"` or
/// `set_path "P"`.
pub enum RewriteKind {
    StripPrefix(LitStr),
    ReplacePrefix(LitStr, LitStr),
    Regex(LitStr, LitStr),
    SetPath(LitStr),
}

/// What a route does.
pub enum Target {
    Upstream(Ident),
    /// `split { 90% stable, 10% canary } [by KEY]`.
    Split {
        keyword: Ident,
        arms: Vec<(LitInt, Ident)>,
        key: Option<KeyDecl>,
    },
    Respond {
        status: LitInt,
        body: Option<LitStr>,
    },
    Redirect {
        status: LitInt,
        location: LitStr,
    },
}

impl RouteDecl {
    /// The upstreams the route names: its target's, its mirror's and its authorization
    /// service's.
    pub fn upstream_names(&self) -> Vec<&Ident> {
        let mut names = self.target.upstream_names();
        names.extend(self.mirror.iter().map(|m| &m.pool));
        names.extend(self.policy.iter().filter_map(|p| match p {
            PolicyDecl::Auth(a) => a.pool(),
            _ => None,
        }));
        names
    }
}

impl AuthDecl {
    /// The pool of `auth external POOL`.
    pub fn pool(&self) -> Option<&Ident> {
        match &self.kind {
            AuthKind::External { pool, .. } => Some(pool),
            _ => None,
        }
    }
}

impl Target {
    /// The upstreams the route forwards to, as written.
    pub fn upstream_names(&self) -> Vec<&Ident> {
        match self {
            Target::Upstream(name) => vec![name],
            Target::Split { arms, .. } => arms.iter().map(|(_, pool)| pool).collect(),
            Target::Respond { .. } | Target::Redirect { .. } => Vec::new(),
        }
    }
}

/// Which head a header edit changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EditSide {
    Request,
    Response,
}

/// `set_request_header "N" "V";` and its three siblings.
pub struct HeaderEditDecl {
    pub keyword: Ident,
    pub side: EditSide,
    pub name: LitStr,
    pub value: Option<LitStr>,
}

/// A phase written inline or as a function path.
#[derive(Clone)]
pub struct PhaseDecl {
    pub phase: Phase,
    pub keyword: Ident,
    pub body: PhaseBody,
}

/// How a phase is written.
#[derive(Clone)]
pub enum PhaseBody {
    Inline {
        params: Vec<Ident>,
        params_span: Span,
        block: Box<Block>,
    },
    Path(ExprPath),
}

/// A proxy-wide setting.
pub enum Setting {
    /// `via "1.1 edge";`
    Via(Ident, LitStr),
    /// `forwarded_for on|off;`
    ForwardedFor(Ident, bool),
    /// `keepalive on|off;`
    Keepalive(Ident, bool),
    /// `filter_local_answers on|off;`
    FilterLocalAnswers(Ident, bool),
    /// `max_header_bytes N;`
    MaxHeaderBytes(Ident, LitInt),
    /// `max_idle_per_peer N;`
    MaxIdlePerPeer(Ident, LitInt),
    /// `client_timeout KEY DURATION, ...;`
    ClientTimeouts(Ident, Vec<TimeoutDecl>),
    /// `tunnel_idle DURATION;`: idle limit of upgraded connections (WebSocket).
    TunnelIdle(Ident, DurationLit),
    /// `allow_upgrade ["websocket", ...];`: protocols a client may switch to.
    AllowUpgrade(Ident, Vec<LitStr>),
    /// `access_log "stdout"|"PATH" [combined|json];`
    AccessLog(Ident, LitStr, Option<Ident>),
    /// `tls_groups ["X25519MLKEM768", ...];`: key-exchange groups, preferred first.
    TlsGroups(Ident, Vec<LitStr>),
    /// `fips on|off;`: the TLS library's FIPS mode.
    Fips(Ident, bool),
    /// `proxy_protocol required|optional;`: connections start with a PROXY header.
    ProxyProtocol(Ident, Ident),
}

impl Setting {
    /// The keyword that starts the setting.
    pub fn keyword(&self) -> &Ident {
        match self {
            Setting::Via(k, _)
            | Setting::ForwardedFor(k, _)
            | Setting::Keepalive(k, _)
            | Setting::FilterLocalAnswers(k, _)
            | Setting::MaxHeaderBytes(k, _)
            | Setting::MaxIdlePerPeer(k, _)
            | Setting::ClientTimeouts(k, _)
            | Setting::TunnelIdle(k, _)
            | Setting::AllowUpgrade(k, _)
            | Setting::AccessLog(k, _, _)
            | Setting::TlsGroups(k, _)
            | Setting::Fips(k, _)
            | Setting::ProxyProtocol(k, _) => k,
        }
    }
}

//! The validated model: what a declaration means, with typed values (addresses, durations,
//! counts, statuses, header names) that `validate` checked. `expand` reads only this, so
//! code generation has nothing left to check and cannot fail; a value the user did not
//! write is `None` here, and the runtime's default applies.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use syn::{Attribute, Expr, Ident, LitStr, Type, Visibility};

use crate::syntax::{Kind, PhaseDecl};

/// One checked proxy.
pub struct Proxy {
    pub kind: Kind,
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub listens: Vec<Listen>,
    pub ctx: Option<Type>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub edits: Vec<HeaderEdit>,
    pub phases: Vec<PhaseDecl>,
    pub layers: Vec<Expr>,
    pub options: Options,
    pub rate_limits: Vec<RateLimit>,
    pub admin: Option<LitStr>,
    pub sentry: Option<Sentry>,
    /// `cors { ... }`: the proxy's CORS policy.
    pub cors: Option<Cors>,
    /// `allow`/`deny`: the proxy's client address blocks.
    pub access: Option<Access>,
    /// `trusted_proxies`: `(address, prefix length)` blocks.
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// `auth ...`: the proxy's authentication.
    pub auth: Option<Auth>,
    /// `compress ...`: the proxy's response compression.
    pub compress: Option<Compress>,
    /// `cache ...`: the proxy's HTTP cache.
    pub cache: Option<Cache>,
    /// `idle D;` of a layer-4 proxy.
    pub idle: Option<Duration>,
    /// Whether the phases are well formed (each once, each with its parameters), so their
    /// methods can be expanded even when another part of the declaration has errors.
    pub phases_valid: bool,
}

impl Proxy {
    /// Whether the user's `upstream_peer` phase picks peers (instead of routes).
    pub fn user_peer(&self) -> bool {
        self.phases
            .iter()
            .any(|d| d.phase == crate::phase::Phase::UpstreamPeer)
    }
}

/// `sentry "DSN" ...;`, checked.
pub struct Sentry {
    pub dsn: LitStr,
    pub sample: Option<f32>,
    pub environment: Option<LitStr>,
}

/// A listening address, and its TLS settings for `listen tls`.
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: Option<ListenTls>,
    /// An HTTP/3 (QUIC) listener.
    pub quic: bool,
    /// The listener's own `proxy_protocol`: `Some(true)` required, `Some(false)` optional.
    pub proxy_protocol: Option<bool>,
}

/// The certificates (the first is the default) and client CA of a TLS listener.
pub struct ListenTls {
    pub certs: Vec<(LitStr, LitStr)>,
    pub client_ca: Option<LitStr>,
}

/// One upstream group.
pub struct Upstream {
    pub name: Ident,
    /// Address and weight (1 unless given).
    pub peers: Vec<(SocketAddr, u32)>,
    pub strategy: Strategy,
    pub key: Option<RequestKey>,
    /// `(field, duration)` of `timeout connect 1s, read 30s`, in order.
    pub timeouts: Vec<(Ident, Duration)>,
    pub retry: Option<Retry>,
    pub health: Option<Health>,
    pub passive: Option<Passive>,
    pub fail_open: bool,
    /// Every peer as `(host, port, weight)` when some are host names (then `peers` is
    /// empty and DNS gives them).
    pub host_peers: Vec<(String, u16, u32)>,
    /// `sticky cookie "NAME"`: the cookie's name.
    pub sticky: Option<String>,
    pub discover: Option<Discover>,
    pub tls: Option<UpstreamTls>,
    /// `http2;` (false) or `http2 negotiate;` (true).
    pub http2: Option<bool>,
    /// `proxy_protocol v2;`
    pub proxy_protocol: bool,
}

/// A selection strategy.
pub enum Strategy {
    RoundRobin,
    Random,
    LeastConn,
    ConsistentHash,
    Hash,
    /// `custom(EXPR)`: a value implementing the runtime's `Selection`.
    Custom(Expr),
}

/// What a key-based strategy hashes.
pub enum RequestKey {
    /// A header name, lowercase.
    Header(String),
    Cookie(LitStr),
    Path,
    ClientIp,
}

/// `retry N [backoff D] [replay SIZE] [any_method]`.
pub struct Retry {
    pub count: u32,
    pub backoff: Option<Duration>,
    pub replay: Option<usize>,
    pub any_method: bool,
}

/// An active health check; `None` fields take the runtime's defaults.
pub struct Health {
    pub kind: HealthKind,
    pub every: Option<Duration>,
    pub timeout: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// The probe of a health check.
pub enum HealthKind {
    Tcp,
    Http {
        path: LitStr,
        host: Option<LitStr>,
        /// Healthy statuses, inclusive.
        status: Option<(u16, u16)>,
    },
}

/// `passive failures N eject D`.
pub struct Passive {
    pub failures: u32,
    pub eject: Duration,
}

/// Where the peers come from, asked every `every` (or the source's default interval).
pub struct Discover {
    pub source: DiscoverSource,
    pub every: Option<Duration>,
}

/// A discovery source.
pub enum DiscoverSource {
    Dns {
        host: String,
        port: u16,
    },
    File(String),
    /// Endpoints (`http://HOST:PORT`), key prefix.
    Etcd(Vec<String>, String),
}

/// TLS to the peers.
pub struct UpstreamTls {
    pub sni: Option<LitStr>,
    pub ca: Option<LitStr>,
    pub cert: Option<(LitStr, LitStr)>,
    pub insecure: bool,
}

/// A route: conditions and an action, with its own path rewrite and header edits.
pub struct Route {
    pub host: Option<LitStr>,
    pub path: Option<LitStr>,
    pub methods: Vec<Ident>,
    pub conditions: Vec<Condition>,
    pub action: Action,
    pub rewrite: Option<Rewrite>,
    pub edits: Vec<HeaderEdit>,
    pub policy: Option<Policy>,
    /// `mirror POOL [N%]`: the pool's index and the percent copied.
    pub mirror: Option<(usize, u32)>,
}

/// A route's own limits, checked; `None` fields are its group's.
#[derive(Default)]
pub struct Policy {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub write: Option<Duration>,
    pub retries: Option<u32>,
    pub rate_limits: Vec<RateLimit>,
    pub max_body: Option<u64>,
    pub cors: Choice<Cors>,
    pub access: Choice<Access>,
    pub auth: Choice<Auth>,
    pub compress: Choice<Compress>,
    pub cache: Choice<Cache>,
}

/// `cache { ... }`, checked; `None` fields are the runtime's defaults.
#[derive(Default)]
pub struct Cache {
    pub memory: Option<u64>,
    pub max_object: Option<u64>,
    pub ttl: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub lock_timeout: Option<Duration>,
    /// Lowercase.
    pub status_header: Option<String>,
    /// Lowercase header names added to the key.
    pub key_headers: Vec<String>,
    pub key_cookies: Vec<String>,
    /// `disk "DIR" SIZE`: the directory and its byte budget.
    pub disk: Option<(String, u64)>,
    /// `key "TEMPLATE"`: a part of the key made of the request's variables.
    pub key_template: Option<Template>,
}

/// `compress { ... }`, checked; `None` fields are the runtime's defaults.
#[derive(Default)]
pub struct Compress {
    /// Codings by their `Content-Encoding` token, preferred first.
    pub encodings: Option<Vec<String>>,
    /// Media types, lowercase.
    pub types: Option<Vec<String>>,
    pub min_size: Option<u64>,
}

/// A checked authentication method.
pub enum Auth {
    Basic {
        realm: String,
        file: String,
    },
    BearerList(Vec<String>),
    BearerFile(String),
    Jwt(Jwt),
    ApiKey {
        /// In a header (else a query parameter).
        header: bool,
        name: String,
        file: String,
        rate: Option<(u64, Duration)>,
    },
    External(External),
}

/// `auth jwt { ... }`, checked.
#[derive(Default)]
pub struct Jwt {
    /// `(algorithm, file)`; no algorithm for a JWKS file.
    pub keys: Vec<(Option<String>, String)>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub require: Vec<String>,
    pub leeway: Option<Duration>,
}

/// `auth external POOL { ... }`, checked.
#[derive(Default)]
pub struct External {
    /// The pool's index.
    pub group: usize,
    pub prefix: Option<String>,
    /// Header names sent (lowercase), if declared.
    pub send: Option<Vec<String>>,
    pub copy: Vec<String>,
    pub user: Option<String>,
    pub timeout: Option<Duration>,
    /// `(header, ttl)`.
    pub cache: Option<(String, Duration)>,
}

/// Checked `allow` and `deny` blocks, `(address, prefix length)`.
pub struct Access {
    pub allow: Vec<(IpAddr, u8)>,
    pub deny: Vec<(IpAddr, u8)>,
}

/// A proxy-wide policy as a route declares it.
#[derive(Default)]
pub enum Choice<T> {
    /// The route says nothing: the proxy's.
    #[default]
    Inherit,
    /// `POLICY { ... }` in the route.
    Own(T),
    /// `POLICY off;` in the route.
    Off,
}

/// A checked CORS policy.
pub struct Cors {
    /// Allowed origins, as written (`*` for `any`).
    pub origins: Vec<String>,
    /// `methods [...]`, if declared.
    pub methods: Option<Vec<Ident>>,
    /// `headers [...]` lowercase; `None` for any (or undeclared).
    pub headers: Option<Vec<String>>,
    /// `expose [...]`, lowercase.
    pub expose: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<Duration>,
}

/// A checked route condition.
pub struct Condition {
    pub negated: bool,
    pub test: Test,
}

/// What a condition tests, with checked values (regexes compile, names are valid).
pub enum Test {
    Host(String),
    PathPrefix(String),
    PathExact(String),
    PathRegex(String),
    Method(Vec<Ident>),
    /// A header name, lowercase.
    Header(String, ValueTest),
    Query(String, ValueTest),
    Cookie(String, ValueTest),
    /// A claim of the proxy's JWT.
    Claim(String, ValueTest),
    /// Address blocks: `(address, prefix length)`.
    Client(Vec<(IpAddr, u8)>),
    Https(bool),
}

/// What a value must be.
pub enum ValueTest {
    Present,
    Equals(String),
    Matches(String),
}

/// A checked path rewrite.
pub enum Rewrite {
    Prefix { from: String, to: String },
    Regex { pattern: String, with: String },
    Set(String),
}

/// What a route does.
pub enum Action {
    /// Forward to the upstream at this index.
    Upstream(usize),
    /// Forward to one of these upstreams `(index, percent)`, sticky by the key if any.
    Split {
        arms: Vec<(usize, u32)>,
        key: Option<RequestKey>,
    },
    Respond {
        status: u16,
        body: String,
        template: Option<Template>,
    },
    Redirect {
        status: u16,
        location: LitStr,
        template: Option<Template>,
    },
}

/// A header edit; `value` is `None` for a removal.
pub struct HeaderEdit {
    pub side: EditSide,
    /// The header name, lowercase (valid, not managed by the proxy).
    pub name: String,
    pub value: Option<LitStr>,
    /// The value's variables, when it has some.
    pub template: Option<Template>,
}

/// A string with `${VARIABLE}`s, split into its parts.
pub struct Template {
    pub parts: Vec<TemplatePart>,
    /// The path regex its captures come from, when it uses captures.
    pub captures: Option<String>,
}

/// Text or a variable of a template.
pub enum TemplatePart {
    Text(String),
    Var(TemplateVar),
}

/// A checked template variable (names lowercase where case does not matter).
pub enum TemplateVar {
    Host,
    Path,
    Query,
    RequestUri,
    Scheme,
    Method,
    ClientIp,
    RequestId,
    Header(String),
    Cookie(String),
    QueryParam(String),
    Capture(String),
    /// `${user}`: who the request authenticated as.
    User,
    /// `${claim.NAME}`: a JWT claim.
    Claim(String),
}

pub use crate::syntax::EditSide;

/// `rate_limit N per D by KEY`.
pub struct RateLimit {
    pub limit: u64,
    pub per: Duration,
    pub key: RateKey,
    pub shared: Option<SharedLimit>,
}

/// `shared "URL" [timeout D] [fallback MODE]`, checked; `None`: the runtime's default.
pub struct SharedLimit {
    pub url: String,
    pub timeout: Option<Duration>,
    /// `local`, `open` or `closed`.
    pub fallback: Option<String>,
}

/// What a rate limit counts by.
pub enum RateKey {
    ClientIp,
    /// A header name, lowercase.
    Header(String),
    Route,
}

/// A proxy-wide setting, in the order declared. Only declared settings are here: the
/// runtime's `ProxyOptions` and `HttpOptions` hold the defaults.
pub enum Setting {
    Via(LitStr),
    ForwardedFor(bool),
    Keepalive(bool),
    FilterLocalAnswers(bool),
    MaxHeaderBytes(usize),
    MaxIdlePerPeer(usize),
    /// `client_timeout` entries: `(key, duration)`.
    ClientTimeout(Ident, Duration),
    TunnelIdle(Duration),
    AllowUpgrade(Vec<LitStr>),
    AccessLog {
        target: LitStr,
        json: bool,
    },
    /// The groups as written (checked names).
    TlsGroups(Vec<LitStr>),
    Fips(bool),
    /// `proxy_protocol required|optional;`: whether it is required.
    ProxyProtocol(bool),
}

/// The declared settings.
pub struct Options {
    pub settings: Vec<Setting>,
}

//! What a `proxy!` invocation declares, as parsed: literals keep their tokens (for error
//! spans) and get their checked values filled in by `validate`.

use std::net::SocketAddr;
use std::time::Duration;

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
}

/// `rate_limit N per DURATION [by client_ip | by header "NAME" | by route];`
pub struct RateLimitDecl {
    pub keyword: Ident,
    pub limit: LitInt,
    pub per: DurationLit,
    /// `by KIND` and the header name for `by header`.
    pub by: Option<(Ident, Option<LitStr>)>,
}

/// `listen "ADDR";` or `listen tls "ADDR" ...;`
pub struct Listen {
    pub lit: LitStr,
    pub addr: Option<SocketAddr>,
    pub tls: Option<TlsDecl>,
}

/// `tls ... cert "FILE" key "FILE" ... client_ca "FILE"` of a listener.
pub struct TlsDecl {
    pub keyword: Ident,
    /// (certificate, key) pairs; the first is the default certificate.
    pub certs: Vec<(LitStr, LitStr)>,
    pub client_ca: Vec<(Ident, LitStr)>,
    /// A setting failed to parse (so "needs a certificate" would be a follow-on error).
    pub malformed: bool,
}

/// `upstream NAME { ... }`
pub struct Upstream {
    pub name: Ident,
    pub peers: Option<(Ident, Vec<Peer>)>,
    pub select: Vec<SelectDecl>,
    pub timeouts: Vec<TimeoutDecl>,
    pub retry: Vec<RetryDecl>,
    pub health: Vec<HealthDecl>,
    pub passive: Vec<PassiveDecl>,
    pub fail_open: Vec<Ident>,
    pub discover: Vec<DiscoverDecl>,
    pub tls: Vec<UpstreamTlsDecl>,
    /// `http2;` (always) or `http2 negotiate;` (by ALPN).
    pub http2: Vec<(Ident, bool)>,
    /// Checked retry count.
    pub retries: u32,
    /// Whether parsing its block failed somewhere (then "no peers" would be noise).
    pub had_errors: bool,
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

impl RetryDecl {
    /// The replay limit in bytes: `65536`, `64KiB`, `1MiB`.
    pub fn replay_bytes(&self) -> Option<Result<usize, String>> {
        let lit = self.replay.as_ref()?;
        let unit: usize = match lit.suffix().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1024,
            "mib" | "m" => 1024 * 1024,
            _ => {
                return Some(Err(format!(
                    "invalid size unit `{}`: write bytes, KiB or MiB (e.g. `64KiB`)",
                    lit.suffix()
                )))
            }
        };
        let n: usize = lit.base10_digits().parse().unwrap_or(usize::MAX / unit);
        let bytes = n.saturating_mul(unit);
        Some(if bytes > 16 * 1024 * 1024 {
            Err("a replay buffer goes up to 16MiB (it is held per request)".to_owned())
        } else {
            Ok(bytes)
        })
    }
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

/// `discover dns "NAME:PORT" [every D];` or `discover file "PATH" [every D];`
pub struct DiscoverDecl {
    pub keyword: Ident,
    pub kind: Ident,
    pub target: LitStr,
    pub every: Option<DurationLit>,
}

/// `passive failures N eject DURATION;`
pub struct PassiveDecl {
    pub keyword: Ident,
    pub failures: LitInt,
    pub eject: DurationLit,
}

/// One entry of `peers [...]`.
pub struct Peer {
    pub lit: LitStr,
    pub addr: Option<SocketAddr>,
    pub weight: Option<LitInt>,
    pub weight_value: u32,
}

/// `KEY DURATION` inside a `timeout` list.
pub struct TimeoutDecl {
    pub key: Ident,
    pub value: DurationLit,
    pub duration: Option<Duration>,
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

    /// The duration, or what is wrong with the literal.
    pub fn value(&self) -> Result<Duration, String> {
        let (digits, suffix) = match self {
            DurationLit::Int(l) => (l.base10_digits().to_owned(), l.suffix().to_owned()),
            DurationLit::Float(l) => (l.base10_digits().to_owned(), l.suffix().to_owned()),
        };
        let unit = match suffix.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "invalid duration `{digits}{suffix}`: write a number with a unit, ms, s, m or h (e.g. `500ms`, `30s`)"
                ))
            }
        };
        let seconds = digits.parse::<f64>().unwrap_or(0.0) * unit;
        if !(0.001..=7.0 * 24.0 * 3600.0).contains(&seconds) {
            return Err(format!(
                "duration `{digits}{suffix}` is out of range: use at least 1ms and at most 7 days (a timeout of 0 would never let a request through)"
            ));
        }
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// `route MATCHERS => TARGET;` or `route MATCHERS => TARGET { edits }`.
pub struct RouteDecl {
    pub keyword: Ident,
    pub host: Option<LitStr>,
    pub path: Option<LitStr>,
    pub methods: Vec<Ident>,
    pub target: Target,
    pub edits: Vec<HeaderEditDecl>,
}

/// What a route does.
pub enum Target {
    Upstream(Ident),
    Respond {
        status: LitInt,
        body: Option<LitStr>,
    },
    Redirect {
        status: LitInt,
        location: LitStr,
    },
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
pub struct PhaseDecl {
    pub phase: Phase,
    pub keyword: Ident,
    pub body: PhaseBody,
}

/// How a phase is written.
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
}

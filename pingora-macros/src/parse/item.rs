//! The items of a proxy's block: listeners, `ctx`, upstreams, routes, layers, header
//! edits, settings, rate limits, `admin`, `idle` and phases.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{bracketed, Expr, Ident, LitInt, LitStr, Token, Type};

use crate::diagnostic::hint;
use crate::phase::Phase;
use crate::syntax::{
    AccessDecl, AuthDecl, CacheDecl, CompressDecl, CorsDecl, DurationLit, HeaderEditDecl, Listen,
    PhaseDecl, Proxy, RateLimitDecl, RouteDecl, SentryDecl, Setting, SharedDecl, TimeoutDecl,
    Upstream,
};

use super::{expect, keyword, kw, parse_switch, semi, tls};

/// Keywords that may start an item of a proxy.
pub const ITEMS: &[&str] = &[
    "listen",
    "ctx",
    "upstream",
    "route",
    "layer",
    "set_request_header",
    "remove_request_header",
    "set_response_header",
    "remove_response_header",
    "via",
    "forwarded_for",
    "keepalive",
    "filter_local_answers",
    "max_header_bytes",
    "max_idle_per_peer",
    "client_timeout",
    "tunnel_idle",
    "allow_upgrade",
    "idle",
    "rate_limit",
    "admin",
    "sentry",
    "cors",
    "allow",
    "deny",
    "trusted_proxies",
    "auth",
    "compress",
    "cache",
    "access_log",
    "tls_groups",
    "fips",
    "proxy_protocol",
    "early_request_filter",
    "request_filter",
    "upstream_peer",
    "upstream_request_filter",
    "fail_to_connect",
    "upstream_response_filter",
    "response_filter",
    "logging",
];

/// One item of a proxy's block.
pub enum Item {
    Listen(Listen),
    Idle(Ident, DurationLit),
    Ctx(Ident, Type),
    Upstream(Upstream),
    Route(RouteDecl),
    Layer(Expr),
    Edit(HeaderEditDecl),
    Setting(Setting),
    RateLimit(RateLimitDecl),
    Admin(Ident, LitStr),
    Sentry(SentryDecl),
    Cors(CorsDecl),
    Access(AccessDecl),
    TrustedProxies(Ident, Vec<LitStr>),
    Auth(AuthDecl),
    Compress(CompressDecl),
    Cache(CacheDecl),
    Phase(PhaseDecl),
}

impl Parse for Item {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(kw::listen) {
            return input.parse().map(Item::Listen);
        }
        if input.peek(kw::upstream) {
            return input.parse().map(Item::Upstream);
        }
        if input.peek(kw::route) {
            return input.parse().map(Item::Route);
        }
        if HeaderEditDecl::peek(input) {
            return input.parse().map(Item::Edit);
        }
        if input.peek(kw::rate_limit) {
            return input.parse().map(Item::RateLimit);
        }
        if Setting::peek(input) {
            return input.parse().map(Item::Setting);
        }
        if input.peek(kw::idle) || input.peek(kw::ctx) || input.peek(kw::layer) {
            return parse_small_item(input);
        }
        if input.peek(kw::admin) {
            let keyword = keyword(input)?;
            let addr = expect(
                input,
                "expected the admin listener's address: `admin \"127.0.0.1:9100\";`",
            )?;
            semi(input, "admin")?;
            return Ok(Item::Admin(keyword, addr));
        }
        if input.peek(kw::sentry) {
            return input.parse().map(Item::Sentry);
        }
        if super::policy::peek_cors(input) {
            return input.parse().map(Item::Cors);
        }
        if super::policy::peek_access(input) {
            return input.parse().map(Item::Access);
        }
        if super::auth::peek_auth(input) {
            return input.parse().map(Item::Auth);
        }
        if super::policy::peek_compress(input) {
            return input.parse().map(Item::Compress);
        }
        if super::cache::peek_cache(input) {
            return input.parse().map(Item::Cache);
        }
        if input.peek(kw::trusted_proxies) {
            let (keyword, blocks) = super::policy::parse_trusted_proxies(input)?;
            return Ok(Item::TrustedProxies(keyword, blocks));
        }
        if PhaseDecl::peek(input) {
            return input.parse().map(Item::Phase);
        }
        let word = Ident::parse_any(input)?;
        Err(syn::Error::new(
            word.span(),
            format!(
                "unknown item `{word}` in a proxy: {}",
                hint(&word.to_string(), ITEMS)
            ),
        ))
    }
}

/// `idle D;`, `ctx TYPE;` and `layer EXPR;`.
fn parse_small_item(input: ParseStream<'_>) -> syn::Result<Item> {
    let keyword = keyword(input)?;
    let item = if keyword == "idle" {
        Item::Idle(keyword, input.parse()?)
    } else if keyword == "ctx" {
        Item::Ctx(keyword, input.parse()?)
    } else {
        Item::Layer(input.parse()?)
    };
    let name = match &item {
        Item::Idle(..) => "idle",
        Item::Ctx(..) => "ctx",
        _ => "layer",
    };
    semi(input, name)?;
    Ok(item)
}

impl Item {
    /// Adds the item to `proxy`, moving the errors found inside its block to the proxy's.
    pub fn add_to(self, proxy: &mut Proxy) {
        match self {
            Item::Listen(mut l) => {
                if let Some(tls) = &mut l.tls {
                    proxy.errors.append(&mut tls.errors);
                }
                proxy.listens.push(l);
            }
            Item::Idle(k, d) => proxy.idle.push((k, d)),
            Item::Ctx(k, ty) => proxy.ctx.push((k, ty)),
            Item::Upstream(mut up) => {
                proxy.errors.append(&mut up.errors);
                proxy.upstreams.push(up);
            }
            Item::Route(mut route) => {
                proxy.errors.append(&mut route.errors);
                proxy.routes.push(route);
            }
            Item::Layer(expr) => proxy.layers.push(expr),
            Item::Edit(edit) => proxy.edits.push(edit),
            Item::Setting(setting) => proxy.settings.push(setting),
            Item::RateLimit(limit) => proxy.rate_limits.push(limit),
            Item::Admin(k, addr) => proxy.admin.push((k, addr)),
            Item::Sentry(decl) => proxy.sentry.push(decl),
            Item::Cors(mut decl) => {
                proxy.errors.append(&mut decl.errors);
                proxy.cors.push(decl);
            }
            Item::Access(decl) => proxy.access.push(decl),
            Item::TrustedProxies(k, blocks) => proxy.trusted_proxies.push((k, blocks)),
            Item::Auth(mut decl) => {
                proxy.errors.append(&mut decl.errors);
                proxy.auth.push(decl);
            }
            Item::Compress(mut decl) => {
                proxy.errors.append(&mut decl.errors);
                proxy.compress.push(decl);
            }
            Item::Cache(mut decl) => {
                proxy.errors.append(&mut decl.errors);
                proxy.cache.push(decl);
            }
            Item::Phase(phase) => proxy.phases.push(phase),
        }
    }
}

/// `listen "ADDR";` or `listen tls "ADDR" ...`.
impl Parse for Listen {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        input.parse::<kw::listen>()?;
        if input.peek(kw::quic) {
            let quic = keyword(input)?;
            let lit = expect(input, "expected an address: `listen quic \"0.0.0.0:443\";`")?;
            semi(input, "listen quic")?;
            return Ok(Listen {
                lit,
                tls: None,
                quic: Some(quic),
                proxy_protocol: None,
            });
        }
        let tls_keyword = if input.peek(kw::tls) {
            Some(keyword(input)?)
        } else if input.peek(Ident::peek_any) {
            let kw = Ident::parse_any(input)?;
            return Err(syn::Error::new(
                kw.span(),
                format!(
                    "unknown listener kind `{kw}`: write `listen \"127.0.0.1:6188\";`, \
                     `listen tls \"127.0.0.1:6189\" cert \"server.crt\" key \"server.key\";` or \
                     `listen quic \"127.0.0.1:6189\";`"
                ),
            ));
        } else {
            None
        };
        let lit = expect(input, "expected an address: `listen \"127.0.0.1:6188\";`")?;
        let (tls, proxy_protocol) = match tls_keyword {
            Some(keyword) => {
                let mut tls = tls::parse_listener_tls(input, keyword)?;
                let proxy_protocol = tls.proxy_protocol.take();
                (Some(tls), proxy_protocol)
            }
            None => {
                let proxy_protocol = if input.peek(kw::proxy_protocol) {
                    Some(parse_listener_proxy_protocol(input)?)
                } else {
                    None
                };
                semi(input, "listen")?;
                (None, proxy_protocol)
            }
        };
        Ok(Listen {
            lit,
            tls,
            quic: None,
            proxy_protocol,
        })
    }
}

/// `proxy_protocol MODE` of one listener: the keyword and the mode, checked later.
pub(super) fn parse_listener_proxy_protocol(input: ParseStream<'_>) -> syn::Result<(Ident, Ident)> {
    let keyword = keyword(input)?;
    let mode = Ident::parse_any(input).map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected `required` or `optional`: `listen \"0.0.0.0:80\" proxy_protocol required;`",
        )
    })?;
    Ok((keyword, mode))
}

/// `sentry "DSN" [sample RATE] [environment "NAME"];`
impl Parse for SentryDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = keyword(input)?;
        let dsn = expect(
            input,
            "expected the project's DSN: `sentry \"https://PUBLIC_KEY@o0.ingest.sentry.io/42\";`",
        )?;
        let mut decl = SentryDecl {
            keyword,
            dsn,
            sample: None,
            environment: None,
        };
        while !input.peek(Token![;]) {
            if input.peek(kw::sample) && decl.sample.is_none() {
                input.parse::<kw::sample>()?;
                decl.sample = Some(input.parse().map_err(|e| {
                    syn::Error::new(e.span(), "expected the share of events sent: `sample 0.25`")
                })?);
            } else if input.peek(kw::environment) && decl.environment.is_none() {
                input.parse::<kw::environment>()?;
                decl.environment = Some(expect(
                    input,
                    "expected the environment's name: `environment \"production\"`",
                )?);
            } else {
                let word = Ident::parse_any(input)?;
                return Err(syn::Error::new(
                    word.span(),
                    format!(
                        "unexpected `{word}` in `sentry`: it takes `sample RATE` and `environment \"NAME\"`, each once"
                    ),
                ));
            }
        }
        semi(input, "sentry")?;
        Ok(decl)
    }
}

/// `rate_limit N per DURATION [by client_ip | by header "NAME" | by route];`
impl Parse for RateLimitDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = keyword(input)?;
        let limit = expect(
            input,
            "expected a count: `rate_limit 100 per 1s by client_ip;`",
        )?;
        if !input.peek(kw::per) {
            let per = Ident::parse_any(input)?;
            return Err(syn::Error::new(
                per.span(),
                "expected `per DURATION`: `rate_limit 100 per 1s by client_ip;`",
            ));
        }
        input.parse::<kw::per>()?;
        let per = input.parse()?;
        let by = if input.peek(Token![;]) || input.peek(kw::shared) {
            None
        } else {
            if !input.peek(kw::by) {
                let by = Ident::parse_any(input)?;
                return Err(syn::Error::new(
                    by.span(),
                    "expected `by client_ip`, `by header \"NAME\"`, `by route` or `shared \"redis://HOST:PORT\"`",
                ));
            }
            input.parse::<kw::by>()?;
            let kind = Ident::parse_any(input)?;
            let name = if kind == "header" {
                Some(expect(
                    input,
                    "expected the header's name: `by header \"x-api-key\"`",
                )?)
            } else {
                None
            };
            Some((kind, name))
        };
        let shared = if input.peek(kw::shared) {
            Some(input.parse()?)
        } else {
            None
        };
        if input.peek(Ident::peek_any) {
            let next = Ident::parse_any(input)?;
            return Err(syn::Error::new(
                next.span(),
                format!("unexpected `{next}`: a rate limit ends with `;`, after `by KEY` and `shared \"redis://HOST:PORT\"`"),
            ));
        }
        semi(input, "rate_limit")?;
        Ok(RateLimitDecl {
            keyword,
            limit,
            per,
            by,
            shared,
        })
    }
}

/// `shared "URL" [timeout D] [fallback local|open|closed]`.
impl Parse for SharedDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        input.parse::<kw::shared>()?;
        let url = expect(
            input,
            "expected the Redis URL: `shared \"redis://127.0.0.1:6379/0\"`",
        )?;
        let mut decl = SharedDecl {
            url,
            timeout: None,
            fallback: None,
        };
        while input.peek(Ident::peek_any) {
            let option = Ident::parse_any(input)?;
            match option.to_string().as_str() {
                "timeout" if decl.timeout.is_none() => {
                    let d = input.parse()?;
                    decl.timeout = Some((option, d));
                }
                "fallback" if decl.fallback.is_none() => {
                    let mode = expect(input, "expected `fallback local`, `fallback open` or `fallback closed`")?;
                    decl.fallback = Some((option, mode));
                }
                "timeout" | "fallback" => {
                    return Err(syn::Error::new(
                        option.span(),
                        format!("`{option}` is given twice: keep one"),
                    ))
                }
                other => {
                    return Err(syn::Error::new(
                        option.span(),
                        format!("unknown option `{other}` of `shared`: write `timeout DURATION` or `fallback local|open|closed`"),
                    ))
                }
            }
        }
        Ok(decl)
    }
}

impl Setting {
    /// Whether a proxy-wide setting starts here.
    fn peek(input: ParseStream<'_>) -> bool {
        input.peek(kw::via)
            || input.peek(kw::forwarded_for)
            || input.peek(kw::keepalive)
            || input.peek(kw::filter_local_answers)
            || input.peek(kw::max_header_bytes)
            || input.peek(kw::max_idle_per_peer)
            || input.peek(kw::client_timeout)
            || input.peek(kw::tunnel_idle)
            || input.peek(kw::allow_upgrade)
            || input.peek(kw::access_log)
            || input.peek(kw::tls_groups)
            || input.peek(kw::fips)
            || input.peek(kw::proxy_protocol)
    }
}

/// A proxy-wide setting, ended by `;`.
impl Parse for Setting {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let lookahead = input.lookahead1();
        let setting = if lookahead.peek(kw::via) {
            Setting::Via(keyword(input)?, input.parse()?)
        } else if lookahead.peek(kw::forwarded_for) {
            Setting::ForwardedFor(keyword(input)?, parse_switch(input)?)
        } else if lookahead.peek(kw::keepalive) {
            Setting::Keepalive(keyword(input)?, parse_switch(input)?)
        } else if lookahead.peek(kw::filter_local_answers) {
            Setting::FilterLocalAnswers(keyword(input)?, parse_switch(input)?)
        } else if lookahead.peek(kw::max_header_bytes) {
            Setting::MaxHeaderBytes(keyword(input)?, input.parse::<LitInt>()?)
        } else if lookahead.peek(kw::max_idle_per_peer) {
            Setting::MaxIdlePerPeer(keyword(input)?, input.parse::<LitInt>()?)
        } else if lookahead.peek(kw::client_timeout) {
            Setting::ClientTimeouts(keyword(input)?, parse_timeouts(input)?)
        } else if lookahead.peek(kw::tunnel_idle) {
            Setting::TunnelIdle(keyword(input)?, input.parse()?)
        } else if lookahead.peek(kw::allow_upgrade) {
            Setting::AllowUpgrade(keyword(input)?, parse_protocols(input)?)
        } else if lookahead.peek(kw::access_log) {
            parse_access_log(input)?
        } else if lookahead.peek(kw::tls_groups) {
            Setting::TlsGroups(
                keyword(input)?,
                parse_strings(
                    input,
                    "expected a list of groups: `tls_groups [\"X25519MLKEM768\", \"X25519\", \"P-256\"];`",
                )?,
            )
        } else if lookahead.peek(kw::fips) {
            Setting::Fips(keyword(input)?, parse_switch(input)?)
        } else if lookahead.peek(kw::proxy_protocol) {
            let k = keyword(input)?;
            let mode = Ident::parse_any(input).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected `required` or `optional`: `proxy_protocol required;`",
                )
            })?;
            Setting::ProxyProtocol(k, mode)
        } else {
            return Err(lookahead.error());
        };
        semi(input, &setting.keyword().to_string())?;
        Ok(setting)
    }
}

/// `["websocket", ...]` of `allow_upgrade`.
fn parse_protocols(input: ParseStream<'_>) -> syn::Result<Vec<LitStr>> {
    parse_strings(
        input,
        "expected a list of protocols: `allow_upgrade [\"websocket\"];` (`[]` for none)",
    )
}

/// `["A", "B", ...]`, or `message` at what stands there instead.
fn parse_strings(input: ParseStream<'_>, message: &str) -> syn::Result<Vec<LitStr>> {
    let expected = |span| syn::Error::new(span, message);
    if !input.peek(syn::token::Bracket) {
        return Err(expected(input.span()));
    }
    let list;
    bracketed!(list in input);
    let protocols =
        Punctuated::<LitStr, Token![,]>::parse_terminated(&list).map_err(|e| expected(e.span()))?;
    Ok(protocols.into_iter().collect())
}

/// `access_log "stdout"|"PATH" [FORMAT]` (before the `;`).
fn parse_access_log(input: ParseStream<'_>) -> syn::Result<Setting> {
    let keyword = keyword(input)?;
    let target = expect(
        input,
        "expected where the log goes: `access_log \"stdout\";` or `access_log \"/var/log/proxy.log\" json;`",
    )?;
    let format = if input.peek(Token![;]) {
        None
    } else {
        Some(Ident::parse_any(input)?)
    };
    Ok(Setting::AccessLog(keyword, target, format))
}

/// `KEY DURATION, ...` of `timeout` and `client_timeout`.
pub fn parse_timeouts(input: ParseStream<'_>) -> syn::Result<Vec<TimeoutDecl>> {
    let mut list = Vec::new();
    loop {
        let key = Ident::parse_any(input)?;
        let value = input.parse()?;
        list.push(TimeoutDecl { key, value });
        if !input.peek(Token![,]) {
            return Ok(list);
        }
        input.parse::<Token![,]>()?;
    }
}

impl PhaseDecl {
    /// Whether a phase starts here (`NAME(` or `NAME =`).
    fn peek(input: ParseStream<'_>) -> bool {
        let fork = input.fork();
        Ident::parse_any(&fork).is_ok_and(|word| Phase::from_name(&word.to_string()).is_some())
    }
}

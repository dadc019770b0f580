//! An upstream block, `upstream NAME { SETTING* }`, and each of its settings.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{braced, bracketed, parenthesized, Ident, LitInt, LitStr, Token};

use crate::diagnostic::hint;
use crate::syntax::{
    DiscoverDecl, DurationLit, HealthDecl, HealthValue, KeyDecl, PassiveDecl, PeerLit, RetryDecl,
    SelectDecl, TimeoutDecl, Upstream, UpstreamTlsDecl,
};

use super::item::parse_timeouts;
use super::{expect, keyword, kw, parse_block, semi};

const UPSTREAM_KEYS: &[&str] = &[
    "peers",
    "select",
    "timeout",
    "retry",
    "health",
    "passive",
    "fail_open",
    "sticky",
    "discover",
    "tls",
    "http2",
    "proxy_protocol",
];

/// What other proxies' configurations call an upstream setting, and ours: a user coming
/// from nginx, HAProxy or Envoy gets pointed at the keyword that does it.
const UPSTREAM_SYNONYMS: &[(&str, &str)] = &[
    ("balance", "select"),
    ("lb_policy", "select"),
    ("load_balance", "select"),
    ("algorithm", "select"),
    ("strategy", "select"),
    ("server", "peers"),
    ("servers", "peers"),
    ("backend", "peers"),
    ("backends", "peers"),
    ("endpoints", "peers"),
    ("hosts", "peers"),
    ("targets", "peers"),
    ("retries", "retry"),
    ("health_check", "health"),
    ("check", "health"),
    ("timeouts", "timeout"),
    ("outlier_detection", "passive"),
    ("max_fails", "passive"),
    ("ssl", "tls"),
    ("h2", "http2"),
];

/// One setting of an upstream block, without its `;`.
enum UpstreamItem {
    Peers(Ident, Vec<PeerLit>),
    Select(SelectDecl),
    Timeouts(Vec<TimeoutDecl>),
    Retry(RetryDecl),
    Health(HealthDecl),
    Passive(PassiveDecl),
    FailOpen(Ident),
    Sticky(Ident, LitStr),
    Discover(DiscoverDecl),
    Tls(UpstreamTlsDecl),
    Http2(Ident, bool),
    /// `proxy_protocol v2;`
    ProxyProtocol(Ident),
}

impl UpstreamItem {
    /// The keyword, for the message of a missing `;`.
    fn name(&self) -> &'static str {
        match self {
            UpstreamItem::Peers(..) => "peers",
            UpstreamItem::Select(_) => "select",
            UpstreamItem::Timeouts(_) => "timeout",
            UpstreamItem::Retry(_) => "retry",
            UpstreamItem::Health(_) => "health",
            UpstreamItem::Passive(_) => "passive",
            UpstreamItem::FailOpen(_) => "fail_open",
            UpstreamItem::Sticky(..) => "sticky",
            UpstreamItem::Discover(_) => "discover",
            UpstreamItem::Tls(_) => "tls",
            UpstreamItem::Http2(..) => "http2",
            UpstreamItem::ProxyProtocol(_) => "proxy_protocol",
        }
    }
}

impl Parse for UpstreamItem {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let item = if input.peek(kw::peers) {
            let keyword = keyword(input)?;
            UpstreamItem::Peers(keyword, parse_peers(input)?)
        } else if input.peek(kw::select) {
            UpstreamItem::Select(input.parse()?)
        } else if input.peek(kw::timeout) {
            input.parse::<kw::timeout>()?;
            UpstreamItem::Timeouts(parse_timeouts(input)?)
        } else if input.peek(kw::retry) {
            UpstreamItem::Retry(input.parse()?)
        } else if input.peek(kw::health) {
            UpstreamItem::Health(input.parse()?)
        } else if input.peek(kw::passive) {
            UpstreamItem::Passive(input.parse()?)
        } else if input.peek(kw::fail_open) {
            UpstreamItem::FailOpen(keyword(input)?)
        } else if input.peek(kw::sticky) {
            let k = keyword(input)?;
            if !input.peek(kw::cookie) {
                return Err(input.error("expected `cookie \"NAME\"`: `sticky cookie \"srv\";`"));
            }
            input.parse::<kw::cookie>()?;
            UpstreamItem::Sticky(
                k,
                expect(
                    input,
                    "expected the cookie's name: `sticky cookie \"srv\";`",
                )?,
            )
        } else if input.peek(kw::discover) {
            UpstreamItem::Discover(input.parse()?)
        } else if input.peek(kw::tls) {
            UpstreamItem::Tls(input.parse()?)
        } else if input.peek(kw::http2) {
            parse_http2(input)?
        } else if input.peek(kw::proxy_protocol) {
            let k = keyword(input)?;
            let version = Ident::parse_any(input).map_err(|e| {
                syn::Error::new(e.span(), "expected the version: `proxy_protocol v2;`")
            })?;
            if version != "v2" {
                return Err(syn::Error::new(
                    version.span(),
                    "peers are sent PROXY protocol v2 (binary; HAProxy, nginx, Envoy and AWS read it): write `proxy_protocol v2;`",
                ));
            }
            UpstreamItem::ProxyProtocol(k)
        } else {
            let w = Ident::parse_any(input)?;
            let word = w.to_string();
            let help = match UPSTREAM_SYNONYMS.iter().find(|(other, _)| *other == word) {
                Some((_, ours)) => format!("did you mean `{ours}`?"),
                None => hint(&word, UPSTREAM_KEYS),
            };
            return Err(syn::Error::new(
                w.span(),
                format!("unknown upstream setting `{w}`: {help}"),
            ));
        };
        semi(input, item.name())?;
        Ok(item)
    }
}

/// `upstream NAME { ... }`: every setting, each error recorded and skipped.
impl Parse for Upstream {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        input.parse::<kw::upstream>()?;
        let name = expect(
            input,
            "expected the upstream's name: `upstream api { ... }`",
        )?;
        let content;
        braced!(content in input);
        let mut up = Upstream {
            name,
            peers: None,
            select: Vec::new(),
            timeouts: Vec::new(),
            retry: Vec::new(),
            health: Vec::new(),
            passive: Vec::new(),
            fail_open: Vec::new(),
            sticky: Vec::new(),
            discover: Vec::new(),
            tls: Vec::new(),
            http2: Vec::new(),
            proxy_protocol: Vec::new(),
            had_errors: false,
            errors: Vec::new(),
        };
        let mut peer_lists = Vec::new();
        let mut errors = Vec::new();
        up.had_errors = parse_block(&content, &mut errors, |content| {
            match content.parse::<UpstreamItem>()? {
                UpstreamItem::Peers(k, peers) => peer_lists.push((k, peers)),
                item => up.add(item),
            }
            Ok(())
        });
        let mut lists = peer_lists.into_iter();
        up.peers = lists.next();
        for (again, _) in lists {
            errors.push(syn::Error::new(
                again.span(),
                "`peers` is given twice in this upstream: list every peer in one `peers [...]`",
            ));
        }
        up.errors = errors;
        Ok(up)
    }
}

impl Upstream {
    /// Records a setting other than `peers`.
    fn add(&mut self, item: UpstreamItem) {
        match item {
            UpstreamItem::Select(s) => self.select.push(s),
            UpstreamItem::Timeouts(list) => self.timeouts.extend(list),
            UpstreamItem::Retry(r) => self.retry.push(r),
            UpstreamItem::Health(h) => self.health.push(h),
            UpstreamItem::Passive(p) => self.passive.push(p),
            UpstreamItem::FailOpen(k) => self.fail_open.push(k),
            UpstreamItem::Sticky(k, name) => self.sticky.push((k, name)),
            UpstreamItem::Discover(d) => self.discover.push(d),
            UpstreamItem::Tls(t) => self.tls.push(t),
            UpstreamItem::Http2(k, negotiate) => self.http2.push((k, negotiate)),
            UpstreamItem::ProxyProtocol(k) => self.proxy_protocol.push(k),
            UpstreamItem::Peers(..) => {}
        }
    }
}

/// `["ADDR" [weight N], ...]`.
fn parse_peers(input: ParseStream<'_>) -> syn::Result<Vec<PeerLit>> {
    let list;
    bracketed!(list in input);
    let mut peers = Vec::new();
    while !list.is_empty() {
        peers.push(list.parse()?);
        if !list.is_empty() {
            list.parse::<Token![,]>()?;
        }
    }
    Ok(peers)
}

/// `"ADDR"` or `"ADDR" weight N`.
impl Parse for PeerLit {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let lit = expect(input, "expected a peer address: \"127.0.0.1:8001\"")?;
        let mut weight = None;
        if input.peek(Ident) {
            if !input.peek(kw::weight) {
                let w = Ident::parse_any(input)?;
                return Err(syn::Error::new(
                    w.span(),
                    format!("unknown peer option `{w}`: expected `weight N`"),
                ));
            }
            input.parse::<kw::weight>()?;
            weight = Some(input.parse::<LitInt>()?);
        }
        Ok(PeerLit { lit, weight })
    }
}

/// `http2` or `http2 negotiate`.
fn parse_http2(input: ParseStream<'_>) -> syn::Result<UpstreamItem> {
    let keyword = keyword(input)?;
    if input.peek(Token![;]) {
        return Ok(UpstreamItem::Http2(keyword, false));
    }
    if !input.peek(kw::negotiate) {
        let w = Ident::parse_any(input)?;
        return Err(syn::Error::new(
            w.span(),
            format!(
                "unknown http2 option `{w}`: write `http2;` (always HTTP/2) or `http2 negotiate;` (HTTP/2 if the peer's ALPN agrees)"
            ),
        ));
    }
    input.parse::<kw::negotiate>()?;
    Ok(UpstreamItem::Http2(keyword, true))
}

/// `select STRATEGY`, `select STRATEGY(KEY)` or `select custom(EXPR)`.
impl Parse for SelectDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        input.parse::<kw::select>()?;
        if input.peek(kw::custom) {
            let name = keyword(input)?;
            let inner;
            parenthesized!(inner in input);
            let expr: syn::Expr = inner.parse()?;
            return Ok(SelectDecl {
                name,
                key: None,
                custom: Some(expr),
            });
        }
        let name = Ident::parse_any(input)?;
        let key = if input.peek(syn::token::Paren) {
            let inner;
            parenthesized!(inner in input);
            Some(inner.parse()?)
        } else {
            None
        };
        Ok(SelectDecl {
            name,
            key,
            custom: None,
        })
    }
}

/// What a key-based strategy hashes: `header "NAME"`, `cookie "NAME"`, `path`, `client_ip`.
impl KeyDecl {
    /// A key here, with anything after it left for the caller.
    pub(crate) fn parse_here(input: ParseStream<'_>) -> syn::Result<Self> {
        let kind = Ident::parse_any(input)?;
        let arg = if input.peek(LitStr) {
            Some(input.parse()?)
        } else {
            None
        };
        Ok(KeyDecl { kind, arg })
    }
}

impl Parse for KeyDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = KeyDecl::parse_here(input)?;
        if !input.is_empty() {
            return Err(
                input.error("a key is `header \"NAME\"`, `cookie \"NAME\"`, `path` or `client_ip`")
            );
        }
        Ok(key)
    }
}

/// `retry N [backoff D] [replay SIZE] [any_method]`.
impl Parse for RetryDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = keyword(input)?;
        let mut retry = RetryDecl {
            keyword,
            count: input.parse()?,
            backoff: None,
            replay: None,
            any_method: None,
        };
        while input.peek(Ident) {
            if input.peek(kw::backoff) {
                input.parse::<kw::backoff>()?;
                retry.backoff = Some(input.parse()?);
            } else if input.peek(kw::replay) {
                input.parse::<kw::replay>()?;
                retry.replay = Some(input.parse()?);
            } else if input.peek(kw::any_method) {
                retry.any_method = Some(super::keyword(input)?);
            } else {
                let other = Ident::parse_any(input)?;
                return Err(syn::Error::new(
                    other.span(),
                    format!(
                        "unknown retry option `{other}`: {}",
                        hint(&other.to_string(), &["backoff", "replay", "any_method"])
                    ),
                ));
            }
        }
        Ok(retry)
    }
}

/// `health KIND ["PATH"] OPTION VALUE ...`.
impl Parse for HealthDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = keyword(input)?;
        let kind = Ident::parse_any(input)?;
        let path = if input.peek(LitStr) {
            Some(input.parse()?)
        } else {
            None
        };
        let mut options = Vec::new();
        while !input.peek(Token![;]) && !input.is_empty() {
            let option = Ident::parse_any(input)?;
            let value = parse_health_value(input, &option)?;
            options.push((option, value));
        }
        Ok(HealthDecl {
            keyword,
            kind,
            path,
            options,
        })
    }
}

/// The value of a health option, told apart by its literal: a string, a duration (a
/// number with a unit), a status range `LOW..=HIGH`, a status or a count.
fn parse_health_value(input: ParseStream<'_>, option: &Ident) -> syn::Result<HealthValue> {
    if input.peek(LitStr) {
        return Ok(HealthValue::Text(input.parse()?));
    }
    let suffixed_int = input.peek(LitInt) && {
        let fork = input.fork();
        fork.parse::<LitInt>().is_ok_and(|l| !l.suffix().is_empty())
    };
    if input.peek(syn::LitFloat) || suffixed_int {
        return Ok(HealthValue::Duration(input.parse::<DurationLit>()?));
    }
    let low: LitInt = input.parse()?;
    Ok(if input.peek(Token![..=]) {
        input.parse::<Token![..=]>()?;
        HealthValue::Status(low, Some(input.parse()?))
    } else if option == "status" {
        HealthValue::Status(low, None)
    } else {
        HealthValue::Count(low)
    })
}

/// `passive failures N eject DURATION`.
impl Parse for PassiveDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = keyword(input)?;
        let shape = |input: ParseStream<'_>| {
            Ident::parse_any(input).and_then(|w| {
                Err::<(), _>(syn::Error::new(
                    w.span(),
                    "write `passive failures N eject DURATION;`",
                ))
            })
        };
        if !input.peek(kw::failures) {
            shape(input)?;
        }
        input.parse::<kw::failures>()?;
        let failures = input.parse()?;
        if !input.peek(kw::eject) {
            shape(input)?;
        }
        input.parse::<kw::eject>()?;
        Ok(PassiveDecl {
            keyword,
            failures,
            eject: input.parse()?,
        })
    }
}

/// `discover dns "NAME:PORT" [every D]`, `discover file "PATH" [every D]` or
/// `discover etcd "http://HOST:PORT" prefix "P"`.
impl Parse for DiscoverDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword = keyword(input)?;
        let kind = Ident::parse_any(input)?;
        let target = expect(
            input,
            "write `discover dns \"NAME:PORT\" every 30s;` or `discover file \"PATH\" every 5s;`",
        )?;
        let (mut every, mut prefix) = (None, None);
        while input.peek(Ident::peek_any) {
            let option = Ident::parse_any(input)?;
            match option.to_string().as_str() {
                "every" if every.is_none() => every = Some((option, input.parse()?)),
                "prefix" if prefix.is_none() => {
                    let p = expect(input, "expected the key prefix: `prefix \"/services/api/\"`")?;
                    prefix = Some((option, p));
                }
                "every" | "prefix" => {
                    return Err(syn::Error::new(
                        option.span(),
                        format!("`{option}` is given twice: keep one"),
                    ))
                }
                _ => {
                    return Err(syn::Error::new(
                        option.span(),
                        format!("unknown discovery option `{option}`: write `every DURATION` (dns, file) or `prefix \"/KEY/PREFIX/\"` (etcd)"),
                    ))
                }
            }
        }
        Ok(DiscoverDecl {
            keyword,
            kind,
            target,
            every,
            prefix,
        })
    }
}

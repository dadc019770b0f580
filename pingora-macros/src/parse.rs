//! Syntax: tokens to the model. Parsing recovers at the next `;` or `{...}` after an error,
//! so one invocation reports every malformed item, not only the first.

use proc_macro2::{Delimiter, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{braced, bracketed, parenthesized, Attribute, Ident, LitInt, LitStr, Token};

use crate::diagnostic::{hint, Errors};
use crate::syntax::*;
use crate::phase::Phase;

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
    "max_header_bytes",
    "max_idle_per_peer",
    "client_timeout",
    "tunnel_idle",
    "allow_upgrade",
    "idle",
    "rate_limit",
    "admin",
    "access_log",
    "early_request_filter",
    "request_filter",
    "upstream_peer",
    "upstream_request_filter",
    "fail_to_connect",
    "upstream_response_filter",
    "response_filter",
    "logging",
];
const UPSTREAM_KEYS: &[&str] = &[
    "peers",
    "select",
    "timeout",
    "retry",
    "health",
    "passive",
    "fail_open",
    "discover",
    "tls",
    "http2",
];
const MATCHERS: &[&str] = &["host", "path", "method"];
const TARGETS: &[&str] = &["upstream", "respond", "redirect"];
const EDITS: &[&str] = &[
    "set_request_header",
    "remove_request_header",
    "set_response_header",
    "remove_response_header",
];

/// Parses a whole invocation; syntax errors go to `errors`.
pub fn parse(tokens: proc_macro2::TokenStream, kind: Kind, errors: &mut Errors) -> Proxies {
    let mut proxies = Vec::new();
    let parser = |input: ParseStream<'_>| {
        while !input.is_empty() {
            match parse_proxy(input, kind, errors) {
                Ok(p) => proxies.push(p),
                Err(e) => {
                    errors.push(e);
                    // Nothing sensible follows a broken proxy header.
                    input.step(|c| {
                        let mut rest = *c;
                        while let Some((_, next)) = rest.token_tree() {
                            rest = next;
                        }
                        Ok(((), rest))
                    })?;
                }
            }
        }
        Ok(())
    };
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    Proxies { proxies }
}

fn parse_proxy(input: ParseStream<'_>, kind: Kind, errors: &mut Errors) -> syn::Result<Proxy> {
    let attrs = input.call(Attribute::parse_outer)?;
    let vis = input.parse()?;
    let name: Ident = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected a proxy name: `proxy! { pub MyProxy { ... } }`",
        )
    })?;
    let content;
    braced!(content in input);
    let mut proxy = Proxy {
        kind,
        idle: Vec::new(),
        attrs,
        vis,
        name,
        listens: Vec::new(),
        malformed_listen: false,
        ctx: Vec::new(),
        upstreams: Vec::new(),
        routes: Vec::new(),
        edits: Vec::new(),
        phases: Vec::new(),
        layers: Vec::new(),
        settings: Vec::new(),
        rate_limits: Vec::new(),
        admin: Vec::new(),
    };
    while !content.is_empty() {
        if let Err(e) = parse_item(&content, &mut proxy, errors) {
            errors.push(e);
            skip_item(&content);
        }
    }
    Ok(proxy)
}

/// Skips to just after the next `;` or `{...}` group, to resume after an error.
fn skip_item(input: ParseStream<'_>) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            rest = next;
            match &tt {
                TokenTree::Punct(p) if p.as_char() == ';' => break,
                TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => break,
                _ => {}
            }
        }
        Ok(((), rest))
    });
}

/// The TLS part of `listen tls "ADDR" ...`: inline up to `;`
/// (`cert "c" key "k" [client_ca "ca"];`) or a block (`{ cert "c" key "k"; client_ca "ca"; }`).
fn parse_tls(input: ParseStream<'_>, keyword: Ident, errors: &mut Errors) -> syn::Result<TlsDecl> {
    let mut decl = TlsDecl {
        keyword,
        certs: Vec::new(),
        client_ca: Vec::new(),
        malformed: false,
    };
    if input.peek(syn::token::Brace) {
        let content;
        braced!(content in input);
        while !content.is_empty() {
            let setting = parse_tls_setting(&content, &mut decl)
                .and_then(|()| semi(&content, "the TLS setting"));
            if let Err(e) = setting {
                errors.push(e);
                decl.malformed = true;
                skip_item(&content);
            }
        }
        let _ = input.parse::<Option<Token![;]>>()?;
        return Ok(decl);
    }
    while !input.peek(Token![;]) && !input.is_empty() {
        parse_tls_setting(input, &mut decl)?;
    }
    semi(input, "listen")?;
    Ok(decl)
}

fn parse_tls_setting(input: ParseStream<'_>, decl: &mut TlsDecl) -> syn::Result<()> {
    let kw = Ident::parse_any(input)?;
    let file = |input: ParseStream<'_>, example: &str| -> syn::Result<LitStr> {
        input
            .parse::<LitStr>()
            .map_err(|e| syn::Error::new(e.span(), format!("expected a file name: `{example}`")))
    };
    match kw.to_string().as_str() {
        "cert" => {
            let cert = file(input, "cert \"server.crt\" key \"server.key\"")?;
            let key_kw = Ident::parse_any(input).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected `key \"FILE\"` after the certificate: each certificate needs its private key",
                )
            })?;
            if key_kw != "key" {
                return Err(syn::Error::new(
                    key_kw.span(),
                    "expected `key \"FILE\"` after the certificate: each certificate needs its private key",
                ));
            }
            let key = file(input, "key \"server.key\"")?;
            decl.certs.push((cert, key));
        }
        "client_ca" => {
            let ca = file(input, "client_ca \"clients-ca.pem\"")?;
            decl.client_ca.push((kw, ca));
        }
        other => {
            return Err(syn::Error::new(
                kw.span(),
                format!(
                    "unknown TLS setting `{other}`: expected `cert \"FILE\" key \"FILE\"` or `client_ca \"FILE\"`"
                ),
            ))
        }
    }
    Ok(())
}

fn semi(input: ParseStream<'_>, after: &str) -> syn::Result<()> {
    input
        .parse::<Token![;]>()
        .map(|_| ())
        .map_err(|e| syn::Error::new(e.span(), format!("expected `;` to end `{after}`")))
}

fn parse_item(input: ParseStream<'_>, proxy: &mut Proxy, errors: &mut Errors) -> syn::Result<()> {
    let keyword = Ident::parse_any(input)?;
    let word = keyword.to_string();
    match word.as_str() {
        "listen" => {
            // Whatever fails here, "no listener" must not follow.
            proxy.malformed_listen = true;
            let tls_keyword = if input.peek(Ident::peek_any) {
                let kw = Ident::parse_any(input)?;
                if kw != "tls" {
                    return Err(syn::Error::new(
                        kw.span(),
                        format!(
                            "unknown listener kind `{kw}`: write `listen \"127.0.0.1:6188\";` or \
                             `listen tls \"127.0.0.1:6189\" cert \"server.crt\" key \"server.key\";`"
                        ),
                    ));
                }
                Some(kw)
            } else {
                None
            };
            let lit: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected an address: `listen \"127.0.0.1:6188\";`",
                )
            })?;
            let tls = match tls_keyword {
                Some(keyword) => Some(parse_tls(input, keyword, errors)?),
                None => {
                    semi(input, "listen")?;
                    None
                }
            };
            proxy.listens.push(Listen {
                lit,
                tls,
            });
            proxy.malformed_listen = false;
        }
        "idle" => {
            let d = parse_duration_lit(input)?;
            semi(input, "idle")?;
            proxy.idle.push((keyword, d));
        }
        "ctx" => {
            let ty = input.parse()?;
            semi(input, "ctx")?;
            proxy.ctx.push((keyword, ty));
        }
        "upstream" => proxy.upstreams.push(parse_upstream(input, errors)?),
        "route" => proxy.routes.push(parse_route(input, keyword, errors)?),
        "layer" => {
            let expr = input.parse()?;
            semi(input, "layer")?;
            proxy.layers.push(expr);
        }
        "via" => {
            let lit: LitStr = input.parse()?;
            semi(input, "via")?;
            proxy.settings.push(Setting::Via(keyword, lit));
        }
        "forwarded_for" | "keepalive" => {
            let on = parse_switch(input)?;
            semi(input, &word)?;
            proxy.settings.push(if word == "keepalive" {
                Setting::Keepalive(keyword, on)
            } else {
                Setting::ForwardedFor(keyword, on)
            });
        }
        "max_header_bytes" | "max_idle_per_peer" => {
            let n: LitInt = input.parse()?;
            semi(input, &word)?;
            proxy.settings.push(if word == "max_header_bytes" {
                Setting::MaxHeaderBytes(keyword, n)
            } else {
                Setting::MaxIdlePerPeer(keyword, n)
            });
        }
        "rate_limit" => {
            let limit: LitInt = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a count: `rate_limit 100 per 1s by client_ip;`",
                )
            })?;
            let per = Ident::parse_any(input)?;
            if per != "per" {
                return Err(syn::Error::new(
                    per.span(),
                    "expected `per DURATION`: `rate_limit 100 per 1s by client_ip;`",
                ));
            }
            let window = parse_duration_lit(input)?;
            let by = if input.peek(Token![;]) {
                None
            } else {
                let by = Ident::parse_any(input)?;
                if by != "by" {
                    return Err(syn::Error::new(
                        by.span(),
                        "expected `by client_ip`, `by header \"NAME\"` or `by route`",
                    ));
                }
                let kind = Ident::parse_any(input)?;
                let name = if kind == "header" {
                    Some(input.parse::<LitStr>().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "expected the header's name: `by header \"x-api-key\"`",
                        )
                    })?)
                } else {
                    None
                };
                Some((kind, name))
            };
            semi(input, "rate_limit")?;
            proxy.rate_limits.push(RateLimitDecl {
                keyword,
                limit,
                per: window,
                by,
            });
        }
        "admin" => {
            let addr: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected the admin listener's address: `admin \"127.0.0.1:9100\";`",
                )
            })?;
            semi(input, "admin")?;
            proxy.admin.push((keyword, addr));
        }
        "access_log" => {
            let target: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected where the log goes: `access_log \"stdout\";` or `access_log \"/var/log/proxy.log\" json;`",
                )
            })?;
            let format = if input.peek(Token![;]) {
                None
            } else {
                Some(Ident::parse_any(input)?)
            };
            semi(input, "access_log")?;
            proxy
                .settings
                .push(Setting::AccessLog(keyword, target, format));
        }
        "allow_upgrade" => {
            let expected = |span| {
                syn::Error::new(
                    span,
                    "expected a list of protocols: `allow_upgrade [\"websocket\"];` (`[]` for none)",
                )
            };
            if !input.peek(syn::token::Bracket) {
                return Err(expected(input.span()));
            }
            let list;
            bracketed!(list in input);
            let protocols = Punctuated::<LitStr, Token![,]>::parse_terminated(&list)
                .map_err(|e| expected(e.span()))?;
            semi(input, "allow_upgrade")?;
            proxy.settings.push(Setting::AllowUpgrade(
                keyword,
                protocols.into_iter().collect(),
            ));
        }
        "tunnel_idle" => {
            let d = parse_duration_lit(input)?;
            semi(input, "tunnel_idle")?;
            proxy.settings.push(Setting::TunnelIdle(keyword, d));
        }
        "client_timeout" => {
            let list = parse_timeouts(input)?;
            semi(input, "client_timeout")?;
            proxy.settings.push(Setting::ClientTimeouts(keyword, list));
        }
        w if EDITS.contains(&w) => proxy.edits.push(parse_edit(input, keyword)?),
        w => match Phase::from_name(w) {
            Some(phase) => proxy.phases.push(parse_phase(input, phase, keyword)?),
            None => {
                return Err(syn::Error::new(
                    keyword.span(),
                    format!("unknown item `{w}` in a proxy: {}", hint(w, ITEMS)),
                ))
            }
        },
    }
    Ok(())
}

fn parse_switch(input: ParseStream<'_>) -> syn::Result<bool> {
    let word = Ident::parse_any(input)?;
    match word.to_string().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        w => Err(syn::Error::new(
            word.span(),
            format!("expected `on` or `off`, found `{w}`"),
        )),
    }
}

/// `tls [sni "NAME"] [ca "FILE"] [cert "FILE" key "FILE"] [insecure]` (before the `;`).
fn parse_upstream_tls(input: ParseStream<'_>, keyword: Ident) -> syn::Result<UpstreamTlsDecl> {
    let mut decl = UpstreamTlsDecl {
        keyword,
        sni: None,
        ca: None,
        cert: None,
        insecure: None,
    };
    let string = |input: ParseStream<'_>, example: &str| -> syn::Result<LitStr> {
        input
            .parse::<LitStr>()
            .map_err(|e| syn::Error::new(e.span(), format!("expected a string: `{example}`")))
    };
    while !input.peek(Token![;]) && !input.is_empty() {
        let kw = Ident::parse_any(input)?;
        let duplicate = |what: &str| {
            syn::Error::new(kw.span(), format!("`{what}` is given twice in this `tls`"))
        };
        match kw.to_string().as_str() {
            "sni" => {
                let v = string(input, "sni \"api.example.com\"")?;
                if decl.sni.replace(v).is_some() {
                    return Err(duplicate("sni"));
                }
            }
            "ca" => {
                let v = string(input, "ca \"origin-ca.pem\"")?;
                if decl.ca.replace(v).is_some() {
                    return Err(duplicate("ca"));
                }
            }
            "cert" => {
                let cert = string(input, "cert \"client.crt\" key \"client.key\"")?;
                let key_kw = Ident::parse_any(input)?;
                if key_kw != "key" {
                    return Err(syn::Error::new(
                        key_kw.span(),
                        "expected `key \"FILE\"` after the client certificate",
                    ));
                }
                let key = string(input, "key \"client.key\"")?;
                if decl.cert.replace((cert, key)).is_some() {
                    return Err(duplicate("cert"));
                }
            }
            "insecure" => {
                if decl.insecure.replace(kw.clone()).is_some() {
                    return Err(duplicate("insecure"));
                }
            }
            other => {
                return Err(syn::Error::new(
                    kw.span(),
                    format!(
                        "unknown upstream TLS setting `{other}`: expected `sni \"NAME\"`, `ca \"FILE\"`, \
                         `cert \"FILE\" key \"FILE\"` or `insecure`"
                    ),
                ))
            }
        }
    }
    Ok(decl)
}

fn parse_upstream(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Upstream> {
    let name: Ident = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected the upstream's name: `upstream api { ... }`",
        )
    })?;
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
        discover: Vec::new(),
        tls: Vec::new(),
        http2: Vec::new(),
        had_errors: false,
    };
    let mut peer_lists = Vec::new();
    while !content.is_empty() {
        let result = (|| -> syn::Result<()> {
            let key = Ident::parse_any(&content)?;
            match key.to_string().as_str() {
                "peers" => {
                    let list;
                    bracketed!(list in content);
                    let mut peers = Vec::new();
                    while !list.is_empty() {
                        let lit: LitStr = list.parse().map_err(|e| {
                            syn::Error::new(e.span(), "expected a peer address: \"127.0.0.1:8001\"")
                        })?;
                        let mut weight = None;
                        if list.peek(Ident) {
                            let w = Ident::parse_any(&list)?;
                            if w != "weight" {
                                return Err(syn::Error::new(
                                    w.span(),
                                    format!("unknown peer option `{w}`: expected `weight N`"),
                                ));
                            }
                            weight = Some(list.parse::<LitInt>()?);
                        }
                        peers.push(Peer {
                            lit,
                            weight,
                        });
                        if !list.is_empty() {
                            list.parse::<Token![,]>()?;
                        }
                    }
                    semi(&content, "peers")?;
                    peer_lists.push((key, peers));
                }
                "select" => {
                    let name = Ident::parse_any(&content)?;
                    if name == "custom" {
                        let inner;
                        parenthesized!(inner in content);
                        let expr: syn::Expr = inner.parse()?;
                        semi(&content, "select")?;
                        up.select.push(SelectDecl {
                            name,
                            key: None,
                            custom: Some(expr),
                        });
                        return Ok(());
                    }
                    let key = if content.peek(syn::token::Paren) {
                        let inner;
                        parenthesized!(inner in content);
                        let kind = Ident::parse_any(&inner)?;
                        let arg = if inner.peek(LitStr) {
                            Some(inner.parse()?)
                        } else {
                            None
                        };
                        if !inner.is_empty() {
                            return Err(inner.error(
                                "a key is `header \"NAME\"`, `cookie \"NAME\"`, `path` or `client_ip`",
                            ));
                        }
                        Some(KeyDecl { kind, arg })
                    } else {
                        None
                    };
                    semi(&content, "select")?;
                    up.select.push(SelectDecl {
                        name,
                        key,
                        custom: None,
                    });
                }
                "health" => {
                    let kind = Ident::parse_any(&content)?;
                    let path = if content.peek(LitStr) {
                        Some(content.parse()?)
                    } else {
                        None
                    };
                    let mut options = Vec::new();
                    while !content.peek(Token![;]) && !content.is_empty() {
                        let option = Ident::parse_any(&content)?;
                        let value = if content.peek(LitStr) {
                            HealthValue::Text(content.parse()?)
                        } else if content.peek(syn::LitFloat)
                            || (content.peek(LitInt) && {
                                let fork = content.fork();
                                fork.parse::<LitInt>()
                                    .map(|l| !l.suffix().is_empty())
                                    .unwrap_or(false)
                            })
                        {
                            HealthValue::Duration(if content.peek(LitInt) {
                                DurationLit::Int(content.parse()?)
                            } else {
                                DurationLit::Float(content.parse()?)
                            })
                        } else {
                            let low: LitInt = content.parse()?;
                            if content.peek(Token![..=]) {
                                content.parse::<Token![..=]>()?;
                                HealthValue::Status(low, Some(content.parse()?))
                            } else if option == "status" {
                                HealthValue::Status(low, None)
                            } else {
                                HealthValue::Count(low)
                            }
                        };
                        options.push((option, value));
                    }
                    semi(&content, "health")?;
                    up.health.push(HealthDecl {
                        keyword: key,
                        kind,
                        path,
                        options,
                    });
                }
                "passive" => {
                    let w = Ident::parse_any(&content)?;
                    if w != "failures" {
                        return Err(syn::Error::new(
                            w.span(),
                            "write `passive failures N eject DURATION;`",
                        ));
                    }
                    let failures: LitInt = content.parse()?;
                    let e = Ident::parse_any(&content)?;
                    if e != "eject" {
                        return Err(syn::Error::new(
                            e.span(),
                            "write `passive failures N eject DURATION;`",
                        ));
                    }
                    let eject = parse_duration_lit(&content)?;
                    semi(&content, "passive")?;
                    up.passive.push(PassiveDecl {
                        keyword: key,
                        failures,
                        eject,
                    });
                }
                "fail_open" => {
                    semi(&content, "fail_open")?;
                    up.fail_open.push(key);
                }
                "http2" => {
                    let negotiate = if content.peek(Token![;]) {
                        false
                    } else {
                        let w = Ident::parse_any(&content)?;
                        if w != "negotiate" {
                            return Err(syn::Error::new(
                                w.span(),
                                format!(
                                    "unknown http2 option `{w}`: write `http2;` (always HTTP/2) or `http2 negotiate;` (HTTP/2 if the peer's ALPN agrees)"
                                ),
                            ));
                        }
                        true
                    };
                    semi(&content, "http2")?;
                    up.http2.push((key, negotiate));
                }
                "tls" => {
                    let decl = parse_upstream_tls(&content, key)?;
                    semi(&content, "tls")?;
                    up.tls.push(decl);
                }
                "discover" => {
                    let kind = Ident::parse_any(&content)?;
                    let target: LitStr = content.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "write `discover dns \"NAME:PORT\" every 30s;` or `discover file \"PATH\" every 5s;`",
                        )
                    })?;
                    let every = if content.peek(Ident) {
                        let w = Ident::parse_any(&content)?;
                        if w != "every" {
                            return Err(syn::Error::new(
                                w.span(),
                                format!("unknown discovery option `{w}`: write `every DURATION`"),
                            ));
                        }
                        Some(parse_duration_lit(&content)?)
                    } else {
                        None
                    };
                    semi(&content, "discover")?;
                    up.discover.push(DiscoverDecl {
                        keyword: key,
                        kind,
                        target,
                        every,
                    });
                }
                "timeout" => {
                    let list = parse_timeouts(&content)?;
                    semi(&content, "timeout")?;
                    up.timeouts.extend(list);
                }
                "retry" => {
                    let count: LitInt = content.parse()?;
                    let mut retry = RetryDecl {
                        keyword: key,
                        count,
                        backoff: None,
                        replay: None,
                        any_method: None,
                    };
                    while content.peek(Ident) {
                        let option = Ident::parse_any(&content)?;
                        match option.to_string().as_str() {
                            "backoff" => retry.backoff = Some(parse_duration_lit(&content)?),
                            "replay" => retry.replay = Some(content.parse()?),
                            "any_method" => retry.any_method = Some(option),
                            other => {
                                return Err(syn::Error::new(
                                    option.span(),
                                    format!(
                                        "unknown retry option `{other}`: {}",
                                        hint(other, &["backoff", "replay", "any_method"])
                                    ),
                                ))
                            }
                        }
                    }
                    semi(&content, "retry")?;
                    up.retry.push(retry);
                }
                w => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown upstream setting `{w}`: {}", hint(w, UPSTREAM_KEYS)),
                    ))
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            errors.push(e);
            up.had_errors = true;
            skip_item(&content);
        }
    }
    let mut lists = peer_lists.into_iter();
    up.peers = lists.next();
    for (again, _) in lists {
        errors.at(
            again.span(),
            "`peers` is given twice in this upstream: list every peer in one `peers [...]`",
        );
    }
    Ok(up)
}

fn parse_duration_lit(input: ParseStream<'_>) -> syn::Result<DurationLit> {
    if input.peek(LitInt) {
        Ok(DurationLit::Int(input.parse()?))
    } else if input.peek(syn::LitFloat) {
        Ok(DurationLit::Float(input.parse()?))
    } else {
        Err(input.error("expected a duration such as `30s` or `500ms`"))
    }
}

fn parse_timeouts(input: ParseStream<'_>) -> syn::Result<Vec<TimeoutDecl>> {
    let mut list = Vec::new();
    loop {
        let key = Ident::parse_any(input)?;
        let value = parse_duration_lit(input)?;
        list.push(TimeoutDecl {
            key,
            value,
        });
        if !input.peek(Token![,]) {
            return Ok(list);
        }
        input.parse::<Token![,]>()?;
    }
}

fn parse_route(
    input: ParseStream<'_>,
    keyword: Ident,
    errors: &mut Errors,
) -> syn::Result<RouteDecl> {
    let mut host: Option<LitStr> = None;
    let mut path: Option<LitStr> = None;
    let mut methods = Vec::new();
    while !input.peek(Token![=>]) {
        if input.is_empty() || input.peek(Token![;]) {
            return Err(input.error(
                "expected `=>` and what the route does: `route path \"/api\" => upstream api;`",
            ));
        }
        let m = Ident::parse_any(input)?;
        let word = m.to_string();
        let duplicate = match word.as_str() {
            "host" => host.replace(input.parse()?).is_some(),
            "path" => path.replace(input.parse()?).is_some(),
            "method" => {
                let had = !methods.is_empty();
                if input.peek(syn::token::Bracket) {
                    let list;
                    bracketed!(list in input);
                    let parsed = Punctuated::<Ident, Token![,]>::parse_terminated_with(
                        &list,
                        Ident::parse_any,
                    )?;
                    methods.extend(parsed);
                } else {
                    methods.push(Ident::parse_any(input)?);
                }
                had
            }
            w => {
                return Err(syn::Error::new(
                    m.span(),
                    format!("unknown route condition `{w}`: {}", hint(w, MATCHERS)),
                ))
            }
        };
        if duplicate {
            errors.at(
                m.span(),
                format!("`{word}` is given twice in this route: a route matches one {word} (list methods as `method [GET, HEAD]`)"),
            );
        }
    }
    input.parse::<Token![=>]>()?;
    let t = Ident::parse_any(input)?;
    let target = match t.to_string().as_str() {
        "upstream" => Target::Upstream(input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the name of an upstream: `=> upstream api`",
            )
        })?),
        "respond" => Target::Respond {
            status: input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a status code: `=> respond 404 \"not here\"`",
                )
            })?,
            body: if input.peek(LitStr) {
                Some(input.parse()?)
            } else {
                None
            },
        },
        "redirect" => Target::Redirect {
            status: input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a 3xx status: `=> redirect 301 \"https://example.com/\"`",
                )
            })?,
            location: input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected the location: `=> redirect 301 \"https://example.com/\"`",
                )
            })?,
        },
        w => {
            return Err(syn::Error::new(
                t.span(),
                format!("unknown route action `{w}`: {}", hint(w, TARGETS)),
            ))
        }
    };
    let mut edits = Vec::new();
    if input.peek(syn::token::Brace) {
        let content;
        braced!(content in input);
        while !content.is_empty() {
            let result = (|| -> syn::Result<()> {
                let k = Ident::parse_any(&content)?;
                let w = k.to_string();
                if !EDITS.contains(&w.as_str()) {
                    return Err(syn::Error::new(
                        k.span(),
                        format!(
                            "a route block holds header edits only; unknown `{w}`: {}",
                            hint(&w, EDITS)
                        ),
                    ));
                }
                edits.push(parse_edit(&content, k)?);
                Ok(())
            })();
            if let Err(e) = result {
                errors.push(e);
                skip_item(&content);
            }
        }
    } else {
        semi(input, "route")?;
    }
    Ok(RouteDecl {
        keyword,
        host,
        path,
        methods,
        target,
        edits,
    })
}

fn parse_edit(input: ParseStream<'_>, keyword: Ident) -> syn::Result<HeaderEditDecl> {
    let word = keyword.to_string();
    let side = if word.contains("request") {
        EditSide::Request
    } else {
        EditSide::Response
    };
    let name: LitStr = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            format!(
                "expected a header name: `{word} \"x-name\"{}`",
                if word.starts_with("set") {
                    " \"value\""
                } else {
                    ""
                }
            ),
        )
    })?;
    let value = if word.starts_with("set") {
        Some(input.parse::<LitStr>().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected the header value: `{word} \"x-name\" \"value\"`"),
            )
        })?)
    } else {
        None
    };
    semi(input, &word)?;
    Ok(HeaderEditDecl {
        keyword,
        side,
        name,
        value,
    })
}

fn parse_phase(input: ParseStream<'_>, phase: Phase, keyword: Ident) -> syn::Result<PhaseDecl> {
    let body = if input.peek(syn::token::Paren) {
        let list;
        let paren = parenthesized!(list in input);
        let mut params = Vec::new();
        let mut unnamed = 0;
        while !list.is_empty() {
            if list.peek(Token![_]) {
                let underscore: Token![_] = list.parse()?;
                unnamed += 1;
                params.push(Ident::new(&format!("_unused{unnamed}"), underscore.span));
            } else {
                params.push(list.parse::<Ident>().map_err(|e| {
                    syn::Error::new(e.span(), "a phase parameter is a plain name (or `_`)")
                })?);
            }
            if !list.is_empty() {
                list.parse::<Token![,]>()?;
            }
        }
        let block = input.parse()?;
        PhaseBody::Inline {
            params,
            params_span: paren.span.join(),
            block: Box::new(block),
        }
    } else if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        let path = input.parse()?;
        semi(input, phase.name())?;
        PhaseBody::Path(path)
    } else {
        return Err(syn::Error::new(
            keyword.span(),
            format!(
                "write `{name}({params}) {{ ... }}` or `{name} = path::to::function;`",
                name = phase.name(),
                params = phase.params().join(", ")
            ),
        ));
    };
    Ok(PhaseDecl {
        phase,
        keyword,
        body,
    })
}

//! An upstream group: `UpstreamGroup::new(name, backends, strategy)` and one builder call
//! per setting the user declared; the runtime's defaults stand for the rest.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use crate::model::{
    Discover, DiscoverSource, Health, HealthKind, RequestKey, Retry, Strategy, Upstream,
    UpstreamTls,
};

use super::{duration, rt, socket_addr};

/// The group's constructor expression.
pub fn expand_group(up: &Upstream) -> TokenStream {
    let rt = rt();
    let name = up.name.to_string();
    let backends = up.peers.iter().map(|(addr, weight)| {
        let addr = socket_addr(addr);
        quote!(#rt::lb::Backend::weighted(#addr, #weight))
    });
    let strategy = strategy(&up.strategy);
    let timeouts = (!up.timeouts.is_empty()).then(|| {
        let fields = up.timeouts.iter().map(|(key, d)| {
            let field = Ident::new(&key.to_string(), Span::call_site());
            let value = duration(*d);
            quote!(#field: #value,)
        });
        quote!(.with_timeouts(#rt::upstream::PeerTimeouts {
            #(#fields)*
            ..::core::default::Default::default()
        }))
    });
    let key = up.key.as_ref().map(|k| {
        let k = request_key(k);
        quote!(.with_key(#k))
    });
    let fail_open = up.fail_open.then(|| quote!(.with_fail_open(true)));
    let proxy_protocol = up
        .proxy_protocol
        .then(|| quote!(.with_proxy_protocol(true)));
    let sticky = up
        .sticky
        .as_ref()
        .map(|name| quote!(.with_sticky_cookie(#name)));
    let host_peers = (!up.host_peers.is_empty()).then(|| {
        let names = up
            .host_peers
            .iter()
            .map(|(h, p, w)| quote!((::std::string::String::from(#h), #p, #w)));
        quote!(.with_host_peers(::std::vec![#(#names),*]))
    });
    let tls = up.tls.as_ref().map(upstream_tls);
    let http2 = up.http2.map(|negotiate| {
        let http = if negotiate {
            quote!(Negotiate)
        } else {
            quote!(Http2)
        };
        quote!(.with_http(#rt::upstream::UpstreamHttp::#http))
    });
    let retry = up.retry.as_ref().map(retry);
    let health = up.health.as_ref().map(health);
    let passive = up.passive.as_ref().map(|p| {
        let (failures, eject) = (p.failures, duration(p.eject));
        quote!(.with_passive_health(#rt::lb::PassiveHealth {
            failures: #failures,
            eject_for: #eject,
        }))
    });
    let discovery = up.discover.as_ref().map(discovery);
    quote! {
        #rt::lb::UpstreamGroup::new(
            #name,
            ::std::vec![#(#backends),*],
            #strategy,
        )
        #timeouts
        #key
        #fail_open
        #host_peers
        #sticky
        #proxy_protocol
        #tls
        #http2
        #retry
        #health
        #passive
        #discovery
    }
}

fn strategy(strategy: &Strategy) -> TokenStream {
    let rt = rt();
    match strategy {
        Strategy::RoundRobin => quote!(#rt::lb::Strategy::RoundRobin),
        Strategy::Random => quote!(#rt::lb::Strategy::Random),
        Strategy::LeastConn => quote!(#rt::lb::Strategy::LeastConnections),
        Strategy::ConsistentHash => quote!(#rt::lb::Strategy::ConsistentHash),
        Strategy::Hash => quote!(#rt::lb::Strategy::Hash),
        Strategy::Custom(expr) => quote_spanned!(expr.span()=>
            #rt::lb::Strategy::Custom(#rt::lb::custom_strategy(#expr))
        ),
    }
}

/// A `RequestKey` value.
pub(super) fn request_key(key: &RequestKey) -> TokenStream {
    let rt = rt();
    match key {
        RequestKey::Header(name) => {
            quote!(#rt::lb::RequestKey::Header(#rt::HeaderName::from_static(#name)))
        }
        RequestKey::Cookie(name) => {
            quote!(#rt::lb::RequestKey::Cookie(::std::string::String::from(#name)))
        }
        RequestKey::Path => quote!(#rt::lb::RequestKey::Path),
        RequestKey::ClientIp => quote!(#rt::lb::RequestKey::ClientIp),
    }
}

/// `.with_retries(N)` and the options given with it.
fn retry(retry: &Retry) -> TokenStream {
    let count = retry.count;
    let any_method = retry
        .any_method
        .then(|| quote!(.with_retry_any_method(true)));
    let backoff = retry.backoff.map(|d| {
        let d = duration(d);
        quote!(.with_retry_backoff(#d))
    });
    let replay = retry.replay.map(|bytes| quote!(.with_replay_limit(#bytes)));
    quote!(.with_retries(#count) #any_method #backoff #replay)
}

fn upstream_tls(tls: &UpstreamTls) -> TokenStream {
    let rt = rt();
    let opt = |lit: &Option<syn::LitStr>| match lit {
        Some(l) => quote!(::std::option::Option::Some(#l.into())),
        None => quote!(::std::option::Option::None),
    };
    let (sni, ca, insecure) = (opt(&tls.sni), opt(&tls.ca), tls.insecure);
    let cert = match &tls.cert {
        Some((c, k)) => quote!(::std::option::Option::Some(#rt::listen::tls::CertKey {
            cert: #c.into(),
            key: #k.into(),
        })),
        None => quote!(::std::option::Option::None),
    };
    quote!(.with_tls(&#rt::upstream::UpstreamTls {
        sni: #sni,
        ca_file: #ca,
        insecure: #insecure,
        client_cert: #cert,
    }))
}

/// `HealthCheck::new(kind)` with the interval, timeout, rise and fall given.
fn health(h: &Health) -> TokenStream {
    let rt = rt();
    let kind = match &h.kind {
        HealthKind::Tcp => quote!(#rt::lb::HealthKind::Tcp),
        HealthKind::Http { path, host, status } => {
            let host = match host {
                Some(t) => quote!(::std::option::Option::Some(::std::string::String::from(#t))),
                None => quote!(::std::option::Option::None),
            };
            let status = match status {
                Some((low, high)) => quote!(#low..=#high),
                None => quote!(#rt::lb::HealthKind::DEFAULT_STATUS),
            };
            quote!(#rt::lb::HealthKind::Http {
                path: ::std::string::String::from(#path),
                host: #host,
                status: #status,
            })
        }
    };
    let every = h.every.map(|d| {
        let d = duration(d);
        quote!(.with_interval(#d))
    });
    let timeout = h.timeout.map(|d| {
        let d = duration(d);
        quote!(.with_timeout(#d))
    });
    let rise = h.rise.map(|n| quote!(.with_rise(#n)));
    let fall = h.fall.map(|n| quote!(.with_fall(#n)));
    quote!(.with_health_check(
        #rt::lb::HealthCheck::new(#kind) #every #timeout #rise #fall
    ))
}

/// `.with_discovery(source, interval)`, the interval given or the source's default.
fn discovery(d: &Discover) -> TokenStream {
    let rt = rt();
    let (source, ty) = match &d.source {
        DiscoverSource::Dns { host, port } => (
            quote!(#rt::lb::discovery::DnsDiscovery::new(#host, #port)),
            quote!(#rt::lb::discovery::DnsDiscovery),
        ),
        DiscoverSource::File(path) => (
            quote!(#rt::lb::discovery::FileDiscovery::new(#path)),
            quote!(#rt::lb::discovery::FileDiscovery),
        ),
        DiscoverSource::Etcd(endpoints, prefix) => (
            quote!(#rt::lb::etcd::EtcdDiscovery::new(&[#(#endpoints),*], #prefix)),
            quote!(#rt::lb::etcd::EtcdDiscovery),
        ),
    };
    let every = match d.every {
        Some(every) => duration(every),
        None => quote!(#ty::DEFAULT_INTERVAL),
    };
    quote!(.with_discovery(#source, #every))
}

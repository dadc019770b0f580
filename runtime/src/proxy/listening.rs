//! How a proxy's listening service meets the process's contracts: it can be checked,
//! bound and announced ([`Listening`]) and watched by the admin listener ([`Observable`]).

use std::io;
use std::net::SocketAddr;

use crate::downstream::HttpService;
use crate::listen::{ListenAddr, Sockets};
use crate::proxy::{ProxyHttp, ProxyLayer, ProxyPipeline};
use crate::service::{Listening, Observable, Observer, ServiceView};

impl<P: ProxyHttp, L: ProxyLayer<P>> Listening for HttpService<ProxyPipeline<P, L>> {
    fn check(&self) -> io::Result<()> {
        HttpService::check(self)
    }

    fn bind_with(&mut self, sockets: &mut Sockets) -> io::Result<()> {
        HttpService::bind_with(self, sockets)
    }

    fn addrs(&self) -> Vec<String> {
        self.tcp_addrs()
    }

    fn bound(&self) -> Vec<(SocketAddr, &'static str)> {
        let mut bound = self.listeners().bound_kinds("http", "https");
        bound.extend(self.local_quic_addrs().into_iter().map(|a| (a, "quic")));
        bound
    }

    fn tls_listeners(&self) -> Option<Vec<ListenAddr>> {
        Some(self.listeners().tls_addrs())
    }

    fn quic_listeners(&self) -> Option<Vec<String>> {
        Some(self.quic_addrs())
    }
}

impl<P: ProxyHttp, L: ProxyLayer<P>> Observable for HttpService<ProxyPipeline<P, L>> {
    fn observer(&self) -> Observer {
        let name = self.name().to_owned();
        let listener = self.listener_stats().clone();
        let stats = self.maker().stats().clone();
        let proxy = self.maker().proxy_arc().clone();
        Box::new(move || {
            let (routes, groups) = proxy.observed_routes().unwrap_or_default();
            ServiceView {
                name: name.clone(),
                kind: "http",
                listener: Some(listener.clone()),
                proxy: Some(stats.clone()),
                routes,
                groups,
                caches: proxy.observed_caches(),
                shared_limits: proxy.observed_shared_limits(),
            }
        })
    }
}

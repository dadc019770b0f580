//! A service's listening addresses and, once bound, their sockets: what HTTP and TCP
//! services share, so that adding, checking, binding, copying for another worker and
//! adopting into the runtime is written once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::proxy_protocol::ProxyProtocol;
use super::tls::{TlsAcceptor, TlsSettings};
use super::{no_listener, resolve, ListenAddr, Sockets};

/// A bound listening socket and the TLS it terminates.
pub struct BoundListener {
    /// The socket, bound and listening, not yet in a runtime.
    pub listener: std::net::TcpListener,
    /// The acceptor of a TLS address; `None`: cleartext.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// The address's own PROXY protocol mode; `None`: the service's.
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// A listener adopted into the current runtime, ready for the accept loop.
pub struct AdoptedListener {
    /// The socket.
    pub listener: tokio::net::TcpListener,
    /// Its bound address.
    pub local_addr: SocketAddr,
    /// The acceptor of a TLS address; `None`: cleartext.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// The address's own PROXY protocol mode; `None`: the service's.
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// The listening addresses of a service, as added, and the sockets bound for them.
#[derive(Default)]
pub struct ListenerSet {
    addrs: Vec<ListenAddr>,
    bound: Vec<BoundListener>,
    /// The PROXY protocol modes given with addresses, by address and TLS or not: an address
    /// cleared and added again (the command line or config file naming it) keeps its mode.
    modes: Vec<(String, bool, ProxyProtocol)>,
}

impl ListenerSet {
    /// Adds `listen`, with TLS or without; bound at startup.
    pub fn add(&mut self, listen: ListenAddr) {
        if let Some(mode) = listen.proxy_protocol {
            self.modes
                .push((listen.addr.clone(), listen.tls.is_some(), mode));
        }
        self.addrs.push(listen);
    }

    /// Sets the PROXY protocol mode of address `addr` (TLS or not), added already or later:
    /// the declared mode of one listener.
    pub fn set_proxy_protocol_of(&mut self, addr: &str, tls: bool, mode: ProxyProtocol) {
        self.modes.retain(|(a, t, _)| !(a == addr && *t == tls));
        self.modes.push((addr.to_owned(), tls, mode));
        for listen in &mut self.addrs {
            if listen.addr == addr && listen.tls.is_some() == tls {
                listen.proxy_protocol = Some(mode);
            }
        }
    }

    /// The mode `addr` was added with before (as TLS or not).
    fn mode_of(&self, addr: &str, tls: bool) -> Option<ProxyProtocol> {
        self.modes
            .iter()
            .find(|(a, t, _)| a == addr && *t == tls)
            .map(|(_, _, mode)| *mode)
    }

    /// Adds a cleartext address (`"127.0.0.1:6188"`, `"[::]:80"`), with the PROXY protocol
    /// mode it was added with before, if it was.
    pub fn add_tcp(&mut self, addr: &str) {
        self.add(ListenAddr {
            addr: addr.to_owned(),
            tls: None,
            proxy_protocol: self.mode_of(addr, false),
        });
    }

    /// Adds an address terminating TLS with `tls` (and the PROXY protocol mode it was added
    /// with before, if it was).
    pub fn add_tls(&mut self, addr: &str, tls: TlsSettings) {
        self.add(ListenAddr {
            addr: addr.to_owned(),
            tls: Some(tls),
            proxy_protocol: self.mode_of(addr, true),
        });
    }

    /// Forgets every address's own PROXY protocol mode: all of them then follow the
    /// service's (a config file's `proxy_protocol` decides for the whole proxy).
    pub fn clear_proxy_protocol(&mut self) {
        self.modes.clear();
        for listen in &mut self.addrs {
            listen.proxy_protocol = None;
        }
    }

    /// Removes the cleartext addresses added so far (not bound ones), e.g. to replace the
    /// declared ones with those given on the command line.
    pub fn clear_tcp(&mut self) {
        self.addrs.retain(|l| l.tls.is_some());
    }

    /// Removes the TLS addresses added so far (not bound ones).
    pub fn clear_tls(&mut self) {
        self.addrs.retain(|l| l.tls.is_none());
    }

    /// The addresses with their TLS settings, as added.
    pub fn addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// The addresses as added (TLS ones too), as text.
    pub fn addr_texts(&self) -> Vec<String> {
        self.addrs.iter().map(|l| l.addr.clone()).collect()
    }

    /// The TLS addresses with their settings.
    pub fn tls_addrs(&self) -> Vec<ListenAddr> {
        self.addrs
            .iter()
            .filter(|l| l.tls.is_some())
            .cloned()
            .collect()
    }

    /// Checks what binding needs besides the sockets: there is an address, each resolves,
    /// and every TLS certificate, key and CA loads and matches (offering HTTP/2 by ALPN if
    /// `http2`).
    pub fn check(&self, http2: bool) -> io::Result<()> {
        if self.addrs.is_empty() {
            return Err(no_listener());
        }
        for listen in &self.addrs {
            resolve(&listen.addr)?;
            if let Some(tls) = &listen.tls {
                acceptor(listen, tls, http2)?;
            }
        }
        Ok(())
    }

    /// Binds every address (idempotent), taking the sockets from `sockets`: those
    /// inherited from an old process in a graceful upgrade are adopted instead of bound.
    pub fn bind_with(&mut self, sockets: &mut Sockets, http2: bool) -> io::Result<()> {
        if !self.bound.is_empty() {
            return Ok(());
        }
        if self.addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listening address: call add_tcp(\"127.0.0.1:PORT\") first",
            ));
        }
        let mut bound = Vec::new();
        for listen in &self.addrs {
            let tls = match &listen.tls {
                Some(settings) => Some(Arc::new(acceptor(listen, settings, http2)?)),
                None => None,
            };
            for addr in resolve(&listen.addr)? {
                bound.push(BoundListener {
                    listener: sockets.tcp(addr)?,
                    tls: tls.clone(),
                    proxy_protocol: listen.proxy_protocol,
                });
            }
        }
        self.bound = bound;
        Ok(())
    }

    /// The addresses bound (useful with port 0), each with whether it terminates TLS.
    pub fn local_listeners(&self) -> Vec<(SocketAddr, bool)> {
        self.bound
            .iter()
            .filter_map(|b| Some((b.listener.local_addr().ok()?, b.tls.is_some())))
            .collect()
    }

    /// The addresses bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound
            .iter()
            .filter_map(|b| b.listener.local_addr().ok())
            .collect()
    }

    /// The bound addresses, each named `cleartext` or `tls` by its kind (for the
    /// readiness lines: `http`/`https`, `tcp`/`tls`).
    pub fn bound_kinds(
        &self,
        cleartext: &'static str,
        tls: &'static str,
    ) -> Vec<(SocketAddr, &'static str)> {
        self.local_listeners()
            .into_iter()
            .map(|(addr, is_tls)| (addr, if is_tls { tls } else { cleartext }))
            .collect()
    }

    /// A copy sharing the same sockets (for another worker's runtime).
    pub fn try_clone(&self) -> io::Result<Self> {
        let bound = self
            .bound
            .iter()
            .map(|b| {
                Ok(BoundListener {
                    listener: b.listener.try_clone()?,
                    tls: b.tls.clone(),
                    proxy_protocol: b.proxy_protocol,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(ListenerSet {
            addrs: self.addrs.clone(),
            bound,
            modes: self.modes.clone(),
        })
    }

    /// The bound sockets, adopted into the current runtime. One that cannot be adopted is
    /// logged (naming `service`) and left out; each adopted one is logged as listening.
    pub fn adopt(self, service: &str) -> Vec<AdoptedListener> {
        let mut adopted = Vec::with_capacity(self.bound.len());
        for BoundListener {
            listener,
            tls,
            proxy_protocol,
        } in self.bound
        {
            // Small answers must not wait for Nagle: set here, every accepted socket has it
            // (Linux copies it from the listener), without a system call per connection.
            if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
                tracing::warn!(service, error = %e, "cannot set TCP_NODELAY on a listener");
            }
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(service, error = %e, "cannot adopt listener");
                    continue;
                }
            };
            let local_addr = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(service, error = %e, "listener has no address");
                    continue;
                }
            };
            tracing::info!(service, addr = %local_addr, "listening");
            adopted.push(AdoptedListener {
                listener,
                local_addr,
                tls,
                proxy_protocol,
            });
        }
        adopted
    }
}

/// The TLS acceptor of `listen`, its errors naming the address.
fn acceptor(listen: &ListenAddr, tls: &TlsSettings, http2: bool) -> io::Result<TlsAcceptor> {
    tls.build(http2)
        .map_err(|e| io::Error::new(e.kind(), format!("listen {}: {e}", listen.addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_from_their_listener() {
        let mut set = ListenerSet::default();
        set.add_tcp("127.0.0.1:0");
        set.bind_with(&mut Sockets::new(), false).expect("bind");
        let adopted = set.adopt("test");
        let (client, accepted) = tokio::join!(
            tokio::net::TcpStream::connect(adopted[0].local_addr),
            adopted[0].listener.accept()
        );
        let (accepted, _) = accepted.expect("accept");
        assert!(accepted.nodelay().expect("nodelay"), "the accepted side");
        drop(client);
    }

    #[test]
    fn an_address_given_again_keeps_its_proxy_protocol_mode() {
        let mut set = ListenerSet::default();
        set.add_tcp("127.0.0.1:80");
        set.add_tcp("127.0.0.2:80");
        set.set_proxy_protocol_of("127.0.0.2:80", false, ProxyProtocol::Required);
        let modes = |set: &ListenerSet| -> Vec<Option<ProxyProtocol>> {
            set.addrs().iter().map(|l| l.proxy_protocol).collect()
        };
        assert_eq!(modes(&set), [None, Some(ProxyProtocol::Required)]);
        // The command line naming the addresses again (or a TLS listener on the same one).
        set.clear_tcp();
        set.add_tcp("127.0.0.2:80");
        set.add_tcp("127.0.0.3:80");
        set.add_tls("127.0.0.2:80", TlsSettings::new("a.crt", "a.key"));
        assert_eq!(modes(&set), [Some(ProxyProtocol::Required), None, None]);
        // A mode for the whole proxy (the config file's) replaces the listeners' own.
        set.clear_proxy_protocol();
        set.clear_tcp();
        set.add_tcp("127.0.0.2:80");
        assert_eq!(modes(&set), [None, None]);
    }
}

//! The real client behind trusted proxies: when a request arrives from a load balancer or
//! CDN the proxy trusts, the client is the address that load balancer recorded in
//! `Forwarded` (RFC 7239) or `X-Forwarded-For`, not the load balancer itself.
//!
//! The addresses are read from the right (the nearest hop first), skipping every trusted
//! one: the first address not trusted is the client (an address a client wrote itself
//! further left is never believed). A request from an untrusted peer keeps its peer's
//! address, whatever its headers say.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName, FORWARDED};
use pingora_dsl_rules::Cidr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The address blocks of proxies whose `Forwarded`/`X-Forwarded-For` give the client's
/// address (`trusted_proxies [...]` in `proxy!`, `trusted_proxies` in the config file).
///
/// ```
/// use http::HeaderMap;
/// use pingora_dsl_runtime::proxy::route::Cidr;
/// use pingora_dsl_runtime::proxy::TrustedProxies;
///
/// let trusted = TrustedProxies::new([Cidr::parse("10.0.0.0/8").unwrap()]);
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2".parse().unwrap());
/// let peer = "10.0.0.1:4000".parse().unwrap();
/// assert_eq!(trusted.client_of(peer, &headers), Some("203.0.113.7".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
}

impl TrustedProxies {
    /// Trusts peers in `blocks`.
    pub fn new(blocks: impl IntoIterator<Item = Cidr>) -> Self {
        TrustedProxies {
            blocks: blocks.into_iter().collect(),
        }
    }

    /// The trusted blocks.
    pub fn blocks(&self) -> &[Cidr] {
        &self.blocks
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// The client's address for a request from `peer` with `headers`: `None` when `peer`
    /// is not trusted or the headers name no address (then the peer is the client).
    /// `Forwarded` is read when present, else `X-Forwarded-For`.
    pub fn client_of(&self, peer: SocketAddr, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.trusts(peer.ip()) {
            return None;
        }
        let mut hops: Vec<&str> = Vec::new();
        if headers.contains_key(FORWARDED) {
            for value in headers.get_all(FORWARDED) {
                let text = value.to_str().ok()?;
                hops.extend(text.split(',').filter_map(forwarded_for));
            }
        } else {
            for value in headers.get_all(X_FORWARDED_FOR) {
                hops.extend(value.to_str().ok()?.split(',').map(str::trim));
            }
        }
        let mut client = None;
        for hop in hops.iter().rev() {
            // An address that does not parse ends the walk: what is left of it is unknown.
            let Some(ip) = parse_hop(hop) else { break };
            client = Some(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as a hop records it: `192.0.2.1`, `192.0.2.1:4000`, `2001:db8::1`,
/// `[2001:db8::1]:4000`. `unknown` and obfuscated names (`_hidden`) are not addresses.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|ip| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, http::HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let t = TrustedProxies::new([
            Cidr::parse("10.0.0.0/8").expect("block"),
            Cidr::parse("::1").expect("block"),
        ]);
        let lb: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let xff = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2, 10.0.0.9"),
        ]);
        assert_eq!(t.client_of(lb, &xff), Some(ip("2.2.2.2")));
        let untrusted: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        assert_eq!(
            t.client_of(untrusted, &xff),
            None,
            "an untrusted peer is believed about nothing"
        );
        let fwd = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8::7]:4711\";proto=https, for=10.1.1.1",
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(
            t.client_of(lb, &fwd),
            Some(ip("2001:db8::7")),
            "Forwarded wins"
        );
        let all_trusted = headers(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2")]);
        assert_eq!(t.client_of(lb, &all_trusted), Some(ip("10.3.3.3")));
        let garbage = headers(&[("x-forwarded-for", "5.5.5.5, nonsense, 10.2.2.2")]);
        assert_eq!(t.client_of(lb, &garbage), Some(ip("10.2.2.2")));
        assert_eq!(t.client_of(lb, &HeaderMap::new()), None);
        let v6_lb: SocketAddr = "[::1]:80".parse().expect("addr");
        let with_port = headers(&[("x-forwarded-for", "203.0.113.5:33000")]);
        assert_eq!(t.client_of(v6_lb, &with_port), Some(ip("203.0.113.5")));
    }
}

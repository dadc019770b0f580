//! Sticky sessions by cookie (HAProxy's `cookie NAME insert`): the first answer from a pool
//! sets a cookie naming the peer that served it, and later requests carrying the cookie go
//! to that peer while it is available. The cookie holds an opaque id derived from the
//! peer's address (the same in every process and across restarts), never the address.

use std::net::SocketAddr;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// A pool's stickiness cookie.
#[derive(Debug, Clone)]
pub struct StickyCookie {
    name: Box<str>,
}

/// The 16 hex digits a peer is named by in a stickiness cookie.
pub type PeerId = [u8; 16];

impl StickyCookie {
    /// A cookie called `name` (a cookie-name token, e.g. `"srv"`).
    pub fn new(name: impl Into<String>) -> Self {
        StickyCookie {
            name: name.into().into_boxed_str(),
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The peer id the request's cookie names, if it carries one.
    pub fn requested<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        cookie(headers, &self.name).filter(|v| v.len() == 16)
    }

    /// The `Set-Cookie` value that pins a client to `peer`: for the whole site, not
    /// readable from scripts.
    pub fn set_cookie(&self, peer: SocketAddr) -> Option<HeaderValue> {
        let id = peer_id(peer);
        let id = std::str::from_utf8(&id).ok()?;
        HeaderValue::try_from(format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Lax",
            self.name
        ))
        .ok()
    }
}

/// The opaque id of the peer at `addr`: FNV-1a of its address, in hex.
pub fn peer_id(addr: SocketAddr) -> PeerId {
    let text = addr.to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        let nibble = (hash >> (60 - 4 * i)) & 0xf;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
    out
}

/// The value of cookie `name` in the `Cookie` headers of `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(COOKIE).iter().find_map(|value| {
        value.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let (k, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (k == name.as_bytes()).then(|| &v[1..])
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_id_is_stable_opaque_hex() {
        let a: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:80".parse().expect("addr");
        assert_eq!(peer_id(a), peer_id(a));
        assert_ne!(peer_id(a), peer_id(b));
        assert!(peer_id(a).iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn the_cookie_names_the_peer_and_is_read_back() {
        let sticky = StickyCookie::new("srv");
        let a: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let set = sticky.set_cookie(a).expect("a header value");
        let pair = set
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair");
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {pair}")).expect("value"),
        );
        assert_eq!(sticky.requested(&headers), Some(&peer_id(a)[..]));
        headers.insert(COOKIE, HeaderValue::from_static("srv=short"));
        assert_eq!(sticky.requested(&headers), None);
    }
}

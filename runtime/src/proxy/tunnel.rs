//! Upgraded connections (WebSocket and other HTTP/1.1 `Upgrade`s). Only protocols the
//! proxy allows ([`AllowedUpgrades`]: `websocket` by default, `h2c` never) are forwarded;
//! for any other the upgrade fields are dropped and the request is served as plain
//! HTTP/1.1, so no tunnel can carry later requests past the phases. An allowed request goes
//! to the upstream with its `Connection: upgrade` and `Upgrade` fields; only when the
//! upstream answers `101 Switching Protocols` to one of the protocols offered do both
//! connections become one tunnel, carrying bytes both ways (half-closes passed on) until
//! either side closes or nothing moved for the idle timeout. A `101` to anything else is a
//! bad gateway (502).

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::error::{Error, ErrorKind, Result};
use crate::io_timeout::ActiveGuard;
use crate::l4::relay::{relay, RelayEnd};

/// The protocols a proxy lets a client switch to with HTTP/1.1 `Upgrade` (RFC 9110 §7.8):
/// an upgraded connection is an opaque tunnel, so no later byte on it passes the phases,
/// routes or limits of the proxy. Only protocols named here are forwarded; any other
/// `Upgrade` token is dropped and the request is answered as plain HTTP/1.1.
///
/// The default is `websocket` alone. `h2c` is never allowed: a tunnelled HTTP/2
/// connection would carry requests past every filter, and RFC 9113 §3.1 deprecates that
/// upgrade (cleartext HTTP/2 with prior knowledge is served by the proxy itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedUpgrades {
    /// Lowercase protocol names, each possibly with a `/version`.
    protocols: Vec<String>,
}

impl Default for AllowedUpgrades {
    fn default() -> Self {
        AllowedUpgrades {
            protocols: vec!["websocket".to_owned()],
        }
    }
}

impl AllowedUpgrades {
    /// No upgrade at all: every `Upgrade` request is answered as plain HTTP/1.1.
    pub fn none() -> Self {
        AllowedUpgrades {
            protocols: Vec::new(),
        }
    }

    /// The protocols in `names` (`"websocket"`, `"foo/2"`), compared without case. An
    /// empty list allows none. An invalid token or `h2c` is an error that says why.
    pub fn new<I, S>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut protocols: Vec<String> = Vec::new();
        for name in names {
            let name = name.as_ref();
            check_protocol(name)?;
            let name = name.to_ascii_lowercase();
            if !protocols.contains(&name) {
                protocols.push(name);
            }
        }
        Ok(AllowedUpgrades { protocols })
    }

    /// The allowed protocols, lowercase, in the order given.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Whether `protocol` (`name` or `name/version`) may be forwarded: an allowed entry
    /// without a version admits every version of its name.
    fn allows(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or(protocol);
        self.protocols.iter().any(|allowed| {
            if allowed.contains('/') {
                allowed.eq_ignore_ascii_case(protocol)
            } else {
                allowed.eq_ignore_ascii_case(name)
            }
        })
    }
}

/// Checks one `Upgrade` protocol as a user wrote it: `token ["/" token]` (RFC 9110 §7.8),
/// and not `h2c`.
fn check_protocol(name: &str) -> Result<(), String> {
    match pingora_dsl_rules::check_upgrade_protocol(name) {
        Ok(()) => Ok(()),
        Err(pingora_dsl_rules::UpgradeError::Syntax) => Err(format!(
            "invalid upgrade protocol {name:?}: write a token such as \"websocket\" (optionally with a version, \"name/1\")"
        )),
        Err(pingora_dsl_rules::UpgradeError::H2c) => Err(
            "the h2c upgrade is never forwarded: its tunnel would carry requests past every filter (RFC 9113 §3.1 deprecates it); cleartext HTTP/2 with prior knowledge is served directly".to_owned(),
        ),
    }
}

/// The `Upgrade` value to forward for a request asking to switch protocols (`GET`,
/// HTTP/1.1, `Connection: upgrade`): the protocols it offers that `allowed` admits, in
/// its order. `None` when it asks for no upgrade, or for none that is allowed.
pub(crate) fn requested_upgrade(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    allowed: &AllowedUpgrades,
) -> Option<HeaderValue> {
    if method != Method::GET || version != Version::HTTP_11 {
        return None;
    }
    let asks = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    if !asks {
        return None;
    }
    let mut offered = String::new();
    for protocol in list_tokens(headers.get_all(UPGRADE)) {
        if allowed.allows(protocol) {
            if !offered.is_empty() {
                offered.push_str(", ");
            }
            offered.push_str(protocol);
        }
    }
    if offered.is_empty() {
        return None;
    }
    HeaderValue::from_str(&offered).ok()
}

/// The elements of a comma-separated list field, trimmed, empty ones skipped; a value that
/// is not visible ASCII contributes nothing.
fn list_tokens<'a>(
    values: http::header::GetAll<'a, HeaderValue>,
) -> impl Iterator<Item = &'a str> + 'a {
    values
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The two connections to join and the protocol agreed, after an upstream's `101`: only
/// for a request that asked to switch (`offered`, the protocols forwarded), to one of those
/// protocols. Any other `101` is a bad gateway.
pub(crate) fn agreed_switch(
    offered: Option<HeaderValue>,
    downstream: Option<OnUpgrade>,
    upstream: Option<OnUpgrade>,
    switched_to: Option<HeaderValue>,
) -> Result<(OnUpgrade, OnUpgrade, HeaderValue)> {
    match (offered, downstream, upstream, switched_to) {
        (Some(offered), Some(down), Some(up), Some(protocol))
            if switched_as_offered(&offered, &protocol) =>
        {
            Ok((down, up, protocol))
        }
        _ => Err(Error::new(
            ErrorKind::InvalidResponse,
            "upstream switched protocols without being asked to, or to a protocol the client did not offer",
        )),
    }
}

/// Whether an upstream's `101` switched to one of the protocols `offered` to it: its
/// `Upgrade` must name exactly one protocol, one of those (RFC 9110 §15.2.2).
fn switched_as_offered(offered: &HeaderValue, switched_to: &HeaderValue) -> bool {
    let Ok(switched) = switched_to.to_str() else {
        return false;
    };
    let switched = switched.trim();
    !switched.contains(',')
        && offered.to_str().is_ok_and(|offered| {
            offered
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case(switched))
        })
}

/// Puts the upgrade request fields back after hop-by-hop fields were removed.
pub(crate) fn restore_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// Joins the client's and the upstream's upgraded connections once both are handed over,
/// on a task of its own. `guard` keeps the client connection counted as busy meanwhile.
pub(crate) fn spawn(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Duration,
    guard: ActiveGuard,
    peer: SocketAddr,
) {
    tokio::spawn(async move {
        let _guard = guard;
        let (down, up) = match tokio::join!(downstream, upstream) {
            (Ok(down), Ok(up)) => (down, up),
            (down, up) => {
                tracing::debug!(%peer, client_ok = down.is_ok(), upstream_ok = up.is_ok(), "upgrade did not complete");
                return;
            }
        };
        let relayed = relay(TokioIo::new(down), TokioIo::new(up), idle_timeout).await;
        let (to_origin, to_client) = (relayed.a_to_b, relayed.b_to_a);
        match relayed.end {
            RelayEnd::Closed => tracing::debug!(%peer, to_origin, to_client, "tunnel closed"),
            RelayEnd::Idle => tracing::debug!(%peer, idle = ?idle_timeout, "tunnel idle; closed"),
            RelayEnd::Failed(e) => tracing::debug!(%peer, error = %e, "tunnel ended with an error"),
            RelayEnd::Stopped => tracing::debug!(%peer, "tunnel stopped"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(upgrade: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_str(upgrade).expect("value"));
        h
    }

    #[test]
    fn only_http11_gets_with_connection_upgrade_ask_to_switch() {
        let allowed = AllowedUpgrades::default();
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(requested_upgrade(&Method::GET, Version::HTTP_11, &h, &allowed).is_none());
        let h = ask("websocket");
        assert_eq!(
            requested_upgrade(&Method::GET, Version::HTTP_11, &h, &allowed),
            Some(HeaderValue::from_static("websocket"))
        );
        assert!(requested_upgrade(&Method::POST, Version::HTTP_11, &h, &allowed).is_none());
        assert!(requested_upgrade(&Method::GET, Version::HTTP_10, &h, &allowed).is_none());
    }

    #[test]
    fn only_allowed_protocols_are_forwarded() {
        let get = |upgrade: &str, allowed: &AllowedUpgrades| {
            requested_upgrade(&Method::GET, Version::HTTP_11, &ask(upgrade), allowed)
        };
        let default = AllowedUpgrades::default();
        assert_eq!(get("h2c", &default), None);
        assert_eq!(get("foo", &default), None);
        assert_eq!(
            get("h2c, WebSocket", &default),
            Some(HeaderValue::from_static("WebSocket"))
        );
        assert_eq!(get("websocket", &AllowedUpgrades::none()), None);
        let foo2 = AllowedUpgrades::new(["foo/2", "websocket"]).expect("valid");
        assert_eq!(get("foo/1", &foo2), None);
        assert_eq!(
            get("foo/2, bar", &foo2),
            Some(HeaderValue::from_static("foo/2"))
        );
    }

    #[test]
    fn bad_and_h2c_protocols_are_refused() {
        for bad in ["", "web socket", "a/b/c", "x,y", "/1", "h2c", "H2C/1"] {
            assert!(AllowedUpgrades::new([bad]).is_err(), "{bad:?}");
        }
        let ok = AllowedUpgrades::new(["WebSocket", "websocket", "foo/1.0"]).expect("valid");
        assert_eq!(ok.protocols(), ["websocket", "foo/1.0"]);
    }

    #[test]
    fn a_switch_must_be_to_one_offered_protocol() {
        let offered = HeaderValue::from_static("websocket, foo/2");
        let ok = |v: &'static str| switched_as_offered(&offered, &HeaderValue::from_static(v));
        assert!(ok("WebSocket"));
        assert!(ok("foo/2"));
        assert!(!ok("h2c"));
        assert!(!ok("foo/3"));
        assert!(!ok("websocket, foo/2"));
    }
}

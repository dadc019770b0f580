//! Upgraded connections (WebSocket and other HTTP/1.1 `Upgrade`s): the request goes to
//! the upstream with its `Connection: upgrade` and `Upgrade` fields; only when the upstream
//! answers `101 Switching Protocols` do both connections become one tunnel, carrying bytes
//! both ways (half-closes passed on) until either side closes or nothing moved for the
//! idle timeout.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::io_timeout::ActiveGuard;
use crate::relay::{relay, RelayEnd};

/// The `Upgrade` value of a request asking to switch protocols (`GET`, HTTP/1.1,
/// `Connection: upgrade`), if it is one.
pub(crate) fn requested_upgrade(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
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
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
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
        match relay(TokioIo::new(down), TokioIo::new(up), idle_timeout).await {
            RelayEnd::Closed { a_to_b, b_to_a } => {
                tracing::debug!(%peer, to_origin = a_to_b, to_client = b_to_a, "tunnel closed")
            }
            RelayEnd::Idle => tracing::debug!(%peer, idle = ?idle_timeout, "tunnel idle; closed"),
            RelayEnd::Failed(e) => tracing::debug!(%peer, error = %e, "tunnel ended with an error"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http11_gets_with_connection_upgrade_ask_to_switch() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(requested_upgrade(&Method::GET, Version::HTTP_11, &h).is_none());
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(
            requested_upgrade(&Method::GET, Version::HTTP_11, &h),
            Some(HeaderValue::from_static("websocket"))
        );
        assert!(requested_upgrade(&Method::POST, Version::HTTP_11, &h).is_none());
        assert!(requested_upgrade(&Method::GET, Version::HTTP_10, &h).is_none());
    }
}

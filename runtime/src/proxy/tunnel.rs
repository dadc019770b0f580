//! Upgraded connections (WebSocket and other HTTP/1.1 `Upgrade`s): the request goes to
//! the upstream with its `Connection: upgrade` and `Upgrade` fields; only when the upstream
//! answers `101 Switching Protocols` do both connections become one tunnel, carrying bytes
//! both ways (half-closes passed on) until either side closes or nothing moved for the
//! idle timeout.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::io_timeout::ActiveGuard;

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
        let last = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut client = Watched {
            io: TokioIo::new(down),
            last: last.clone(),
            start,
        };
        let mut origin = Watched {
            io: TokioIo::new(up),
            last: last.clone(),
            start,
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut origin);
        tokio::pin!(copy);
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle_timeout;
            tokio::select! {
                done = &mut copy => {
                    match done {
                        Ok((to_origin, to_client)) => tracing::debug!(%peer, to_origin, to_client, "tunnel closed"),
                        Err(e) => tracing::debug!(%peer, error = %e, "tunnel ended with an error"),
                    }
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if last.load(Ordering::Relaxed) == since.as_millis() as u64 {
                        tracing::debug!(%peer, idle = ?idle_timeout, "tunnel idle; closing");
                        return;
                    }
                }
            }
        }
    });
}

/// An upgraded connection that records when bytes last moved.
struct Watched<T> {
    io: T,
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<T> Watched<T> {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
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

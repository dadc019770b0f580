//! Relaying bytes both ways between two connections — a WebSocket tunnel, a TCP proxy's
//! client and peer — until either side closes or nothing moved for the idle timeout.
//! A half-close (one side finished sending) is passed on and the other direction goes on.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides finished: bytes carried each way.
    Closed {
        /// Bytes from the first connection to the second.
        a_to_b: u64,
        /// Bytes from the second connection to the first.
        b_to_a: u64,
    },
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A read or write failed.
    Failed(io::Error),
}

/// Copies `a` to `b` and `b` to `a` until both directions finished, one failed, or
/// nothing moved for `idle_timeout`.
pub async fn relay<A, B>(a: A, b: B, idle_timeout: Duration) -> RelayEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut a = Watched {
        io: a,
        last: last.clone(),
        start,
    };
    let mut b = Watched {
        io: b,
        last: last.clone(),
        start,
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let seen = last.load(Ordering::Relaxed);
        let deadline = start + Duration::from_millis(seen) + idle_timeout;
        tokio::select! {
            done = &mut copy => {
                return match done {
                    Ok((a_to_b, b_to_a)) => RelayEnd::Closed { a_to_b, b_to_a },
                    Err(e) => RelayEnd::Failed(e),
                };
            }
            _ = tokio::time::sleep_until(deadline) => {
                if last.load(Ordering::Relaxed) == seen {
                    return RelayEnd::Idle;
                }
            }
        }
    }
}

/// A connection that records (in milliseconds since `start`) when bytes last moved.
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
    ) -> Poll<io::Result<()>> {
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
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_passes_and_idle_ends_it() {
        let (mut client, near) = tokio::io::duplex(64);
        let (far, mut server) = tokio::io::duplex(64);
        let relaying = tokio::spawn(relay(near, far, Duration::from_secs(5)));
        client.write_all(b"ping").await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        server
            .read_to_end(&mut got)
            .await
            .expect("read to the half-close");
        assert_eq!(got, b"ping");
        // The other direction still works after the half-close.
        server.write_all(b"pong").await.expect("write back");
        server.shutdown().await.expect("close");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"pong");
        match relaying.await.expect("task") {
            RelayEnd::Closed { a_to_b, b_to_a } => assert_eq!((a_to_b, b_to_a), (4, 4)),
            other => panic!("{other:?}"),
        }

        let (_client, near) = tokio::io::duplex(64);
        let (far, _server) = tokio::io::duplex(64);
        let end = relay(near, far, Duration::from_millis(50)).await;
        assert!(matches!(end, RelayEnd::Idle), "{end:?}");
    }
}

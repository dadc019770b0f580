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
    /// Both sides finished sending.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A read or write failed.
    Failed(io::Error),
    /// The caller's stop signal fired (the process is shutting down).
    Stopped,
}

/// What a relay carried, and how it ended.
#[derive(Debug)]
pub struct Relayed {
    /// Bytes from the first connection to the second.
    pub a_to_b: u64,
    /// Bytes from the second connection to the first.
    pub b_to_a: u64,
    /// Why it stopped.
    pub end: RelayEnd,
}

/// Copies `a` to `b` and `b` to `a` until both directions finished, one failed, or
/// nothing moved for `idle_timeout`; the bytes carried are counted however it ends.
pub async fn relay<A, B>(a: A, b: B, idle_timeout: Duration) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    relay_until(a, b, idle_timeout, std::future::pending()).await
}

/// Like [`relay`], also ending (as [`RelayEnd::Stopped`]) when `stop` completes.
pub async fn relay_until<A, B>(
    a: A,
    b: B,
    idle_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut a = Watched::new(a, &last, start);
    let mut b = Watched::new(b, &last, start);
    let end = {
        let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
        tokio::pin!(copy);
        tokio::pin!(stop);
        loop {
            let seen = last.load(Ordering::Relaxed);
            let deadline = start + Duration::from_millis(seen) + idle_timeout;
            tokio::select! {
                done = &mut copy => break match done {
                    Ok(_) => RelayEnd::Closed,
                    Err(e) => RelayEnd::Failed(e),
                },
                _ = &mut stop => break RelayEnd::Stopped,
                _ = tokio::time::sleep_until(deadline) => {
                    if last.load(Ordering::Relaxed) == seen {
                        break RelayEnd::Idle;
                    }
                }
            }
        }
    };
    Relayed {
        a_to_b: b.written,
        b_to_a: a.written,
        end,
    }
}

/// A connection that records (in milliseconds since `start`) when bytes last moved, and
/// counts the bytes written to it.
struct Watched<T> {
    io: T,
    last: Arc<AtomicU64>,
    start: Instant,
    written: u64,
}

impl<T> Watched<T> {
    fn new(io: T, last: &Arc<AtomicU64>, start: Instant) -> Self {
        Watched {
            io,
            last: last.clone(),
            start,
            written: 0,
        }
    }

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
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.written += n as u64;
                self.touch();
            }
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
        let relayed = relaying.await.expect("task");
        assert!(matches!(relayed.end, RelayEnd::Closed), "{relayed:?}");
        assert_eq!((relayed.a_to_b, relayed.b_to_a), (4, 4));

        let (mut client, near) = tokio::io::duplex(64);
        let (far, mut server) = tokio::io::duplex(64);
        let relaying = tokio::spawn(relay(near, far, Duration::from_millis(50)));
        client.write_all(b"abc").await.expect("write");
        let mut got = [0u8; 3];
        server.read_exact(&mut got).await.expect("relayed");
        let relayed = relaying.await.expect("task");
        assert!(matches!(relayed.end, RelayEnd::Idle), "{relayed:?}");
        assert_eq!(
            (relayed.a_to_b, relayed.b_to_a),
            (3, 0),
            "counted though idle"
        );
    }
}

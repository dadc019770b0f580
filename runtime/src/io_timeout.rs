//! Read and write deadlines on a socket, enforced below hyper.
//!
//! hyper has no per-operation I/O timeouts, so both the downstream and the upstream sockets
//! are wrapped in [`TimedIo`]. A *write* that makes no progress for the write timeout fails;
//! a *read* fails only while the connection is marked busy (a request in flight) and nothing
//! moved in either direction for the read timeout — an idle pooled connection, which hyper
//! keeps reading to notice a close, never times out here (the pool's idle timeout does that).
//! One timer per connection, re-armed only when an operation goes pending.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Which direction of a [`TimedIo`] ran out of time; found as the source of the I/O error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoTimeout {
    /// Nothing could be read (and nothing written) for the read timeout while busy.
    #[error("read timed out")]
    Read,
    /// A write made no progress for the write timeout.
    #[error("write timed out")]
    Write,
}

impl IoTimeout {
    /// Finds an [`IoTimeout`] in the source chain of `error`, if that is what caused it.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<IoTimeout> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<IoTimeout>() {
                return Some(*t);
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if let Some(inner) = io.get_ref() {
                    if let Some(t) = inner.downcast_ref::<IoTimeout>() {
                        return Some(*t);
                    }
                }
            }
            cur = e.source();
        }
        None
    }
}

/// A shared flag saying whether a connection is serving a request, which arms read deadlines.
#[derive(Debug, Clone, Default)]
pub struct BusyFlag(Arc<AtomicBool>);

impl BusyFlag {
    /// Marks the connection busy (`true`) or idle (`false`).
    pub fn set(&self, busy: bool) {
        self.0.store(busy, Ordering::Release);
    }

    /// Whether the connection is busy.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// An I/O object with a write timeout and a busy-gated read timeout. See the module docs.
pub struct TimedIo<T> {
    io: T,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    busy: Option<BusyFlag>,
    last_progress: Instant,
    write_pending_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl<T> TimedIo<T> {
    /// Wraps `io`. `read_timeout` applies only while `busy` is set (never if `busy` is `None`);
    /// `write_timeout` applies to every write that cannot make progress.
    pub fn new(
        io: T,
        read_timeout: Option<Duration>,
        write_timeout: Option<Duration>,
        busy: Option<BusyFlag>,
    ) -> Self {
        let now = Instant::now();
        TimedIo {
            io,
            read_timeout,
            write_timeout,
            busy,
            last_progress: now,
            write_pending_since: None,
            // The timer is re-armed before every use; its first deadline is irrelevant.
            timer: Box::pin(tokio::time::sleep_until(now)),
        }
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn timeout_error(which: IoTimeout) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, which)
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.last_progress = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => {
                let (Some(timeout), Some(busy)) = (this.read_timeout, &this.busy) else {
                    return Poll::Pending;
                };
                if !busy.get() {
                    return Poll::Pending;
                }
                let deadline = this.last_progress + timeout;
                if this.poll_deadline(cx, deadline) {
                    return Poll::Ready(Err(timeout_error(IoTimeout::Read)));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> TimedIo<T> {
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.last_progress = Instant::now();
                self.write_pending_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(timeout) = self.write_timeout else {
                    return Poll::Pending;
                };
                let since = *self.write_pending_since.get_or_insert_with(Instant::now);
                if self.poll_deadline(cx, since + timeout) {
                    return Poll::Ready(Err(timeout_error(IoTimeout::Write)));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.after_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.after_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.after_write(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn read_times_out_only_when_busy() {
        let (a, mut b) = tokio::io::duplex(64);
        let busy = BusyFlag::default();
        let mut io = TimedIo::new(a, Some(Duration::from_secs(1)), None, Some(busy.clone()));
        let mut buf = [0u8; 8];
        // Idle: a pending read never times out.
        let idle = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
        assert!(idle.is_err(), "idle read must stay pending");
        busy.set(true);
        let err = io
            .read(&mut buf)
            .await
            .expect_err("busy read must time out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(IoTimeout::find(&err), Some(IoTimeout::Read));
        b.write_all(b"x").await.expect("duplex write");
        assert_eq!(io.read(&mut buf).await.expect("data"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_write_times_out() {
        let (a, _b) = tokio::io::duplex(4);
        let mut io = TimedIo::new(a, None, Some(Duration::from_secs(2)), None);
        let err = io
            .write_all(&[0u8; 64])
            .await
            .expect_err("peer never reads, write must time out");
        assert_eq!(IoTimeout::find(&err), Some(IoTimeout::Write));
    }
}

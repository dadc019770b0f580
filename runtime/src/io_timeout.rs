//! Read and write deadlines on a socket, enforced below hyper.
//!
//! hyper has no per-operation I/O timeouts, so both the downstream and the upstream sockets
//! are wrapped in [`TimedIo`]. A *write* that makes no progress for the write timeout fails.
//! When a pending *read* fails depends on the side ([`ReadDeadline`]):
//! - upstream, only while a request is in flight ([`BusyFlag`]) and nothing moved in either
//!   direction for the read timeout — an idle pooled connection, which hyper keeps reading to
//!   notice a close, never times out here (the pool's idle timeout does that);
//! - downstream, only while no request is in flight ([`ActiveRequests`]): from the end of
//!   the last response (or the accept) until the next request head is complete. That is the
//!   keep-alive idle limit and the slow-header (slowloris) limit in one.
//!
//! One timer per connection, re-armed lazily: no timer-wheel work per request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Vectored writes up to this size are copied into one buffer and written at once.
const SMALL_WRITE: usize = 4096;
/// Writes up to this size are gathered in a smaller buffer.
const TINY_WRITE: usize = 512;

/// Writes `bufs` (`total` bytes, at most `N`) as one contiguous write.
fn poll_write_flat<const N: usize, T: AsyncWrite + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
    total: usize,
) -> Poll<io::Result<usize>> {
    let mut flat = [0u8; N];
    let mut at = 0;
    for b in bufs {
        flat[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    }
    Pin::new(io).poll_write(cx, &flat[..total])
}

/// Which direction of a [`TimedIo`] ran out of time; found as the source of the I/O error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoTimeout {
    /// Nothing could be read (and nothing written) for the read timeout while busy.
    #[error("read timed out")]
    Read,
    /// A write made no progress for the write timeout.
    #[error("write timed out")]
    Write,
    /// A downstream connection sent no complete request head in time (idle or slow).
    #[error("no request head within the header read timeout")]
    Idle,
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

/// The number of requests a downstream connection is serving (zero means it is idle, or
/// reading the next request head), and whether the connection is draining.
#[derive(Debug, Clone, Default)]
pub struct ActiveRequests(Arc<RequestState>);

#[derive(Debug, Default)]
struct RequestState {
    active: AtomicUsize,
    draining: AtomicBool,
    /// The connection asked to hear of idleness instead of failing a read (HTTP/2, which
    /// sends a GOAWAY first).
    signal_idle: AtomicBool,
    /// Set once when the idle deadline passed, if `signal_idle` was set: by a read of the
    /// connection's own task, which looks at it after each poll of the connection.
    idle_reached: AtomicBool,
}

impl ActiveRequests {
    /// Counts a request until the returned guard is dropped.
    pub fn enter(&self) -> ActiveGuard {
        self.0.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// Requests in flight.
    pub fn get(&self) -> usize {
        self.0.active.load(Ordering::Relaxed)
    }

    /// Marks the connection as draining: its next response is its last.
    pub fn set_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the connection is draining.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Makes the first idle deadline of the connection's [`TimedIo`] a signal
    /// ([`ActiveRequests::idle_reached`]) instead of a failed read: the deadline starts over
    /// from the signal, and only the next one fails the read. HTTP/2 uses the time between
    /// to send a GOAWAY.
    pub fn signal_idle(&self) {
        self.0.signal_idle.store(true, Ordering::Relaxed);
    }

    /// Whether the idle deadline passed since [`ActiveRequests::signal_idle`] asked. It is
    /// set during a read of the connection, so the task that polls the connection sees it
    /// right after that poll (no wake-up of its own).
    pub fn idle_reached(&self) -> bool {
        self.0.idle_reached.load(Ordering::Relaxed)
    }

    /// Turns the one idle signal asked for, if any, into [`ActiveRequests::idle_reached`].
    fn take_idle_signal(&self) -> bool {
        let asked = self.0.signal_idle.swap(false, Ordering::Relaxed);
        if asked {
            self.0.idle_reached.store(true, Ordering::Relaxed);
        }
        asked
    }
}

/// Keeps a request counted in [`ActiveRequests`] while it lives.
#[derive(Debug)]
pub struct ActiveGuard(ActiveRequests);

impl ActiveGuard {
    /// Whether the connection of this request is draining.
    pub fn is_draining(&self) -> bool {
        self.0.is_draining()
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        (self.0).0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a pending read of a [`TimedIo`] may time out.
#[derive(Debug, Clone)]
pub enum ReadDeadline {
    /// Never.
    Never,
    /// Upstream: while `busy` is set, after `timeout` without progress in either direction.
    WhileBusy {
        /// Set while a request is in flight.
        busy: BusyFlag,
        /// The read timeout.
        timeout: Duration,
    },
    /// Downstream: while no request is active, `timeout` after the last write (the end of
    /// the previous response) or the accept.
    WhileIdle {
        /// The connection's active requests.
        active: ActiveRequests,
        /// The head-read / keep-alive timeout.
        timeout: Duration,
    },
}

/// An I/O object with a write timeout and a read deadline policy. See the module docs.
pub struct TimedIo<T> {
    io: T,
    read_deadline: ReadDeadline,
    write_timeout: Option<Duration>,
    last_read: Instant,
    last_write: Instant,
    write_pending_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` completed since it was last armed (a completed `Sleep` must be reset).
    timer_fired: bool,
    /// The waker `timer` was last polled with: while it is this task's, an armed timer need
    /// not be polled again.
    timer_waker: Option<std::task::Waker>,
}

impl<T> TimedIo<T> {
    /// Wraps `io`: reads may time out as `read_deadline` says; a write that cannot make
    /// progress fails after `write_timeout`.
    pub fn new(io: T, read_deadline: ReadDeadline, write_timeout: Option<Duration>) -> Self {
        let now = Instant::now();
        TimedIo {
            io,
            read_deadline,
            write_timeout,
            last_read: now,
            last_write: now,
            write_pending_since: None,
            // Armed lazily; this first deadline is only ever compared against.
            timer: Box::pin(tokio::time::sleep_until(now)),
            timer_fired: true,
            timer_waker: None,
        }
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Whether `deadline` has passed, registering for a wake-up at it otherwise.
    ///
    /// The timer is re-armed lazily: one still set for an earlier, unexpired deadline is
    /// left alone (re-checked when it fires), so a busy connection whose deadline moves
    /// forward with every request costs no timer-wheel update per request.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        // Fast path: the timer is armed for an earlier deadline that has not come yet, and
        // the task it will wake is this one. Nothing to do until it fires.
        if !self.timer_fired
            && self.timer.deadline() <= deadline
            && self
                .timer_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            && Instant::now() < self.timer.deadline()
        {
            return false;
        }
        loop {
            if self.timer_fired || self.timer.deadline() > deadline {
                self.timer.as_mut().reset(deadline);
                self.timer_fired = false;
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => {
                    if !self
                        .timer_waker
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        self.timer_waker = Some(cx.waker().clone());
                    }
                    return false;
                }
                Poll::Ready(()) => {
                    self.timer_fired = true;
                    if Instant::now() >= deadline {
                        return true;
                    }
                    // Fired for an older, earlier deadline: loop to arm the current one.
                }
            }
        }
    }
}

fn timeout_error(which: IoTimeout) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, which)
}

impl<T> TimedIo<T> {
    /// Bookkeeping after a read-side operation: the clock for the upstream policy when it
    /// moved bytes, else the read deadline (pending, or the timeout error once it passed).
    fn after_read<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if let Poll::Ready(r) = r {
            // Only the upstream policy measures from reads; skip the clock otherwise.
            if matches!(self.read_deadline, ReadDeadline::WhileBusy { .. }) {
                self.last_read = Instant::now();
            }
            return Poll::Ready(r);
        }
        let (deadline, which) = match &self.read_deadline {
            ReadDeadline::Never => return Poll::Pending,
            ReadDeadline::WhileBusy { busy, timeout } => {
                if !busy.get() {
                    return Poll::Pending;
                }
                (
                    self.last_read.max(self.last_write) + *timeout,
                    IoTimeout::Read,
                )
            }
            ReadDeadline::WhileIdle { active, timeout } => {
                if active.get() != 0 {
                    return Poll::Pending;
                }
                (self.last_write + *timeout, IoTimeout::Idle)
            }
        };
        if !self.poll_deadline(cx, deadline) {
            return Poll::Pending;
        }
        let signalled = match &self.read_deadline {
            ReadDeadline::WhileIdle { active, timeout } if active.take_idle_signal() => {
                Some(*timeout)
            }
            _ => None,
        };
        match signalled {
            // The next deadline runs from the signal.
            Some(timeout) => {
                self.last_write = Instant::now();
                let again = self.last_write + timeout;
                if self.poll_deadline(cx, again) {
                    return Poll::Ready(Err(timeout_error(which)));
                }
                Poll::Pending
            }
            None => Poll::Ready(Err(timeout_error(which))),
        }
    }

    /// A read-side operation other than `poll_read` (one that takes bytes from the socket
    /// another way, as `splice` does), under the same read deadline.
    pub(crate) fn poll_read_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&T, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let r = op(&self.io, cx);
        self.after_read(cx, r)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        this.after_read(cx, r)
    }
}

impl<T: AsyncWrite + Unpin> TimedIo<T> {
    /// A write-side operation other than the `AsyncWrite` ones (one that moves bytes into
    /// the socket another way, as `splice` does), under the same write timeout and
    /// bookkeeping (the read timeout of a connection waiting for an answer counts from it).
    pub(crate) fn poll_write_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&T, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let r = op(&self.io, cx);
        self.after_write(cx, r, true)
    }

    /// Bookkeeping after a write-side operation; `moved_bytes` says whether it can have put
    /// bytes on the wire (a flush of an empty buffer is not progress toward any deadline).
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
        moved_bytes: bool,
    ) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                if moved_bytes {
                    self.last_write = Instant::now();
                }
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
        this.after_write(cx, r, !buf.is_empty())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A small head plus a small body: one contiguous write is cheaper in the kernel
        // than a writev of several tiny slices (measured on small proxied responses), while
        // large bodies keep the zero-copy writev.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if bufs.len() > 1 && total <= SMALL_WRITE {
            // The copy goes through a stack buffer that must be zeroed first: one just big
            // enough for the common head-plus-small-body case keeps that cheap.
            let r = if total <= TINY_WRITE {
                poll_write_flat::<TINY_WRITE, _>(&mut this.io, cx, bufs, total)
            } else {
                poll_write_flat::<SMALL_WRITE, _>(&mut this.io, cx, bufs, total)
            };
            return this.after_write(cx, r, total > 0);
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, r, bufs.iter().any(|b| !b.is_empty()))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.after_write(cx, r, false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.after_write(cx, r, false)
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
        let policy = ReadDeadline::WhileBusy {
            busy: busy.clone(),
            timeout: Duration::from_secs(1),
        };
        let mut io = TimedIo::new(a, policy, None);
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
        let mut io = TimedIo::new(a, ReadDeadline::Never, Some(Duration::from_secs(2)));
        let err = io
            .write_all(&[0u8; 64])
            .await
            .expect_err("peer never reads, write must time out");
        assert_eq!(IoTimeout::find(&err), Some(IoTimeout::Write));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_read_times_out_only_without_active_requests() {
        let (a, mut b) = tokio::io::duplex(64);
        let active = ActiveRequests::default();
        let policy = ReadDeadline::WhileIdle {
            active: active.clone(),
            timeout: Duration::from_secs(1),
        };
        let mut io = TimedIo::new(a, policy, None);
        let mut buf = [0u8; 8];
        {
            let _request = active.enter();
            let busy = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
            assert!(
                busy.is_err(),
                "a connection serving a request has no head deadline"
            );
        }
        // Partial head bytes do not extend the deadline: only writes (responses) do.
        b.write_all(b"GET").await.expect("duplex write");
        assert_eq!(io.read(&mut buf).await.expect("data"), 3);
        let err = io
            .read(&mut buf)
            .await
            .expect_err("idle read must time out");
        assert_eq!(IoTimeout::find(&err), Some(IoTimeout::Idle));
    }

    #[tokio::test]
    async fn small_vectored_writes_arrive_whole_and_in_order() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut io = TimedIo::new(a, ReadDeadline::Never, Some(Duration::from_secs(5)));
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        let slices = [io::IoSlice::new(head), io::IoSlice::new(b"hello")];
        let n = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &slices))
            .await
            .expect("write");
        assert_eq!(n, head.len() + 5);
        // A large write keeps the vectored path and still arrives whole.
        let big = vec![b'z'; 3 * SMALL_WRITE];
        let slices = [io::IoSlice::new(b"x"), io::IoSlice::new(&big)];
        let mut written = 0;
        while written == 0 {
            written = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &slices))
                .await
                .expect("write");
        }
        drop(io);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert!(got.starts_with(head));
        assert_eq!(&got[head.len()..head.len() + 5], b"hello");
        assert_eq!(got.len(), head.len() + 5 + written);
    }
}

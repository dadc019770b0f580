//! The body of a request read on the direct HTTP/1.1 path (see `downstream::h1`), framed by
//! its `Content-Length`.
//!
//! The connection's task owns the client's socket (it writes the response there), and the
//! service owns the request, body included. They meet in a slot that holds one chunk:
//! the connection reads up to [`MAX_FEED_READ`] bytes of body into it ([`BodyFeed`]), and
//! the request's body takes them out ([`FedBody`]). A new read waits until the last chunk
//! was taken, so a client is read only as fast as the upstream takes its body
//! (backpressure), with no channel and no second task in between.
//!
//! A taker that writes to a bare TCP socket may ask for the body to be spliced instead
//! (see `crate::splice`): the slot then also holds a pipe, which the connection fills
//! straight from the client's socket and the taker drains straight into its own, so the
//! bytes never enter the proxy's memory. Bytes read with the head still come as chunks,
//! first.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;
use tokio::net::TcpStream;

use crate::splice::{Pipe, Piped, SpliceSocket};

/// The largest read of body bytes from the client's socket, and so the largest chunk.
const MAX_FEED_READ: usize = 64 * 1024;
/// The smallest room a read of body bytes asks for.
const MIN_FEED_READ: usize = 8 * 1024;

/// What the two sides share.
#[derive(Default)]
struct Slot {
    /// Body bytes read and not taken yet.
    chunk: Option<Bytes>,
    /// Why the body cannot be read to its end (the client left, the socket failed).
    failed: Option<io::ErrorKind>,
    /// The body was dropped before its end: nobody takes what is read any more.
    abandoned: bool,
    /// The body waiting for a chunk.
    consumer: Option<Waker>,
    /// The feed waiting for the chunk to be taken.
    producer: Option<Waker>,
    /// Whether the client's connection is a bare socket the body may be spliced from.
    spliceable: bool,
    /// The pipe, once the taker asked for the body to be spliced.
    pipe: Option<Pipe>,
    /// Body bytes in the pipe, not drained yet.
    piped: usize,
}

/// Stores `waker` in `place` unless it is already there.
fn register(place: &mut Option<Waker>, waker: &Waker) {
    match place {
        Some(w) if w.will_wake(waker) => {}
        _ => *place = Some(waker.clone()),
    }
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // A panic while holding the lock leaves nothing half-done in the slot: go on with it.
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A body of `len` bytes: the connection's feed, and the body the request carries.
pub(crate) fn channel(len: u64) -> (BodyFeed, FedBody) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (
        BodyFeed {
            slot: slot.clone(),
            unread: len,
            failed: false,
        },
        FedBody {
            slot,
            remaining: len,
        },
    )
}

/// How far the feed got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    /// Every body byte was read from the socket.
    Read,
    /// The body was dropped with bytes left unread: they are still on the socket, so the
    /// connection cannot serve another request.
    Abandoned,
    /// The client left, or its socket failed, before the body's end.
    Failed(io::ErrorKind),
}

/// The connection's side: reads the body off the socket into the slot.
pub(crate) struct BodyFeed {
    slot: Arc<Mutex<Slot>>,
    /// Body bytes not read from the socket yet.
    unread: u64,
    failed: bool,
}

impl BodyFeed {
    /// Whether every byte of the body has been read from the socket.
    pub(crate) fn is_read(&self) -> bool {
        self.unread == 0
    }

    /// Lets the body's taker splice it: the connection's socket is a bare one.
    pub(crate) fn allow_splice(&self) {
        lock(&self.slot).spliceable = true;
    }

    /// Whether the body is read, or may still be: the request still holds it and the
    /// client has not failed it.
    pub(crate) fn is_wanted(&self) -> bool {
        if self.unread == 0 {
            return true;
        }
        let slot = lock(&self.slot);
        !slot.abandoned && slot.failed.is_none()
    }

    /// Reads body bytes from `buf` (bytes already read after the head) and then from `io`
    /// into the slot, one chunk at a time, until the body is read, dropped or failed.
    /// Bytes read past the body's end stay in `buf` (a pipelined request).
    pub(crate) fn poll_feed<I: AsyncRead + SpliceSocket + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Fed> {
        loop {
            if self.unread == 0 {
                return Poll::Ready(Fed::Read);
            }
            {
                let mut slot = lock(&self.slot);
                if let Some(kind) = slot.failed {
                    return Poll::Ready(Fed::Failed(kind));
                }
                if slot.abandoned {
                    return Poll::Ready(Fed::Abandoned);
                }
                if slot.chunk.is_some() || slot.piped != 0 {
                    register(&mut slot.producer, cx.waker());
                    return Poll::Pending;
                }
                if buf.is_empty() {
                    if let (Some(pipe), Some(tcp)) = (&slot.pipe, io.splice_socket()) {
                        let failed = match pipe.poll_fill(tcp, self.unread, cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(0)) => io::ErrorKind::UnexpectedEof,
                            Poll::Ready(Ok(n)) => {
                                self.unread -= n as u64;
                                slot.piped = n;
                                if let Some(waker) = slot.consumer.take() {
                                    waker.wake();
                                }
                                continue;
                            }
                            Poll::Ready(Err(e)) => e.kind(),
                        };
                        drop(slot);
                        self.fail(failed);
                        return Poll::Ready(Fed::Failed(failed));
                    }
                }
            }
            if buf.is_empty() {
                let want = usize::try_from(self.unread)
                    .map_or(MAX_FEED_READ, |n| n.clamp(MIN_FEED_READ, MAX_FEED_READ));
                buf.reserve(want);
                let failed = match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => io::ErrorKind::UnexpectedEof,
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) => e.kind(),
                };
                self.fail(failed);
                return Poll::Ready(Fed::Failed(failed));
            }
            let take = usize::try_from(self.unread).map_or(buf.len(), |n| n.min(buf.len()));
            self.unread -= take as u64;
            let mut slot = lock(&self.slot);
            slot.chunk = Some(buf.split_to(take).freeze());
            if let Some(waker) = slot.consumer.take() {
                waker.wake();
            }
        }
    }

    /// Tells the body that it will not get its end.
    fn fail(&mut self, kind: io::ErrorKind) {
        self.failed = true;
        let mut slot = lock(&self.slot);
        slot.failed = Some(kind);
        if let Some(waker) = slot.consumer.take() {
            waker.wake();
        }
    }
}

impl Drop for BodyFeed {
    /// A connection that ends before the body was read fails the body (its request may
    /// still be waiting on it somewhere).
    fn drop(&mut self) {
        if self.unread != 0 && !self.failed {
            self.fail(io::ErrorKind::ConnectionAborted);
        }
    }
}

/// The request's side: the body as the service reads it.
pub(crate) struct FedBody {
    slot: Arc<Mutex<Slot>>,
    /// Body bytes not taken yet.
    remaining: u64,
}

impl FedBody {
    /// Body bytes not taken yet.
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next chunk, `None` at the end, or the error that cut the body short.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let mut slot = lock(&self.slot);
        if let Some(chunk) = slot.chunk.take() {
            self.remaining -= chunk.len() as u64;
            if let Some(waker) = slot.producer.take() {
                waker.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if let Some(kind) = slot.failed {
            self.remaining = 0;
            return Poll::Ready(Some(Err(io::Error::new(
                kind,
                "the client's connection ended before the request body was complete",
            ))));
        }
        register(&mut slot.consumer, cx.waker());
        Poll::Pending
    }

    /// Whether the body may be spliced (see [`poll_piped`](Self::poll_piped)).
    pub(crate) fn can_splice(&self) -> bool {
        self.remaining != 0 && lock(&self.slot).spliceable
    }

    /// Like [`poll_chunk`](Self::poll_chunk), for a taker that splices: a chunk read
    /// already, or the bytes now in the pipe, which [`poll_drain`](Self::poll_drain) then
    /// moves out, all of them, before this is asked again. The first call asks the
    /// connection to splice (when no pipe can be made, the body keeps coming as chunks).
    pub(crate) fn poll_piped(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Piped>>> {
        {
            let mut slot = lock(&self.slot);
            if slot.piped != 0 {
                return Poll::Ready(Some(Ok(Piped::InPipe(slot.piped))));
            }
            if slot.pipe.is_none() && slot.spliceable {
                match Pipe::new() {
                    Ok(pipe) => slot.pipe = Some(pipe),
                    Err(e) => {
                        tracing::debug!(error = %e, "no pipe for splicing: the body is copied");
                        slot.spliceable = false;
                    }
                }
                if let Some(waker) = slot.producer.take() {
                    waker.wake();
                }
            }
        }
        self.poll_chunk(cx).map(|c| c.map(|r| r.map(Piped::Chunk)))
    }

    /// Moves bytes out of the pipe into `into` (see [`poll_piped`](Self::poll_piped)).
    pub(crate) fn poll_drain(
        &mut self,
        into: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut slot = lock(&self.slot);
        let (Some(pipe), piped) = (&slot.pipe, slot.piped) else {
            return Poll::Ready(Err(io::ErrorKind::InvalidInput.into()));
        };
        let n = std::task::ready!(pipe.poll_drain(into, piped, cx))?;
        slot.piped -= n;
        self.remaining -= n as u64;
        if slot.piped == 0 {
            if let Some(waker) = slot.producer.take() {
                waker.wake();
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl Drop for FedBody {
    /// The connection learns that the rest of the body will not be taken.
    fn drop(&mut self) {
        if self.remaining == 0 {
            return;
        }
        let mut slot = lock(&self.slot);
        slot.abandoned = true;
        slot.chunk = None;
        if let Some(waker) = slot.producer.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    async fn feed(
        feed: &mut BodyFeed,
        io: &mut tokio::io::DuplexStream,
        buf: &mut BytesMut,
    ) -> Fed {
        poll_fn(|cx| feed.poll_feed(io, buf, cx)).await
    }

    async fn chunk(body: &mut FedBody) -> Option<io::Result<Bytes>> {
        poll_fn(|cx| body.poll_chunk(cx)).await
    }

    #[tokio::test]
    async fn buffered_bytes_come_first_and_bytes_past_the_end_stay() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let (mut f, mut body) = channel(10);
        let mut buf = BytesMut::from(&b"0123"[..]);
        client.write_all(b"456789GET /next").await.expect("write");
        let feeding = tokio::spawn(async move {
            let fed = feed(&mut f, &mut server, &mut buf).await;
            (fed, buf)
        });
        let mut got = Vec::new();
        while let Some(c) = chunk(&mut body).await {
            got.extend_from_slice(&c.expect("chunk"));
        }
        assert_eq!(got, b"0123456789");
        let (fed, buf) = feeding.await.expect("feed");
        assert_eq!(fed, Fed::Read);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[tokio::test]
    async fn a_client_leaving_early_fails_the_body() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let (mut f, mut body) = channel(10);
        let mut buf = BytesMut::new();
        client.write_all(b"abc").await.expect("write");
        drop(client);
        let feeding = tokio::spawn(async move { feed(&mut f, &mut server, &mut buf).await });
        assert_eq!(
            chunk(&mut body).await.map(|r| r.ok()),
            Some(Some(Bytes::from_static(b"abc")))
        );
        let err = chunk(&mut body)
            .await
            .and_then(Result::err)
            .map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::UnexpectedEof));
        assert_eq!(
            feeding.await.ok(),
            Some(Fed::Failed(io::ErrorKind::UnexpectedEof))
        );
    }

    #[tokio::test]
    async fn a_dropped_body_stops_the_feed_and_a_dropped_feed_fails_the_body() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let (mut f, body) = channel(10);
        drop(body);
        let mut buf = BytesMut::from(&b"01"[..]);
        assert_eq!(feed(&mut f, &mut server, &mut buf).await, Fed::Abandoned);

        let (f, mut body) = channel(10);
        drop(f);
        let err = chunk(&mut body)
            .await
            .and_then(Result::err)
            .map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::ConnectionAborted));
    }
}

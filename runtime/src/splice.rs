//! Moving body bytes from one TCP socket to another inside the kernel, through a pipe
//! (`splice(2)`), for bodies the proxy relays unchanged between cleartext sockets.
//!
//! A relayed byte otherwise costs two copies in the proxy (socket to memory, memory to
//! socket); spliced, the kernel hands the socket's pages to the pipe and the pipe's pages to
//! the other socket. Measured on loopback (kernel 6.18), relaying 1 GiB this way took a
//! quarter of the CPU time that `read`/`write` through a 64 KiB buffer took.
//!
//! The pipe is filled only while empty and drained until empty: a `splice` into a pipe that
//! still holds bytes may find it full with fewer bytes than its size (pages are its unit),
//! and would then report "would block" for a socket that has data, a readiness the socket
//! would never signal again. Into an empty pipe, "would block" can only mean the socket has
//! nothing.

use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::{Context, Poll};

use bytes::Bytes;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::error::Error;
use crate::io_timeout::TimedIo;

/// The pipe size asked for: large enough that a body of a few MiB crosses in a few turns.
/// The kernel may refuse it (`fs.pipe-max-size`, the user's pipe page budget); the pipe then
/// keeps its default size, which works the same, in more turns.
const PIPE_SIZE: i32 = 1024 * 1024;

/// A pipe that bytes cross from one socket to another.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// How many bytes it holds at most.
    size: usize,
}

impl Pipe {
    /// A new non-blocking pipe, of [`PIPE_SIZE`] if the kernel allows it.
    pub(crate) fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let _ = fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        let size = fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)?;
        Ok(Pipe {
            read,
            write,
            size: usize::try_from(size).unwrap_or(4096).max(4096),
        })
    }

    /// Moves up to `max` bytes from the socket `from` into this pipe, which must be empty.
    /// `Ok(0)` means the peer closed its side.
    pub(crate) fn poll_fill(
        &self,
        from: &TcpStream,
        max: u64,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let len = usize::try_from(max).map_or(self.size, |m| m.min(self.size));
        loop {
            std::task::ready!(from.poll_read_ready(cx))?;
            let moved = from.try_io(Interest::READABLE, || {
                splice(from, None, &self.write, None, len, flags()).map_err(io::Error::from)
            });
            match moved {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    /// Moves up to `max` of the bytes this pipe holds into the socket `into`.
    pub(crate) fn poll_drain(
        &self,
        into: &TcpStream,
        max: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(into.poll_write_ready(cx))?;
            let moved = into.try_io(Interest::WRITABLE, || {
                splice(&self.read, None, into, None, max, flags()).map_err(io::Error::from)
            });
            match moved {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                r => return Poll::Ready(r),
            }
        }
    }
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// A connection's byte stream that may be a bare TCP socket, whose bytes can then be
/// spliced: not one under TLS, and not one with bytes of its own still to give first.
pub(crate) trait SpliceSocket {
    /// The socket, when bytes may be spliced straight from or into it.
    fn splice_socket(&self) -> Option<&TcpStream> {
        None
    }

    /// Moves bytes into the socket with `op` (a splice), under the stream's write timeout;
    /// fails where [`splice_socket`](Self::splice_socket) gives none.
    fn poll_splice_into(
        &mut self,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(&TcpStream, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let _ = (cx, op);
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

impl SpliceSocket for TcpStream {
    fn splice_socket(&self) -> Option<&TcpStream> {
        Some(self)
    }

    fn poll_splice_into(
        &mut self,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(&TcpStream, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        op(self, cx)
    }
}

impl SpliceSocket for TimedIo<TcpStream> {
    fn splice_socket(&self) -> Option<&TcpStream> {
        Some(self.get_ref())
    }

    fn poll_splice_into(
        &mut self,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(&TcpStream, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, op)
    }
}

impl<S> SpliceSocket for crate::tls::TlsStream<S> {}

/// The in-memory streams of the unit tests: never spliced.
#[cfg(test)]
impl SpliceSocket for tokio::io::DuplexStream {}

/// What a body that may be spliced gives its taker next.
#[derive(Debug)]
pub(crate) enum Piped {
    /// Bytes in memory (read with the request head), to be written as usual.
    Chunk(Bytes),
    /// This many bytes wait in the pipe, to be drained before anything else is asked.
    InPipe(usize),
}

/// A body whose bytes may cross from one socket into another by splicing: a request body
/// on its way upstream, or a response body on its way to the client.
pub(crate) trait SpliceSource {
    /// Whether the body may be spliced now: asked once, before the first
    /// [`poll_piped`](Self::poll_piped) (a layer may have put another body in its place).
    fn can_splice(&self) -> bool;

    /// The next bytes (see [`Piped`]), `None` at the end, or the error that cut the body
    /// short (on the side it comes from).
    fn poll_piped(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piped, Error>>>;

    /// Moves bytes of the pipe into `into`; fails with the socket's error.
    fn poll_drain(&mut self, into: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<usize>>;
}

/// Put in a request's (or a response's) extensions by whoever made its body: how the side
/// that writes the body reaches its [`SpliceSource`] (the body travels as a type that side
/// does not know). Absent, the body is read frame by frame.
#[derive(Clone, Copy)]
pub(crate) struct SpliceHook {
    source: FindSource,
    /// How to reach the body inside the wrapper it travels in, if any.
    unwrap: Option<Unwrap>,
}

/// Finds a body's source: a downcast to the body's type.
type FindSource = fn(&mut dyn Any) -> Option<&mut (dyn SpliceSource + Send)>;

/// Reaches a body inside the wrapper it travels in.
type Unwrap = fn(&mut dyn Any) -> Option<&mut dyn Any>;

impl SpliceHook {
    /// A hook that finds the body's source with `source` (a downcast to its type).
    pub(crate) fn new(source: FindSource) -> Self {
        SpliceHook {
            source,
            unwrap: None,
        }
    }

    /// The hook for the body once a wrapper took it in: `unwrap` reaches it inside. (One
    /// wrapper: the body of a response counted while it is written.)
    pub(crate) fn wrapped(self, unwrap: Unwrap) -> Self {
        SpliceHook {
            unwrap: Some(unwrap),
            ..self
        }
    }

    /// The source of `body`, if `body` is the type the hook was made for (a layer may have
    /// replaced it: it is then written frame by frame).
    pub(crate) fn source<'a>(
        &self,
        body: &'a mut dyn Any,
    ) -> Option<&'a mut (dyn SpliceSource + Send)> {
        match self.unwrap {
            Some(unwrap) => (self.source)(unwrap(body)?),
            None => (self.source)(body),
        }
    }
}

/// The smallest body worth splicing: below it, making a pipe costs more than copying.
pub(crate) const MIN_SPLICED: u64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected loopback sockets.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[tokio::test]
    async fn bytes_cross_from_one_socket_to_another_whole_and_in_order() {
        let (mut client, from) = socket_pair().await;
        let (into, mut origin) = socket_pair().await;
        let pipe = Pipe::new().expect("pipe");
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.expect("write");
            client
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            origin.read_exact(&mut got).await.expect("read");
            assert!(got == expected, "the bytes arrived whole and in order");
        });
        let mut left = 3_000_000u64;
        while left > 0 {
            let n = std::future::poll_fn(|cx| pipe.poll_fill(&from, left, cx))
                .await
                .expect("fill");
            assert!(n > 0, "the client is still sending");
            left -= n as u64;
            let mut in_pipe = n;
            while in_pipe > 0 {
                in_pipe -= std::future::poll_fn(|cx| pipe.poll_drain(&into, in_pipe, cx))
                    .await
                    .expect("drain");
            }
        }
        reader.await.expect("reader");
        // Nothing past what was asked for was taken from the client's socket.
        let mut client = writer.await.expect("writer");
        client.write_all(b"next").await.expect("write");
        let mut next = [0u8; 4];
        let mut from = from;
        from.read_exact(&mut next).await.expect("read");
        assert_eq!(&next, b"next");
    }

    #[tokio::test]
    async fn a_closed_peer_fills_nothing() {
        let (client, from) = socket_pair().await;
        drop(client);
        let pipe = Pipe::new().expect("pipe");
        let n = std::future::poll_fn(|cx| pipe.poll_fill(&from, 100, cx))
            .await
            .expect("fill");
        assert_eq!(n, 0);
    }
}

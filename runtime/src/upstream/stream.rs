//! [`UpstreamStream`]: the byte stream to an upstream, cleartext TCP or TLS over TCP, with
//! the read and write deadlines of [`TimedIo`] underneath.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::tls::TlsStream as SslStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::io_timeout::TimedIo;

/// A connected upstream socket, as both HTTP clients (hyper's and the direct one) use it.
pub(crate) enum UpstreamStream {
    /// Cleartext TCP.
    Plain(TimedIo<TcpStream>),
    /// TLS over TCP, after the handshake.
    Tls(SslStream<TimedIo<TcpStream>>),
}

impl UpstreamStream {
    /// The TCP socket underneath, for readiness checks on an idle connection.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            UpstreamStream::Plain(io) => io.get_ref(),
            UpstreamStream::Tls(tls) => tls.get_ref().get_ref(),
        }
    }

    /// Whether bytes may be spliced into this stream (cleartext only).
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, UpstreamStream::Plain(_))
    }

    /// Takes bytes from the socket with `op` (a splice), under the read deadline; fails
    /// for a TLS stream, whose bytes must be decrypted.
    pub(crate) fn poll_splice_from(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&TcpStream, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match self {
            UpstreamStream::Plain(io) => io.poll_read_with(cx, op),
            UpstreamStream::Tls(_) => Poll::Ready(Err(io::ErrorKind::Unsupported.into())),
        }
    }

    /// Moves bytes into the socket with `op` (a splice), under the write timeout; fails
    /// for a TLS stream, whose bytes must be encrypted.
    pub(crate) fn poll_splice_into(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&TcpStream, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match self {
            UpstreamStream::Plain(io) => io.poll_write_with(cx, op),
            UpstreamStream::Tls(_) => Poll::Ready(Err(io::ErrorKind::Unsupported.into())),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            UpstreamStream::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_write(cx, buf),
            UpstreamStream::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(tls) => Pin::new(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(io) => io.is_write_vectored(),
            UpstreamStream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_flush(cx),
            UpstreamStream::Tls(tls) => Pin::new(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamStream::Tls(tls) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}

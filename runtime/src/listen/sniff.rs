//! Which HTTP version a downstream connection speaks, when TLS's ALPN did not say: a
//! cleartext client that knows the server speaks HTTP/2 ("prior knowledge", h2c) starts
//! with the connection preface `PRI * HTTP/2.0`, which no HTTP/1 request line does.
//!
//! [`sniff`] reads the first bytes (no extra system call: they are bytes the server reads
//! anyway) and [`Prefixed`] hands them back to whichever protocol serves the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection said.
pub enum Sniffed<T> {
    /// The HTTP/2 preface: serve HTTP/2 on the returned stream (preface included).
    Http2(Prefixed<T>),
    /// Anything else: serve HTTP/1.1 on the returned stream.
    Http1(Prefixed<T>),
    /// The client closed before sending anything.
    Closed,
}

/// Reads until the first bytes decide between HTTP/2 prior knowledge and HTTP/1.
pub async fn sniff<T: AsyncRead + Unpin>(mut io: T) -> io::Result<Sniffed<T>> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(Sniffed::Closed);
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Sniffed::Http1(Prefixed::new(buf.freeze(), io)));
        }
        if n == H2_PREFACE.len() {
            return Ok(Sniffed::Http2(Prefixed::new(buf.freeze(), io)));
        }
    }
}

/// An I/O object whose first reads return bytes already read from it.
pub struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    /// `io`, with `prefix` to be read first.
    pub fn new(prefix: Bytes, io: T) -> Self {
        Prefixed { prefix, io }
    }
}

impl<T: crate::splice::SpliceSocket> crate::splice::SpliceSocket for Prefixed<T> {
    fn splice_socket(&self) -> Option<&tokio::net::TcpStream> {
        // The prefix's bytes come first; they are read, not spliced.
        self.prefix
            .is_empty()
            .then(|| self.io.splice_socket())
            .flatten()
    }

    fn poll_splice_into(
        &mut self,
        cx: &mut Context<'_>,
        op: &mut dyn FnMut(&tokio::net::TcpStream, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.io.poll_splice_into(cx, op)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An empty view still holds the sniffing buffer (4 KiB): let it go, or
                // every connection keeps it for its whole life.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
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
    use tokio::io::AsyncWriteExt;

    async fn sniff_bytes(chunks: &[&[u8]]) -> (&'static str, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        for c in chunks {
            client.write_all(c).await.expect("write");
        }
        drop(client);
        let (kind, mut io) = match sniff(server).await.expect("sniff") {
            Sniffed::Http2(io) => ("h2", io),
            Sniffed::Http1(io) => ("h1", io),
            Sniffed::Closed => return ("closed", Vec::new()),
        };
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.expect("read");
        (kind, all)
    }

    #[tokio::test]
    async fn the_preface_picks_http2_and_nothing_is_lost() {
        let (kind, bytes) = sniff_bytes(&[H2_PREFACE, b"frames"]).await;
        assert_eq!(kind, "h2");
        assert_eq!(bytes, [H2_PREFACE, b"frames"].concat());
        let (kind, bytes) = sniff_bytes(&[b"GET / HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(kind, "h1");
        assert_eq!(bytes, b"GET / HTTP/1.1\r\n\r\n");
        // "PRI" alone is not enough; a request line that merely starts alike is HTTP/1.
        let (kind, _) = sniff_bytes(&[b"PRI", b"NT / HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(kind, "h1");
        let (kind, _) = sniff_bytes(&[]).await;
        assert_eq!(kind, "closed");
    }
}

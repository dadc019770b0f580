//! The body of a downstream request, whichever HTTP engine read it.
//!
//! Requests reach the service from hyper's HTTP/1.1 and HTTP/2 servers, with hyper's body,
//! or from the direct HTTP/1.1 path (see `downstream::h1`), which reads a body framed by
//! `Content-Length` itself (see `downstream::direct_body`). Services see one type for all.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::downstream::direct_body::FedBody;
use crate::error::BoxError;

/// The body of a request a downstream client sent: a stream of bytes, empty for a request
/// that carries none.
pub struct DownstreamBody(Inner);

enum Inner {
    Empty,
    Hyper(Incoming),
    Direct(FedBody),
    /// Boxed: an HTTP/3 stream is large, and every request's body has this type.
    H3(Box<super::h3::H3Body>),
}

impl DownstreamBody {
    /// A body with no bytes: the body of a request without `Content-Length` or
    /// `Transfer-Encoding`.
    pub fn empty() -> Self {
        DownstreamBody(Inner::Empty)
    }

    /// The body of a request on the direct path, read by its connection.
    pub(crate) fn from_direct(body: FedBody) -> Self {
        DownstreamBody(Inner::Direct(body))
    }

    /// The body of an HTTP/3 request, read from its stream.
    pub(crate) fn from_h3(body: super::h3::H3Body) -> Self {
        DownstreamBody(Inner::H3(Box::new(body)))
    }

    /// The direct path's body, which may be spliced (see `FedBody::poll_piped`).
    pub(crate) fn direct(&self) -> Option<&FedBody> {
        match &self.0 {
            Inner::Direct(body) => Some(body),
            _ => None,
        }
    }

    /// [`direct`](Self::direct), to take its bytes.
    pub(crate) fn direct_mut(&mut self) -> Option<&mut FedBody> {
        match &mut self.0 {
            Inner::Direct(body) => Some(body),
            _ => None,
        }
    }
}

impl From<Incoming> for DownstreamBody {
    fn from(body: Incoming) -> Self {
        DownstreamBody(Inner::Hyper(body))
    }
}

impl Default for DownstreamBody {
    fn default() -> Self {
        DownstreamBody::empty()
    }
}

impl std::fmt::Debug for DownstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Empty => f.write_str("DownstreamBody(empty)"),
            Inner::Hyper(body) => f.debug_tuple("DownstreamBody").field(body).finish(),
            Inner::Direct(body) => {
                write!(f, "DownstreamBody(direct, {} bytes left)", body.remaining())
            }
            Inner::H3(body) => f.debug_tuple("DownstreamBody").field(body).finish(),
        }
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    /// hyper's error for a body hyper read, an [`std::io::Error`] for one the direct path
    /// read (the client left before its end).
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Empty => Poll::Ready(None),
            Inner::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inner::Direct(body) => body
                .poll_chunk(cx)
                .map(|chunk| chunk.map(|r| r.map(Frame::data).map_err(Into::into))),
            Inner::H3(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Empty => true,
            Inner::Hyper(body) => body.is_end_stream(),
            Inner::Direct(body) => body.remaining() == 0,
            Inner::H3(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Hyper(body) => body.size_hint(),
            Inner::Direct(body) => SizeHint::with_exact(body.remaining()),
            Inner::H3(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn an_empty_body_ends_at_once_with_no_bytes() {
        let body = DownstreamBody::empty();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        let bytes = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(bytes.ok(), Some(Bytes::new()));
    }
}

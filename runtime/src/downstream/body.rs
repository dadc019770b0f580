//! The body of a downstream request, whichever HTTP engine read it.
//!
//! Most requests reach the service from hyper's HTTP/1.1 and HTTP/2 servers, with hyper's
//! body. Bodiless HTTP/1.1 requests take the server's direct path (see `http::direct`),
//! which has no hyper body to give. Services see one type for both.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The body of a request a downstream client sent: a stream of bytes, empty for a request
/// that carries none.
pub struct DownstreamBody(Inner);

enum Inner {
    Empty,
    Hyper(Incoming),
}

impl DownstreamBody {
    /// A body with no bytes: the body of a request without `Content-Length` or
    /// `Transfer-Encoding`.
    pub fn empty() -> Self {
        DownstreamBody(Inner::Empty)
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
        }
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().0 {
            Inner::Empty => Poll::Ready(None),
            Inner::Hyper(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Empty => true,
            Inner::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Hyper(body) => body.size_hint(),
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

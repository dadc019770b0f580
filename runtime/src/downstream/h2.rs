//! What an HTTP/2 client connection gets beyond hyper's server: the HTTP/1 limits on a
//! request's header fields, and a GOAWAY before an idle connection is closed.
//!
//! hyper's HTTP/2 server bounds a request's header *bytes* (`max_header_list_size`, which
//! h2 answers with 431) but not their *count*, which HTTP/1 caps (`max_headers`, 431). A
//! client could otherwise send over HTTP/2 the hundreds of fields HTTP/1 refuses:
//! [`FieldLimit`] answers such a request 431 before any service sees it.
//!
//! An HTTP/2 connection with no stream open for the idle timeout is told so with a GOAWAY
//! (`NO_ERROR`), as RFC 9113 §6.8 asks of a server that closes, instead of having its
//! socket closed under it: the client then knows that nothing was lost and opens a new
//! connection for its next request. The idle deadline itself is the connection's read
//! deadline (`io_timeout`), which signals here once; a client that does not close within
//! another idle period after the GOAWAY is cut off by that deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};

/// Answers 431 to a request with more than `max_headers` header fields; passes any other to
/// the inner service.
#[derive(Clone)]
pub(crate) struct FieldLimit<S> {
    pub(crate) inner: S,
    pub(crate) max_headers: usize,
}

impl<S, R, B> tower::Service<Request<R>> for FieldLimit<S>
where
    S: tower::Service<Request<R>, Response = Response<B>>,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = S::Error;
    type Future = FieldLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<R>) -> Self::Future {
        if request.headers().len() > self.max_headers {
            tracing::debug!(
                fields = request.headers().len(),
                limit = self.max_headers,
                "HTTP/2 request with too many header fields"
            );
            return FieldLimitFuture::TooMany;
        }
        FieldLimitFuture::Inner {
            future: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`FieldLimit`]: the inner service's, or an immediate 431.
    #[project = FieldLimitProj]
    pub(crate) enum FieldLimitFuture<F> {
        Inner { #[pin] future: F },
        TooMany,
    }
}

impl<F, B, E> Future for FieldLimitFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FieldLimitProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|response| response.map(Either::Left))),
            FieldLimitProj::TooMany => Poll::Ready(Ok(too_many_fields())),
        }
    }
}

/// The 431 answer, with the text the HTTP/1 path's errors carry.
fn too_many_fields<B>() -> Response<Either<B, Full<Bytes>>> {
    let body = Full::new(Bytes::from_static(b"431 Request Header Fields Too Large\n"));
    let mut response = Response::new(Either::Right(body));
    *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

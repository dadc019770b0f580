//! A phase that panics fails its request, not its connection: the panic is caught where
//! the phases run and becomes an `Internal` error (a 500 answer, the `logging` phase, an
//! error-level log line with the request's context, and a Sentry event when reporting is
//! on), while the connection and its other HTTP/2 streams go on. Catching costs nothing on
//! the path that does not panic.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::{Error, ErrorKind, Result};

pin_project_lite::pin_project! {
    /// `inner`, with a panic in one of its polls turned into an error.
    pub(crate) struct CatchPanic<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchPanic<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchPanic { inner }
    }
}

impl<F, T> Future for CatchPanic<F>
where
    F: Future<Output = Result<T>>,
{
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let inner = self.project().inner;
        // Unwind safety: after a panic the request's state is only read to answer 500
        // and log it, never used to go on with the request.
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(Error::with_source(
                ErrorKind::Internal,
                "a phase panicked",
                panic_message(payload.as_ref()).to_owned(),
            ))),
        }
    }
}

/// The message a panic was raised with, if it was text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

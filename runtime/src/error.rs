//! The proxy's one edge error: what went wrong, on which side, and the status it maps to.
//!
//! Every failure on a request's path becomes an [`Error`]; the proxy turns it into a
//! response with [`Error::status`] (if no response head was sent yet) and hands it to the
//! `logging` phase. The status mapping lives here and nowhere else.

use std::fmt;

use http::StatusCode;

/// A boxed error source, as carried inside [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`Error`] is; decides its status code and whether a retry is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The downstream request is malformed or not acceptable (missing Host, bad framing).
    BadRequest,
    /// The client went away or its connection failed mid-request.
    DownstreamClosed,
    /// The client stopped sending the request body for longer than the body timeout.
    DownstreamTimeout,
    /// The client sent a request body larger than its route accepts (`max_body`).
    BodyTooLarge,
    /// No peer could be chosen for the request (empty pool, `upstream_peer` returned none).
    NoPeer,
    /// Connecting to the upstream peer was refused or failed.
    ConnectRefused,
    /// Connecting to the upstream peer took longer than the connect timeout.
    ConnectTimeout,
    /// The TLS handshake with the upstream failed: its certificate is not trusted or not
    /// for the expected name, or no common protocol.
    UpstreamTls,
    /// The upstream did not answer (or stopped sending) within the read timeout.
    ReadTimeout,
    /// The upstream did not accept request bytes within the write timeout.
    WriteTimeout,
    /// The upstream connection was closed or reset before the response was complete.
    UpstreamClosed,
    /// The upstream sent something that is not a valid HTTP response.
    InvalidResponse,
    /// A user filter (phase) returned an error.
    Filter,
    /// A bug or resource problem inside the proxy.
    Internal,
}

impl ErrorKind {
    /// The status code a client gets for this kind of failure.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::DownstreamClosed | ErrorKind::DownstreamTimeout => {
                StatusCode::REQUEST_TIMEOUT
            }
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::NoPeer => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ConnectTimeout | ErrorKind::ReadTimeout | ErrorKind::WriteTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ErrorKind::ConnectRefused
            | ErrorKind::UpstreamTls
            | ErrorKind::UpstreamClosed
            | ErrorKind::InvalidResponse => StatusCode::BAD_GATEWAY,
            ErrorKind::Filter | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether this failure was the upstream peer's: refused, timed out, reset, a bad
    /// response or a failed TLS handshake. These count against the peer's health and in
    /// its error metrics; failures of the client or of filters do not.
    pub fn is_upstream_failure(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::UpstreamTls
                | ErrorKind::ReadTimeout
                | ErrorKind::WriteTimeout
                | ErrorKind::UpstreamClosed
                | ErrorKind::InvalidResponse
        )
    }

    /// A short, stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::DownstreamClosed => "downstream_closed",
            ErrorKind::DownstreamTimeout => "downstream_timeout",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::NoPeer => "no_peer",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::UpstreamTls => "upstream_tls",
            ErrorKind::ReadTimeout => "read_timeout",
            ErrorKind::WriteTimeout => "write_timeout",
            ErrorKind::UpstreamClosed => "upstream_closed",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Filter => "filter",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error on a request's path: its [`ErrorKind`], a context message and an optional source.
pub struct Error {
    kind: ErrorKind,
    context: &'static str,
    source: Option<BoxError>,
    retry: bool,
}

/// A `Result` whose error is the proxy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Creates an error of `kind` with a static context message.
    pub fn new(kind: ErrorKind, context: &'static str) -> Self {
        Error {
            kind,
            context,
            source: None,
            retry: false,
        }
    }

    /// Creates an error of `kind` caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        context: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        Error {
            kind,
            context,
            source: Some(source.into()),
            retry: false,
        }
    }

    /// A filter failure (answered with 500), for use in user phases: `Error::filter("why")`.
    pub fn filter(context: &'static str) -> Self {
        Error::new(ErrorKind::Filter, context)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status code the client gets for this error.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The static context message.
    pub fn context(&self) -> &'static str {
        self.context
    }

    /// Whether the proxy should try the request again on another peer. Set in the
    /// `fail_to_connect` phase; only a request that was never sent is retried.
    pub fn retry(&self) -> bool {
        self.retry
    }

    /// Marks (or unmarks) this error as worth a retry on another peer.
    pub fn set_retry(&mut self, retry: bool) {
        self.retry = retry;
    }

    /// Whether connecting to the peer failed, so nothing of the request was sent.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout | ErrorKind::UpstreamTls
        )
    }

    /// Whether this is a timeout (connect, read, write or downstream body).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectTimeout
                | ErrorKind::ReadTimeout
                | ErrorKind::WriteTimeout
                | ErrorKind::DownstreamTimeout
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("context", &self.context);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.context)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<http::Error> for Error {
    fn from(e: http::Error) -> Self {
        Error::with_source(ErrorKind::Filter, "invalid HTTP value", e)
    }
}

impl From<http::header::InvalidHeaderValue> for Error {
    fn from(e: http::header::InvalidHeaderValue) -> Self {
        Error::with_source(ErrorKind::Filter, "invalid header value", e)
    }
}

impl From<http::header::InvalidHeaderName> for Error {
    fn from(e: http::header::InvalidHeaderName) -> Self {
        Error::with_source(ErrorKind::Filter, "invalid header name", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_gateway_conventions() {
        assert_eq!(ErrorKind::ConnectRefused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(ErrorKind::UpstreamClosed.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(ErrorKind::InvalidResponse.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(ErrorKind::ReadTimeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            ErrorKind::ConnectTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(ErrorKind::NoPeer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ErrorKind::BadRequest.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ErrorKind::Filter.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn display_names_kind_context_and_source() {
        let e = Error::with_source(
            ErrorKind::ConnectRefused,
            "connecting to upstream",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        let text = e.to_string();
        assert!(text.starts_with("connect_refused: connecting to upstream: "));
        assert!(std::error::Error::source(&e).is_some());
    }
}

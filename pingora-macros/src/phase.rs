//! The proxy phases a `proxy!` may declare, with their parameters and signatures: one
//! table that parsing, validation, error messages and expansion all read.

/// A phase of the runtime's `ProxyHttp`, in pipeline order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    EarlyRequestFilter,
    RequestFilter,
    UpstreamPeer,
    UpstreamRequestFilter,
    FailToConnect,
    UpstreamResponseFilter,
    ResponseFilter,
    Logging,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::EarlyRequestFilter,
        Phase::RequestFilter,
        Phase::UpstreamPeer,
        Phase::UpstreamRequestFilter,
        Phase::FailToConnect,
        Phase::UpstreamResponseFilter,
        Phase::ResponseFilter,
        Phase::Logging,
    ];

    /// The keyword, which is also the `ProxyHttp` method's name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::EarlyRequestFilter => "early_request_filter",
            Phase::RequestFilter => "request_filter",
            Phase::UpstreamPeer => "upstream_peer",
            Phase::UpstreamRequestFilter => "upstream_request_filter",
            Phase::FailToConnect => "fail_to_connect",
            Phase::UpstreamResponseFilter => "upstream_response_filter",
            Phase::ResponseFilter => "response_filter",
            Phase::Logging => "logging",
        }
    }

    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The parameters an inline block names, in order.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            Phase::EarlyRequestFilter | Phase::RequestFilter | Phase::UpstreamPeer => {
                &["session", "ctx"]
            }
            Phase::UpstreamRequestFilter => &["session", "upstream_request", "ctx"],
            Phase::FailToConnect => &["session", "peer", "ctx", "error"],
            Phase::UpstreamResponseFilter => &["session", "upstream_response", "ctx"],
            Phase::ResponseFilter => &["session", "response", "ctx"],
            Phase::Logging => &["session", "error", "ctx"],
        }
    }

    /// The signature a function given for this phase must have, for messages.
    pub fn signature(self) -> &'static str {
        match self {
            Phase::EarlyRequestFilter => "async fn(&mut Session, &mut Ctx) -> Result<()>",
            Phase::RequestFilter => "async fn(&mut Session, &mut Ctx) -> Result<Flow>",
            Phase::UpstreamPeer => "async fn(&mut Session, &mut Ctx) -> Result<HttpPeer>",
            Phase::UpstreamRequestFilter => {
                "async fn(&mut Session, &mut RequestHeader, &mut Ctx) -> Result<()>"
            }
            Phase::FailToConnect => "fn(&mut Session, &HttpPeer, &mut Ctx, Error) -> Error",
            Phase::UpstreamResponseFilter => {
                "fn(&mut Session, &mut ResponseHeader, &mut Ctx) -> Result<()>"
            }
            Phase::ResponseFilter => {
                "async fn(&mut Session, &mut ResponseHeader, &mut Ctx) -> Result<()>"
            }
            Phase::Logging => "fn(&Session, Option<&Error>, &mut Ctx)",
        }
    }
}

//! How user code plugs into the proxy phases when a proxy is declared with `proxy!`.
//!
//! A phase written inline (`request_filter(session, ctx) { ... }`) may end in any value of
//! [`PhaseOutput`] for the phase's result (e.g. `()` for "continue"); a phase given as a
//! function path (`request_filter = auth::check;`) must have the phase's signature, checked
//! by the function named after the phase here, whose errors name the expected signature.
//! Hand-written [`ProxyHttp`](crate::proxy::ProxyHttp) impls need none of this.

use std::future::Future;

use crate::error::{Error, Result};
use crate::lb::PoolId;
use crate::proxy::{Flow, RequestHeader, ResponseHeader, Session};
use crate::upstream::HttpPeer;

/// What a declared proxy's `upstream_peer` phase chose: a peer of its own making, or a
/// declared pool, whose strategy, health, retries and metrics then apply.
#[derive(Debug)]
pub enum PeerChoice {
    /// This peer.
    Peer(HttpPeer),
    /// A peer of this pool, chosen as the pool chooses.
    Pool(PoolId),
}

impl From<HttpPeer> for PeerChoice {
    fn from(peer: HttpPeer) -> Self {
        PeerChoice::Peer(peer)
    }
}

impl From<PoolId> for PeerChoice {
    fn from(pool: PoolId) -> Self {
        PeerChoice::Pool(pool)
    }
}

/// A value an inline phase block may end with, standing for the phase's `Result<T>`.
///
/// `()` means "nothing to report" (`Ok(())`, or [`Flow::Continue`] in `request_filter`);
/// `T` and `Result<T>` are taken as they are.
#[diagnostic::on_unimplemented(
    message = "this phase block ends in `{Self}`, but the phase produces `Result<{T}>`",
    label = "end the block with `()` to go on, a `{T}`, or a `Result<{T}>` (`return Ok(..);` and `?` work too)"
)]
pub trait PhaseOutput<T> {
    /// The phase result this value stands for.
    fn into_phase_result(self) -> Result<T>;
}

impl PhaseOutput<()> for () {
    fn into_phase_result(self) -> Result<()> {
        Ok(())
    }
}

impl PhaseOutput<Flow> for () {
    fn into_phase_result(self) -> Result<Flow> {
        Ok(Flow::Continue)
    }
}

impl PhaseOutput<Flow> for Flow {
    fn into_phase_result(self) -> Result<Flow> {
        Ok(self)
    }
}

impl PhaseOutput<PeerChoice> for HttpPeer {
    fn into_phase_result(self) -> Result<PeerChoice> {
        Ok(PeerChoice::Peer(self))
    }
}

impl PhaseOutput<PeerChoice> for PoolId {
    fn into_phase_result(self) -> Result<PeerChoice> {
        Ok(PeerChoice::Pool(self))
    }
}

impl PhaseOutput<PeerChoice> for PeerChoice {
    fn into_phase_result(self) -> Result<PeerChoice> {
        Ok(self)
    }
}

impl PhaseOutput<PeerChoice> for Result<HttpPeer> {
    fn into_phase_result(self) -> Result<PeerChoice> {
        self.map(PeerChoice::Peer)
    }
}

impl PhaseOutput<PeerChoice> for Result<PoolId> {
    fn into_phase_result(self) -> Result<PeerChoice> {
        self.map(PeerChoice::Pool)
    }
}

impl<T> PhaseOutput<T> for Result<T> {
    fn into_phase_result(self) -> Result<T> {
        self
    }
}

/// Converts an inline phase block's value into the phase's result.
pub fn phase_result<T, V: PhaseOutput<T>>(value: V) -> Result<T> {
    value.into_phase_result()
}

/// A value an inline `upstream_peer` block may end with: a peer, a declared pool, or a
/// `Result` of either. (Its own trait, so that a wrong value is told what this phase
/// takes, not what the others do.)
#[diagnostic::on_unimplemented(
    message = "this `upstream_peer` block ends in `{Self}`, but the phase chooses a peer",
    label = "end the block with an `HttpPeer`, a declared pool (`Self::POOL_NAME`), or a `Result` of either (`()` is not a choice here)"
)]
pub trait PeerOutput {
    /// The choice this value stands for.
    fn into_peer_choice(self) -> Result<PeerChoice>;
}

macro_rules! peer_output {
    ($($ty:ty),*) => {$(
        impl PeerOutput for $ty {
            fn into_peer_choice(self) -> Result<PeerChoice> {
                PhaseOutput::<PeerChoice>::into_phase_result(self)
            }
        }
    )*};
}

peer_output!(
    HttpPeer,
    PoolId,
    PeerChoice,
    Result<HttpPeer>,
    Result<PoolId>,
    Result<PeerChoice>
);

/// Converts an inline `upstream_peer` block's value into the phase's result.
pub fn peer_result<V: PeerOutput>(value: V) -> Result<PeerChoice> {
    value.into_peer_choice()
}

/// Type-checks one `layer` of a declared proxy against the service it wraps (`inner`), so
/// that a value which is not a tower `Layer` there is reported at that layer. Returns the
/// wrapped service's type for the next layer out.
pub fn check_layer<S, L: IsLayer<S>>(
    _inner: std::marker::PhantomData<S>,
    _layer: &L,
) -> std::marker::PhantomData<L::Service> {
    std::marker::PhantomData
}

/// A tower [`Layer`](tower_layer::Layer) around the proxy's service, named so that a
/// `layer` value which is not one is told what a layer must be.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tower layer, so it cannot wrap the proxy",
    label = "a `layer` takes a value implementing `tower::Layer` over the proxy's service, e.g. `tower_http::timeout::TimeoutLayer::new(..)` or `tower::limit::ConcurrencyLimitLayer::new(..)`",
    note = "to run code per request, write a phase instead (`request_filter(session, ctx) {{ ... }}`)"
)]
pub trait IsLayer<S> {
    /// The service the layer makes.
    type Service;
}

impl<S, L: tower_layer::Layer<S>> IsLayer<S> for L {
    type Service = L::Service;
}

/// Calls a function with its arguments gathered in one tuple, whatever their number.
///
/// A phase function's argument tuple is inferred from the function alone (only the impl of
/// its arity applies), so a function taking the wrong arguments is reported by the phase's
/// own message about the tuple it takes, not by an `Fn` bound.
pub trait FnArgs<Args> {
    /// What the function returns.
    type Output;
    /// Calls the function.
    fn call_with(self, args: Args) -> Self::Output;
}

macro_rules! fn_args {
    ($(($($arg:ident: $ty:ident),*)),*) => {$(
        impl<Func, Ret, $($ty),*> FnArgs<($($ty,)*)> for Func
        where
            Func: FnOnce($($ty),*) -> Ret,
        {
            type Output = Ret;
            fn call_with(self, ($($arg,)*): ($($ty,)*)) -> Ret {
                self($($arg),*)
            }
        }
    )*};
}

fn_args!(
    (),
    (a: A),
    (a: A, b: B),
    (a: A, b: B, c: C),
    (a: A, b: B, c: C, d: D),
    (a: A, b: B, c: C, d: D, e: E)
);

/// The proxy's ctx type `Self`, as a phase function taking `&mut D` receives it.
#[diagnostic::on_unimplemented(
    message = "this phase function takes its ctx as `&mut {D}`, but the proxy's ctx is `{Self}`",
    label = "take `&mut {Self}` here, or declare `ctx {D};` in the proxy"
)]
pub trait CtxIs<D> {
    /// The ctx as the function takes it.
    fn as_ctx(&mut self) -> &mut D;
}

#[diagnostic::do_not_recommend]
impl<C> CtxIs<C> for C {
    fn as_ctx(&mut self) -> &mut C {
        self
    }
}

/// Declares what a function declared as a phase may return: for an async phase, a future of
/// the phase's result; for the others, the result itself. The message names the phase and
/// its signature.
macro_rules! phase_output {
    (async $output:ident<$out:ty>, $message:literal, $label:literal) => {
        #[doc = concat!("A future of `Result<", stringify!($out), ">`, as a phase function returns it.")]
        #[diagnostic::on_unimplemented(message = $message, label = $label)]
        pub trait $output<'a>: Future<Output = Result<$out>> + Send + 'a {}

        #[diagnostic::do_not_recommend]
        impl<'a, Fut: Future<Output = Result<$out>> + Send + 'a> $output<'a> for Fut {}
    };
    (sync $output:ident<$out:ty>, $message:literal, $label:literal) => {
        #[doc = concat!("`", stringify!($out), "`, as a phase function returns it.")]
        #[diagnostic::on_unimplemented(message = $message, label = $label)]
        pub trait $output {
            /// The value, as the phase takes it.
            fn into_output(self) -> $out;
        }

        #[diagnostic::do_not_recommend]
        impl $output for $out {
            fn into_output(self) -> $out {
                self
            }
        }
    };
}

// Each phase's argument trait and call function are written out rather than generated by a
// `macro_rules!`: rustc's notes on a wrong function quote these lines, which then read as
// the phase's signature instead of a macro's body.

/// The arguments `early_request_filter` is called with, as a function's argument tuple.
#[diagnostic::on_unimplemented(
    message = "`early_request_filter` is called with `(&mut Session, &mut Ctx)`, so its function cannot take `{Self}`",
    label = "expected `async fn(&mut Session, &mut Ctx) -> Result<()>`"
)]
pub trait EarlyRequestFilterArgs<'a, C> {
    /// Gathers the arguments.
    fn gather(session: &'a mut Session, ctx: &'a mut C) -> Self;
}

impl<'a, C: CtxIs<D>, D: 'a> EarlyRequestFilterArgs<'a, C> for (&'a mut Session, &'a mut D) {
    fn gather(session: &'a mut Session, ctx: &'a mut C) -> Self {
        (session, ctx.as_ctx())
    }
}

phase_output!(
    async EarlyRequestFilterOutput<()>,
    "`early_request_filter` must return a future of `Result<()>`, not `{Self}`",
    "expected `async fn(&mut Session, &mut Ctx) -> Result<()>`"
);

/// Calls a function declared as the `early_request_filter` phase.
pub fn early_request_filter<'a, C: 'a, F, Args>(
    function: F,
    session: &'a mut Session,
    ctx: &'a mut C,
) -> F::Output
where
    F: FnArgs<Args>,
    Args: EarlyRequestFilterArgs<'a, C>,
    F::Output: EarlyRequestFilterOutput<'a>,
{
    function.call_with(Args::gather(session, ctx))
}

/// The arguments `request_filter` is called with, as a function's argument tuple.
#[diagnostic::on_unimplemented(
    message = "`request_filter` is called with `(&mut Session, &mut Ctx)`, so its function cannot take `{Self}`",
    label = "expected `async fn(&mut Session, &mut Ctx) -> Result<Flow>`"
)]
pub trait RequestFilterArgs<'a, C> {
    /// Gathers the arguments.
    fn gather(session: &'a mut Session, ctx: &'a mut C) -> Self;
}

impl<'a, C: CtxIs<D>, D: 'a> RequestFilterArgs<'a, C> for (&'a mut Session, &'a mut D) {
    fn gather(session: &'a mut Session, ctx: &'a mut C) -> Self {
        (session, ctx.as_ctx())
    }
}

phase_output!(
    async RequestFilterOutput<Flow>,
    "`request_filter` must return a future of `Result<Flow>`, not `{Self}`",
    "expected `async fn(&mut Session, &mut Ctx) -> Result<Flow>`"
);

/// Calls a function declared as the `request_filter` phase.
pub fn request_filter<'a, C: 'a, F, Args>(
    function: F,
    session: &'a mut Session,
    ctx: &'a mut C,
) -> F::Output
where
    F: FnArgs<Args>,
    Args: RequestFilterArgs<'a, C>,
    F::Output: RequestFilterOutput<'a>,
{
    function.call_with(Args::gather(session, ctx))
}

/// The arguments `upstream_peer` is called with, as a function's argument tuple.
#[diagnostic::on_unimplemented(
    message = "`upstream_peer` is called with `(&mut Session, &mut Ctx)`, so its function cannot take `{Self}`",
    label = "expected `async fn(&mut Session, &mut Ctx) -> Result<HttpPeer>`"
)]
pub trait UpstreamPeerArgs<'a, C> {
    /// Gathers the arguments.
    fn gather(session: &'a mut Session, ctx: &'a mut C) -> Self;
}

impl<'a, C: CtxIs<D>, D: 'a> UpstreamPeerArgs<'a, C> for (&'a mut Session, &'a mut D) {
    fn gather(session: &'a mut Session, ctx: &'a mut C) -> Self {
        (session, ctx.as_ctx())
    }
}

phase_output!(
    async UpstreamPeerOutput<HttpPeer>,
    "`upstream_peer` must return a future of `Result<HttpPeer>`, not `{Self}`",
    "expected `async fn(&mut Session, &mut Ctx) -> Result<HttpPeer>`"
);

/// Calls a function declared as the `upstream_peer` phase.
pub fn upstream_peer<'a, C: 'a, F, Args>(
    function: F,
    session: &'a mut Session,
    ctx: &'a mut C,
) -> F::Output
where
    F: FnArgs<Args>,
    Args: UpstreamPeerArgs<'a, C>,
    F::Output: UpstreamPeerOutput<'a>,
{
    function.call_with(Args::gather(session, ctx))
}

/// The arguments `upstream_request_filter` is called with, as a function's argument tuple.
#[diagnostic::on_unimplemented(
    message = "`upstream_request_filter` is called with `(&mut Session, &mut RequestHeader, &mut Ctx)`, so its function cannot take `{Self}`",
    label = "expected `async fn(&mut Session, &mut RequestHeader, &mut Ctx) -> Result<()>`"
)]
pub trait UpstreamRequestFilterArgs<'a, C> {
    /// Gathers the arguments.
    fn gather(
        session: &'a mut Session,
        upstream_request: &'a mut RequestHeader,
        ctx: &'a mut C,
    ) -> Self;
}

impl<'a, C: CtxIs<D>, D: 'a> UpstreamRequestFilterArgs<'a, C>
    for (&'a mut Session, &'a mut RequestHeader, &'a mut D)
{
    fn gather(
        session: &'a mut Session,
        upstream_request: &'a mut RequestHeader,
        ctx: &'a mut C,
    ) -> Self {
        (session, upstream_request, ctx.as_ctx())
    }
}

phase_output!(
    async UpstreamRequestFilterOutput<()>,
    "`upstream_request_filter` must return a future of `Result<()>`, not `{Self}`",
    "expected `async fn(&mut Session, &mut RequestHeader, &mut Ctx) -> Result<()>`"
);

/// Calls a function declared as the `upstream_request_filter` phase.
pub fn upstream_request_filter<'a, C: 'a, F, Args>(
    function: F,
    session: &'a mut Session,
    upstream_request: &'a mut RequestHeader,
    ctx: &'a mut C,
) -> F::Output
where
    F: FnArgs<Args>,
    Args: UpstreamRequestFilterArgs<'a, C>,
    F::Output: UpstreamRequestFilterOutput<'a>,
{
    function.call_with(Args::gather(session, upstream_request, ctx))
}

/// The arguments `response_filter` is called with, as a function's argument tuple.
#[diagnostic::on_unimplemented(
    message = "`response_filter` is called with `(&mut Session, &mut ResponseHeader, &mut Ctx)`, so its function cannot take `{Self}`",
    label = "expected `async fn(&mut Session, &mut ResponseHeader, &mut Ctx) -> Result<()>`"
)]
pub trait ResponseFilterArgs<'a, C> {
    /// Gathers the arguments.
    fn gather(session: &'a mut Session, response: &'a mut ResponseHeader, ctx: &'a mut C) -> Self;
}

impl<'a, C: CtxIs<D>, D: 'a> ResponseFilterArgs<'a, C>
    for (&'a mut Session, &'a mut ResponseHeader, &'a mut D)
{
    fn gather(session: &'a mut Session, response: &'a mut ResponseHeader, ctx: &'a mut C) -> Self {
        (session, response, ctx.as_ctx())
    }
}

phase_output!(
    async ResponseFilterOutput<()>,
    "`response_filter` must return a future of `Result<()>`, not `{Self}`",
    "expected `async fn(&mut Session, &mut ResponseHeader, &mut Ctx) -> Result<()>`"
);

/// Calls a function declared as the `response_filter` phase.
pub fn response_filter<'a, C: 'a, F, Args>(
    function: F,
    session: &'a mut Session,
    response: &'a mut ResponseHeader,
    ctx: &'a mut C,
) -> F::Output
where
    F: FnArgs<Args>,
    Args: ResponseFilterArgs<'a, C>,
    F::Output: ResponseFilterOutput<'a>,
{
    function.call_with(Args::gather(session, response, ctx))
}

/// The arguments `upstream_response_filter` is called with, as a function's argument tuple.
#[diagnostic::on_unimplemented(
    message = "`upstream_response_filter` is called with `(&mut Session, &mut ResponseHeader, &mut Ctx)`, so its function cannot take `{Self}`",
    label = "expected `fn(&mut Session, &mut ResponseHeader, &mut Ctx) -> Result<()>`"
)]
pub trait UpstreamResponseFilterArgs<'a, C> {
    /// Gathers the arguments.
    fn gather(
        session: &'a mut Session,
        upstream_response: &'a mut ResponseHeader,
        ctx: &'a mut C,
    ) -> Self;
}

impl<'a, C: CtxIs<D>, D: 'a> UpstreamResponseFilterArgs<'a, C>
    for (&'a mut Session, &'a mut ResponseHeader, &'a mut D)
{
    fn gather(
        session: &'a mut Session,
        upstream_response: &'a mut ResponseHeader,
        ctx: &'a mut C,
    ) -> Self {
        (session, upstream_response, ctx.as_ctx())
    }
}

phase_output!(
    sync UpstreamResponseFilterOutput<Result<()>>,
    "`upstream_response_filter` must return `Result<()>`, not `{Self}`",
    "expected `fn(&mut Session, &mut ResponseHeader, &mut Ctx) -> Result<()>`"
);

/// Calls a function declared as the `upstream_response_filter` phase.
pub fn upstream_response_filter<'a, C: 'a, F, Args>(
    function: F,
    session: &'a mut Session,
    upstream_response: &'a mut ResponseHeader,
    ctx: &'a mut C,
) -> Result<()>
where
    F: FnArgs<Args>,
    Args: UpstreamResponseFilterArgs<'a, C>,
    F::Output: UpstreamResponseFilterOutput,
{
    function
        .call_with(Args::gather(session, upstream_response, ctx))
        .into_output()
}

/// The arguments `fail_to_connect` is called with, as a function's argument tuple.
#[diagnostic::on_unimplemented(
    message = "`fail_to_connect` is called with `(&mut Session, &HttpPeer, &mut Ctx, Error)`, so its function cannot take `{Self}`",
    label = "expected `fn(&mut Session, &HttpPeer, &mut Ctx, Error) -> Error`"
)]
pub trait FailToConnectArgs<'a, C> {
    /// Gathers the arguments.
    fn gather(session: &'a mut Session, peer: &'a HttpPeer, ctx: &'a mut C, error: Error) -> Self;
}

impl<'a, C: CtxIs<D>, D: 'a> FailToConnectArgs<'a, C>
    for (&'a mut Session, &'a HttpPeer, &'a mut D, Error)
{
    fn gather(session: &'a mut Session, peer: &'a HttpPeer, ctx: &'a mut C, error: Error) -> Self {
        (session, peer, ctx.as_ctx(), error)
    }
}

phase_output!(
    sync FailToConnectOutput<Error>,
    "`fail_to_connect` must return `Error`, not `{Self}`",
    "expected `fn(&mut Session, &HttpPeer, &mut Ctx, Error) -> Error`"
);

/// Calls a function declared as the `fail_to_connect` phase.
pub fn fail_to_connect<'a, C: 'a, F, Args>(
    function: F,
    session: &'a mut Session,
    peer: &'a HttpPeer,
    ctx: &'a mut C,
    error: Error,
) -> Error
where
    F: FnArgs<Args>,
    Args: FailToConnectArgs<'a, C>,
    F::Output: FailToConnectOutput,
{
    function
        .call_with(Args::gather(session, peer, ctx, error))
        .into_output()
}

/// The arguments `logging` is called with, as a function's argument tuple.
#[diagnostic::on_unimplemented(
    message = "`logging` is called with `(&Session, Option<&Error>, &mut Ctx)`, so its function cannot take `{Self}`",
    label = "expected `fn(&Session, Option<&Error>, &mut Ctx)`"
)]
pub trait LoggingArgs<'a, C> {
    /// Gathers the arguments.
    fn gather(session: &'a Session, error: Option<&'a Error>, ctx: &'a mut C) -> Self;
}

impl<'a, C: CtxIs<D>, D: 'a> LoggingArgs<'a, C> for (&'a Session, Option<&'a Error>, &'a mut D) {
    fn gather(session: &'a Session, error: Option<&'a Error>, ctx: &'a mut C) -> Self {
        (session, error, ctx.as_ctx())
    }
}

phase_output!(
    sync LoggingOutput<()>,
    "`logging` must return `()`, not `{Self}`",
    "expected `fn(&Session, Option<&Error>, &mut Ctx)`"
);

/// Calls a function declared as the `logging` phase.
pub fn logging<'a, C: 'a, F, Args>(
    function: F,
    session: &'a Session,
    error: Option<&'a Error>,
    ctx: &'a mut C,
) where
    F: FnArgs<Args>,
    Args: LoggingArgs<'a, C>,
    F::Output: LoggingOutput,
{
    function
        .call_with(Args::gather(session, error, ctx))
        .into_output()
}

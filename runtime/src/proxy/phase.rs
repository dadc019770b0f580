//! How user code plugs into the proxy phases when a proxy is declared with `proxy!`.
//!
//! A phase written inline (`request_filter(session, ctx) { ... }`) may end in any value of
//! [`PhaseOutput`] for the phase's result (e.g. `()` for "continue"); a phase given as a
//! function path (`request_filter = auth::check;`) must have the phase's signature, checked
//! through the `*Fn` traits here, whose errors name the expected signature. Hand-written
//! [`ProxyHttp`](crate::proxy::ProxyHttp) impls need none of this.

// The phase-signature macros below spell every return type, `()` included.
#![allow(clippy::unused_unit)]

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

macro_rules! async_phase_fn {
    (
        $(#[$doc:meta])*
        $name:ident, $message:literal, $label:literal,
        ($($arg:ident: $ty:ty),*) -> $out:ty
    ) => {
        $(#[$doc])*
        #[diagnostic::on_unimplemented(message = $message, label = $label)]
        pub trait $name<'a, C: 'a> {
            /// The future the function returns.
            type Future: Future<Output = Result<$out>> + Send + 'a;
            /// Calls the function.
            fn call(self, $($arg: $ty),*) -> Self::Future;
        }

        impl<'a, C: 'a, F, Fut> $name<'a, C> for F
        where
            F: FnOnce($($ty),*) -> Fut,
            Fut: Future<Output = Result<$out>> + Send + 'a,
        {
            type Future = Fut;
            fn call(self, $($arg: $ty),*) -> Fut {
                self($($arg),*)
            }
        }
    };
}

macro_rules! sync_phase_fn {
    (
        $(#[$doc:meta])*
        $name:ident, $message:literal, $label:literal,
        ($($arg:ident: $ty:ty),*) -> $out:ty
    ) => {
        $(#[$doc])*
        #[diagnostic::on_unimplemented(message = $message, label = $label)]
        pub trait $name<'a, C: 'a> {
            /// Calls the function.
            fn call(self, $($arg: $ty),*) -> $out;
        }

        impl<'a, C: 'a, F> $name<'a, C> for F
        where
            F: FnOnce($($ty),*) -> $out,
        {
            fn call(self, $($arg: $ty),*) -> $out {
                self($($arg),*)
            }
        }
    };
}

async_phase_fn!(
    /// A function usable as `early_request_filter`.
    EarlyRequestFilterFn,
    "`{Self}` cannot be the `early_request_filter` phase",
    "expected `async fn(&mut Session, &mut Ctx) -> Result<()>`",
    (session: &'a mut Session, ctx: &'a mut C) -> ()
);

async_phase_fn!(
    /// A function usable as `request_filter`.
    RequestFilterFn,
    "`{Self}` cannot be the `request_filter` phase",
    "expected `async fn(&mut Session, &mut Ctx) -> Result<Flow>`",
    (session: &'a mut Session, ctx: &'a mut C) -> Flow
);

async_phase_fn!(
    /// A function usable as `upstream_peer`.
    UpstreamPeerFn,
    "`{Self}` cannot be the `upstream_peer` phase",
    "expected `async fn(&mut Session, &mut Ctx) -> Result<HttpPeer>`",
    (session: &'a mut Session, ctx: &'a mut C) -> HttpPeer
);

async_phase_fn!(
    /// A function usable as `upstream_request_filter`.
    UpstreamRequestFilterFn,
    "`{Self}` cannot be the `upstream_request_filter` phase",
    "expected `async fn(&mut Session, &mut RequestHeader, &mut Ctx) -> Result<()>`",
    (session: &'a mut Session, upstream_request: &'a mut RequestHeader, ctx: &'a mut C) -> ()
);

async_phase_fn!(
    /// A function usable as `response_filter`.
    ResponseFilterFn,
    "`{Self}` cannot be the `response_filter` phase",
    "expected `async fn(&mut Session, &mut ResponseHeader, &mut Ctx) -> Result<()>`",
    (session: &'a mut Session, response: &'a mut ResponseHeader, ctx: &'a mut C) -> ()
);

sync_phase_fn!(
    /// A function usable as `upstream_response_filter`.
    UpstreamResponseFilterFn,
    "`{Self}` cannot be the `upstream_response_filter` phase",
    "expected `fn(&mut Session, &mut ResponseHeader, &mut Ctx) -> Result<()>`",
    (session: &'a mut Session, upstream_response: &'a mut ResponseHeader, ctx: &'a mut C) -> Result<()>
);

sync_phase_fn!(
    /// A function usable as `fail_to_connect`.
    FailToConnectFn,
    "`{Self}` cannot be the `fail_to_connect` phase",
    "expected `fn(&mut Session, &HttpPeer, &mut Ctx, Error) -> Error`",
    (session: &'a mut Session, peer: &'a HttpPeer, ctx: &'a mut C, error: Error) -> Error
);

sync_phase_fn!(
    /// A function usable as `logging`.
    LoggingFn,
    "`{Self}` cannot be the `logging` phase",
    "expected `fn(&Session, Option<&Error>, &mut Ctx)`",
    (session: &'a Session, error: Option<&'a Error>, ctx: &'a mut C) -> ()
);

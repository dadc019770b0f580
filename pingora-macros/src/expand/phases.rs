//! The `ProxyHttp` phase methods of an HTTP proxy: the router's part of each phase (routing,
//! header edits, retries, passive health) followed by the user's inline block or function,
//! with the user's parameters bound to the method's arguments.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use crate::model::{Auth, Choice, EditSide, Proxy};
use crate::phase::Phase;
use crate::syntax::PhaseBody;

use super::rt;

/// One argument of a generated phase method: its internal name, type, and the value a user
/// parameter in that position is bound to.
struct Arg {
    ident: Ident,
    ty: TokenStream,
    user_ty: TokenStream,
    user_value: TokenStream,
}

fn args(phase: Phase, user_ctx: &TokenStream) -> Vec<Arg> {
    let rt = rt();
    let arg = |name: &str, ty: TokenStream, user_ty: TokenStream| {
        let ident = Ident::new(&format!("__{name}"), Span::mixed_site());
        Arg {
            user_value: quote!(#ident),
            ident,
            ty,
            user_ty,
        }
    };
    let session_mut = || {
        arg(
            "session",
            quote!(&mut #rt::proxy::Session),
            quote!(&mut #rt::proxy::Session),
        )
    };
    let ctx = || {
        let mut a = arg("ctx", quote!(&mut Self::Ctx), quote!(&mut #user_ctx));
        let ident = &a.ident;
        a.user_value = quote!(&mut #ident.user);
        a
    };
    match phase {
        Phase::EarlyRequestFilter | Phase::RequestFilter | Phase::UpstreamPeer => {
            vec![session_mut(), ctx()]
        }
        Phase::UpstreamRequestFilter => vec![
            session_mut(),
            arg(
                "upstream_request",
                quote!(&mut #rt::proxy::RequestHeader),
                quote!(&mut #rt::proxy::RequestHeader),
            ),
            ctx(),
        ],
        Phase::FailToConnect => vec![
            session_mut(),
            arg(
                "peer",
                quote!(&#rt::upstream::HttpPeer),
                quote!(&#rt::upstream::HttpPeer),
            ),
            ctx(),
            arg("error", quote!(#rt::Error), quote!(#rt::Error)),
        ],
        Phase::UpstreamResponseFilter | Phase::ResponseFilter => {
            let name = if phase == Phase::ResponseFilter {
                "response"
            } else {
                "upstream_response"
            };
            vec![
                session_mut(),
                arg(
                    name,
                    quote!(&mut #rt::proxy::ResponseHeader),
                    quote!(&mut #rt::proxy::ResponseHeader),
                ),
                ctx(),
            ]
        }
        Phase::Logging => vec![
            arg(
                "session",
                quote!(&#rt::proxy::Session),
                quote!(&#rt::proxy::Session),
            ),
            arg(
                "error",
                quote!(::std::option::Option<&#rt::Error>),
                quote!(::std::option::Option<&#rt::Error>),
            ),
            ctx(),
        ],
    }
}

/// The user's code for `phase` as an expression of the phase method's return type, or
/// `None` if the phase was not declared.
/// Whether `block` ends in `return ...` (or a `panic!`-like macro), so that it has no
/// value of its own.
fn diverges(block: &syn::Block) -> bool {
    let never = |e: &syn::Expr| match e {
        syn::Expr::Return(_) => true,
        syn::Expr::Macro(m) => ends_in_panic(&m.mac),
        _ => false,
    };
    match block.stmts.last() {
        Some(syn::Stmt::Expr(e, _)) => never(e),
        Some(syn::Stmt::Macro(m)) => ends_in_panic(&m.mac),
        _ => false,
    }
}

/// `panic!`, `unreachable!`, `todo!` or `unimplemented!`.
fn ends_in_panic(mac: &syn::Macro) -> bool {
    mac.path.segments.last().is_some_and(|s| {
        ["panic", "unreachable", "todo", "unimplemented"].contains(&s.ident.to_string().as_str())
    })
}

fn user_call(p: &Proxy, phase: Phase, args: &[Arg]) -> Option<TokenStream> {
    let rt = rt();
    let decl = p.phases.iter().find(|d| d.phase == phase)?;
    Some(match &decl.body {
        PhaseBody::Inline { params, block, .. } => {
            let binds = params.iter().zip(args).map(|(param, arg)| {
                let (ty, value) = (&arg.user_ty, &arg.user_value);
                quote!(let #param: #ty = #value;)
            });
            // A block that ends in `return ...;` has no value of its own: name the type
            // its (unreachable) end stands for, rather than leave it to never-type fallback.
            let value = |t: TokenStream| {
                if diverges(block) {
                    quote_spanned!(block.span()=> #rt::Result<#t>)
                } else {
                    // Spanned at the block: a wrong value is reported there.
                    quote_spanned!(block.span()=> _)
                }
            };
            let output = match phase {
                Phase::EarlyRequestFilter
                | Phase::UpstreamRequestFilter
                | Phase::UpstreamResponseFilter
                | Phase::ResponseFilter => {
                    let v = value(quote!(()));
                    quote_spanned!(block.span()=> #rt::proxy::phase::phase_result::<(), #v>(#block))
                }
                Phase::RequestFilter => {
                    let v = value(quote!(#rt::proxy::Flow));
                    quote_spanned!(block.span()=>
                        #rt::proxy::phase::phase_result::<#rt::proxy::Flow, #v>(#block)
                    )
                }
                Phase::UpstreamPeer if diverges(block) => quote_spanned!(block.span()=>
                    #rt::proxy::phase::peer_result::<#rt::Result<#rt::proxy::phase::PeerChoice>>(#block)
                ),
                Phase::UpstreamPeer => quote_spanned!(block.span()=>
                    #rt::proxy::phase::peer_result(#block)
                ),
                Phase::FailToConnect => quote!({
                    let error: #rt::Error = #block;
                    error
                }),
                Phase::Logging => quote!({
                    let () = #block;
                }),
            };
            quote!({
                #(#binds)*
                #output
            })
        }
        PhaseBody::Path(path) => {
            let phase_fn = Ident::new(phase.name(), Span::call_site());
            let values = args.iter().map(|a| &a.user_value);
            let call = quote!(#rt::proxy::phase::#phase_fn(#path, #(#values),*));
            let call = match phase {
                Phase::FailToConnect | Phase::UpstreamResponseFilter | Phase::Logging => call,
                Phase::UpstreamPeer => {
                    quote!(#call.await.map(#rt::proxy::phase::PeerChoice::Peer))
                }
                _ => quote!(#call.await),
            };
            // Every token at the path, so that rustc's errors about the call point there.
            located_at(call, path.span())
        }
    })
}

/// `tokens` moved to `span`'s location (their hygiene kept), so that an error about a whole
/// generated call points at the user's token, not at the macro.
fn located_at(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut moved = Group::new(group.delimiter(), located_at(group.stream(), span));
                moved.set_span(group.span().located_at(span));
                TokenTree::Group(moved)
            }
            mut other => {
                other.set_span(other.span().located_at(span));
                other
            }
        })
        .collect()
}

/// What the router contributes to the phases, as the declaration asks.
struct RouterParts {
    /// The router chooses peers (no user `upstream_peer`).
    router_peers: bool,
    /// Requests are matched against routes.
    routed: bool,
    request_edits: bool,
    response_edits: bool,
    passive: bool,
    /// A group sets a stickiness cookie.
    sticky: bool,
    /// A cache stores responses (and shapes the requests that fill it).
    cache: bool,
}

/// Whether the proxy's `response_filter` runs the router's (its response edits, CORS,
/// compression), which then also sees the proxy's own answers unless it opts out.
pub fn router_filters_own_answers(p: &Proxy) -> bool {
    let opted_out = p
        .options
        .settings
        .iter()
        .any(|s| matches!(s, crate::model::Setting::FilterLocalAnswers(false)));
    RouterParts::of(p).response_edits && !opted_out
}

impl RouterParts {
    fn of(p: &Proxy) -> Self {
        let user_peer = p.user_peer();
        let any_edits = |side: EditSide| {
            p.edits.iter().any(|e| e.side == side)
                || p.routes
                    .iter()
                    .any(|r| r.edits.iter().any(|e| e.side == side))
        };
        let rewrites = p.routes.iter().any(|r| r.rewrite.is_some());
        let policies = p.routes.iter().filter_map(|r| r.policy.as_ref());
        let route_cors = policies
            .clone()
            .any(|pol| matches!(pol.cors, Choice::Own(_)));
        let compress = p.compress.is_some()
            || policies
                .clone()
                .any(|pol| matches!(pol.compress, Choice::Own(_)));
        let cache = p.cache.is_some()
            || policies
                .clone()
                .any(|pol| matches!(pol.cache, Choice::Own(_)));
        // An authorization service's verdict may add headers to the request sent upstream.
        let external = matches!(p.auth, Some(Auth::External(_)))
            || policies
                .clone()
                .any(|pol| matches!(pol.auth, Choice::Own(Auth::External(_))));
        RouterParts {
            // With `upstream_peer`, the router still retries and records the peers of
            // the declared pools that code picks.
            router_peers: !user_peer || !p.upstreams.is_empty(),
            routed: !(user_peer && p.routes.is_empty()),
            request_edits: any_edits(EditSide::Request) || rewrites || external || cache,
            response_edits: any_edits(EditSide::Response)
                || p.cors.is_some()
                || route_cors
                || compress,
            passive: p.upstreams.iter().any(|u| u.passive.is_some()),
            sticky: p.upstreams.iter().any(|u| u.sticky.is_some()),
            cache,
        }
    }
}

/// Every phase method the proxy needs: those the user declared or the router takes part in.
pub fn expand_phases(p: &Proxy, user_ctx: &TokenStream) -> TokenStream {
    let parts = RouterParts::of(p);
    let mut out = TokenStream::new();
    for phase in Phase::ALL {
        let args = args(phase, user_ctx);
        let user = user_call(p, phase, &args);
        let Some(body) = phase_body(phase, &parts, &args, user) else {
            continue;
        };
        let signature = signature(phase, &args);
        // After a block that ends in `return`, the conversion of its value is unreachable
        // (and so is the user's code after the `return`, which rustc will not flag here).
        let ends_in_return = p.phases.iter().any(|d| {
            d.phase == phase
                && matches!(&d.body, crate::syntax::PhaseBody::Inline { block, .. } if diverges(block))
        });
        let allow = ends_in_return.then(|| quote!(#[allow(unreachable_code)]));
        out.extend(quote!(#allow #signature { #body }));
    }
    out
}

/// The body of `phase`'s method, or `None` when neither the router nor the user has
/// anything to do in it (the trait's default stands).
fn phase_body(
    phase: Phase,
    parts: &RouterParts,
    args: &[Arg],
    user: Option<TokenStream>,
) -> Option<TokenStream> {
    let rt = rt();
    let s = &args[0].ident;
    let x = args.get(1).map(|a| &a.ident);
    let c = args
        .iter()
        .find(|a| a.ident.to_string().contains("ctx"))
        .map(|a| &a.ident);
    let e = args.get(3).map(|a| &a.ident);
    Some(match phase {
        Phase::RequestFilter => {
            if !parts.routed && user.is_none() {
                return None;
            }
            let route = parts.routed.then(|| {
                quote!(if let ::std::option::Option::Some(flow) = self.router.request_filter(#s, #c).await {
                    return ::std::result::Result::Ok(flow);
                })
            });
            let rest =
                user.unwrap_or(quote!(::std::result::Result::Ok(#rt::proxy::Flow::Continue)));
            quote!(#route #rest)
        }
        Phase::UpstreamPeer => upstream_peer_body(s, c, user),
        Phase::Logging => {
            if !parts.passive && user.is_none() {
                return None;
            }
            let record = parts
                .passive
                .then(|| quote!(self.router.logging(#s, #x, #c);));
            let rest = user.unwrap_or_default();
            quote!(#record #rest)
        }
        Phase::UpstreamRequestFilter | Phase::ResponseFilter => {
            let edits = if phase == Phase::ResponseFilter {
                parts.response_edits
            } else {
                parts.request_edits
            };
            if !edits && user.is_none() {
                return None;
            }
            edit_phase_body(phase, edits, [s, c?, x?], user)
        }
        Phase::FailToConnect => {
            // A failed connect sent nothing: the router tries the group's other peers
            // (and records it for passive health) whenever it chooses the peers.
            if !parts.router_peers && user.is_none() {
                return None;
            }
            let retry = parts
                .router_peers
                .then(|| quote!(let #e = self.router.fail_to_connect(#s, #c, #e);));
            let rest = user.unwrap_or(quote!(#e));
            quote!(#retry #rest)
        }
        Phase::UpstreamResponseFilter => {
            let router = parts.sticky || parts.cache;
            if !router && user.is_none() {
                return None;
            }
            let pin = router.then(|| quote!(self.router.upstream_response_filter(#s, #c, #x);));
            let rest = user.unwrap_or(quote!(::std::result::Result::Ok(())));
            quote!(#pin #rest)
        }
        Phase::EarlyRequestFilter => user?,
    })
}

/// `upstream_request_filter` or `response_filter`: the declared edits (when there are
/// some), then the user's code. `idents` are the session, context and head parameters.
fn edit_phase_body(
    phase: Phase,
    edits: bool,
    [s, c, x]: [&Ident; 3],
    user: Option<TokenStream>,
) -> TokenStream {
    let method = Ident::new(phase.name(), Span::call_site());
    let edit = match phase {
        // The request side may fail: a regex rewrite that makes no path.
        Phase::UpstreamRequestFilter => edits.then(|| quote!(self.router.#method(#s, #c, #x)?;)),
        _ => edits.then(|| quote!(self.router.#method(#s, #c, #x);)),
    };
    let rest = user.unwrap_or(quote!(::std::result::Result::Ok(())));
    quote!(#edit #rest)
}

/// `upstream_peer`: the router's choice, or the user's — a peer, or a declared pool the
/// router then picks from.
fn upstream_peer_body(s: &Ident, c: Option<&Ident>, user: Option<TokenStream>) -> TokenStream {
    let rt = rt();
    match user {
        None => quote!(self.router.upstream_peer(#s, #c).await),
        Some(user) => quote! {
            match #user? {
                #rt::proxy::phase::PeerChoice::Peer(peer) => ::std::result::Result::Ok(peer),
                #rt::proxy::phase::PeerChoice::Pool(pool) => {
                    self.router.pool_peer(#s, #c, pool).await
                }
            }
        },
    }
}

/// The method's signature, as the runtime's `ProxyHttp` declares it.
fn signature(phase: Phase, args: &[Arg]) -> TokenStream {
    let rt = rt();
    let method = Ident::new(phase.name(), Span::call_site());
    let params = args.iter().map(|a| {
        let (ident, ty) = (&a.ident, &a.ty);
        quote!(#ident: #ty)
    });
    match phase {
        Phase::EarlyRequestFilter | Phase::UpstreamRequestFilter | Phase::ResponseFilter => {
            quote!(async fn #method(&self, #(#params),*) -> #rt::Result<()>)
        }
        Phase::RequestFilter => {
            quote!(async fn #method(&self, #(#params),*) -> #rt::Result<#rt::proxy::Flow>)
        }
        Phase::UpstreamPeer => {
            quote!(async fn #method(&self, #(#params),*) -> #rt::Result<#rt::upstream::HttpPeer>)
        }
        Phase::UpstreamResponseFilter => {
            quote!(fn #method(&self, #(#params),*) -> #rt::Result<()>)
        }
        Phase::FailToConnect => quote!(fn #method(&self, #(#params),*) -> #rt::Error),
        Phase::Logging => quote!(fn #method(&self, #(#params),*)),
    }
}

/// For a declaration whose phases are malformed: the one phase method `ProxyHttp`
/// requires, with a body that cannot be reached (the other phases keep their defaults).
pub fn unreachable_phases(user_ctx: &TokenStream) -> TokenStream {
    let args = args(Phase::UpstreamPeer, user_ctx);
    let signature = signature(Phase::UpstreamPeer, &args);
    quote!(#signature { ::core::unreachable!() })
}

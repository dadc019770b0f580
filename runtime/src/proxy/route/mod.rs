//! Declarative routing: match a request by host, path prefix and method (and any further
//! [`Condition`]s), then send it to an [`UpstreamGroup`] (or [`Split`] it between several)
//! or answer it at once, with a path rewrite and header edits on the way up and down.
//!
//! A [`Router`] is what the `proxy!` macro's `upstream`, `route` and `set_*_header` entries
//! become; a hand-written [`ProxyHttp`](crate::proxy::ProxyHttp) can use it the same way
//! (see the phase methods below, each meant to be called from the phase of the same name).
//! Routes are tried in order and the first match wins; a request no route matches gets 404.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::error::{Error, ErrorKind, Result};
use crate::proxy::auth::{self, Auth, Refusal};
use crate::proxy::cache::{CacheState, Consulted, HttpCache, Refresh, Tier};
use crate::proxy::{Flow, RequestHeader, ResponseHeader, Session};
use std::sync::Arc;

use crate::lb::{GroupTask, PoolId, RequestKey, UpstreamGroup};
use crate::lb::{InFlight, PeerState};
use crate::metrics::RouteStats;
use crate::service::RouteView;
use crate::upstream::HttpPeer;
use limits::{LimitCheck, Pending};
use rate::RateLimit;

mod access;
mod compress;
mod condition;
mod cors;
mod limits;
mod mirror;
mod policy;
pub mod rate;
mod rewrite;
mod split;
mod template;

pub use crate::metrics::MirrorOutcomes;
pub use access::AccessList;
use compress::prepare as prepare_compressed;
pub(crate) use compress::Encoder;
pub use compress::{Compress, Encoding};
pub use condition::{Cidr, Condition, Test, ValueTest};
pub use cors::{Cors, Preflight};
pub use mirror::{Mirror, MAX_IN_FLIGHT as MAX_MIRRORED};
use policy::in_force;
pub use policy::{Override, RoutePolicy};
pub use regex::Regex;
pub use rewrite::PathRewrite;
pub use split::{Arm, Split};
pub use template::{Part, Template, Var};

/// A host a route matches: one name, or every subdomain of one (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host (compared without case, port ignored).
    Exact(String),
    /// Any host ending in `.` + this suffix (`*.example.com` stores `example.com`).
    Subdomains(String),
}

impl HostPattern {
    /// `*.example.com` becomes [`HostPattern::Subdomains`], anything else
    /// [`HostPattern::Exact`].
    pub fn parse(pattern: &str) -> HostPattern {
        match pattern.strip_prefix("*.") {
            Some(suffix) => HostPattern::Subdomains(suffix.to_ascii_lowercase()),
            None => HostPattern::Exact(pattern.to_ascii_lowercase()),
        }
    }

    /// Whether `host` (a bare host name, no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() + 1
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// What a route matches; an unset part matches anything.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// The request's host.
    pub host: Option<HostPattern>,
    /// A path prefix, matched at segment boundaries: `/api` matches `/api` and `/api/x`,
    /// not `/apix`; a prefix ending in `/` matches everything below it.
    pub path_prefix: Option<String>,
    /// Accepted methods; empty means any.
    pub methods: Vec<Method>,
    /// Further conditions, all of which must hold (tested after the parts above).
    pub conditions: Vec<Condition>,
}

impl RouteMatch {
    /// Whether the request in `session` matches.
    pub fn matches(&self, session: &Session) -> bool {
        if let Some(prefix) = &self.path_prefix {
            if !path_has_prefix(session.path(), prefix) {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(session.method()) {
            return false;
        }
        if let Some(pattern) = &self.host {
            match session.host() {
                Some(host) if pattern.matches(strip_port(host)) => {}
                _ => return false,
            }
        }
        self.conditions.iter().all(|c| c.holds(session))
    }
}

impl RouteMatch {
    /// What the match says in a few words: methods, host and path prefix, or `*`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if !self.methods.is_empty() {
            let names: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            out.push_str(&names.join("|"));
            out.push(' ');
        }
        match &self.host {
            Some(HostPattern::Exact(h)) => out.push_str(h),
            Some(HostPattern::Subdomains(s)) => {
                out.push_str("*.");
                out.push_str(s);
            }
            None => {}
        }
        match &self.path_prefix {
            Some(p) => out.push_str(p),
            None if self.host.is_none() && self.conditions.is_empty() => out.push('*'),
            None => {}
        }
        for c in &self.conditions {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&c.describe());
        }
        out
    }
}

/// Whether `path` is `prefix` or below it, at a segment boundary (the language's rule,
/// which the macro also applies to find shadowed routes).
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    pingora_dsl_rules::path_has_prefix(path, prefix)
}

/// The host part of a `Host` value (`example.com:8080` → `example.com`, `[::1]:80` → `[::1]`).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// A regex `proxy!` compiled at compile time (so this cannot fail: the same crate
/// compiles the same pattern the same way).
// The pattern was compiled by the macro with this crate; only generated code calls this.
#[allow(clippy::expect_used)]
pub fn checked_regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a pattern proxy! compiled at compile time")
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to the [`UpstreamGroup`] at this index of the router's groups.
    Upstream(usize),
    /// Answer with a status and a plain-text body.
    Respond(StatusCode, Bytes),
    /// Redirect with a 3xx status to a location.
    Redirect(StatusCode, HeaderValue),
    /// Answer with a status and a plain-text body filled in per request.
    RespondTemplate(StatusCode, Box<Template>),
    /// Redirect with a 3xx status to a location filled in per request.
    RedirectTemplate(StatusCode, Box<Template>),
    /// Forward to one of several groups, by weight.
    Split(Arc<Split>),
}

/// One header edit, applied in declaration order.
#[derive(Debug, Clone)]
pub enum HeaderEdit {
    /// Set the header, replacing any values it had.
    Set(HeaderName, HeaderValue),
    /// Remove every value of the header.
    Remove(HeaderName),
    /// Set the header to a value filled in per request (skipped when the value would not
    /// be a valid header value).
    SetTemplate(HeaderName, Box<Template>),
}

impl HeaderEdit {
    /// Applies the edit to `headers`; templates read the request in `session`, whose
    /// headers are `request_headers`.
    pub fn apply(&self, headers: &mut HeaderMap, session: &Session, request: Headers) {
        match self {
            HeaderEdit::Set(name, value) => {
                headers.insert(name.clone(), value.clone());
            }
            HeaderEdit::Remove(name) => {
                headers.remove(name);
            }
            HeaderEdit::SetTemplate(name, template) => {
                let source = match request {
                    Headers::Edited => &*headers,
                    Headers::Session => session.headers(),
                };
                if let Some(value) = template.render_header(session, source) {
                    headers.insert(name.clone(), value);
                }
            }
        }
    }
}

/// Where a template finds the request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// In the map being edited: the request on its way upstream.
    Edited,
    /// In the session: a response is being edited.
    Session,
}

/// A route: a match, an action, and header edits for requests it forwards and the
/// responses it produces.
#[derive(Debug, Clone)]
pub struct Route {
    matcher: RouteMatch,
    action: RouteAction,
    rewrite: Option<PathRewrite>,
    /// Boxed: most routes have none, and a route stays small.
    policy: Option<Box<RoutePolicy>>,
    mirror: Option<Arc<Mirror>>,
    request_edits: Vec<HeaderEdit>,
    response_edits: Vec<HeaderEdit>,
    label: &'static str,
    stats: Arc<RouteStats>,
}

impl Route {
    /// A route doing `action` for requests that match `matcher`.
    pub fn new(matcher: RouteMatch, action: RouteAction) -> Self {
        let label = crate::metrics::label(&matcher.describe());
        Route {
            matcher,
            action,
            rewrite: None,
            policy: None,
            mirror: None,
            request_edits: Vec::new(),
            response_edits: Vec::new(),
            label,
            stats: Arc::default(),
        }
    }

    /// The route's name in metrics and on the status page: what it matches
    /// (`GET api.example.com/v1`, `/static`, `*` for a catch-all) unless set with
    /// [`with_label`](Route::with_label).
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Names the route in metrics and on the status page.
    pub fn with_label(mut self, label: impl AsRef<str>) -> Self {
        self.label = crate::metrics::label(label.as_ref());
        self
    }

    /// The route's counters (requests by status class, durations, bytes, retries).
    pub fn stats(&self) -> &Arc<RouteStats> {
        &self.stats
    }

    /// Adds edits of the request head sent upstream (after the router-wide ones).
    pub fn with_request_edits(mut self, edits: Vec<HeaderEdit>) -> Self {
        self.request_edits = edits;
        self
    }

    /// Adds edits of the response head sent to the client (after the router-wide ones).
    pub fn with_response_edits(mut self, edits: Vec<HeaderEdit>) -> Self {
        self.response_edits = edits;
        self
    }

    /// Rewrites the path of the requests it forwards.
    pub fn with_rewrite(mut self, rewrite: PathRewrite) -> Self {
        self.rewrite = Some(rewrite);
        self
    }

    /// Gives the route its own timeouts, resends, rate limits or body limit.
    pub fn with_policy(mut self, policy: RoutePolicy) -> Self {
        self.policy = Some(Box::new(policy));
        self
    }

    /// Copies the route's requests to a shadow pool (see [`Mirror`]).
    pub fn with_mirror(mut self, mirror: Mirror) -> Self {
        self.mirror = Some(Arc::new(mirror));
        self
    }

    /// Where the route's requests are copied, if anywhere.
    pub fn mirror(&self) -> Option<&Arc<Mirror>> {
        self.mirror.as_ref()
    }

    /// The route's own limits, if it has any.
    pub fn policy(&self) -> Option<&RoutePolicy> {
        self.policy.as_deref()
    }

    /// What the route matches.
    pub fn matcher(&self) -> &RouteMatch {
        &self.matcher
    }

    /// What the route does.
    pub fn action(&self) -> &RouteAction {
        &self.action
    }
}

/// How an attempt failed, which decides whether another peer may be tried.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// The connect failed (refused, timed out): nothing was sent.
    Connect,
    /// The connection broke after the request was sent, before an answer.
    Broken,
    /// Anything else (a timeout while waiting, a bad response): not retried.
    Final,
}

/// What the policies before authentication decided: an answer (or none: go on), or a
/// shared rate limit that must ask Redis first.
enum Admission {
    Decided(Option<Flow>),
    /// Boxed: it is rare, and the request's future keeps room for it.
    Ask(Box<Pending>),
}

/// Per-request state of a routed proxy: the matched route, the peer in use (counted in
/// flight until the request ends), and the user's own context.
#[derive(Debug, Default)]
pub struct RouteCtx<C> {
    route: Option<u32>,
    /// The group chosen for the request (the route's, or its split's arm).
    group: Option<u32>,
    peer: Option<InFlight>,
    /// Whether the current peer's outcome went to passive health already.
    recorded: bool,
    /// Whether the answer sets the group's stickiness cookie (the request named no
    /// peer, or another one).
    pin: bool,
    /// The request's `Origin`, kept for the CORS headers of its answer (its headers go
    /// upstream); only under a CORS policy.
    origin: Option<Box<HeaderValue>>,
    /// The coding the client's `Accept-Encoding` chose, under a compression policy.
    encoding: Option<Encoding>,
    /// What the cache keeps of a forwarded request, under a cache.
    cache: Option<Box<CacheState>>,
    /// The user's per-request context (`ctx Type;` in `proxy!`).
    pub user: C,
}

impl<C> RouteCtx<C> {
    /// A context with no route matched yet around the user's `user`.
    pub fn new(user: C) -> Self {
        RouteCtx {
            route: None,
            group: None,
            peer: None,
            recorded: false,
            pin: false,
            origin: None,
            encoding: None,
            cache: None,
            user,
        }
    }

    /// Index of the matched route, once `request_filter` ran.
    pub fn route(&self) -> Option<usize> {
        self.route.map(|r| r as usize)
    }

    /// Index of the group chosen for the request, once `request_filter` ran.
    pub fn group(&self) -> Option<usize> {
        self.group.map(|g| g as usize)
    }

    /// The peer the request was last sent to.
    pub fn peer(&self) -> Option<&Arc<PeerState>> {
        self.peer.as_ref().map(InFlight::peer)
    }
}

/// Upstream groups, ordered routes, and router-wide header edits.
#[derive(Debug, Default)]
pub struct Router {
    groups: Vec<UpstreamGroup>,
    routes: Vec<Route>,
    request_edits: Vec<HeaderEdit>,
    response_edits: Vec<HeaderEdit>,
    fallthrough: bool,
    rate_limits: Vec<Arc<RateLimit>>,
    cors: Option<Arc<Cors>>,
    access: Option<Arc<AccessList>>,
    auth: Option<Arc<Auth>>,
    compress: Option<Arc<Compress>>,
    cache: Option<Arc<HttpCache>>,
    /// `response_filter` runs on the proxy's own answers: they get the response edits and
    /// CORS there, not twice.
    local_answers_filtered: bool,
    /// Some route's conditions read JWT claims: the proxy's `auth jwt` verifies the token
    /// before routing.
    routes_read_claims: bool,
}

impl Router {
    /// A router over `groups` with `routes` (which name groups by index). Routes whose
    /// labels are the same get `#2`, `#3`... appended, so metrics tell them apart.
    pub fn new(groups: Vec<UpstreamGroup>, mut routes: Vec<Route>) -> Self {
        let labels: Vec<&'static str> = routes.iter().map(|r| r.label).collect();
        for (i, route) in routes.iter_mut().enumerate() {
            let earlier = labels[..i].iter().filter(|l| **l == labels[i]).count();
            if earlier > 0 {
                route.label = crate::metrics::label(&format!("{} #{}", labels[i], earlier + 1));
            }
        }
        let routes_read_claims = routes
            .iter()
            .flat_map(|r| &r.matcher.conditions)
            .any(|c| c.test.reads_claims());
        Router {
            routes_read_claims,
            groups,
            routes,
            request_edits: Vec::new(),
            response_edits: Vec::new(),
            rate_limits: Vec::new(),
            fallthrough: false,
            cors: None,
            access: None,
            auth: None,
            compress: None,
            cache: None,
            local_answers_filtered: false,
        }
    }

    /// Forward requests no route matches (to whatever `upstream_peer` picks) instead of
    /// answering them 404. For proxies whose own `upstream_peer` chooses peers.
    pub fn with_fallthrough(mut self, fallthrough: bool) -> Self {
        self.fallthrough = fallthrough;
        self
    }

    /// Says that the proxy runs `response_filter` (and with it this router's
    /// `response_filter`) on its own answers too (`ProxyOptions::filter_local_answers`):
    /// the router's answers then leave their response edits and CORS headers to it instead
    /// of applying them twice.
    pub fn with_local_answers_filtered(mut self, filtered: bool) -> Self {
        self.local_answers_filtered = filtered;
        self
    }

    /// Sets edits applied to every request sent upstream, before a route's own.
    pub fn with_request_edits(mut self, edits: Vec<HeaderEdit>) -> Self {
        self.request_edits = edits;
        self
    }

    /// Sets edits applied to every response, before a route's own.
    pub fn with_response_edits(mut self, edits: Vec<HeaderEdit>) -> Self {
        self.response_edits = edits;
        self
    }

    /// The upstream groups.
    pub fn groups(&self) -> &[UpstreamGroup] {
        &self.groups
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&UpstreamGroup> {
        self.groups.iter().find(|g| g.name() == name)
    }

    /// The pool called `name`, for code that picks pools by a name known only at run time
    /// (a literal name is better written `Self::POOL_NAME`, checked at compile time).
    pub fn pool_named(&self, name: &str) -> Option<PoolId> {
        let index = self.groups.iter().position(|g| g.name() == name)?;
        Some(PoolId::new(index as u32))
    }

    /// For `upstream_peer`: a peer of `pool` (instead of the matched route's), chosen by
    /// the pool's strategy, health and retry state. 503 for a pool this router lacks.
    pub async fn pool_peer<C>(
        &self,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
        pool: PoolId,
    ) -> Result<HttpPeer> {
        session.use_pool(pool);
        self.upstream_peer(session, ctx).await
    }

    /// The group called `name`, to change its peers or timeouts.
    pub fn group_mut(&mut self, name: &str) -> Option<&mut UpstreamGroup> {
        self.groups.iter_mut().find(|g| g.name() == name)
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// For `request_filter`: finds the request's route and records it in `ctx`, then applies
    /// its policies in order — the access list (403), a CORS preflight (answered), rate
    /// limits (429), the body limit (413), authentication (401/403) — and returns the answer
    /// of the first that refuses, else the response of a `respond`/`redirect` route or of
    /// no match (404, unless [`with_fallthrough`](Router::with_fallthrough)); `None` means
    /// forward the request.
    pub async fn request_filter<C>(
        &self,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
    ) -> Option<Flow> {
        let pending = match self.admit(session, ctx) {
            Admission::Decided(None) => None,
            Admission::Decided(answer) => return answer,
            Admission::Ask(pending) => Some(pending),
        };
        if let Some(pending) = pending {
            // A shared rate limit asking Redis: boxed, as authentication below.
            let admitted = Box::pin(self.admit_after_asking(*pending, session, ctx)).await;
            if admitted.is_some() {
                return admitted;
            }
        }
        let route = self.matched(ctx);
        let decided = match self
            .auth_of(route)
            .filter(|a| !self.verified_before_routing(session, a))
            .map(|auth| (auth, auth.check_now(session)))
        {
            // bcrypt or a subrequest: boxed, so that the future of every other request
            // stays as small as before.
            Some((auth, None)) => Box::pin(self.authenticate_later(auth, session, ctx)).await,
            Some((_, Some(Err(refusal)))) => return Some(self.refusal(session, route, *refusal)),
            Some((_, Some(Ok(identity)))) => {
                session.set_identity(identity);
                self.authenticated(session, ctx)
            }
            None => self.authenticated(session, ctx),
        };
        if decided.is_some() || ctx.group.is_none() {
            return decided;
        }
        let cache = self.cache_of(self.matched(ctx))?;
        match cache.consult(session, Tier::Any) {
            // A read from disk or a wait for another request's fill: boxed, as
            // authentication, so that other requests keep their future's size.
            consulted @ (Consulted::Disk(_) | Consulted::Wait(..)) => {
                Box::pin(self.consult_further(cache, consulted, session, ctx)).await
            }
            consulted => self.act_on_cache(cache, consulted, session, ctx),
        }
    }

    /// After a read from disk or a wait for another fill: the cache's answer, or the
    /// request forwarded keeping the cache's state.
    async fn consult_further<C>(
        &self,
        cache: &Arc<HttpCache>,
        mut consulted: Consulted,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
    ) -> Option<Flow> {
        if let Consulted::Disk(key) = consulted {
            let loaded = cache.load_from_disk(key).await;
            consulted = cache.consult(session, loaded);
        }
        if let Consulted::Wait(wait, state) = consulted {
            consulted = cache.after_wait(wait, state, session).await;
        }
        self.act_on_cache(cache, consulted, session, ctx)
    }

    /// Serves the cache's answer, or keeps its state for a forwarded request.
    fn act_on_cache<C>(
        &self,
        cache: &Arc<HttpCache>,
        consulted: Consulted,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
    ) -> Option<Flow> {
        match consulted {
            Consulted::Serve(answer, refresh) => {
                if let Some(refresh) = refresh {
                    self.start_refresh(refresh, cache, session, ctx);
                }
                Some(self.decorated(session, self.matched(ctx), answer))
            }
            // (`Disk` is not asked for twice.)
            Consulted::Disk(_) => None,
            Consulted::Forward(state) | Consulted::Wait(_, state) => {
                if let Some(fallback) = cache.stale_fallback(&state) {
                    session.set_stale_fallback(fallback);
                }
                ctx.cache = Some(state);
                None
            }
        }
    }

    /// Sends `refresh` as the request would go upstream (rewritten, edited) to its group.
    fn start_refresh<C>(
        &self,
        refresh: Refresh,
        cache: &Arc<HttpCache>,
        session: &Session,
        ctx: &RouteCtx<C>,
    ) {
        let Some(group) = self.routed_group(ctx) else {
            return;
        };
        let (mut head, ()) = http::Request::new(()).into_parts();
        head.uri = match session.uri().path_and_query() {
            Some(target) => http::Uri::from(target.clone()),
            None => http::Uri::from_static("/"),
        };
        head.headers = session.headers().clone();
        if crate::proxy::headers::strip_request_hop_by_hop(&mut head.headers).is_err()
            || self
                .upstream_request_filter(session, ctx, &mut head)
                .is_err()
        {
            return;
        }
        refresh.start(cache.clone(), group.clone(), head);
    }

    /// Sets the cache of every route that does not declare its own.
    pub fn with_cache(mut self, cache: HttpCache) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// The proxy-wide cache, if it has one.
    pub fn cache(&self) -> Option<&HttpCache> {
        self.cache.as_deref()
    }

    /// The proxy-wide cache, to change its settings before it serves (e.g. from a config
    /// file); `None` without one, or once it is shared.
    pub fn cache_mut(&mut self) -> Option<&mut HttpCache> {
        self.cache.as_mut().and_then(Arc::get_mut)
    }

    /// The cache in force on `route` (or on none).
    fn cache_of<'a>(&'a self, route: Option<&'a Route>) -> Option<&'a Arc<HttpCache>> {
        match route.and_then(Route::policy) {
            Some(policy) => policy.cache.resolve(self.cache.as_ref()),
            None => self.cache.as_ref(),
        }
    }

    /// Opens the disk tier of every cache: the start and `-t` stop on an error.
    pub fn check_caches(&self) -> std::io::Result<()> {
        self.caches().iter().try_for_each(|(_, c)| c.check_disk())
    }

    /// Every cache of the router as the admin listener sees it.
    pub fn observed_caches(&self) -> Vec<crate::service::CacheView> {
        self.caches()
            .into_iter()
            .map(|(label, cache)| crate::service::CacheView { label, cache })
            .collect()
    }

    /// Every cache of the router with what it serves (`proxy`, or a route's label).
    pub fn caches(&self) -> Vec<(String, Arc<HttpCache>)> {
        let own = self
            .routes
            .iter()
            .filter_map(|r| match &r.policy.as_deref()?.cache {
                Override::Own(cache) => Some((r.label.to_owned(), cache.clone())),
                _ => None,
            });
        self.cache
            .iter()
            .map(|c| ("proxy".to_owned(), c.clone()))
            .chain(own)
            .collect()
    }

    /// What an authenticated (or unauthenticated but allowed) request gets: the coding its
    /// answer may use, then its route's action.
    fn authenticated<C>(&self, session: &mut Session, ctx: &mut RouteCtx<C>) -> Option<Flow> {
        if let Some(compress) = self.compress_of(self.matched(ctx)) {
            let accept = session.headers().get(http::header::ACCEPT_ENCODING);
            ctx.encoding = compress.negotiate(accept);
        }
        self.act(session, ctx)
    }

    /// Matches the request's route and applies the policies that come before
    /// authentication: the answer of the one that refused, if one did, or the shared rate
    /// limit that must ask Redis first.
    fn admit<C>(&self, session: &mut Session, ctx: &mut RouteCtx<C>) -> Admission {
        if self.routes_read_claims {
            self.identify_before_routing(session);
        }
        let index = self.routes.iter().position(|r| r.matcher.matches(session));
        // Routes and groups are indexed by u32 (a router has far fewer).
        ctx.route = index.map(|i| i as u32);
        if let Some(i) = index {
            session.set_route_stats(&self.routes[i].stats);
            session.route_label = Some(self.routes[i].label);
        }
        let route = index.map(|i| &self.routes[i]);
        if let Some(refusal) = self.refused_client(session, route) {
            return Admission::Decided(Some(refusal));
        }
        if let Some(answer) = self.cors_preflight(session, ctx, route) {
            return Admission::Decided(Some(answer));
        }
        match self.check_limits(session, index, 0) {
            LimitCheck::Pass => {}
            LimitCheck::Refused(refusal) => return Admission::Decided(Some(refusal)),
            LimitCheck::Ask(pending) => return Admission::Ask(Box::new(pending)),
        }
        Admission::Decided(index.and_then(|i| self.refused_by_body(session, i)))
    }

    /// [`admit`](Router::admit) for a request a shared rate limit is asking Redis about:
    /// that limit's answer, then the policies after it.
    async fn admit_after_asking<C>(
        &self,
        pending: Pending,
        session: &mut Session,
        ctx: &RouteCtx<C>,
    ) -> Option<Flow> {
        let route = ctx.route();
        if let Some(refusal) = self.check_limits_later(session, route, pending).await {
            return Some(refusal);
        }
        route.and_then(|i| self.refused_by_body(session, i))
    }

    /// What the matched route does, once every policy let the request through.
    fn act<C>(&self, session: &mut Session, ctx: &mut RouteCtx<C>) -> Option<Flow> {
        let Some(index) = ctx.route() else {
            if self.fallthrough {
                return None;
            }
            return Some(self.answer(session, None, StatusCode::NOT_FOUND, Bytes::new()));
        };
        let route = &self.routes[index];
        if let Some(mirror) = &route.mirror {
            if let Some(shadow) = self.groups.get(mirror.group) {
                mirror.copy(session, shadow);
            }
        }
        match &route.action {
            RouteAction::Upstream(g) => {
                ctx.group = Some(*g as u32);
                None
            }
            RouteAction::Split(split) => {
                let head = session.req_header();
                let key = request_key(split.key(), head, session.client_addr());
                ctx.group = Some(split.choose(&key) as u32);
                None
            }
            RouteAction::Respond(status, body) => {
                Some(self.answer(session, Some(route), *status, body.clone()))
            }
            RouteAction::Redirect(status, location) => {
                Some(self.redirect(session, route, *status, location.clone()))
            }
            RouteAction::RespondTemplate(status, body) => {
                let body = Bytes::from(body.render(session, session.headers()));
                Some(self.answer(session, Some(route), *status, body))
            }
            RouteAction::RedirectTemplate(status, location) => {
                // A location that would not be a valid header value is an answer of ours
                // we cannot give: 500, as a failed rewrite is.
                match location.render_header(session, session.headers()) {
                    Some(location) => Some(self.redirect(session, route, *status, location)),
                    None => Some(self.answer(
                        session,
                        Some(route),
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Bytes::new(),
                    )),
                }
            }
        }
    }

    /// Sets the CORS policy of every route that does not declare its own.
    pub fn with_cors(mut self, cors: Cors) -> Self {
        self.cors = Some(Arc::new(cors));
        self
    }

    /// Sets the response compression of every route that does not declare its own.
    pub fn with_compress(mut self, compress: Compress) -> Self {
        self.compress = Some(Arc::new(compress));
        self
    }

    /// The compression in force on `route` (or on none).
    fn compress_of<'a>(&'a self, route: Option<&'a Route>) -> Option<&'a Compress> {
        in_force(
            route.and_then(Route::policy),
            |p| &p.compress,
            self.compress.as_ref(),
        )
    }

    /// Compresses a proxied response the policy covers with the coding the request chose,
    /// marking every covered response `Vary: Accept-Encoding`.
    fn compress_response<C>(
        &self,
        session: &mut Session,
        ctx: &RouteCtx<C>,
        response: &mut ResponseHeader,
    ) {
        let Some(compress) = self.compress_of(self.matched(ctx)) else {
            return;
        };
        if !session.was_forwarded()
            || !compress.eligible(session.method(), response.status, &response.headers)
        {
            return;
        }
        let encoder = ctx.encoding.and_then(|e| match Encoder::new(e) {
            Ok(encoder) => Some((e, encoder)),
            Err(error) => {
                tracing::warn!(%error, "cannot start a response encoder; sent uncompressed");
                None
            }
        });
        prepare_compressed(&mut response.headers, encoder.as_ref().map(|(e, _)| *e));
        if let Some((_, encoder)) = encoder {
            session.set_encoder(encoder);
        }
    }

    /// Sets the authentication of every route that does not declare its own.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// The authentication in force on `route` (or on none).
    fn auth_of<'a>(&'a self, route: Option<&'a Route>) -> Option<&'a Auth> {
        in_force(
            route.and_then(Route::policy),
            |p| &p.auth,
            self.auth.as_ref(),
        )
    }

    /// For routes whose conditions read claims: the proxy's JWT verified before routing. A
    /// valid token's identity is kept (and not verified again for a route under the same
    /// authentication); without one, no claim is present, and the chosen route's own
    /// authentication answers for the request.
    fn identify_before_routing(&self, session: &mut Session) {
        if let Some(Auth::Jwt(jwt)) = self.auth.as_deref() {
            if let Ok(identity) = jwt.check(session.headers()) {
                session.set_identity(identity);
            }
        }
    }

    /// Whether `auth` is the proxy's JWT check, which already let this request in before
    /// routing.
    fn verified_before_routing(&self, session: &Session, auth: &Auth) -> bool {
        self.routes_read_claims
            && session.identity().is_some()
            && self
                .auth
                .as_deref()
                .is_some_and(|own| std::ptr::eq(own, auth))
    }

    /// Why the declared authentication cannot work (a credentials file that does not load):
    /// the start and `-t` stop on it.
    pub fn check_auth(&self) -> std::io::Result<()> {
        let own = self
            .routes
            .iter()
            .filter_map(|r| match &r.policy.as_deref()?.auth {
                Override::Own(auth) => Some(auth),
                _ => None,
            });
        self.auth
            .iter()
            .chain(own)
            .try_for_each(|a| a.check_files())
    }

    /// Runs an authentication that waits, then (if it lets the request through) the route.
    async fn authenticate_later<C>(
        &self,
        auth: &Auth,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
    ) -> Option<Flow> {
        match self.wait_for_verdict(auth, session).await {
            Ok(identity) => {
                session.set_identity(identity);
                self.authenticated(session, ctx)
            }
            Err(refusal) => Some(self.refusal(session, self.matched(ctx), *refusal)),
        }
    }

    /// The verdict of a method that waits: bcrypt on the blocking pool, or the
    /// authorization service.
    async fn wait_for_verdict(&self, auth: &Auth, session: &Session) -> auth::Verdict {
        match auth {
            Auth::Basic(basic) => basic.verify(session.headers()).await,
            Auth::External(external) => {
                if let Some(identity) = external.cached(session) {
                    return Ok(identity);
                }
                match self.groups.get(external.group) {
                    Some(group) => external.check(session, group).await,
                    None => Err(Refusal::status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no authorization pool",
                    )),
                }
            }
            other => other.check_now(session).unwrap_or_else(|| {
                Err(Refusal::status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no verdict",
                ))
            }),
        }
    }

    /// The answer for an authentication refusal, with the response edits and CORS.
    fn refusal(&self, session: &Session, route: Option<&Route>, refusal: Refusal) -> Flow {
        let mut flow = self.answer(session, route, refusal.status, refusal.body);
        if let Flow::Respond(response) = &mut flow {
            for (name, value) in &refusal.headers {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        flow
    }

    /// Sets the client address blocks of every route that does not declare its own.
    pub fn with_access(mut self, access: AccessList) -> Self {
        self.access = Some(Arc::new(access));
        self
    }

    /// Replaces the proxy-wide client address blocks (e.g. from a config file).
    pub fn set_access(&mut self, access: Option<AccessList>) {
        self.access = access.map(Arc::new);
    }

    /// The proxy-wide client address blocks, if any.
    pub fn access(&self) -> Option<&AccessList> {
        self.access.as_deref()
    }

    /// The 403 for a client the access list of `route` (or the proxy's) refuses.
    fn refused_client(&self, session: &Session, route: Option<&Route>) -> Option<Flow> {
        let list = in_force(
            route.and_then(Route::policy),
            |p| &p.access,
            self.access.as_ref(),
        )?;
        if list.allows(session.client_addr().ip()) {
            return None;
        }
        tracing::debug!(client = %session.client_addr().ip(), "client refused by the access list");
        Some(self.answer(
            session,
            route,
            StatusCode::FORBIDDEN,
            Bytes::from_static(b"403 Forbidden\n"),
        ))
    }

    /// The proxy-wide CORS policy, to change (e.g. its origins from a config file).
    pub fn cors_mut(&mut self) -> Option<&mut Cors> {
        self.cors.as_mut().map(Arc::make_mut)
    }

    /// The proxy-wide CORS policy, if it has one.
    pub fn cors(&self) -> Option<&Cors> {
        self.cors.as_deref()
    }

    /// The CORS policy for a request on `route` (or on none).
    fn cors_of<'a>(&'a self, route: Option<&'a Route>) -> Option<&'a Cors> {
        in_force(
            route.and_then(Route::policy),
            |p| &p.cors,
            self.cors.as_ref(),
        )
    }

    /// The answer to a CORS preflight on `route`, if the request is one and a policy
    /// applies; otherwise keeps the request's `Origin` for its answer's headers.
    fn cors_preflight<C>(
        &self,
        session: &Session,
        ctx: &mut RouteCtx<C>,
        route: Option<&Route>,
    ) -> Option<Flow> {
        let cors = self.cors_of(route)?;
        let Some(preflight) = cors.preflight(session.method(), session.headers()) else {
            ctx.origin = session
                .headers()
                .get(http::header::ORIGIN)
                .map(|o| Box::new(o.clone()));
            return None;
        };
        let mut flow = self.answer(session, route, preflight.status, preflight.body);
        if let Flow::Respond(response) = &mut flow {
            let headers = response.headers_mut();
            for (name, value) in &preflight.headers {
                if name == http::header::VARY {
                    continue;
                }
                headers.insert(name.clone(), value.clone());
            }
        }
        Some(flow)
    }

    /// Adds rate limits, checked in order before any route acts.
    pub fn with_rate_limits(mut self, limits: Vec<RateLimit>) -> Self {
        self.rate_limits.extend(limits.into_iter().map(Arc::new));
        self
    }

    /// The 413 for a request its route's `max_body` refuses, if it does; otherwise caps the
    /// body the request may forward at it.
    fn refused_by_body(&self, session: &mut Session, route: usize) -> Option<Flow> {
        let policy = self.routes[route].policy.as_deref()?;
        if let Some(max) = policy.max_body {
            session.limit_body(max);
        }
        let length = session
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        policy.body_too_large(length).then(|| {
            self.answer(
                session,
                Some(&self.routes[route]),
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from_static(b"413 Content Too Large\n"),
            )
        })
    }

    /// A fixed answer, with the response edits applied.
    fn answer(
        &self,
        session: &Session,
        route: Option<&Route>,
        status: StatusCode,
        body: Bytes,
    ) -> Flow {
        let response = match Flow::respond_with(status, body) {
            Flow::Respond(r) => r,
            Flow::Continue => Response::new(Bytes::new()),
        };
        self.decorated(session, route, response)
    }

    /// An answer of the proxy's own (a fixed one, a cached one), with the response edits
    /// and CORS headers applied — here, or by `response_filter` when the proxy runs it on
    /// its own answers.
    fn decorated(
        &self,
        session: &Session,
        route: Option<&Route>,
        mut response: Response<Bytes>,
    ) -> Flow {
        if self.local_answers_filtered {
            // `response_filter` applies them.
            return Flow::Respond(response);
        }
        self.edit(session, route, response.headers_mut(), Headers::Session);
        if let Some(cors) = self.cors_of(route) {
            let origin = session.headers().get(http::header::ORIGIN);
            cors.decorate(origin, response.headers_mut());
        }
        Flow::Respond(response)
    }

    /// A redirect answer to `location`.
    fn redirect(
        &self,
        session: &Session,
        route: &Route,
        status: StatusCode,
        location: HeaderValue,
    ) -> Flow {
        let mut flow = self.answer(session, Some(route), status, Bytes::new());
        if let Flow::Respond(response) = &mut flow {
            response.headers_mut().insert(LOCATION, location);
        }
        flow
    }

    /// Applies the request edits (`Headers::Edited`) or the response edits.
    fn edit(
        &self,
        session: &Session,
        route: Option<&Route>,
        headers: &mut HeaderMap,
        side: Headers,
    ) {
        let (global, own) = match side {
            Headers::Edited => (&self.request_edits, route.map(|r| &r.request_edits)),
            Headers::Session => (&self.response_edits, route.map(|r| &r.response_edits)),
        };
        for edit in global.iter().chain(own.into_iter().flatten()) {
            edit.apply(headers, session, side);
        }
    }

    /// The group chosen for the request (its route's, or its split's arm).
    fn routed_group<C>(&self, ctx: &RouteCtx<C>) -> Option<&UpstreamGroup> {
        self.groups.get(ctx.group? as usize)
    }

    /// The resends the matched route allows, if it says.
    fn route_retries<C>(&self, ctx: &RouteCtx<C>) -> Option<u32> {
        self.matched(ctx)?.policy()?.retries
    }

    /// The route matched for the request.
    fn matched<C>(&self, ctx: &RouteCtx<C>) -> Option<&Route> {
        self.routes.get(ctx.route? as usize)
    }

    /// For `upstream_peer`: the next available peer of the matched route's group (503 if
    /// none), avoiding the one a retry comes from; counts the request in flight there.
    pub async fn upstream_peer<C>(
        &self,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
    ) -> Result<HttpPeer> {
        if let Some(pool) = session.chosen_pool {
            ctx.group = Some(pool.index() as u32);
        }
        let group = self.routed_group(ctx).ok_or(Error::new(
            ErrorKind::NoPeer,
            "no upstream group for this request",
        ))?;
        session.pool = Some(group.name());
        let delay = group.backoff(&session.attempts);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (head, client, attempts) = session.head_and_attempts();
        let sticky = group.sticky_cookie();
        let preferred = sticky.and_then(|s| s.requested(&head.headers));
        let (peer, in_flight) =
            group.http_peer(|key| request_key(key, head, client), attempts, preferred)?;
        ctx.pin = sticky.is_some() && preferred != Some(&in_flight.peer().sticky_id()[..]);
        let peer = match self.matched(ctx).and_then(Route::policy) {
            Some(policy) => policy.apply_timeouts(peer),
            None => peer,
        };
        let peer = if group.proxy_protocol() {
            peer.with_proxy_protocol(session.client_addr(), session.local_addr())
        } else {
            peer
        };
        ctx.peer = Some(in_flight);
        ctx.recorded = false;
        Ok(peer)
    }

    /// For `upstream_request_filter`: rewrites the path and applies the request header
    /// edits. Fails (500) only if a regex rewrite makes something that is not a path.
    pub fn upstream_request_filter<C>(
        &self,
        session: &Session,
        ctx: &RouteCtx<C>,
        request: &mut RequestHeader,
    ) -> Result<()> {
        let route = self.matched(ctx);
        if let Some(rewrite) = route.and_then(|r| r.rewrite.as_ref()) {
            rewrite.apply(&mut request.uri)?;
        }
        if let (Some(state), Some(cache)) = (&ctx.cache, self.cache_of(route)) {
            cache.shape_request(state, &mut request.headers);
        }
        if let Some(identity) = session.identity() {
            for (name, value) in &identity.upstream_headers {
                request.headers.append(name.clone(), value.clone());
            }
        }
        self.edit(session, route, &mut request.headers, Headers::Edited);
        Ok(())
    }

    /// For `upstream_response_filter`: hands the response to the cache (which may store it,
    /// or answer instead: a revalidated or stale response), and sets the stickiness cookie
    /// of the request's group on an answer from a peer the request did not name.
    pub fn upstream_response_filter<C>(
        &self,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
        response: &mut ResponseHeader,
    ) {
        if let Some(state) = ctx.cache.take() {
            if let Some(cache) = self.cache_of(self.matched(ctx)) {
                cache.on_response(state, session, response);
            }
        }
        if !ctx.pin {
            return;
        }
        let (Some(group), Some(peer)) = (self.routed_group(ctx), &ctx.peer) else {
            return;
        };
        if let Some(cookie) = group
            .sticky_cookie()
            .and_then(|s| s.set_cookie(peer.peer().addr()))
        {
            response.headers.append(http::header::SET_COOKIE, cookie);
        }
    }

    /// For `response_filter`: applies the response header edits, the CORS headers and
    /// compression.
    pub fn response_filter<C>(
        &self,
        session: &mut Session,
        ctx: &RouteCtx<C>,
        response: &mut ResponseHeader,
    ) {
        let route = self.matched(ctx);
        self.edit(session, route, &mut response.headers, Headers::Session);
        if let Some(cors) = self.cors_of(route) {
            // A local answer still has the request's headers; a proxied one kept `Origin`.
            let origin = ctx
                .origin
                .as_deref()
                .or_else(|| session.headers().get(http::header::ORIGIN));
            cors.decorate(origin, &mut response.headers);
        }
        self.compress_response(session, ctx, response);
    }

    /// For `fail_to_connect`: records the failure for passive health and marks the error
    /// for a retry on another peer. Nothing of the request was sent, so this is always
    /// safe: every peer of the group gets one try (as nginx's `proxy_next_upstream error
    /// timeout`), and the group's `retry N` may allow more.
    pub fn fail_to_connect<C>(
        &self,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
        error: Error,
    ) -> Error {
        self.failed_attempt(session, ctx, error, Failure::Connect)
    }

    /// For `replay_buffer`: keep a copy when the matched group may resend this request.
    pub fn replay_buffer<C>(&self, session: &Session, ctx: &RouteCtx<C>) -> Option<usize> {
        let group = self.routed_group(ctx)?;
        match self.route_retries(ctx) {
            Some(retries) => group.replay_limit_with(session.method(), retries),
            None => group.replay_limit(session.method()),
        }
    }

    /// For `error_while_proxy`: like `fail_to_connect`, but only a broken connection (not
    /// a timeout or a bad response) is worth a resend.
    pub fn error_while_proxy<C>(
        &self,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
        error: Error,
    ) -> Error {
        let failure = if error.kind() == ErrorKind::UpstreamClosed {
            Failure::Broken
        } else {
            Failure::Final
        };
        self.failed_attempt(session, ctx, error, failure)
    }

    /// Records a failed attempt on the current peer (once) and marks `error` for a retry
    /// when `failure` allows one: within the group's `retry N`, or, for a connect that
    /// failed, while the group has a peer this request has not tried.
    fn failed_attempt<C>(
        &self,
        session: &mut Session,
        ctx: &mut RouteCtx<C>,
        mut error: Error,
        failure: Failure,
    ) -> Error {
        let Some(group) = self.routed_group(ctx) else {
            return error;
        };
        if let Some(peer) = ctx.peer.as_ref().map(InFlight::peer) {
            group.record_outcome(peer, Some(&error));
            // The next choice avoids it (groups with `retry N` note every peer they pick).
            session.attempts.note_tried(peer.addr());
        }
        ctx.recorded = true;
        let retries = self.route_retries(ctx).unwrap_or_else(|| group.retries());
        let within_budget = session.attempts.within(retries);
        let retry = match failure {
            Failure::Connect => within_budget || session.attempts.tried() < group.peer_count(),
            Failure::Broken => within_budget,
            Failure::Final => false,
        };
        if retry {
            error.set_retry(true);
        }
        error
    }

    /// For `logging`: records how the request ended for the peer's passive health (a
    /// failed connect was recorded by `fail_to_connect` already).
    pub fn logging<C>(&self, session: &Session, error: Option<&Error>, ctx: &RouteCtx<C>) {
        let (Some(group), Some(peer)) = (self.routed_group(ctx), ctx.peer()) else {
            return;
        };
        // Failures seen by fail_to_connect / error_while_proxy were recorded there.
        if ctx.recorded || !session.was_forwarded() {
            return;
        }
        group.record_outcome(peer, error);
    }

    /// Whether any group ejects peers after failed requests (then `logging` must report).
    pub fn has_passive_health(&self) -> bool {
        self.groups.iter().any(|g| g.passive_health().is_some())
    }

    /// The background tasks of every group (discovery, health checks), to run as
    /// background services.
    pub fn background_tasks(&self) -> Vec<GroupTask> {
        self.groups
            .iter()
            .flat_map(UpstreamGroup::background_tasks)
            .collect()
    }
}

impl Router {
    /// The routes (label, target, counters) and groups, as the admin listener shows them.
    pub fn observed(&self) -> (Vec<RouteView>, Vec<UpstreamGroup>) {
        let routes = self
            .routes()
            .iter()
            .map(|r| RouteView {
                label: r.label().to_owned(),
                target: match r.action() {
                    RouteAction::Upstream(g) => format!(
                        "upstream {}",
                        self.groups().get(*g).map_or("?", |g| g.name())
                    ),
                    RouteAction::Respond(s, _) | RouteAction::RespondTemplate(s, _) => {
                        format!("respond {}", s.as_u16())
                    }
                    RouteAction::Redirect(s, _) | RouteAction::RedirectTemplate(s, _) => {
                        format!("redirect {}", s.as_u16())
                    }
                    RouteAction::Split(split) => self.describe_split(split),
                },
                mirror: r.mirror().map(|m| {
                    let pool = self.groups().get(m.group).map_or("?", |g| g.name());
                    (pool.to_owned(), m.outcomes.clone())
                }),
                arms: match r.action() {
                    RouteAction::Split(split) => split
                        .arms()
                        .iter()
                        .map(|arm| {
                            let pool = self.groups().get(arm.group).map_or("?", |g| g.name());
                            (pool.to_owned(), arm.requests.clone())
                        })
                        .collect(),
                    _ => Vec::new(),
                },
                stats: r.stats().clone(),
            })
            .collect();
        (routes, self.groups().to_vec())
    }
}

impl Router {
    /// `split 90% stable, 10% canary`, for the status page.
    fn describe_split(&self, split: &Split) -> String {
        let arms: Vec<String> = split
            .arms()
            .iter()
            .map(|arm| {
                let pool = self.groups().get(arm.group).map_or("?", |g| g.name());
                format!("{}% {pool}", arm.weight)
            })
            .collect();
        format!("split {}", arms.join(", "))
    }
}

/// The part of a request (its `head`, its `client` address) that `key` names, for a
/// hashing strategy or a split.
fn request_key<'a>(
    key: &RequestKey,
    head: &'a http::request::Parts,
    client: std::net::SocketAddr,
) -> Cow<'a, [u8]> {
    match key {
        RequestKey::None => Cow::Borrowed(&[]),
        RequestKey::Header(name) => {
            Cow::Borrowed(head.headers.get(name).map_or(&[][..], |v| v.as_bytes()))
        }
        RequestKey::Cookie(name) => {
            Cow::Borrowed(crate::lb::cookie(&head.headers, name).unwrap_or(&[]))
        }
        RequestKey::Path => Cow::Borrowed(head.uri.path().as_bytes()),
        RequestKey::ClientIp => Cow::Owned(match client.ip() {
            std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
            std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes_match_at_segment_boundaries() {
        assert!(path_has_prefix("/api", "/api"));
        assert!(path_has_prefix("/api/v1", "/api"));
        assert!(!path_has_prefix("/apix", "/api"));
        assert!(path_has_prefix("/api/v1", "/api/"));
        assert!(!path_has_prefix("/api", "/api/"));
        assert!(path_has_prefix("/anything", "/"));
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::parse("Example.com");
        assert!(exact.matches("example.COM"));
        assert!(!exact.matches("www.example.com"));
        let wild = HostPattern::parse("*.example.com");
        assert!(wild.matches("www.example.com"));
        assert!(wild.matches("a.b.Example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}

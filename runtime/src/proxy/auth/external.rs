//! `auth external POOL { ... }`: an authorization service decides (nginx's `auth_request`,
//! Envoy's `ext_authz`). Each request is first sent, without its body, to a peer of the
//! declared pool with its method, its path (after an optional prefix) and the chosen
//! headers; a 2xx answer lets it through (copying the chosen headers of that answer into
//! the request sent upstream), a 401 or 403 is relayed to the client (with its
//! `WWW-Authenticate`, `Location` and `Set-Cookie`), and anything else — another status, a
//! refused connection, no answer within the timeout — fails closed with 503.
//!
//! Allow verdicts may be cached by a key (a header's value: the token, the cookie) for a
//! declared time, at most [`MAX_CACHED`] of them, so a client's later requests skip the
//! subrequest; refusals are never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST, LOCATION, SET_COOKIE,
    WWW_AUTHENTICATE,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};

use super::{digest, Identity, Refusal, Verdict};
use crate::lb::{Attempts, UpstreamGroup};
use crate::proxy::Session;
use crate::upstream::{ClientOptions, HttpClient};

/// Allow verdicts cached at most; past it the cache starts over.
pub const MAX_CACHED: usize = 10_000;

/// The headers of an authorization service's refusal relayed to the client.
const RELAYED: [HeaderName; 3] = [WWW_AUTHENTICATE, LOCATION, SET_COOKIE];

/// Allow verdicts by the digest of their key: when, and the identity.
type Verdicts = HashMap<[u8; 32], (Instant, Identity)>;

/// An external authorization service.
#[derive(Clone)]
pub struct External {
    /// The pool's index among the router's groups.
    pub group: usize,
    prefix: String,
    send: Vec<HeaderName>,
    copy: Vec<HeaderName>,
    user: Option<HeaderName>,
    timeout: Duration,
    cache: Option<(HeaderName, Duration)>,
    verdicts: Arc<Mutex<Verdicts>>,
    client: Arc<OnceLock<HttpClient<Empty<Bytes>>>>,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("group", &self.group)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl External {
    /// Asks the pool at `group` (an index among the router's groups) about each request,
    /// within 1 s, sending `Authorization` and `Cookie`.
    pub fn new(group: usize) -> Self {
        External {
            group,
            prefix: String::new(),
            send: vec![http::header::AUTHORIZATION, http::header::COOKIE],
            copy: Vec::new(),
            user: None,
            timeout: Duration::from_secs(1),
            cache: None,
            verdicts: Arc::default(),
            client: Arc::default(),
        }
    }

    /// Puts `prefix` before the request's path in the subrequest (`/authz` + `/api/x`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// The request headers sent to the service (instead of `Authorization` and `Cookie`).
    pub fn send_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.send = names.into_iter().collect();
        self
    }

    /// Headers of the service's 2xx answer copied into the request sent upstream.
    pub fn copy_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.copy = names.into_iter().collect();
        self
    }

    /// The header of the service's 2xx answer that names the user (for the logs).
    pub fn user_header(mut self, name: HeaderName) -> Self {
        self.user = Some(name);
        self
    }

    /// How long the service may take to answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Caches allow verdicts for `ttl` by the value of the request header `key`.
    pub fn cache(mut self, key: HeaderName, ttl: Duration) -> Self {
        self.cache = Some((key, ttl));
        self
    }

    /// The cached verdict for the request, if one is fresh.
    pub fn cached(&self, session: &Session) -> Option<Identity> {
        let (key, ttl) = self.cache.as_ref()?;
        let value = session.headers().get(key)?;
        let verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        let (at, identity) = verdicts.get(&digest(value.as_bytes()))?;
        (at.elapsed() < *ttl).then(|| identity.clone())
    }

    /// Asks the service about the request in `session`, `group` being its pool.
    pub async fn check(&self, session: &Session, group: &UpstreamGroup) -> Verdict {
        let unavailable = || {
            Refusal::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the authorization service did not decide",
            )
        };
        let Some(request) = self.subrequest(session) else {
            return Err(unavailable());
        };
        let (peer, _in_flight) = group
            .http_peer(
                |_| std::borrow::Cow::Borrowed(&[]),
                &mut Attempts::default(),
                None,
            )
            .map_err(|_| unavailable())?;
        let client = self
            .client
            .get_or_init(|| HttpClient::new(ClientOptions::default()))
            .clone();
        let asked = async {
            let response = client.send(&peer, request).await.ok()?;
            let (head, body) = response.into_parts();
            let body = body.collect().await.ok()?.to_bytes();
            Some((head, body))
        };
        let Ok(Some((head, body))) = tokio::time::timeout(self.timeout, asked).await else {
            tracing::warn!(
                pool = group.name(),
                "the authorization service did not answer in time: 503"
            );
            return Err(unavailable());
        };
        match head.status.as_u16() {
            200..=299 => Ok(self.allowed(session, &head.headers)),
            401 | 403 => Err(relayed(head.status, &head.headers, body)),
            other => {
                tracing::warn!(
                    pool = group.name(),
                    status = other,
                    "the authorization service answered neither 2xx nor 401/403: 503"
                );
                Err(unavailable())
            }
        }
    }

    /// The identity of an allowed request, cached when a cache is declared.
    fn allowed(&self, session: &Session, answer: &HeaderMap) -> Identity {
        let mut identity = Identity::named(
            self.user
                .as_ref()
                .and_then(|h| answer.get(h)?.to_str().ok())
                .unwrap_or("-"),
        );
        for name in &self.copy {
            for value in answer.get_all(name) {
                identity
                    .upstream_headers
                    .append(name.clone(), value.clone());
            }
        }
        if let Some((key, _)) = &self.cache {
            if let Some(value) = session.headers().get(key) {
                let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
                if verdicts.len() >= MAX_CACHED {
                    verdicts.clear();
                }
                verdicts.insert(digest(value.as_bytes()), (Instant::now(), identity.clone()));
            }
        }
        identity
    }

    /// The subrequest: the method, the prefixed target, the chosen headers and `Host`.
    fn subrequest(&self, session: &Session) -> Option<Request<Empty<Bytes>>> {
        let target = session.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let mut request = Request::builder()
            .method(session.method().clone())
            .uri(format!("{}{target}", self.prefix))
            .body(Empty::new())
            .ok()?;
        let headers = request.headers_mut();
        for name in &self.send {
            for value in session.headers().get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(host) = session.host().and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(HOST, host);
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        Some(request)
    }
}

/// The service's 401/403, relayed.
fn relayed(status: StatusCode, answer: &HeaderMap, body: Bytes) -> Box<Refusal> {
    let mut headers = HeaderMap::new();
    for name in RELAYED {
        for value in answer.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = if body.is_empty() {
        Bytes::from(format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ))
    } else {
        body
    };
    Box::new(Refusal {
        status,
        headers,
        body,
    })
}

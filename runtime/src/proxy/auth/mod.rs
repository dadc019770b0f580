//! Authentication declared (`auth ...;` in `proxy!`, for the proxy or a route): who may
//! send a request, checked before it goes anywhere, with the identity handed to the later
//! phases ([`Session::identity`]), to header edits (`${user}`, `${claim.NAME}`) and to the
//! access log.
//!
//! Each method answers a request it does not accept with 401 and the `WWW-Authenticate`
//! challenge its scheme defines (403 when the credentials are good but not enough, 429 when
//! an API key is over its rate): [`Basic`] (an htpasswd file of bcrypt hashes),
//! [`Bearer`] (a list or file of tokens), [`Jwt`] (signed tokens, keys from PEM or JWKS
//! files), [`ApiKeys`] (keys in a header or query parameter, each with its own rate), and
//! [`External`] (a subrequest to an authorization service, as nginx's `auth_request` and
//! Envoy's `ext_authz`). Files are re-read on SIGHUP (see [`crate::watched`]).

mod api_key;
mod basic;
mod bearer;
mod external;
mod jwt;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::StatusCode;

pub use api_key::{ApiKeys, KeyIn};
pub use basic::Basic;
pub use bearer::Bearer;
pub use external::External;
/// The JWT signature algorithms (for [`JwtKey::File`]).
pub use jsonwebtoken::Algorithm;
pub use jwt::{Jwt, JwtKey};

use crate::proxy::Session;

/// An authentication method.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Basic` against an htpasswd file.
    Basic(Basic),
    /// `Authorization: Bearer` against a list of tokens.
    Bearer(Bearer),
    /// `Authorization: Bearer` with a signed JWT.
    Jwt(Box<Jwt>),
    /// A key in a header or query parameter.
    ApiKey(ApiKeys),
    /// A subrequest to an authorization service.
    External(Box<External>),
}

/// Who a request authenticated as.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The user, token or key name (a JWT's `sub`).
    pub user: String,
    /// A JWT's claims.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// Headers to add to the request sent upstream (from an authorization service).
    pub upstream_headers: HeaderMap,
}

impl Identity {
    /// An identity with only a name.
    pub fn named(user: impl Into<String>) -> Self {
        Identity {
            user: user.into(),
            ..Identity::default()
        }
    }

    /// The claim `name` as text (strings as they are, other values as JSON).
    pub fn claim(&self, name: &str) -> Option<String> {
        let value = self.claims.as_ref()?.get(name)?;
        Some(match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Why a request is not let through: its answer.
#[derive(Debug)]
pub struct Refusal {
    /// 401, 403, 429 or 503.
    pub status: StatusCode,
    /// Headers of the answer (`WWW-Authenticate`, `Retry-After`, ...).
    pub headers: HeaderMap,
    /// A line saying why.
    pub body: Bytes,
}

impl Refusal {
    /// 401 with `challenge` in `WWW-Authenticate`.
    pub(crate) fn unauthorized(challenge: HeaderValue, why: &str) -> Box<Refusal> {
        let mut headers = HeaderMap::new();
        headers.insert(WWW_AUTHENTICATE, challenge);
        Box::new(Refusal {
            status: StatusCode::UNAUTHORIZED,
            headers,
            body: Bytes::from(format!("401 Unauthorized: {why}\n")),
        })
    }

    /// `status` with a line saying why.
    pub(crate) fn status(status: StatusCode, why: &str) -> Box<Refusal> {
        Box::new(Refusal {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(format!(
                "{} {}: {why}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )),
        })
    }
}

/// A method's verdict on a request (the refusal boxed: the common verdict is a pass).
pub type Verdict = Result<Identity, Box<Refusal>>;

impl Auth {
    /// The verdict of the methods that decide at once (every one but [`External`] and
    /// [`Basic`], whose bcrypt runs off the runtime's threads): `None` for those two.
    pub fn check_now(&self, session: &Session) -> Option<Verdict> {
        match self {
            Auth::Bearer(b) => Some(b.check(session.headers())),
            Auth::Jwt(j) => Some(j.check(session.headers())),
            Auth::ApiKey(k) => Some(k.check(session)),
            Auth::Basic(b) => b.check_cached(session.headers()),
            Auth::External(_) => None,
        }
    }

    /// Why the method cannot work as configured (a file that does not load), for the
    /// start and `-t`.
    pub fn check_files(&self) -> std::io::Result<()> {
        match self {
            Auth::Basic(b) => b.check_files(),
            Auth::Bearer(b) => b.check_files(),
            Auth::Jwt(j) => j.check_files(),
            Auth::ApiKey(k) => k.check_files(),
            Auth::External(_) => Ok(()),
        }
    }
}

/// The credentials after `Authorization: SCHEME `, if the request has them (the scheme
/// compared without case, RFC 9110 §11.1).
pub(crate) fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim_start())
}

/// A challenge value built from text the macro or a config checked; a value that would
/// not be a header falls back to the bare scheme.
pub(crate) fn challenge(text: &str, scheme: &'static str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(scheme))
}

/// The SHA-256 of `data`: credentials are looked up by their digest, so a lookup takes the
/// same time whatever prefix of a valid one a guess shares.
pub(crate) fn digest(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

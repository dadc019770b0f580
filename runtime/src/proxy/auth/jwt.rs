//! `auth jwt { ... }`: JSON Web Tokens (RFC 7519) in `Authorization: Bearer`, verified
//! with the `jsonwebtoken` crate: the signature (HS256/384/512 with a secret, RS256/384/512
//! and PS256/384/512 with RSA keys, ES256/384 with EC keys, EdDSA), `exp` and `nbf` with a
//! leeway, the issuer, the audience and required claims. Keys come from PEM files, secret
//! files or a JWKS file, each re-read on SIGHUP. A key declared for one algorithm verifies
//! that algorithm only (no algorithm confusion); a token's `kid` picks among keys that have
//! one. The identity is the `sub` claim, and every claim is readable in later phases and
//! in header edits (`${claim.NAME}`).

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{credentials, Identity, Refusal, Verdict};
use crate::watched::Watched;

/// Where a JWT key comes from.
#[derive(Debug, Clone)]
pub enum JwtKey {
    /// A PEM public key (RSA, EC or Ed25519) or an HMAC secret file, for one algorithm.
    File(Algorithm, String),
    /// A JWKS file (`{"keys": [...]}`).
    Jwks(String),
}

/// Keys loaded from one source: each with its `kid` and the algorithms it verifies.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<(Option<String>, Vec<Algorithm>, DecodingKey)>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// JWT verification settings.
#[derive(Debug, Clone)]
pub struct Jwt {
    keys: Vec<Arc<Watched<KeySet>>>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    required: Vec<String>,
    leeway: Duration,
}

impl Jwt {
    /// Verifies tokens with `keys` (read now and on every SIGHUP); `exp` required, 60 s of
    /// leeway, any issuer and audience until set.
    pub fn new(keys: impl IntoIterator<Item = JwtKey>) -> Self {
        let keys = keys
            .into_iter()
            .map(|key| match key {
                JwtKey::Jwks(path) => Watched::open(path, parse_jwks),
                JwtKey::File(alg, path) => Watched::open(path, parser_for(alg)),
            })
            .collect();
        Jwt {
            keys,
            issuers: Vec::new(),
            audiences: Vec::new(),
            required: Vec::new(),
            leeway: Duration::from_secs(60),
        }
    }

    /// Accepts tokens whose `iss` is one of `issuers` (and requires `iss`).
    pub fn issuers<'a>(mut self, issuers: impl IntoIterator<Item = &'a str>) -> Self {
        self.issuers = issuers.into_iter().map(str::to_owned).collect();
        self
    }

    /// Accepts tokens whose `aud` names one of `audiences` (and requires `aud`).
    pub fn audiences<'a>(mut self, audiences: impl IntoIterator<Item = &'a str>) -> Self {
        self.audiences = audiences.into_iter().map(str::to_owned).collect();
        self
    }

    /// Claims every token must carry (beyond `exp`).
    pub fn require<'a>(mut self, claims: impl IntoIterator<Item = &'a str>) -> Self {
        self.required = claims.into_iter().map(str::to_owned).collect();
        self
    }

    /// Clock skew allowed on `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The first key file's load error, if one never loaded.
    pub fn check_files(&self) -> std::io::Result<()> {
        self.keys.iter().try_for_each(|k| k.check())
    }

    /// Whether the request carries a valid token.
    pub fn check(&self, headers: &HeaderMap) -> Verdict {
        let Some(token) = credentials(headers, "bearer") else {
            return Err(refuse(None));
        };
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| refuse(Some("malformed token")))?;
        let validation = self.validation(header.alg);
        let mut last = "no key verifies this token";
        for set in &self.keys {
            let set = set.current();
            for (kid, algs, key) in &set.keys {
                if !algs.contains(&header.alg)
                    || (kid.is_some() && header.kid.is_some() && kid != &header.kid)
                {
                    continue;
                }
                match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                    token,
                    key,
                    &validation,
                ) {
                    Ok(data) => {
                        if let Some(missing) =
                            self.required.iter().find(|c| !data.claims.contains_key(*c))
                        {
                            tracing::debug!(claim = %missing, "JWT refused: a required claim is missing");
                            return Err(refuse(Some("the token lacks a required claim")));
                        }
                        return Ok(identity(data.claims));
                    }
                    Err(e) => last = reason(e.kind()),
                }
            }
        }
        Err(refuse(Some(last)))
    }

    /// The checks for a token signed with `alg`.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        let mut required = vec!["exp".to_owned()];
        if !self.issuers.is_empty() {
            v.set_issuer(&self.issuers);
            required.push("iss".to_owned());
        }
        if self.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audiences);
            required.push("aud".to_owned());
        }
        required.extend(self.required.iter().cloned());
        v.set_required_spec_claims(&required);
        v
    }
}

/// The identity a token's claims make.
fn identity(claims: serde_json::Map<String, serde_json::Value>) -> Identity {
    let user = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .unwrap_or("jwt")
        .to_owned();
    Identity {
        user,
        claims: Some(Arc::new(claims)),
        upstream_headers: HeaderMap::new(),
    }
}

/// What to tell a client about a failed token (RFC 6750 `error_description`).
fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet",
        K::InvalidIssuer => "the token's issuer is not accepted",
        K::InvalidAudience => "the token's audience is not accepted",
        K::MissingRequiredClaim(_) => "the token lacks a required claim",
        K::InvalidSignature => "the signature does not verify",
        _ => "the token is not valid",
    }
}

/// 401 with RFC 6750's challenge.
fn refuse(why: Option<&str>) -> Box<Refusal> {
    match why {
        None => super::bearer::refuse("a bearer token is required", false),
        Some(why) => {
            let challenge = HeaderValue::from_str(&format!(
                "Bearer error=\"invalid_token\", error_description=\"{why}\""
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
            Refusal::unauthorized(challenge, why)
        }
    }
}

/// The parser of a key file for `alg`.
fn parser_for(alg: Algorithm) -> fn(&str) -> Result<KeySet, String> {
    use Algorithm as A;
    match alg {
        A::HS256 => |t| secret(t, A::HS256),
        A::HS384 => |t| secret(t, A::HS384),
        A::HS512 => |t| secret(t, A::HS512),
        A::RS256 => |t| rsa(t, A::RS256),
        A::RS384 => |t| rsa(t, A::RS384),
        A::RS512 => |t| rsa(t, A::RS512),
        A::PS256 => |t| rsa(t, A::PS256),
        A::PS384 => |t| rsa(t, A::PS384),
        A::PS512 => |t| rsa(t, A::PS512),
        A::ES256 => |t| ec(t, A::ES256),
        A::ES384 => |t| ec(t, A::ES384),
        A::EdDSA => |t| one(DecodingKey::from_ed_pem(t.as_bytes()), A::EdDSA),
    }
}

fn secret(text: &str, alg: Algorithm) -> Result<KeySet, String> {
    let secret = text.trim();
    if secret.len() < 32 {
        return Err(format!(
            "an {alg:?} secret needs at least 32 bytes (this one has {}): a shorter one can be guessed",
            secret.len()
        ));
    }
    one(Ok(DecodingKey::from_secret(secret.as_bytes())), alg)
}

fn rsa(text: &str, alg: Algorithm) -> Result<KeySet, String> {
    one(DecodingKey::from_rsa_pem(text.as_bytes()), alg)
}

fn ec(text: &str, alg: Algorithm) -> Result<KeySet, String> {
    one(DecodingKey::from_ec_pem(text.as_bytes()), alg)
}

fn one(key: jsonwebtoken::errors::Result<DecodingKey>, alg: Algorithm) -> Result<KeySet, String> {
    let key = key.map_err(|e| format!("not a {alg:?} key: {e}"))?;
    Ok(KeySet {
        keys: vec![(None, vec![alg], key)],
    })
}

/// A JWKS document: every key it has that this crate supports, each for the algorithm it
/// names (`alg`) or, without one, those of its type.
fn parse_jwks(text: &str) -> Result<KeySet, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let algs = match jwk.common.key_algorithm.and_then(algorithm_of) {
            Some(alg) => vec![alg],
            None => algorithms_of_type(&jwk.algorithm),
        };
        keys.push((jwk.common.key_id.clone(), algs, key));
    }
    if keys.is_empty() {
        return Err("the JWKS document has no usable key".to_owned());
    }
    Ok(KeySet { keys })
}

fn algorithm_of(alg: KeyAlgorithm) -> Option<Algorithm> {
    use {Algorithm as A, KeyAlgorithm as K};
    Some(match alg {
        K::HS256 => A::HS256,
        K::HS384 => A::HS384,
        K::HS512 => A::HS512,
        K::RS256 => A::RS256,
        K::RS384 => A::RS384,
        K::RS512 => A::RS512,
        K::PS256 => A::PS256,
        K::PS384 => A::PS384,
        K::PS512 => A::PS512,
        K::ES256 => A::ES256,
        K::ES384 => A::ES384,
        K::EdDSA => A::EdDSA,
        _ => return None,
    })
}

fn algorithms_of_type(params: &AlgorithmParameters) -> Vec<Algorithm> {
    use Algorithm as A;
    match params {
        AlgorithmParameters::RSA(_) => {
            vec![A::RS256, A::RS384, A::RS512, A::PS256, A::PS384, A::PS512]
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![A::ES256],
            EllipticCurve::P384 => vec![A::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![A::EdDSA],
        AlgorithmParameters::OctetKey(_) => vec![A::HS256, A::HS384, A::HS512],
    }
}

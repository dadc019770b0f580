//! Cross-origin resource sharing (the Fetch standard's CORS protocol), declared: which
//! origins may read the proxy's answers from a browser, with which methods and headers.
//!
//! A [`Cors`] policy answers preflight requests itself (they never reach an upstream) and
//! puts the `Access-Control-*` headers on every answer to an allowed origin — proxied
//! ones, the proxy's own (`respond` routes, 401, 404, 429, 502...) included — with
//! `Vary: Origin` where the answer depends on the origin. The policy owns these headers:
//! whatever an upstream says in `Access-Control-Allow-*` is replaced or removed.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// Which origins may read answers.
#[derive(Debug, Clone)]
enum Origins {
    /// Every origin (`*`).
    Any,
    /// These, each exact or a wildcard over subdomains.
    List(Vec<OriginPattern>),
}

/// One allowed origin: `https://app.example.com` or `https://*.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginPattern {
    /// Exactly this origin (scheme, host and port; compared without case).
    Exact(String),
    /// `SCHEME://` and any subdomain of the host, with the port if given.
    Subdomains { scheme: String, suffix: String },
}

impl OriginPattern {
    fn parse(text: &str) -> OriginPattern {
        let lower = text.trim_end_matches('/').to_ascii_lowercase();
        match lower.split_once("://*.") {
            Some((scheme, suffix)) => OriginPattern::Subdomains {
                scheme: scheme.to_owned(),
                suffix: suffix.to_owned(),
            },
            None => OriginPattern::Exact(lower),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            OriginPattern::Subdomains { scheme, suffix } => {
                let Some((s, host)) = origin.split_once("://") else {
                    return false;
                };
                s.eq_ignore_ascii_case(scheme)
                    && host.len() > suffix.len() + 1
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// A CORS policy: built with [`Cors::new`] and the `allow_*` methods, or declared with
/// `cors { ... }` in `proxy!` (for the whole proxy or one route).
///
/// ```
/// use std::time::Duration;
/// use pingora_dsl_runtime::proxy::route::Cors;
/// use pingora_dsl_runtime::{HeaderName, Method};
///
/// let cors = Cors::new(["https://app.example.com", "https://*.example.com"])
///     .allow_methods([Method::GET, Method::POST])
///     .allow_headers([HeaderName::from_static("content-type")])
///     .expose_headers([HeaderName::from_static("x-request-id")])
///     .allow_credentials(true)
///     .max_age(Duration::from_secs(600));
/// assert!(cors.allows_origin("https://www.example.com"));
/// assert!(!cors.allows_origin("https://example.org"));
/// ```
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    /// The origins as given, for the effective configuration.
    origin_texts: Vec<String>,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    /// `None`: any header a preflight asks for.
    headers: Option<Vec<HeaderName>>,
    headers_value: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

/// Methods allowed when none are declared: the CORS-safelisted ones.
const DEFAULT_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

/// The headers a policy sets, removed from answers to origins it does not allow.
const OWNED: [HeaderName; 4] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
];

impl Cors {
    /// A policy allowing `origins` (`"*"` among them allows every origin; `SCHEME://*.HOST`
    /// any subdomain of HOST) to use the safelisted methods (GET, HEAD, POST) and any
    /// request header, without credentials.
    pub fn new<'a>(origins: impl IntoIterator<Item = &'a str>) -> Self {
        let mut cors = Cors {
            origins: Origins::List(Vec::new()),
            origin_texts: Vec::new(),
            methods: DEFAULT_METHODS.to_vec(),
            methods_value: join(DEFAULT_METHODS.iter().map(Method::as_str)),
            headers: None,
            headers_value: None,
            expose: None,
            credentials: false,
            max_age: None,
        };
        cors.set_origins(origins);
        cors
    }

    /// Replaces the allowed origins (as [`Cors::new`] takes them), e.g. from a config file.
    pub fn set_origins<'a>(&mut self, origins: impl IntoIterator<Item = &'a str>) {
        let texts: Vec<String> = origins.into_iter().map(str::to_owned).collect();
        self.origins = if texts.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            Origins::List(texts.iter().map(|o| OriginPattern::parse(o)).collect())
        };
        self.origin_texts = texts;
    }

    /// The allowed origins as given (`*`: any).
    pub fn origins(&self) -> &[String] {
        &self.origin_texts
    }

    /// Whether answers may be read with credentials.
    pub fn credentials(&self) -> bool {
        self.credentials
    }

    /// The methods a preflight may ask for.
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self.methods_value = join(self.methods.iter().map(Method::as_str));
        self
    }

    /// The request headers a preflight may ask for (instead of any).
    pub fn allow_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let headers: Vec<HeaderName> = headers.into_iter().collect();
        self.headers_value = Some(join(headers.iter().map(HeaderName::as_str)));
        self.headers = Some(headers);
        self
    }

    /// Response headers a page may read beyond the safelisted ones.
    pub fn expose_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let headers: Vec<HeaderName> = headers.into_iter().collect();
        self.expose = (!headers.is_empty()).then(|| join(headers.iter().map(HeaderName::as_str)));
        self
    }

    /// Whether requests with cookies or HTTP authentication may be read
    /// (`Access-Control-Allow-Credentials: true`; the origin is then echoed, never `*`).
    pub fn allow_credentials(mut self, on: bool) -> Self {
        self.credentials = on;
        self
    }

    /// How long a browser may cache a preflight's answer.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(HeaderValue::from(age.as_secs()));
        self
    }

    /// Whether `origin` (`https://app.example.com`) may read answers.
    pub fn allows_origin(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|p| p.matches(origin)),
        }
    }

    /// The value of `Access-Control-Allow-Origin` for `origin`, if it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if matches!(self.origins, Origins::Any) && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        self.allows_origin(origin.to_str().ok()?)
            .then(|| origin.clone())
    }

    /// Whether answers differ by origin (then they carry `Vary: Origin`).
    fn varies(&self) -> bool {
        !matches!(self.origins, Origins::Any) || self.credentials
    }

    /// The answer to `headers` if they are a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`): 204 with the policy's headers, or 403 saying why
    /// the origin, method or a header is not allowed. `None` for any other request.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Preflight> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?;
        let asked = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut answer = HeaderMap::new();
        if self.varies() {
            add_vary(&mut answer, "origin");
        }
        let refusal = self.refusal(origin, asked, headers);
        if let Some(why) = refusal {
            return Some(Preflight {
                status: StatusCode::FORBIDDEN,
                headers: answer,
                body: Bytes::from(format!("CORS preflight refused: {why}\n")),
            });
        }
        self.decorate_allowed(origin, &mut answer);
        answer.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods_value.clone(),
        );
        let allowed_headers = match &self.headers_value {
            Some(list) => Some(list.clone()),
            None => headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        };
        if let Some(list) = allowed_headers {
            answer.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, list);
        }
        if let Some(age) = &self.max_age {
            answer.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        Some(Preflight {
            status: StatusCode::NO_CONTENT,
            headers: answer,
            body: Bytes::new(),
        })
    }

    /// Why a preflight from `origin` asking for method `asked` and the headers in its
    /// `Access-Control-Request-Headers` is refused, if it is.
    fn refusal(
        &self,
        origin: &HeaderValue,
        asked: &HeaderValue,
        headers: &HeaderMap,
    ) -> Option<String> {
        let shown = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        if self.allow_origin(origin).is_none() {
            return Some(format!("origin {} is not allowed", shown(origin)));
        }
        let method_ok = self
            .methods
            .iter()
            .any(|m| m.as_str().as_bytes() == asked.as_bytes());
        if !method_ok {
            return Some(format!("method {} is not allowed", shown(asked)));
        }
        let (Some(allowed), Some(requested)) = (
            &self.headers,
            headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS),
        ) else {
            return None;
        };
        let requested = requested.to_str().unwrap_or("");
        requested
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .find(|name| {
                !allowed
                    .iter()
                    .any(|a| a.as_str().eq_ignore_ascii_case(name))
            })
            .map(|name| format!("header {name} is not allowed"))
    }

    /// Puts the policy's headers on an answer to a request whose `Origin` was `origin`
    /// (`None`: no `Origin`, not a cross-origin request).
    pub fn decorate(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        if self.varies() {
            add_vary(response, "origin");
        }
        match origin {
            Some(origin) if self.allow_origin(origin).is_some() => {
                self.decorate_allowed(origin, response);
            }
            _ => {
                for name in OWNED {
                    response.remove(name);
                }
            }
        }
    }

    /// The headers of an answer to an allowed origin.
    fn decorate_allowed(&self, origin: &HeaderValue, response: &mut HeaderMap) {
        if let Some(value) = self.allow_origin(origin) {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        }
        if self.credentials {
            response.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        } else {
            response.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        }
        match &self.expose {
            Some(list) => {
                response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, list.clone());
            }
            None => {
                response.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
            }
        }
    }
}

/// The answer to a preflight.
#[derive(Debug)]
pub struct Preflight {
    /// 204, or 403 when refused.
    pub status: StatusCode,
    /// The `Access-Control-*` and `Vary` headers.
    pub headers: HeaderMap,
    /// Empty, or why it was refused.
    pub body: Bytes,
}

/// `a, b, c` as a header value (the parts are header names or methods: valid tokens).
fn join<'a>(parts: impl Iterator<Item = &'a str>) -> HeaderValue {
    let text = parts.collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Adds `name` to `Vary` unless it is there (or `Vary: *`).
fn add_vary(headers: &mut HeaderMap, name: &'static str) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|n| n == "*" || n.eq_ignore_ascii_case(name))
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preflight_headers(origin: &str, method: &str, asked: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_str(origin).expect("origin"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).expect("method"),
        );
        if let Some(asked) = asked {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(asked).expect("headers"),
            );
        }
        h
    }

    #[test]
    fn origins_exact_and_wildcard() {
        let cors = Cors::new(["https://app.example.com", "https://*.example.org:8443"]);
        assert!(cors.allows_origin("https://APP.example.com"));
        assert!(!cors.allows_origin("http://app.example.com"));
        assert!(cors.allows_origin("https://a.b.example.org:8443"));
        assert!(!cors.allows_origin("https://example.org:8443"));
        assert!(!cors.allows_origin("https://badexample.org:8443"));
        assert!(!cors.allows_origin("https://a.example.org"));
    }

    #[test]
    fn preflights_are_answered_or_refused_with_a_reason() {
        let cors = Cors::new(["https://app.example.com"])
            .allow_methods([Method::GET, Method::PUT])
            .allow_headers([HeaderName::from_static("content-type")])
            .max_age(Duration::from_secs(60));
        let ok = cors
            .preflight(
                &Method::OPTIONS,
                &preflight_headers("https://app.example.com", "PUT", Some("Content-Type")),
            )
            .expect("a preflight");
        assert_eq!(ok.status, StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(ok.headers["access-control-allow-methods"], "GET, PUT");
        assert_eq!(ok.headers["access-control-allow-headers"], "content-type");
        assert_eq!(ok.headers["access-control-max-age"], "60");
        assert_eq!(ok.headers["vary"], "origin");
        let refused = |origin, method, asked| {
            let p = cors
                .preflight(&Method::OPTIONS, &preflight_headers(origin, method, asked))
                .expect("a preflight");
            assert_eq!(p.status, StatusCode::FORBIDDEN);
            assert!(p.headers.get("access-control-allow-origin").is_none());
            String::from_utf8_lossy(&p.body).into_owned()
        };
        assert!(refused("https://evil.example", "GET", None).contains("origin"));
        assert!(refused("https://app.example.com", "DELETE", None).contains("method DELETE"));
        assert!(refused("https://app.example.com", "GET", Some("x-secret")).contains("x-secret"));
        assert!(cors
            .preflight(&Method::GET, &preflight_headers("https://a", "GET", None))
            .is_none());
    }

    #[test]
    fn answers_are_decorated_and_foreign_cors_headers_removed() {
        let cors = Cors::new(["*"]).expose_headers([HeaderName::from_static("x-request-id")]);
        let mut h = HeaderMap::new();
        cors.decorate(Some(&HeaderValue::from_static("https://x.test")), &mut h);
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
        assert!(
            h.get("vary").is_none(),
            "any origin without credentials: no Vary"
        );

        let strict = Cors::new(["https://app.test"]).allow_credentials(true);
        let mut h = HeaderMap::new();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert("vary", HeaderValue::from_static("Accept-Encoding"));
        strict.decorate(Some(&HeaderValue::from_static("https://evil.test")), &mut h);
        assert!(h.get("access-control-allow-origin").is_none());
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "origin"]);
        strict.decorate(Some(&HeaderValue::from_static("https://app.test")), &mut h);
        assert_eq!(h["access-control-allow-origin"], "https://app.test");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h.get_all("vary").iter().count(), 2, "Vary: Origin once");
    }
}

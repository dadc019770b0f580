//! RFC 9111 for a shared cache: which responses may be stored, for how long they are fresh,
//! and how old a stored one is. Pure functions of heads and times, tested here.

use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, CACHE_CONTROL, DATE, EXPIRES, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};

/// The response directives of `Cache-Control` a shared cache acts on (RFC 9111 §5.2.2,
/// RFC 5861). Unknown directives are ignored, as the RFC asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`: never stored.
    pub no_store: bool,
    /// `no-cache` (without field names): stored, but revalidated before every use.
    pub no_cache: bool,
    /// `private`: for the user's own cache only, never a shared one.
    pub private: bool,
    /// `public`: storable even for a request with `Authorization`.
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `max-age`, in seconds.
    pub max_age: Option<u64>,
    /// `s-maxage`, in seconds: a shared cache's own `max-age` (and implies
    /// `proxy-revalidate`).
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate`, in seconds.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error`, in seconds.
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// The directives of every `Cache-Control` field in `headers`. A malformed value of a
    /// time directive makes the response not storable by that directive (RFC 9111 §4.2.1:
    /// an invalid `max-age` is treated as stale), here: as if it were 0.
    pub fn of(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for part in text.split(',') {
                let (name, arg) = match part.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (part.trim(), None),
                };
                let secs = || arg.map_or(Some(0), |a| Some(a.parse::<u64>().unwrap_or(0)));
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    // `no-cache="Set-Cookie"` names fields; treated as plain no-cache.
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                    "max-age" => d.max_age = secs(),
                    "s-maxage" => d.s_maxage = secs(),
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
    }
}

/// Status codes a cache may store without explicit freshness (RFC 9110 §15.1,
/// "heuristically cacheable").
pub fn cacheable_by_default(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Why a response is not stored, for the debug log; `None` if it may be.
///
/// `default_ttl` is the declared freshness for responses without their own (heuristic
/// freshness is used only when declared).
pub fn not_storable(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    directives: &Directives,
    default_ttl: Option<Duration>,
) -> Option<&'static str> {
    if method != Method::GET {
        return Some("only GET responses are stored");
    }
    if status.is_informational() || status == StatusCode::PARTIAL_CONTENT {
        return Some("not a complete final response");
    }
    if status == StatusCode::NOT_MODIFIED {
        return Some("a 304 is not a response to store");
    }
    if directives.no_store {
        return Some("no-store");
    }
    if directives.private {
        return Some("private");
    }
    if request.contains_key(AUTHORIZATION)
        && !(directives.public || directives.must_revalidate || directives.s_maxage.is_some())
    {
        return Some("a request with Authorization, and the response does not allow sharing");
    }
    if vary_names(response).any(|name| name == "*") {
        return Some("Vary: *");
    }
    if response.contains_key(SET_COOKIE) {
        return Some("Set-Cookie (one user's state)");
    }
    let explicit = directives.s_maxage.is_some()
        || directives.max_age.is_some()
        || response.contains_key(EXPIRES)
        || directives.no_cache;
    let declared = default_ttl.is_some() && cacheable_by_default(status);
    if !explicit && !declared {
        return Some("no freshness information, and none declared for this status");
    }
    None
}

/// The header names a response varies by, lowercased (`*` included as is).
pub fn vary_names(response: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    response
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

/// How long a response stays fresh (RFC 9111 §4.2.1, for a shared cache): `s-maxage`,
/// else `max-age`, else `Expires` − `Date`, else the declared `default_ttl`; zero under
/// `no-cache`.
pub fn freshness_lifetime(
    response: &HeaderMap,
    directives: &Directives,
    default_ttl: Option<Duration>,
    received: SystemTime,
) -> Duration {
    if directives.no_cache {
        return Duration::ZERO;
    }
    if let Some(secs) = directives.s_maxage.or(directives.max_age) {
        return Duration::from_secs(secs);
    }
    if let Some(expires) = response.get(EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired.
        let Some(expires) = http_date(expires) else {
            return Duration::ZERO;
        };
        let date = response.get(DATE).and_then(http_date).unwrap_or(received);
        return expires.duration_since(date).unwrap_or(Duration::ZERO);
    }
    default_ttl.unwrap_or(Duration::ZERO)
}

/// The age a response already had when it arrived (RFC 9111 §4.2.3, corrected initial age):
/// its `Age` plus the time the request took, or the time since its `Date`, whichever is
/// more.
pub fn initial_age(response: &HeaderMap, requested: SystemTime, received: SystemTime) -> Duration {
    let age_value = response
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let delay = received.duration_since(requested).unwrap_or(Duration::ZERO);
    let apparent = response
        .get(DATE)
        .and_then(http_date)
        .and_then(|date| received.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    apparent.max(age_value + delay)
}

/// An HTTP date field's value.
pub fn http_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        h
    }

    #[test]
    fn directives_are_parsed_case_insensitively_with_quoted_values() {
        let d = Directives::of(&headers(&[
            ("cache-control", "Public, MAX-AGE=\"60\""),
            (
                "cache-control",
                "s-maxage=30, stale-while-revalidate=5, stale-if-error=x",
            ),
        ]));
        assert!(d.public);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert_eq!(d.stale_while_revalidate, Some(5));
        assert_eq!(d.stale_if_error, Some(0));
    }

    #[test]
    fn storability_follows_the_rfc() {
        let get = Method::GET;
        let none = HeaderMap::new();
        let ok = StatusCode::OK;
        let check = |req: &HeaderMap, status, resp: &[(&'static str, &str)], ttl| {
            let resp = headers(resp);
            not_storable(&get, req, status, &resp, &Directives::of(&resp), ttl)
        };
        assert_eq!(
            check(&none, ok, &[("cache-control", "max-age=5")], None),
            None
        );
        assert!(
            check(&none, ok, &[], None).is_some(),
            "no freshness, none declared"
        );
        assert_eq!(check(&none, ok, &[], Some(Duration::from_secs(1))), None);
        assert!(check(
            &none,
            StatusCode::CREATED,
            &[],
            Some(Duration::from_secs(1))
        )
        .is_some());
        assert!(check(&none, ok, &[("cache-control", "no-store, max-age=5")], None).is_some());
        assert!(check(&none, ok, &[("cache-control", "private, max-age=5")], None).is_some());
        assert!(check(
            &none,
            ok,
            &[("cache-control", "max-age=5"), ("vary", "a, *")],
            None
        )
        .is_some());
        let auth = headers(&[("authorization", "Bearer x")]);
        assert!(check(&auth, ok, &[("cache-control", "max-age=5")], None).is_some());
        assert_eq!(
            check(&auth, ok, &[("cache-control", "public, max-age=5")], None),
            None
        );
        assert_eq!(
            check(&auth, ok, &[("cache-control", "s-maxage=5")], None),
            None
        );
        let head = not_storable(
            &Method::HEAD,
            &none,
            ok,
            &headers(&[("cache-control", "max-age=5")]),
            &Directives::default(),
            None,
        );
        assert!(head.is_some());
    }

    #[test]
    fn freshness_prefers_s_maxage_then_max_age_then_expires() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now);
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let life = |pairs: &[(&'static str, &str)]| {
            let h = headers(pairs);
            freshness_lifetime(&h, &Directives::of(&h), Some(Duration::from_secs(7)), now)
        };
        assert_eq!(
            life(&[("cache-control", "max-age=10, s-maxage=20")]).as_secs(),
            20
        );
        assert_eq!(life(&[("cache-control", "max-age=10")]).as_secs(), 10);
        assert_eq!(
            life(&[("date", &date), ("expires", &expires)]).as_secs(),
            90
        );
        assert_eq!(life(&[("expires", "0")]).as_secs(), 0);
        assert_eq!(life(&[]).as_secs(), 7);
        assert_eq!(
            life(&[("cache-control", "no-cache, max-age=10")]).as_secs(),
            0
        );
    }

    #[test]
    fn initial_age_counts_age_delay_and_date() {
        let requested = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let received = requested + Duration::from_secs(2);
        let h = headers(&[("age", "10")]);
        assert_eq!(initial_age(&h, requested, received).as_secs(), 12);
        let date = httpdate::fmt_http_date(received - Duration::from_secs(30));
        let h = headers(&[("age", "10"), ("date", &date)]);
        assert_eq!(initial_age(&h, requested, received).as_secs(), 30);
    }
}

//! Answers made from a stored response: whole, as 304 to a matching conditional request
//! (RFC 9110 §13), or as one range of it (§14).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LOCATION, CONTENT_RANGE,
    DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, Response, StatusCode};

use super::rules::http_date;
use super::store::Stored;

/// How the cache answered, in the status header (`x-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// From a fresh stored response.
    Hit,
    /// From the origin; stored if it may be.
    Miss,
    /// From a stale stored response (while it is refreshed, or the origin failed).
    Stale,
    /// From a stored response the origin confirmed with a 304.
    Revalidated,
    /// Not cached (a method or request the cache does not take).
    Bypass,
}

impl CacheStatus {
    /// The header value.
    pub fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        })
    }
}

/// The fields of a request a stored answer depends on, found in one pass over its headers
/// (usually a few: one pass costs less than a hashed lookup per field).
#[derive(Debug, Default)]
pub struct Asks<'a> {
    /// `If-None-Match`.
    pub if_none_match: Option<&'a HeaderValue>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a HeaderValue>,
    /// `Range`.
    pub range: Option<&'a HeaderValue>,
    /// `If-Range`.
    pub if_range: Option<&'a HeaderValue>,
    /// Whether it has `Authorization`.
    pub authorization: bool,
}

impl<'a> Asks<'a> {
    /// What `headers` ask.
    pub fn of(headers: &'a HeaderMap) -> Asks<'a> {
        let mut asks = Asks::default();
        for (name, value) in headers {
            if name == IF_NONE_MATCH {
                asks.if_none_match.get_or_insert(value);
            } else if name == IF_MODIFIED_SINCE {
                asks.if_modified_since.get_or_insert(value);
            } else if name == RANGE {
                asks.range.get_or_insert(value);
            } else if name == IF_RANGE {
                asks.if_range.get_or_insert(value);
            } else if name == AUTHORIZATION {
                asks.authorization = true;
            }
        }
        asks
    }
}

/// The answer from `stored` to a request that `asks`, labelled `label`.
pub fn from_stored(
    stored: &Stored,
    request: &Asks<'_>,
    now: Instant,
    label: (&HeaderName, CacheStatus),
) -> Response<Bytes> {
    let age = stored.age(now);
    if not_modified(stored, request) {
        return not_modified_answer(stored, age, label);
    }
    let mut response = Response::new(stored.body.clone());
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers.clone();
    // (`Accept-Ranges: bytes` is stored with every 200, see `Stored::arriving`.)
    if stored.status == StatusCode::OK {
        if let Some(range) = request.range.filter(|_| if_range_holds(stored, request)) {
            narrow(&mut response, range);
        }
    }
    finish(response.headers_mut(), age, label);
    response
}

/// Whether the request's conditionals say its copy is current (RFC 9110 §13.2.2:
/// `If-None-Match` first; `If-Modified-Since` only without it).
fn not_modified(stored: &Stored, request: &Asks<'_>) -> bool {
    if !stored.status.is_success() {
        return false;
    }
    if let Some(tags) = request.if_none_match {
        let Some(ours) = stored.etag() else {
            return false;
        };
        return etag_listed(tags, ours);
    }
    let (Some(since), Some(modified)) = (
        request.if_modified_since.and_then(http_date),
        stored.last_modified().and_then(http_date),
    ) else {
        return false;
    };
    modified <= since
}

/// Whether `ours` is in the `If-None-Match` list (weak comparison), or the list is `*`.
fn etag_listed(list: &HeaderValue, ours: &HeaderValue) -> bool {
    let Ok(list) = list.to_str() else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = match ours.to_str() {
        Ok(tag) => opaque(tag),
        Err(_) => return false,
    };
    list.split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

/// A 304 with the fields RFC 9110 §15.4.5 asks for.
fn not_modified_answer(
    stored: &Stored,
    age: Duration,
    label: (&HeaderName, CacheStatus),
) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for name in [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ] {
        for value in stored.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    finish(headers, age, label);
    response
}

/// Whether a `Range` applies: no `If-Range`, or one naming the stored response (a strong
/// `ETag`, or exactly its `Last-Modified`).
fn if_range_holds(stored: &Stored, request: &Asks<'_>) -> bool {
    let Some(condition) = request.if_range else {
        return true;
    };
    let bytes = condition.as_bytes();
    if bytes.starts_with(b"\"") {
        return stored.etag().is_some_and(|ours| ours.as_bytes() == bytes);
    }
    stored
        .last_modified()
        .is_some_and(|ours| ours.as_bytes() == bytes)
}

/// Narrows a whole 200 answer to the one range `range` asks for: 206, or 416 when it lies
/// past the end. Several ranges, or a form not understood, keep the whole answer (as a
/// server may).
fn narrow(response: &mut Response<Bytes>, range: &HeaderValue) {
    let len = response.body().len() as u64;
    let Some(spec) = range
        .to_str()
        .ok()
        .and_then(|r| r.trim().strip_prefix("bytes="))
        .filter(|r| !r.contains(','))
    else {
        return;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return;
    };
    let bounds = match (first.trim(), last.trim()) {
        ("", suffix) => suffix
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| (len.saturating_sub(n), len.saturating_sub(1))),
        (start, "") => start
            .parse::<u64>()
            .ok()
            .map(|s| (s, len.saturating_sub(1))),
        (start, end) => match (start.parse::<u64>(), end.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => return,
        },
    };
    let Some((start, end)) = bounds else {
        return;
    };
    let headers = response.headers_mut();
    if len == 0 || start >= len {
        *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
        response
            .headers_mut()
            .insert(CONTENT_RANGE, content_range(&format!("bytes */{len}")));
        *response.body_mut() = Bytes::new();
        return;
    }
    headers.insert(
        CONTENT_RANGE,
        content_range(&format!("bytes {start}-{end}/{len}")),
    );
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let part = response.body().slice(start as usize..=end as usize);
    *response.body_mut() = part;
}

fn content_range(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// `Age` and the status header.
fn finish(headers: &mut HeaderMap, age: Duration, (name, status): (&HeaderName, CacheStatus)) {
    headers.insert(AGE, HeaderValue::from(age.as_secs()));
    headers.insert(name.clone(), status.value());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(headers: &[(&'static str, &'static str)], body: &'static [u8]) -> Stored {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(*n, HeaderValue::from_static(v));
        }
        Stored {
            status: StatusCode::OK,
            headers: map,
            body: Bytes::from_static(body),
            vary: Vec::new(),
            arrived: Instant::now(),
            initial_age: Duration::from_secs(3),
            fresh_for: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            shared_with_auth: false,
            default_ttl: None,
        }
    }

    fn ask(stored: &Stored, request: &[(&'static str, &'static str)]) -> Response<Bytes> {
        let mut map = HeaderMap::new();
        for (n, v) in request {
            map.append(*n, HeaderValue::from_static(v));
        }
        let name = HeaderName::from_static("x-cache");
        from_stored(
            stored,
            &Asks::of(&map),
            Instant::now(),
            (&name, CacheStatus::Hit),
        )
    }

    #[test]
    fn whole_answers_carry_age_and_the_label() {
        let s = stored(&[("etag", "\"a\"")], b"hello");
        let r = ask(&s, &[]);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["age"], "3");
        assert_eq!(r.headers()["x-cache"], "HIT");
        assert_eq!(&r.body()[..], b"hello");
    }

    #[test]
    fn conditionals_get_304() {
        let s = stored(
            &[
                ("etag", "W/\"a\""),
                ("last-modified", "Sat, 01 Jan 2022 00:00:00 GMT"),
            ],
            b"hello",
        );
        assert_eq!(ask(&s, &[("if-none-match", "\"b\", \"a\"")]).status(), 304);
        assert_eq!(ask(&s, &[("if-none-match", "*")]).status(), 304);
        assert_eq!(ask(&s, &[("if-none-match", "\"b\"")]).status(), 200);
        let later = ("if-modified-since", "Sun, 02 Jan 2022 00:00:00 GMT");
        let earlier = ("if-modified-since", "Fri, 31 Dec 2021 00:00:00 GMT");
        assert_eq!(ask(&s, &[later]).status(), 304);
        assert_eq!(ask(&s, &[earlier]).status(), 200);
        // If-None-Match decides when both are present.
        assert_eq!(ask(&s, &[("if-none-match", "\"b\""), later]).status(), 200);
        let r = ask(&s, &[later]);
        assert!(r.body().is_empty());
        assert_eq!(r.headers()["etag"], "W/\"a\"");
    }

    #[test]
    fn ranges_of_a_stored_response() {
        let s = stored(&[("etag", "\"a\"")], b"0123456789");
        let r = ask(&s, &[("range", "bytes=2-4")]);
        assert_eq!(r.status(), 206);
        assert_eq!(&r.body()[..], b"234");
        assert_eq!(r.headers()["content-range"], "bytes 2-4/10");
        assert_eq!(&ask(&s, &[("range", "bytes=-3")]).body()[..], b"789");
        assert_eq!(&ask(&s, &[("range", "bytes=8-")]).body()[..], b"89");
        assert_eq!(&ask(&s, &[("range", "bytes=8-100")]).body()[..], b"89");
        let past = ask(&s, &[("range", "bytes=10-")]);
        assert_eq!(past.status(), 416);
        assert_eq!(past.headers()["content-range"], "bytes */10");
        assert_eq!(ask(&s, &[("range", "bytes=0-1,4-5")]).status(), 200);
        assert_eq!(
            ask(&s, &[("range", "bytes=2-4"), ("if-range", "\"b\"")]).status(),
            200
        );
        assert_eq!(
            ask(&s, &[("range", "bytes=2-4"), ("if-range", "\"a\"")]).status(),
            206
        );
    }
}

//! The conditions a route may add to its host, path prefix and methods: an exact path, a
//! path regex, a header, a query parameter, a cookie, the client's address block, the
//! scheme — each one negatable. A route holds them in a list tested only when its fast
//! parts matched, so a route without any costs nothing.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

pub use pingora_dsl_rules::Cidr;

use super::{path_has_prefix, strip_port, HostPattern};
use crate::proxy::Session;

/// What a header, query parameter or cookie must be.
#[derive(Debug, Clone)]
pub enum ValueTest {
    /// Present, with any value.
    Present,
    /// Present with exactly this value (header values compared as bytes; query values as
    /// sent, percent-encoding included).
    Equals(String),
    /// Present with a value the regex finds a match in (anchor it with `^...$` for a whole
    /// match).
    Matches(Regex),
}

impl ValueTest {
    /// `""`, `=VALUE` or `~REGEX`, for a route's label.
    fn describe(&self) -> String {
        match self {
            ValueTest::Present => String::new(),
            ValueTest::Equals(v) => format!("={v}"),
            ValueTest::Matches(re) => format!("~{}", re.as_str()),
        }
    }

    fn holds(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (_, None) => false,
            (ValueTest::Present, Some(_)) => true,
            (ValueTest::Equals(want), Some(v)) => v == want.as_bytes(),
            (ValueTest::Matches(re), Some(v)) => {
                std::str::from_utf8(v).is_ok_and(|v| re.is_match(v))
            }
        }
    }
}

/// One test of a request.
#[derive(Debug, Clone)]
pub enum Test {
    /// The host (as [`RouteMatch::host`](super::RouteMatch::host)).
    Host(HostPattern),
    /// A path prefix at a segment boundary.
    PathPrefix(String),
    /// Exactly this path.
    PathExact(String),
    /// A path the regex matches (anchored or not, as written).
    PathRegex(Regex),
    /// One of these methods.
    Method(Vec<Method>),
    /// A request header.
    Header(HeaderName, ValueTest),
    /// A query parameter, by name as sent.
    Query(String, ValueTest),
    /// A cookie.
    Cookie(String, ValueTest),
    /// A client address in one of these blocks.
    ClientIn(Vec<Cidr>),
    /// The request arrived over TLS (`true`) or cleartext (`false`).
    Https(bool),
    /// A claim of the request's JWT (the proxy's `auth jwt`, checked before routing): a
    /// string as it is, a number or boolean as JSON text; an array holds when one of its
    /// elements does. Without a valid token, no claim is present.
    Claim(String, ValueTest),
}

/// A test, or its negation.
#[derive(Debug, Clone)]
pub struct Condition {
    /// What is tested.
    pub test: Test,
    /// The condition holds when the test fails.
    pub negated: bool,
}

impl Condition {
    /// `test` must hold.
    pub fn is(test: Test) -> Self {
        Condition {
            test,
            negated: false,
        }
    }

    /// `test` must not hold.
    pub fn not(test: Test) -> Self {
        Condition {
            test,
            negated: true,
        }
    }

    /// Whether the request of `session` meets the condition.
    pub fn holds(&self, session: &Session) -> bool {
        self.test.passes(session) != self.negated
    }

    /// The condition in a few words, for a route's label: `header x-canary=1`,
    /// `!client 10.0.0.0/8`.
    pub fn describe(&self) -> String {
        let test = self.test.describe();
        if self.negated {
            format!("!{test}")
        } else {
            test
        }
    }
}

impl Test {
    fn describe(&self) -> String {
        match self {
            Test::Host(HostPattern::Exact(h)) => format!("host {h}"),
            Test::Host(HostPattern::Subdomains(s)) => format!("host *.{s}"),
            Test::PathPrefix(p) => format!("path {p}"),
            Test::PathExact(p) => format!("path ={p}"),
            Test::PathRegex(re) => format!("path ~{}", re.as_str()),
            Test::Method(methods) => {
                let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
                format!("method {}", names.join("|"))
            }
            Test::Header(name, t) => format!("header {name}{}", t.describe()),
            Test::Query(name, t) => format!("query {name}{}", t.describe()),
            Test::Cookie(name, t) => format!("cookie {name}{}", t.describe()),
            Test::Claim(name, t) => format!("claim {name}{}", t.describe()),
            Test::ClientIn(blocks) => {
                let blocks: Vec<String> = blocks
                    .iter()
                    .map(|b| format!("{}/{}", b.network(), b.prefix()))
                    .collect();
                format!("client {}", blocks.join(","))
            }
            Test::Https(true) => "https".to_owned(),
            Test::Https(false) => "http".to_owned(),
        }
    }

    fn passes(&self, session: &Session) -> bool {
        match self {
            Test::Host(pattern) => session
                .host()
                .is_some_and(|h| pattern.matches(strip_port(h))),
            Test::PathPrefix(prefix) => path_has_prefix(session.path(), prefix),
            Test::PathExact(path) => session.path() == path,
            Test::PathRegex(re) => re.is_match(session.path()),
            Test::Method(methods) => methods.contains(session.method()),
            Test::Header(name, test) => test.holds(header(session.headers(), name)),
            Test::Query(name, test) => test.holds(query_param(session.uri().query(), name)),
            Test::Cookie(name, test) => test.holds(crate::lb::cookie(session.headers(), name)),
            Test::ClientIn(blocks) => in_blocks(blocks, session.client_addr().ip()),
            Test::Https(https) => (session.scheme() == "https") == *https,
            Test::Claim(name, test) => claim_holds(session, name, test),
        }
    }

    /// Whether the test reads the request's JWT claims (which must then be known before
    /// routing).
    pub fn reads_claims(&self) -> bool {
        matches!(self, Test::Claim(..))
    }
}

/// Whether claim `name` of the session's identity passes `test`.
fn claim_holds(session: &Session, name: &str, test: &ValueTest) -> bool {
    let claims = session.identity().and_then(|id| id.claims.as_deref());
    let Some(value) = claims.and_then(|c| c.get(name)) else {
        return test.holds(None);
    };
    if matches!(test, ValueTest::Present) {
        return true;
    }
    match value {
        serde_json::Value::Array(items) => items.iter().any(|item| claim_value_holds(item, test)),
        single => claim_value_holds(single, test),
    }
}

/// Whether one claim value passes `test`: a string as it is, anything else as JSON text.
fn claim_value_holds(value: &serde_json::Value, test: &ValueTest) -> bool {
    match value {
        serde_json::Value::String(s) => test.holds(Some(s.as_bytes())),
        other => test.holds(Some(other.to_string().as_bytes())),
    }
}

/// The first value of header `name`.
fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    headers.get(name).map(|v| v.as_bytes())
}

/// The value of the first query parameter called `name` (empty for `?name` or `?name=`).
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a [u8]> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

fn in_blocks(blocks: &[Cidr], ip: IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_by_name() {
        assert_eq!(query_param(Some("a=1&b=2"), "b"), Some(&b"2"[..]));
        assert_eq!(query_param(Some("a&b=2"), "a"), Some(&b""[..]));
        assert_eq!(query_param(Some("ab=1"), "a"), None);
        assert_eq!(query_param(None, "a"), None);
    }

    #[test]
    fn value_tests() {
        assert!(ValueTest::Present.holds(Some(b"")));
        assert!(!ValueTest::Present.holds(None));
        assert!(ValueTest::Equals("1".into()).holds(Some(b"1")));
        assert!(!ValueTest::Equals("1".into()).holds(Some(b"10")));
        let re = Regex::new("^bot").expect("regex");
        assert!(ValueTest::Matches(re.clone()).holds(Some(b"bot/1")));
        assert!(!ValueTest::Matches(re).holds(Some(b"a bot")));
    }
}

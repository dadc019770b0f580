//! Templates: header values, redirect targets and answer bodies with variables in them
//! (`"https://${host}${request_uri}"`). `proxy!` splits a template into text and
//! variables at compile time, so a request pays for filling in the variables only, never
//! for parsing. A template reads the request as the client sent it: the original path
//! (before a rewrite), its host, its headers.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;

use super::condition::query_param;
use crate::proxy::Session;

/// A value filled in per request.
#[derive(Debug, Clone)]
pub enum Var {
    /// The host the request was sent to (`Host`, or the authority of the target), without
    /// a port.
    Host,
    /// The path, as sent (percent-encoding kept).
    Path,
    /// The query without `?`, empty when there is none.
    Query,
    /// Path and query, as sent.
    RequestUri,
    /// `http` or `https`.
    Scheme,
    /// The request method.
    Method,
    /// The client's IP address.
    ClientIp,
    /// The request id (`x-request-id`).
    RequestId,
    /// The first value of a request header, empty when absent.
    Header(HeaderName),
    /// The value of a cookie, empty when absent.
    Cookie(Box<str>),
    /// The value of a query parameter, as sent, empty when absent.
    QueryParam(Box<str>),
    /// A capture of the route's path regex, by name or number, empty when it did not
    /// take part in the match.
    Capture(Box<str>),
    /// Who the request authenticated as (`auth`), empty before or without it.
    User,
    /// A claim of the request's JWT (strings as they are, other values as JSON), empty
    /// when absent.
    Claim(Box<str>),
}

/// Text and variables, in order.
#[derive(Debug, Clone)]
pub enum Part {
    /// Text copied as written.
    Text(&'static str),
    /// A variable.
    Var(Var),
}

/// A template: its parts, and the path regex its captures come from, if it uses any.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Box<[Part]>,
    captures: Option<Regex>,
}

impl Template {
    /// A template of `parts`.
    pub fn new(parts: Vec<Part>) -> Self {
        Template {
            parts: parts.into_boxed_slice(),
            captures: None,
        }
    }

    /// Takes `Var::Capture`s from `path_regex` matched against the request's path.
    pub fn with_captures(mut self, path_regex: Regex) -> Self {
        self.captures = Some(path_regex);
        self
    }

    /// The template filled in for the request in `session`, whose headers are `headers`
    /// (the session's own, or those of the request sent upstream once they moved there).
    pub fn render(&self, session: &Session, headers: &HeaderMap) -> String {
        let captures = self
            .captures
            .as_ref()
            .and_then(|r| r.captures(session.path()));
        let mut out = String::new();
        for part in self.parts.iter() {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(Var::Capture(name)) => {
                    let group = match name.parse::<usize>() {
                        Ok(i) => captures.as_ref().and_then(|c| c.get(i)),
                        Err(_) => captures.as_ref().and_then(|c| c.name(name)),
                    };
                    out.push_str(group.map_or("", |m| m.as_str()));
                }
                Part::Var(var) => push_var(&mut out, var, session, headers),
            }
        }
        out
    }

    /// [`render`](Template::render) as a header value; `None` (and the edit skipped) when a
    /// variable brought in bytes a header value cannot hold.
    pub fn render_header(&self, session: &Session, headers: &HeaderMap) -> Option<HeaderValue> {
        HeaderValue::try_from(self.render(session, headers)).ok()
    }
}

/// `host` without its `:port` (`[::1]:80` gives `[::1]`).
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Appends the value of `var` (not a capture) to `out`.
fn push_var(out: &mut String, var: &Var, session: &Session, headers: &HeaderMap) {
    let bytes = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    match var {
        Var::Host => out.push_str(without_port(session.host().unwrap_or_default())),
        Var::Path => out.push_str(session.path()),
        Var::Query => out.push_str(session.uri().query().unwrap_or_default()),
        Var::RequestUri => match session.uri().path_and_query() {
            Some(pq) => out.push_str(pq.as_str()),
            None => out.push_str(session.path()),
        },
        Var::Scheme => out.push_str(session.scheme()),
        Var::Method => out.push_str(session.method().as_str()),
        Var::ClientIp => {
            let _ = write!(out, "{}", session.client_addr().ip());
        }
        Var::RequestId => out.push_str(session.request_id()),
        Var::User => {
            if let Some(identity) = session.identity() {
                out.push_str(&identity.user);
            }
        }
        Var::Claim(name) => {
            if let Some(claim) = session.identity().and_then(|i| i.claim(name)) {
                out.push_str(&claim);
            }
        }
        Var::Header(name) => out.push_str(&bytes(headers.get(name).map(|v| v.as_bytes()))),
        Var::Cookie(name) => out.push_str(&bytes(crate::lb::cookie(headers, name))),
        Var::QueryParam(name) => {
            out.push_str(&bytes(query_param(session.uri().query(), name)));
        }
        Var::Capture(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_ports() {
        assert_eq!(without_port("example.com:8080"), "example.com");
        assert_eq!(without_port("example.com"), "example.com");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }
}

//! Header rules of a forwarding proxy (RFC 9110 §7.6): hop-by-hop fields stay on their hop,
//! `X-Forwarded-For` and `Via` record the path, and requests whose framing or `Host` is
//! ambiguous never leave the proxy (RFC 9112 §3.2, §6.1: no request smuggling).

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

use crate::error::{Error, ErrorKind, Result};

/// `Keep-Alive` has no constant in `http`.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection`, a non-standard hop-by-hop field some clients still send.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `X-Forwarded-For`.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes the hop-by-hop fields: `Connection` and every field it names, `Keep-Alive`, `TE`,
/// `Transfer-Encoding`, `Upgrade` and `Proxy-Connection`. Framing is re-derived by the next
/// hop's HTTP layer from the body, so dropping a `Transfer-Encoding` of `chunked` loses
/// nothing. Returns whether `Transfer-Encoding` named another coding (`gzip, chunked`):
/// its removal would hand on bytes nobody can decode, so a caller must refuse the message.
fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the names (cheap comparisons of known headers) instead of six hashed
    // removals: most messages carry at most `Connection`.
    let mut connection = false;
    let mut others = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == KEEP_ALIVE
            || name == header::TE
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == PROXY_CONNECTION
        {
            others = true;
        }
    }
    if connection {
        remove_connection_and_named(headers);
    }
    let mut other_coding = false;
    if others {
        other_coding = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"chunked"));
        headers.remove(KEEP_ALIVE);
        // `TE: trailers` says the client takes trailers (gRPC needs it end to end); any
        // other TE value is about this hop's transfer codings.
        let te_trailers = headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !te_trailers {
            headers.remove(header::TE);
        }
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::UPGRADE);
        headers.remove(PROXY_CONNECTION);
    }
    other_coding
}

/// Strips the hop-by-hop fields of a request going upstream; a body in a transfer coding
/// other than chunked is refused (400) rather than forwarded undeclared.
pub(crate) fn strip_request_hop_by_hop(headers: &mut HeaderMap) -> Result<()> {
    if strip_hop_by_hop(headers) {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "a request body in a transfer coding other than chunked",
        ));
    }
    Ok(())
}

/// Strips the hop-by-hop fields of an upstream's response; one in a transfer coding other
/// than chunked is a bad gateway (502), as in nginx: a coding the proxy cannot undo must not
/// reach the client undeclared.
pub(crate) fn strip_response_hop_by_hop(headers: &mut HeaderMap) -> Result<()> {
    if strip_hop_by_hop(headers) {
        return Err(Error::new(
            ErrorKind::InvalidResponse,
            "upstream used a transfer coding other than chunked, which cannot be relayed",
        ));
    }
    Ok(())
}

/// Removes `Connection` and every field its values name.
fn remove_connection_and_named(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONNECTION).iter();
    if let (Some(only), None) = (values.next(), values.next()) {
        let v = only.as_bytes();
        // The usual case: a lone `keep-alive` or `close`, which names no other field.
        if v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close") {
            headers.remove(header::CONNECTION);
            return;
        }
    }
    // The field may repeat, and each value may list several comma-separated names.
    let mut named = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    headers.remove(header::CONNECTION);
    for name in named {
        headers.remove(name);
    }
}

/// The client's address as a header value (for `X-Forwarded-For`), made once per
/// connection. An IPv4 address is written digit by digit: `Ipv4Addr`'s `Display` goes through
/// the formatting machinery and a `String`, about 1,300 instructions, a tenth of what
/// accepting a connection costs the proxy.
pub(crate) fn client_ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let value = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    text[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    text[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + octet % 10;
                n += 1;
            }
            HeaderValue::from_bytes(&text[..n])
        }
        std::net::IpAddr::V6(v6) => HeaderValue::from_str(&v6.to_string()),
    };
    // Digits, dots, hex and colons are always valid field values.
    value.unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Appends the client's address to `X-Forwarded-For` (or sets it if absent).
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    match headers.entry(X_FORWARDED_FOR) {
        header::Entry::Vacant(v) => {
            v.insert(client_ip.clone());
        }
        header::Entry::Occupied(mut o) => {
            // Several X-Forwarded-For fields are folded into one list, as RFC 9110 §5.3 allows.
            let mut joined = BytesMut::new();
            for v in o.iter() {
                if !joined.is_empty() {
                    joined.put_slice(b", ");
                }
                joined.put_slice(v.as_bytes());
            }
            joined.put_slice(b", ");
            joined.put_slice(client_ip.as_bytes());
            match HeaderValue::from_maybe_shared(joined.freeze()) {
                Ok(v) => {
                    o.insert(v);
                }
                // The old values were valid header values and so is the address: unreachable
                // in practice; keep the old list rather than fail the request.
                Err(_) => tracing::debug!("could not extend X-Forwarded-For"),
            }
        }
    }
}

/// Appends `via` (e.g. `1.1 pingora-dsl`) to the `Via` field.
pub(crate) fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(header::VIA, via.clone());
}

/// Whether `host` is a syntactically valid `Host` value: `uri-host [ ":" port ]`, with the
/// characters RFC 3986 allows in a reg-name, an IPv6 literal or a port. Empty is valid
/// (RFC 9112 §3.2).
fn is_valid_host(host: &[u8]) -> bool {
    host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            )
    })
}

/// Refuses requests a proxy must not forward that hyper lets through: an HTTP/1.1 request
/// without exactly one valid `Host` (RFC 9112 §3.2), `CONNECT` (tunnelling is not offered
/// here), and the asterisk target (`*`) with any method but `OPTIONS`. Ambiguous framing never gets this far: hyper answers 400 to conflicting or
/// malformed `Content-Length`, a `Transfer-Encoding` not ending in chunked, and
/// `Transfer-Encoding` in HTTP/1.0, and decodes `Content-Length` plus `Transfer-Encoding` as
/// chunked and closes the connection after it (RFC 9112 §6.1); `tests/bad_input.rs` pins
/// all of it.
pub(crate) fn validate_request(
    method: &Method,
    uri: &http::Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<()> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "HTTP/1.1 request without Host",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "request with several Host fields",
            ));
        }
        (Some(host), None) if !is_valid_host(host.as_bytes()) => {
            return Err(Error::new(ErrorKind::BadRequest, "invalid Host field"));
        }
        _ => {}
    }
    if method == Method::CONNECT {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "CONNECT is not supported",
        ));
    }
    // The asterisk form names the server as a whole, which only OPTIONS may ask about
    // (RFC 9112 §3.2.4).
    if method != Method::OPTIONS && uri.path() == "*" && uri.authority().is_none() {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "the target `*` is only for OPTIONS",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn client_addresses_read_as_their_display_says() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.200.9",
            "1.22.103.4",
            "255.255.255.255",
            "::1",
            "2001:db8::8:800:200c:417a",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("an address");
            assert_eq!(client_ip_value(ip), ip.to_string().as_str());
        }
    }
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("connection", "x-other"),
            ("x-other", "3"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-secret", "1"),
            ("x-kept", "2"),
            ("host", "example.org"),
        ]);
        assert!(
            !strip_hop_by_hop(&mut h),
            "chunked alone is no other coding"
        );
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        // `TE: trailers` passes (gRPC needs it); any other TE is this hop's.
        assert_eq!(names, ["host", "te", "x-kept"]);
        let mut h = map(&[("te", "gzip, trailers"), ("x-kept", "2")]);
        assert!(!strip_hop_by_hop(&mut h));
        assert!(!h.contains_key("te"));
        for coding in ["gzip, chunked", "gzip", "chunked, x"] {
            let mut h = map(&[("transfer-encoding", coding)]);
            assert!(strip_hop_by_hop(&mut h), "{coding}");
            assert!(!h.contains_key("transfer-encoding"));
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.9");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
    }

    #[test]
    fn validation_rules() {
        let (get, v11, root) = (Method::GET, Version::HTTP_11, http::Uri::from_static("/"));
        let check =
            |method: &Method, uri: &http::Uri, version, host: &[(&'static str, &'static str)]| {
                validate_request(method, uri, version, &map(host))
            };
        let host = [("host", "x")];
        assert!(check(&get, &root, v11, &[("host", "a.example:80")]).is_ok());
        assert!(check(&get, &root, v11, &[("host", "[::1]:8080")]).is_ok());
        assert!(check(&get, &root, Version::HTTP_10, &[]).is_ok());
        assert!(check(&get, &root, v11, &[]).is_err());
        assert!(check(&get, &root, v11, &[("host", "a"), ("host", "b")]).is_err());
        assert!(check(&get, &root, v11, &[("host", "a b")]).is_err());
        assert!(check(&get, &root, v11, &[("host", "a/b")]).is_err());
        assert!(check(&Method::CONNECT, &root, v11, &[("host", "a:443")]).is_err());
        let star = http::Uri::from_static("*");
        assert!(check(&Method::OPTIONS, &star, v11, &host).is_ok());
        assert!(check(&get, &star, v11, &host).is_err());
        assert!(check(&Method::DELETE, &star, v11, &host).is_err());
        assert!(check(&get, &http::Uri::from_static("/*"), v11, &host).is_ok());
    }
}

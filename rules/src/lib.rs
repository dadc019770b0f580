//! The rules of the pingora-dsl language that both its macro and its runtime apply: the
//! macro checks a declaration at compile time, the runtime checks the config file and the
//! command line at start and reload, and both must agree on what a duration, a retry count,
//! a weight, a managed header or a path prefix is. A proc-macro crate cannot depend on the
//! runtime, so the rules live here, in a crate with no dependencies that both use.
//!
//! Each rule returns a value or a small error kind; the wording of messages stays with each
//! user (a compile error names tokens, a config error names keys).

use std::net::SocketAddr;
use std::time::Duration;

/// The most other peers a request may try after failed connects (`retry N`).
pub const MAX_RETRIES: u32 = 16;

/// The largest weight of a peer (`"IP:PORT" weight N`); the smallest is 1.
pub const MAX_WEIGHT: u32 = 256;

/// The largest replay buffer a `retry ... replay SIZE` may ask for: it is held per request.
pub const MAX_REPLAY_BYTES: usize = 16 * 1024 * 1024;

/// The shortest duration the language accepts: a timeout of 0 would never let a request
/// through.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// The longest duration the language accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What is wrong with a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// The unit is none of `ms`, `s`, `m`, `h`.
    Unit,
    /// There is no number before the unit.
    Number,
    /// Shorter than [`MIN_DURATION`] or longer than [`MAX_DURATION`].
    Range,
}

/// A duration written as a number (`"30"`, `"1.5"`) and a unit (`"ms"`, `"s"`, `"m"`, `"h"`):
/// `500ms`, `30s`, `1.5s`, `2m`, `1h`, from [`MIN_DURATION`] to [`MAX_DURATION`].
pub fn duration(number: &str, unit: &str) -> Result<Duration, DurationError> {
    let factor = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(DurationError::Unit),
    };
    let seconds = number.parse::<f64>().map_err(|_| DurationError::Number)? * factor;
    if !(MIN_DURATION.as_secs_f64()..=MAX_DURATION.as_secs_f64()).contains(&seconds) {
        return Err(DurationError::Range);
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Splits `"30s"` into its number and unit, as [`duration`] takes them.
pub fn split_duration(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(split)
}

/// The bytes of a size unit (`""`/`b`, `k`/`KiB`, `m`/`MiB`, any case), if it is one.
pub fn size_unit(unit: &str) -> Option<usize> {
    match unit.to_ascii_lowercase().as_str() {
        "" | "b" => Some(1),
        "kib" | "k" => Some(1024),
        "mib" | "m" => Some(1024 * 1024),
        _ => None,
    }
}

/// Header fields whose framing or connection meaning the proxy owns, so no header edit
/// may set or remove them (lowercase).
pub const MANAGED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Whether `name` is one of the [`MANAGED_HEADERS`], in any case.
pub fn is_managed_header(name: &str) -> bool {
    MANAGED_HEADERS.iter().any(|m| m.eq_ignore_ascii_case(name))
}

/// An RFC 9110 token (§5.6.2): one or more visible characters that are not delimiters, as
/// header names and upgrade protocols are.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `v` may be a header value the proxy writes: visible ASCII, spaces and tabs.
pub fn is_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// What is wrong with an `allow_upgrade` protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeError {
    /// Not `token` or `token/token`.
    Syntax,
    /// `h2c`: its tunnel would carry requests past every filter (RFC 9113 §3.1).
    H2c,
}

/// An `allow_upgrade` protocol: an RFC 9110 `token ["/" token]`, and not `h2c`.
pub fn check_upgrade_protocol(name: &str) -> Result<(), UpgradeError> {
    let mut parts = name.split('/');
    let valid = parts.next().is_some_and(is_token)
        && parts.next().is_none_or(is_token)
        && parts.next().is_none();
    if !valid {
        return Err(UpgradeError::Syntax);
    }
    if name
        .split('/')
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case("h2c"))
    {
        return Err(UpgradeError::H2c);
    }
    Ok(())
}

/// Whether `path` is `prefix` or below it, at a segment boundary: `/api` covers `/api` and
/// `/api/users` but not `/apix`; `/api/` covers everything that starts with it.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

/// What is wrong with a route's path prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPrefixError {
    /// It does not start with `/`, or has a space, `?` or `#`.
    Syntax,
    /// It has non-ASCII characters, which request paths never contain.
    NonAscii,
}

/// A route's path prefix: starts with `/`, no whitespace, query or fragment, ASCII only.
pub fn check_path_prefix(p: &str) -> Result<(), PathPrefixError> {
    if !p.starts_with('/')
        || p.bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'?' || b == b'#')
    {
        Err(PathPrefixError::Syntax)
    } else if !p.is_ascii() {
        Err(PathPrefixError::NonAscii)
    } else {
        Ok(())
    }
}

/// Whether `weight` is a peer weight the language accepts: `1..=MAX_WEIGHT`.
pub fn is_weight(weight: u32) -> bool {
    (1..=MAX_WEIGHT).contains(&weight)
}

/// What is wrong with a peer written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// The first word is not an `IP:PORT` address.
    Address,
    /// The weight is not a number from 1 to [`MAX_WEIGHT`].
    Weight,
    /// Something other than `weight N` follows the address.
    Shape,
}

/// A peer as the config file, `--upstream` and peer files write it: `IP:PORT` or
/// `IP:PORT weight N`. Returns the address (any port: whether 0 is refused is the caller's
/// rule) and the weight, 1 unless given.
pub fn parse_peer(text: &str) -> Result<(SocketAddr, u32), PeerError> {
    let mut words = text.split_whitespace();
    let addr = words
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| PeerError::Address)?;
    match (words.next(), words.next(), words.next()) {
        (None, _, _) => Ok((addr, 1)),
        (Some("weight"), Some(w), None) => match w.parse::<u32>() {
            Ok(w) if is_weight(w) => Ok((addr, w)),
            _ => Err(PeerError::Weight),
        },
        _ => Err(PeerError::Shape),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_a_unit_and_a_range() {
        assert_eq!(duration("1.5", "s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2", "m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("0", "s"), Err(DurationError::Range));
        assert_eq!(duration("8", "d"), Err(DurationError::Unit));
        assert_eq!(duration("", "s"), Err(DurationError::Number));
        assert_eq!(duration("169", "h"), Err(DurationError::Range));
        assert_eq!(split_duration("250ms"), ("250", "ms"));
    }

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(path_has_prefix("/api/users", "/api"));
        assert!(path_has_prefix("/api", "/api"));
        assert!(!path_has_prefix("/apix", "/api"));
        assert!(path_has_prefix("/api/x", "/api/"));
        assert_eq!(check_path_prefix("api"), Err(PathPrefixError::Syntax));
        assert_eq!(check_path_prefix("/café"), Err(PathPrefixError::NonAscii));
    }

    #[test]
    fn headers_and_protocols() {
        assert!(is_managed_header("Content-Length"));
        assert!(!is_managed_header("x-id"));
        assert_eq!(check_upgrade_protocol("websocket"), Ok(()));
        assert_eq!(check_upgrade_protocol("H2C"), Err(UpgradeError::H2c));
        assert_eq!(check_upgrade_protocol("a/b/c"), Err(UpgradeError::Syntax));
        assert!(is_header_value("a b\t") && !is_header_value("a\nb"));
        assert!(is_weight(1) && is_weight(MAX_WEIGHT) && !is_weight(0));
    }

    #[test]
    fn peers_are_an_address_and_an_optional_weight() {
        let addr: SocketAddr = "10.0.0.1:80".parse().expect("an address");
        assert_eq!(parse_peer("10.0.0.1:80"), Ok((addr, 1)));
        assert_eq!(parse_peer(" 10.0.0.1:80  weight 3 "), Ok((addr, 3)));
        assert_eq!(parse_peer("10.0.0.1:80 weight 0"), Err(PeerError::Weight));
        assert_eq!(parse_peer("10.0.0.1:80 weight 1 x"), Err(PeerError::Shape));
        assert_eq!(parse_peer("localhost:80"), Err(PeerError::Address));
    }
}

//! Header field names read from HTTP/1 heads, with the names nearly every request and
//! response carries looked up directly: `HeaderName::from_bytes` costs several times more.

use http::header::{
    ACCEPT, ACCEPT_ENCODING, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE, HOST, SERVER,
    USER_AGENT,
};
use http::HeaderName;

/// The field name `raw`, which `httparse` has checked is a token; `None` if it is not a
/// valid name.
pub(crate) fn parse(raw: &[u8]) -> Option<HeaderName> {
    let known = match raw.len() {
        4 if matches(raw, b"host") => Some(HOST),
        4 if matches(raw, b"date") => Some(DATE),
        6 if matches(raw, b"server") => Some(SERVER),
        6 if matches(raw, b"accept") => Some(ACCEPT),
        10 if matches(raw, b"connection") => Some(CONNECTION),
        10 if matches(raw, b"user-agent") => Some(USER_AGENT),
        12 if matches(raw, b"content-type") => Some(CONTENT_TYPE),
        14 if matches(raw, b"content-length") => Some(CONTENT_LENGTH),
        15 if matches(raw, b"accept-encoding") => Some(ACCEPT_ENCODING),
        _ => None,
    };
    known.or_else(|| HeaderName::from_bytes(raw).ok())
}

/// Whether the token `raw` is `lower` in any case. Setting bit 0x20 lower-cases a letter
/// and leaves `-` as it is; the only other byte it maps onto a letter or `-` is a byte no
/// token contains (CR, or a letter's upper case).
fn matches(raw: &[u8], lower: &[u8]) -> bool {
    raw.len() == lower.len() && raw.iter().zip(lower).all(|(r, l)| r | 0x20 == *l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_match_in_any_case_and_others_parse() {
        assert_eq!(parse(b"Content-Length"), Some(CONTENT_LENGTH));
        assert_eq!(parse(b"CONTENT-LENGTH"), Some(CONTENT_LENGTH));
        assert_eq!(parse(b"host"), Some(HOST));
        assert_eq!(parse(b"User-Agent"), Some(USER_AGENT));
        assert_eq!(parse(b"X-Custom"), HeaderName::from_bytes(b"x-custom").ok());
        // Same length as a common name, but not it.
        assert_eq!(parse(b"hosx"), HeaderName::from_bytes(b"hosx").ok());
        assert_eq!(parse(b"bad name"), None);
    }
}

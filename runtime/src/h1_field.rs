//! Header fields of HTTP/1 heads, read the same way by the server and the client: names
//! (the ones nearly every request and response carries looked up directly, as
//! `HeaderName::from_bytes` costs several times more), `Content-Length` values and
//! `Transfer-Encoding` lists.

use http::header::{
    ACCEPT, ACCEPT_ENCODING, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE, HOST, SERVER,
    USER_AGENT,
};
use http::HeaderName;

/// The field name `raw`, which `httparse` has checked is a token; `None` if it is not a
/// valid name.
pub(crate) fn name(raw: &[u8]) -> Option<HeaderName> {
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

/// The length a `Content-Length` value says: a decimal, or a list of equal decimals
/// (RFC 9110 §8.6 lets a recipient take `5, 5` as 5). `None` if it is anything else.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for item in value.split(|&b| b == b',') {
        let n = decimal(item.trim_ascii())?;
        if length.is_some_and(|seen| seen != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// Whether a `Transfer-Encoding` value ends in `chunked`: what counts is the last coding.
pub(crate) fn ends_in_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A non-negative decimal without sign or spaces.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_match_in_any_case_and_others_parse() {
        assert_eq!(name(b"Content-Length"), Some(CONTENT_LENGTH));
        assert_eq!(name(b"CONTENT-LENGTH"), Some(CONTENT_LENGTH));
        assert_eq!(name(b"host"), Some(HOST));
        assert_eq!(name(b"User-Agent"), Some(USER_AGENT));
        assert_eq!(name(b"X-Custom"), HeaderName::from_bytes(b"x-custom").ok());
        // Same length as a common name, but not it.
        assert_eq!(name(b"hosx"), HeaderName::from_bytes(b"hosx").ok());
        assert_eq!(name(b"bad name"), None);
    }

    #[test]
    fn content_length_values_and_lists() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"13"), Some(13));
        assert_eq!(content_length(b"5, 5"), Some(5));
        assert_eq!(content_length(b"5, 6"), None);
        assert_eq!(content_length(b"+13"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn only_the_last_coding_decides_chunked() {
        assert!(ends_in_chunked(b"gzip, Chunked"));
        assert!(!ends_in_chunked(b"chunked, gzip"));
        assert!(!ends_in_chunked(b""));
    }
}

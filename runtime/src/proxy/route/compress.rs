//! Response compression, declared (`compress { ... }` for the proxy or a route): gzip,
//! brotli or zstd, negotiated with the client's `Accept-Encoding` (q-values honoured, the
//! declared order breaking ties), for the declared content types above a minimum size.
//!
//! Never compressed: a response that already has a `Content-Encoding`, a partial one (206,
//! `Content-Range`), one whose `Cache-Control` says `no-transform`, a bodiless one (HEAD,
//! 204, 304), or one the proxy answered itself. Every response of an eligible type carries
//! `Vary: Accept-Encoding`, compressed or not (caches must keep both). A compressed one
//! loses its `Content-Length` and `Accept-Ranges`, and a strong `ETag` becomes weak.
//!
//! The body is compressed as it streams ([`Encoder`]): each frame from the upstream goes
//! through the encoder, what it emits goes to the client, and when the upstream pauses the
//! encoder is flushed, so a slow stream reaches the client as it is produced; nothing
//! buffers the whole body. The codecs are the `flate2`, `brotli` and `zstd` crates'.

use std::io::Write;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

/// A content coding the proxy can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `br` (RFC 7932).
    Brotli,
    /// `zstd` (RFC 8878).
    Zstd,
}

impl Encoding {
    /// The coding's token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

/// The content types compressed when none are declared: text and the structured formats
/// that are text.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "image/svg+xml",
];

/// The smallest body compressed by default: below it the coding's framing outweighs the
/// gain.
pub const DEFAULT_MIN_SIZE: u64 = 256;

/// A compression policy.
///
/// ```
/// use pingora_dsl_runtime::proxy::route::{Compress, Encoding};
/// use pingora_dsl_runtime::HeaderValue;
///
/// let compress = Compress::new([Encoding::Brotli, Encoding::Gzip]).min_size(1024);
/// let accept = HeaderValue::from_static("gzip;q=1.0, br;q=0.5");
/// assert_eq!(compress.negotiate(Some(&accept)), Some(Encoding::Gzip));
/// ```
#[derive(Debug, Clone)]
pub struct Compress {
    encodings: Vec<Encoding>,
    types: Vec<String>,
    min_size: u64,
}

impl Default for Compress {
    fn default() -> Self {
        Compress::new([Encoding::Zstd, Encoding::Brotli, Encoding::Gzip])
    }
}

impl Compress {
    /// Compresses with `encodings` (preferred first, for clients that like several
    /// equally) the [`DEFAULT_TYPES`] from [`DEFAULT_MIN_SIZE`] bytes.
    pub fn new(encodings: impl IntoIterator<Item = Encoding>) -> Self {
        Compress {
            encodings: encodings.into_iter().collect(),
            types: DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            min_size: DEFAULT_MIN_SIZE,
        }
    }

    /// The media types compressed: `text/html`, or `text/*` for a whole type.
    pub fn types<'a>(mut self, types: impl IntoIterator<Item = &'a str>) -> Self {
        self.types = types.into_iter().map(str::to_ascii_lowercase).collect();
        self
    }

    /// The smallest body compressed, in bytes (a body of unknown length is compressed).
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// The coding to use for a client that sent `accept` (`Accept-Encoding`): the declared
    /// one it accepts with the highest q-value (`*` counts for codings it does not name;
    /// q=0 refuses), ties going to the declared order.
    pub fn negotiate(&self, accept: Option<&HeaderValue>) -> Option<Encoding> {
        let accept = accept?.to_str().ok()?;
        let mut best: Option<(Encoding, u32)> = None;
        for &encoding in &self.encodings {
            let q = quality(accept, encoding.token());
            if q > 0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((encoding, q));
            }
        }
        best.map(|(e, _)| e)
    }

    /// Whether a response with `status` and `headers` to a `method` request is one this
    /// policy covers (its type, size and framing allow compression).
    pub fn eligible(&self, method: &Method, status: StatusCode, headers: &HeaderMap) -> bool {
        if method == Method::HEAD
            || !status.is_success()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::PARTIAL_CONTENT
            || headers.contains_key(header::CONTENT_RANGE)
        {
            return false;
        }
        let encoded = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded || no_transform(headers) {
            return false;
        }
        let small = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .is_some_and(|n| n < self.min_size);
        !small && self.type_matches(headers.get(header::CONTENT_TYPE))
    }

    fn type_matches(&self, content_type: Option<&HeaderValue>) -> bool {
        let Some(media) = content_type.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = media
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(main) => media.split('/').next() == Some(main),
            None => *t == media,
        })
    }
}

/// Marks an eligible response as varying by `Accept-Encoding`, and when `encoding` is
/// chosen makes its head that of the compressed representation.
pub fn prepare(headers: &mut HeaderMap, encoding: Option<Encoding>) {
    add_vary(headers);
    let Some(encoding) = encoding else {
        return;
    };
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.get(header::ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, weak);
            }
        }
    }
}

fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|n| n == "*" || n.eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// Whether `Cache-Control` forbids transforming the body.
fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// The q-value (in thousandths) `accept` gives `coding`: its own entry, else `*`'s, else 0.
fn quality(accept: &str, coding: &str) -> u32 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| parse_q(v.trim()))
            })
            .unwrap_or(1000);
        if name.eq_ignore_ascii_case(coding) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

/// `0.5` as 500; anything malformed as 0 (not acceptable).
fn parse_q(v: &str) -> u32 {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let whole: u32 = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return 0,
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let frac: u32 = format!("{frac:0<3}").parse().unwrap_or(0);
    (whole + frac).min(1000)
}

/// A streaming encoder: bytes in, compressed bytes out, as they come.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// An encoder for `encoding` at a level fit for compressing on the fly (gzip 6,
    /// brotli 4, zstd 3: each about as fast as the others' defaults for streaming).
    pub(crate) fn new(encoding: Encoding) -> std::io::Result<Encoder> {
        Ok(match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(6),
            )),
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                4,
                22,
            ))),
            Encoding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
        })
    }

    /// Feeds `data`; returns what the encoder emitted (often nothing yet).
    pub(crate) fn push(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => e.write_all(data)?,
            Encoder::Brotli(e) => e.write_all(data)?,
            Encoder::Zstd(e) => e.write_all(data)?,
        }
        Ok(self.take())
    }

    /// Flushes what was fed so far (the client gets it now) and returns it.
    pub(crate) fn flush(&mut self) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => e.flush()?,
            Encoder::Brotli(e) => e.flush()?,
            Encoder::Zstd(e) => e.flush()?,
        }
        Ok(self.take())
    }

    /// Ends the stream: the rest of the output and the coding's trailer.
    pub(crate) fn finish(self) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Brotli(mut e) => {
                e.flush()?;
                e.into_inner()
            }
            Encoder::Zstd(e) => e.finish()?,
        };
        Ok(Bytes::from(out))
    }

    /// The output so far, taken out of the encoder's buffer.
    fn take(&mut self) -> Bytes {
        let out = match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        };
        Bytes::from(std::mem::take(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &'static str) -> Option<Encoding> {
        Compress::default().negotiate(Some(&HeaderValue::from_static(accept)))
    }

    #[test]
    fn q_values_and_the_declared_order_decide() {
        assert_eq!(negotiate("gzip, deflate, br, zstd"), Some(Encoding::Zstd));
        assert_eq!(negotiate("gzip, br;q=0.9"), Some(Encoding::Gzip));
        assert_eq!(negotiate("br;q=0.2, gzip;q=0.1"), Some(Encoding::Brotli));
        assert_eq!(negotiate("*;q=0.5, zstd;q=0"), Some(Encoding::Brotli));
        assert_eq!(negotiate("identity"), None);
        assert_eq!(negotiate("gzip;q=0, br;q=0, zstd;q=0.000"), None);
        assert_eq!(negotiate("gzip;q=2"), None, "a malformed q refuses");
        assert_eq!(Compress::default().negotiate(None), None);
    }

    #[test]
    fn only_eligible_responses() {
        let c = Compress::default().min_size(100);
        let head = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let ok = StatusCode::OK;
        let html = head(&[("content-type", "text/html; charset=utf-8")]);
        assert!(c.eligible(&Method::GET, ok, &html));
        assert!(!c.eligible(&Method::HEAD, ok, &html));
        assert!(!c.eligible(&Method::GET, StatusCode::PARTIAL_CONTENT, &html));
        assert!(!c.eligible(&Method::GET, ok, &head(&[("content-type", "image/png")])));
        assert!(!c.eligible(
            &Method::GET,
            ok,
            &head(&[("content-type", "text/plain"), ("content-length", "99")])
        ));
        assert!(c.eligible(
            &Method::GET,
            ok,
            &head(&[
                ("content-type", "application/json"),
                ("content-length", "100")
            ])
        ));
        assert!(!c.eligible(
            &Method::GET,
            ok,
            &head(&[("content-type", "text/css"), ("content-encoding", "gzip")])
        ));
        assert!(!c.eligible(
            &Method::GET,
            ok,
            &head(&[
                ("content-type", "text/css"),
                ("cache-control", "public, No-Transform")
            ])
        ));
        assert!(
            !c.eligible(&Method::GET, ok, &head(&[])),
            "no type: unknown content"
        );
    }

    #[test]
    fn encoders_round_trip_in_pieces() {
        let text = "a line of text that repeats. ".repeat(2000);
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let mut e = Encoder::new(encoding).expect("encoder");
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(1000) {
                out.extend_from_slice(&e.push(chunk).expect("push"));
            }
            out.extend_from_slice(&e.flush().expect("flush"));
            out.extend_from_slice(&e.finish().expect("finish"));
            assert!(
                out.len() < text.len() / 10,
                "{encoding:?}: {} bytes",
                out.len()
            );
            let mut back = Vec::new();
            match encoding {
                Encoding::Gzip => std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&out[..]),
                    &mut back,
                ),
                Encoding::Brotli => std::io::Read::read_to_end(
                    &mut brotli::Decompressor::new(&out[..], 4096),
                    &mut back,
                ),
                Encoding::Zstd => std::io::Read::read_to_end(
                    &mut zstd::stream::read::Decoder::new(&out[..]).expect("zstd"),
                    &mut back,
                ),
            }
            .expect("decodes");
            assert_eq!(back, text.as_bytes(), "{encoding:?}");
        }
    }
}

//! A case of the differential test: bytes and write boundaries, and its text form, one line
//! of `corpus.txt`. Escapes: `\r \n \t \0 \\ \xHH`; `\|` ends a write;
//! `\{N*text}` is `text` (itself escaped) repeated N times.

use std::fmt::{self, Write as _};

/// Bytes to send, and the offsets where a write ends and the next begins.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Case {
    pub bytes: Vec<u8>,
    pub splits: Vec<usize>,
}

impl Case {
    /// The writes, in order.
    pub fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::new();
        let mut from = 0;
        for &at in self.splits.iter().chain([self.bytes.len()].iter()) {
            if at > from && at <= self.bytes.len() {
                parts.push(&self.bytes[from..at]);
                from = at;
            }
        }
        parts
    }

    /// The case as a corpus line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut from = 0;
        for (i, part) in self.parts().into_iter().enumerate() {
            if i > 0 {
                out.push_str("\\|");
            }
            render_part(
                &mut out,
                part,
                from == 0,
                from + part.len() == self.bytes.len(),
            );
            from += part.len();
        }
        out
    }

    /// A case from a corpus line.
    pub fn parse(line: &str) -> Result<Case, String> {
        let mut case = Case::default();
        let mut at = 0;
        unescape(
            line.as_bytes(),
            &mut at,
            &mut case.bytes,
            Some(&mut case.splits),
        )?;
        Ok(case)
    }
}

/// Proptest prints failing inputs with `Debug`: as corpus lines, ready to paste.
impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Appends `b` escaped: printable ASCII as itself (but `\` and `|`), anything else escaped.
fn push_escaped(out: &mut String, b: u8) {
    match b {
        b'\r' => out.push_str("\\r"),
        b'\n' => out.push_str("\\n"),
        b'\t' => out.push_str("\\t"),
        b'\0' => out.push_str("\\0"),
        b'\\' => out.push_str("\\\\"),
        b'|' => out.push_str("\\x7c"),
        0x20..=0x7e => out.push(char::from(b)),
        _ => {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// `bytes` escaped, as in a corpus line.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        push_escaped(&mut out, b);
    }
    out
}

/// Appends one write of a case: runs of 32 or more equal bytes as `\{N*b}`, and a space or
/// `#` where a text editor or the corpus reader would lose it (a line's ends) escaped.
fn render_part(out: &mut String, part: &[u8], line_start: bool, line_end: bool) {
    let mut i = 0;
    while i < part.len() {
        let b = part[i];
        let run = part[i..].iter().take_while(|&&c| c == b).count();
        if run >= 32 {
            let _ = write!(out, "\\{{{run}*");
            match b {
                b'}' => out.push_str("\\x7d"),
                _ => push_escaped(out, b),
            }
            out.push('}');
            i += run;
            continue;
        }
        let at_start = line_start && i == 0;
        let at_end = line_end && i + 1 == part.len();
        match b {
            b' ' if at_start || at_end => out.push_str("\\x20"),
            b'#' if at_start => out.push_str("\\x23"),
            _ => push_escaped(out, b),
        }
        i += 1;
    }
}

/// Reads escaped text from `src[*at..]` into `out`: to the end, or (for the body of a
/// repetition, which has no `splits`) to its closing `}`.
fn unescape(
    src: &[u8],
    at: &mut usize,
    out: &mut Vec<u8>,
    mut splits: Option<&mut Vec<usize>>,
) -> Result<(), String> {
    let nested = splits.is_none();
    while let Some(&c) = src.get(*at) {
        *at += 1;
        if c == b'}' && nested {
            return Ok(());
        }
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *src.get(*at).ok_or("a lone `\\` at the end")?;
        *at += 1;
        match e {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(b'\0'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = src
                    .get(*at..*at + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("`\\x` needs two hex digits")?;
                out.push(hex);
                *at += 2;
            }
            b'|' => match splits.as_mut() {
                Some(splits) => splits.push(out.len()),
                None => return Err("a split `\\|` inside `\\{..}`".into()),
            },
            b'{' if !nested => {
                let star = src[*at..]
                    .iter()
                    .position(|&b| b == b'*')
                    .ok_or("`\\{` needs `N*`")?;
                let count: usize = std::str::from_utf8(&src[*at..*at + star])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .ok_or("`\\{N*` needs a count")?;
                *at += star + 1;
                let mut unit = Vec::new();
                unescape(src, at, &mut unit, None)?;
                for _ in 0..count {
                    out.extend_from_slice(&unit);
                }
            }
            other => return Err(format!("unknown escape `\\{}`", char::from(other))),
        }
    }
    if nested {
        return Err("`\\{` without its `}`".into());
    }
    Ok(())
}

/// The cases of a corpus file: one a line; `#` starts a comment line.
pub fn corpus(text: &str) -> Vec<Case> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| Case::parse(line).unwrap_or_else(|e| panic!("corpus line {}: {e}", n + 1)))
        .collect()
}

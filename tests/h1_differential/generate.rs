//! The generator of the differential test: request heads built from parts with proptest,
//! written with chosen line ends, now and then mutated by a byte, and split into writes.

use std::fmt::{self, Write as _};

use proptest::collection::vec;
use proptest::sample::{select, Index};
use proptest::strategy::{BoxedStrategy, Just, Strategy, Union};

use super::case::Case;
use super::MAX_HEAD;

/// One request head, in parts.
#[derive(Debug, Clone)]
struct HeadPlan {
    /// Bytes before the method (empty lines, whitespace).
    lead: &'static [u8],
    method: &'static [u8],
    /// Between method and target.
    gap1: &'static [u8],
    target: Vec<u8>,
    /// Between target and version.
    gap2: &'static [u8],
    version: &'static [u8],
    fields: Vec<FieldPlan>,
    extra: Extra,
    /// Whether the blank line ending the head is there.
    terminated: bool,
}

#[derive(Debug, Clone)]
struct FieldPlan {
    name: Vec<u8>,
    /// Between name and value (normally `": "`).
    sep: &'static [u8],
    value: Vec<u8>,
    /// Whitespace after the value.
    trail: &'static [u8],
    /// An obs-fold continuation line after the field.
    fold: Option<&'static [u8]>,
}

/// A head's size extremes.
#[derive(Debug, Clone, Copy)]
enum Extra {
    None,
    /// This many more fields (`x-many-N: v`).
    Many(usize),
    /// A field whose value makes the head `MAX_HEAD` plus this many bytes long.
    Fill(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    CrLf,
    Lf,
    Cr,
}

impl Eol {
    fn bytes(self) -> &'static [u8] {
        match self {
            Eol::CrLf => b"\r\n",
            Eol::Lf => b"\n",
            Eol::Cr => b"\r",
        }
    }
}

/// A byte changed after the heads are written.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    Insert(u16, u8),
    Delete(u16),
    Replace(u16, u8),
}

/// A case, in parts.
#[derive(Debug, Clone)]
struct Plan {
    heads: Vec<HeadPlan>,
    /// The line ends, cycled over the case's lines (empty: CRLF everywhere).
    eols: Vec<Eol>,
    /// A blank line pair after the heads.
    tail: bool,
    mutation: Option<Mutation>,
    /// Split points, as fractions of the length (of 65536).
    splits: Vec<u16>,
}

type Weighted = &'static [(u32, &'static [u8])];

/// One of `items`, by weight.
fn pick(items: Weighted) -> BoxedStrategy<&'static [u8]> {
    Union::new_weighted(items.iter().map(|&(w, v)| (w, Just(v))).collect()).boxed()
}

/// What a head is made of. A clean head is well-formed (though its fields may make it
/// hyper's: a body, an upgrade, HTTP/1.0); a dirty one takes each part from the malformed
/// choices one time in eight, so it usually has one flaw.
#[derive(Debug, Clone, Copy)]
struct Mix {
    dirty: bool,
}

impl Mix {
    /// `clean`, or for a dirty head now and then `dirty`.
    fn pick(self, clean: Weighted, dirty: Weighted) -> BoxedStrategy<&'static [u8]> {
        if self.dirty && !dirty.is_empty() {
            Union::new_weighted(vec![(7, pick(clean)), (1, pick(dirty))]).boxed()
        } else {
            pick(clean)
        }
    }

    /// `clean`, or for a dirty head now and then `dirty`.
    fn choose<T: fmt::Debug + 'static>(
        self,
        clean: BoxedStrategy<T>,
        dirty: BoxedStrategy<T>,
    ) -> BoxedStrategy<T> {
        if self.dirty {
            Union::new_weighted(vec![(7, clean), (1, dirty)]).boxed()
        } else {
            clean
        }
    }
}

const METHODS: Weighted = &[
    (30, b"GET"),
    (10, b"HEAD"),
    (8, b"OPTIONS"),
    (8, b"DELETE"),
    (5, b"POST"),
    (3, b"PUT"),
    (2, b"PATCH"),
    (2, b"CONNECT"),
    (1, b"get"),
    (1, b"FOO"),
    (1, b"M-SEARCH"),
];
const BAD_METHODS: Weighted = &[(1, b"G@T"), (1, b""), (1, b"GE\0T"), (1, b"G\xc3\x89T")];
const LEADS: Weighted = &[(40, b""), (1, b"\r\n"), (1, b"\n")];
const BAD_LEADS: Weighted = &[(1, b" "), (1, b"\t")];
const GAPS: Weighted = &[(1, b" ")];
const BAD_GAPS: Weighted = &[(1, b"  "), (1, b"\t"), (1, b"")];
const VERSIONS: Weighted = &[(9, b"HTTP/1.1"), (1, b"HTTP/1.0")];
/// Other versions: the direct path reads `HTTP/1.2`..`HTTP/1.9` as HTTP/1.1 and answers
/// other major versions 505, where hyper answers 400 (see `equivalent` in the test).
const ODD_VERSIONS: Weighted = &[
    (1, b"HTTP/1.2"),
    (1, b"HTTP/1.9"),
    (1, b"HTTP/2.0"),
    (1, b"HTTP/3.0"),
    (1, b"HTTP/0.9"),
    (1, b"HTTP/1.10"),
    (1, b"HTTP/11"),
    (1, b"http/1.1"),
    (1, b"HTTP/1"),
    (1, b"HTTP/1.1 "),
    (1, b""),
];
const TARGETS: Weighted = &[
    (20, b"/"),
    (4, b"/a"),
    (4, b"/a?b=c"),
    (1, b"/a%20b?x=%zz"),
    (1, b"//double"),
    (1, b"/a/../b"),
    (1, b"//"),
    (2, b"http://example.com/x?y"),
    (1, b"http://[::1]:8080/"),
    (1, b"HTTP://EXAMPLE.COM"),
    (2, b"example.com:443"),
];
const BAD_TARGETS: Weighted = &[
    (1, b"/\xc3\xa9"),
    (1, b"/\x7f"),
    (1, b"/a\0b"),
    (1, b"/a#frag"),
    (1, b"http://user@host/"),
    (1, b"http:/x"),
    (1, b""),
    (1, b"?q"),
    (1, b"/a b"),
    (1, b"/a\tb"),
    (1, b"/{|}^`"),
    (1, b"/\"<>"),
];
/// Asterisk-form targets (refused for any method but OPTIONS by the proxy, not the server).
const ASTERISK_TARGETS: Weighted = &[(3, b"*"), (1, b"**"), (1, b"*?x")];
const PATH_BYTES: &[u8] = b"ab/?=&%.-~!$'()*+,;:@";
const BAD_PATH_BYTES: &[u8] = b"ab/[]`{}\"# \x80\xff\0\x7f\x01";
const SEPS: Weighted = &[(20, b": "), (4, b":"), (1, b":\t"), (1, b":  ")];
const BAD_SEPS: Weighted = &[(1, b" :"), (1, b" : "), (1, b"\t:"), (1, b"")];
const TRAILS: Weighted = &[(20, b""), (2, b" "), (1, b"\t"), (1, b" \t ")];
/// Obs-fold continuation lines, for dirty heads.
const FOLDS: Weighted = &[
    (1, b" cont"),
    (1, b"\tcont"),
    (1, b" "),
    (1, b"\t"),
    (1, b"  x: y"),
];
const VALUES: &[&[u8]] = &[
    b"",
    b"v",
    b"  padded  ",
    b"a\tb",
    b"\xc3\xa9",
    b"a,b",
    b"\"q\"",
    b"\xff",
];
const BAD_VALUES: &[&[u8]] = &[b"\x01", b"\x7f", b"a\0b", b"x\x0by", b"a\rb", b"\x1f"];
const VALUE_BYTES: &[u8] = b"abc09 \t,;=\"()/\\:\x80\xc3\xa9\xff";
const BAD_VALUE_BYTES: &[u8] = b"abc \0\x01\x0b\x0c\x1f\x7f\r";
const NAME_BYTES: &[u8] = b"azAZ-_.!#$%&'*+^`|~09";
const BAD_NAME_BYTES: &[u8] = b"aZ- \"(,/:;<=@[\\]{}\0\x7f\x80";
const MUTATION_BYTES: &[u8] = b"\0\x01\x7f\x80\xff\r\n \t:\x0b\x0c,/";

/// A field name and the values that suit it.
type NameEntry = (&'static [u8], &'static [&'static [u8]]);

const CONNECTION_VALUES: &[&[u8]] = &[
    b"close",
    b"keep-alive",
    b"Keep-Alive",
    b"CLOSE",
    b"close, keep-alive",
    b"keep-alive, close",
    b"upgrade",
    b"",
    b" close ",
    b"close,",
    b",close",
    b", ,",
    b"te",
    b"foo",
    b"close foo",
];
const HOST_VALUES: &[&[u8]] = &[
    b"x",
    b"example.com:8080",
    b"",
    b"a b",
    b"x, y",
    b"[::1]:80",
    b"ex\xc3\xa9",
];
const LENGTH_VALUES: &[&[u8]] = &[
    b"0",
    b"1",
    b"5",
    b"16",
    b"05",
    b"5, 5",
    b"5,5",
    b"5, 6",
    b"-1",
    b"+5",
    b"",
    b"abc",
    b"99999999999999999999",
    b"18446744073709551615",
    b"0x5",
    b"5 5",
    b"1e1",
];
const CODING_VALUES: &[&[u8]] = &[
    b"chunked",
    b"CHUNKED",
    b"gzip",
    b"gzip, chunked",
    b"chunked, gzip",
    b"identity",
    b"",
    b"chunked, chunked",
    b" chunked",
    b"chunked;q=1",
];
const COMMON_NAMES: &[NameEntry] = &[
    (b"Host", HOST_VALUES),
    (b"host", HOST_VALUES),
    (b"HOST", HOST_VALUES),
    (b"Accept", &[b"*/*", b"text/html, */*;q=0.8"]),
    (b"User-Agent", &[b"curl/8.0", b"Mozilla/5.0 (X11)"]),
    (b"X-Custom", &[]),
    (b"x-dup", &[b"1", b"2"]),
    (b"X-Dup", &[b"3"]),
    (b"Cookie", &[b"a=b; c=d"]),
    (b"Accept-Encoding", &[b"gzip, br"]),
    (b"Content-Type", &[b"text/plain"]),
    (b"Date", &[]),
    (b"Connection", CONNECTION_VALUES),
    (b"connection", CONNECTION_VALUES),
    (b"Keep-Alive", &[b"timeout=5"]),
    (b"Proxy-Connection", &[b"keep-alive"]),
];
const FRAMING_NAMES: &[NameEntry] = &[
    (b"Content-Length", LENGTH_VALUES),
    (b"content-length", LENGTH_VALUES),
    (b"Transfer-Encoding", CODING_VALUES),
    (b"Expect", &[b"100-continue", b"100-Continue", b"foo", b""]),
    (b"Upgrade", &[b"websocket", b"h2c", b""]),
    (b"TE", &[b"trailers", b""]),
];
const BAD_NAMES: &[&[u8]] = &[
    b"X Y",
    b"",
    b"X\0Y",
    b"X@Y",
    b"\xc3\x84",
    b"X-\x7f",
    b"x\ty",
    b"(x)",
];

/// A name and the values that suit it: common names mostly, framing ones often enough
/// that duplicates and conflicts occur; for dirty heads, malformed ones.
fn name(mix: Mix) -> BoxedStrategy<(Vec<u8>, &'static [&'static [u8]])> {
    let entry = |entries: &'static [NameEntry]| {
        select(entries)
            .prop_map(|(name, values)| (name.to_vec(), values))
            .boxed()
    };
    let clean = Union::new_weighted(vec![
        (88, entry(COMMON_NAMES)),
        (8, entry(FRAMING_NAMES)),
        (
            4,
            vec(select(NAME_BYTES), 1..12)
                .prop_map(|n| (n, VALUES))
                .boxed(),
        ),
    ]);
    let dirty = Union::new_weighted(vec![
        (
            1,
            select(BAD_NAMES).prop_map(|n| (n.to_vec(), VALUES)).boxed(),
        ),
        (
            1,
            vec(select(BAD_NAME_BYTES), 1..12)
                .prop_map(|n| (n, VALUES))
                .boxed(),
        ),
    ]);
    mix.choose(clean.boxed(), dirty.boxed())
}

/// A value that suits no name in particular.
fn value(mix: Mix) -> BoxedStrategy<Vec<u8>> {
    let clean = Union::new_weighted(vec![
        (3, select(VALUES).prop_map(<[u8]>::to_vec).boxed()),
        (1, vec(select(VALUE_BYTES), 0..16).boxed()),
    ]);
    let dirty = Union::new_weighted(vec![
        (1, select(BAD_VALUES).prop_map(<[u8]>::to_vec).boxed()),
        (1, vec(select(BAD_VALUE_BYTES), 1..16).boxed()),
    ]);
    mix.choose(clean.boxed(), dirty.boxed())
}

fn field(mix: Mix) -> impl Strategy<Value = FieldPlan> {
    let fold: BoxedStrategy<Option<&'static [u8]>> = if mix.dirty {
        proptest::option::weighted(0.05, pick(FOLDS)).boxed()
    } else {
        Just(None).boxed()
    };
    (
        name(mix),
        proptest::arbitrary::any::<Index>(),
        proptest::bool::weighted(0.7),
        value(mix),
        mix.pick(SEPS, BAD_SEPS),
        pick(TRAILS),
        fold,
    )
        .prop_map(
            |((name, values), index, suited, general, sep, trail, fold)| {
                let value = if suited && !values.is_empty() {
                    index.get(values).to_vec()
                } else {
                    general
                };
                FieldPlan {
                    name,
                    sep,
                    value,
                    trail,
                    fold,
                }
            },
        )
}

fn target(mix: Mix) -> BoxedStrategy<Vec<u8>> {
    let path = |bytes: &'static [u8]| {
        vec(select(bytes), 0..10).prop_map(|mut path| {
            path.insert(0, b'/');
            path
        })
    };
    let mut clean = vec![
        (8, pick(TARGETS).prop_map(<[u8]>::to_vec).boxed()),
        (2, path(PATH_BYTES).boxed()),
    ];
    clean.push((1, pick(ASTERISK_TARGETS).prop_map(<[u8]>::to_vec).boxed()));
    let dirty = Union::new_weighted(vec![
        (1, pick(BAD_TARGETS).prop_map(<[u8]>::to_vec).boxed()),
        (1, path(BAD_PATH_BYTES).boxed()),
    ]);
    mix.choose(Union::new_weighted(clean).boxed(), dirty.boxed())
}

fn head(mix: Mix) -> BoxedStrategy<HeadPlan> {
    let version = Union::new_weighted(vec![(6, pick(VERSIONS)), (1, pick(ODD_VERSIONS))]);
    let extra = Union::new_weighted(vec![
        (40, Just(Extra::None).boxed()),
        (
            1,
            select(&[99usize, 100, 101][..])
                .prop_map(Extra::Many)
                .boxed(),
        ),
        (
            2,
            select(&[-3i64, -1, 0, 1, 2, 100, 70_000][..])
                .prop_map(Extra::Fill)
                .boxed(),
        ),
    ]);
    let terminated = if mix.dirty { 0.9 } else { 1.0 - f64::EPSILON };
    (
        mix.pick(LEADS, BAD_LEADS),
        mix.pick(METHODS, BAD_METHODS),
        mix.pick(GAPS, BAD_GAPS),
        target(mix),
        mix.pick(GAPS, BAD_GAPS),
        version,
        vec(field(mix), 0..6),
        extra,
        proptest::bool::weighted(terminated),
    )
        .prop_map(
            |(lead, method, gap1, target, gap2, version, fields, extra, terminated)| HeadPlan {
                lead,
                method,
                gap1,
                target,
                gap2,
                version,
                fields,
                extra,
                terminated,
            },
        )
        .boxed()
}

fn eols() -> BoxedStrategy<Vec<Eol>> {
    let eol = |items: &'static [(u32, Eol)]| {
        vec(
            Union::new_weighted(items.iter().map(|&(w, e)| (w, Just(e))).collect()),
            1..8,
        )
    };
    Union::new_weighted(vec![
        (30, Just(Vec::new()).boxed()),
        (4, Just(vec![Eol::Lf]).boxed()),
        (4, eol(&[(1, Eol::CrLf), (1, Eol::Lf)]).boxed()),
        (
            1,
            eol(&[(3, Eol::CrLf), (2, Eol::Lf), (1, Eol::Cr)]).boxed(),
        ),
        (1, Just(vec![Eol::Cr]).boxed()),
    ])
    .boxed()
}

fn mutation() -> BoxedStrategy<Mutation> {
    let at = proptest::arbitrary::any::<u16>;
    Union::new_weighted(vec![
        (
            1,
            (at(), select(MUTATION_BYTES))
                .prop_map(|(a, b)| Mutation::Insert(a, b))
                .boxed(),
        ),
        (1, at().prop_map(Mutation::Delete).boxed()),
        (
            1,
            (at(), select(MUTATION_BYTES))
                .prop_map(|(a, b)| Mutation::Replace(a, b))
                .boxed(),
        ),
    ])
    .boxed()
}

/// Generated cases.
pub fn case_strategy() -> impl Strategy<Value = Case> {
    let one = Union::new_weighted(vec![
        (65, head(Mix { dirty: false })),
        (35, head(Mix { dirty: true })),
    ]);
    let heads = Union::new_weighted(vec![
        (6, vec(one.clone(), 1..=1)),
        (3, vec(one.clone(), 2..=2)),
        (1, vec(one, 3..=3)),
    ]);
    (
        heads,
        eols(),
        proptest::bool::weighted(0.2),
        proptest::option::weighted(0.1, mutation()),
        vec(proptest::arbitrary::any::<u16>(), 0..4),
    )
        .prop_map(|(heads, eols, tail, mutation, splits)| {
            build(&Plan {
                heads,
                eols,
                tail,
                mutation,
                splits,
            })
        })
}

/// Writes lines, ending each with the next of a cycle of line ends.
struct Lines<'a> {
    bytes: Vec<u8>,
    eols: &'a [Eol],
    line: usize,
}

impl Lines<'_> {
    fn eol(&self, line: usize) -> &'static [u8] {
        match self.eols {
            [] => b"\r\n",
            eols => eols[line % eols.len()].bytes(),
        }
    }

    fn end_line(&mut self) {
        let eol = self.eol(self.line);
        self.bytes.extend_from_slice(eol);
        self.line += 1;
    }
}

fn build(plan: &Plan) -> Case {
    let mut lines = Lines {
        bytes: Vec::new(),
        eols: &plan.eols,
        line: 0,
    };
    for head in &plan.heads {
        write_head(&mut lines, head);
    }
    let mut bytes = lines.bytes;
    if plan.tail {
        bytes.extend_from_slice(b"\r\n\r\n");
    }
    match plan.mutation {
        Some(Mutation::Insert(at, b)) => {
            let at = usize::from(at) * bytes.len() / 65536;
            bytes.insert(at, b);
        }
        Some(Mutation::Delete(at)) if !bytes.is_empty() => {
            bytes.remove(usize::from(at) * bytes.len() / 65536);
        }
        Some(Mutation::Replace(at, b)) if !bytes.is_empty() => {
            let at = usize::from(at) * bytes.len() / 65536;
            bytes[at] = b;
        }
        _ => {}
    }
    let mut splits: Vec<usize> = plan
        .splits
        .iter()
        .filter(|_| bytes.len() > 1)
        .map(|&s| 1 + usize::from(s) * (bytes.len() - 1) / 65536)
        .collect();
    splits.sort_unstable();
    splits.dedup();
    Case { bytes, splits }
}

fn write_head(lines: &mut Lines<'_>, head: &HeadPlan) {
    let start = lines.bytes.len();
    for part in [
        head.lead,
        head.method,
        head.gap1,
        &head.target,
        head.gap2,
        head.version,
    ] {
        lines.bytes.extend_from_slice(part);
    }
    lines.end_line();
    for f in &head.fields {
        for part in [&f.name[..], f.sep, &f.value, f.trail] {
            lines.bytes.extend_from_slice(part);
        }
        lines.end_line();
        if let Some(fold) = f.fold {
            lines.bytes.extend_from_slice(fold);
            lines.end_line();
        }
    }
    match head.extra {
        Extra::None => {}
        Extra::Many(n) => {
            for i in 0..n {
                let _ = write!(VecWriter(&mut lines.bytes), "x-many-{i}: v");
                lines.end_line();
            }
        }
        Extra::Fill(delta) => {
            // The fill line, its line end and the blank line's end the head's length.
            let fixed = lines.bytes.len() - start
                + b"x-fill: ".len()
                + lines.eol(lines.line).len()
                + lines.eol(lines.line + 1).len();
            let wanted = i64::try_from(MAX_HEAD).unwrap_or(i64::MAX) + delta;
            let fill = usize::try_from(wanted - i64::try_from(fixed).unwrap_or(0)).unwrap_or(0);
            lines.bytes.extend_from_slice(b"x-fill: ");
            lines.bytes.resize(lines.bytes.len() + fill, b'f');
            lines.end_line();
        }
    }
    if head.terminated {
        lines.end_line();
    }
    lines.bytes.extend_from_slice(body_for(&head.fields));
}

/// The body a client would send after these fields: a chunked one when the last
/// `Transfer-Encoding` ends in chunked, else as many bytes as agreeing small
/// `Content-Length` values say (up to 16), else none.
fn body_for(fields: &[FieldPlan]) -> &'static [u8] {
    const BYTES: &[u8; 16] = b"bbbbbbbbbbbbbbbb";
    let named = |name: &'static str| {
        fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name.as_bytes()))
    };
    if let Some(te) = named("transfer-encoding").next_back() {
        let last = te.value.rsplit(|&b| b == b',').next().unwrap_or_default();
        return if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            b"3\r\nabc\r\n0\r\n\r\n"
        } else {
            b""
        };
    }
    let lengths: Vec<Option<usize>> = named("content-length")
        .map(|f| {
            std::str::from_utf8(f.value.trim_ascii())
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .collect();
    match lengths.first() {
        Some(&Some(n)) if n <= BYTES.len() && lengths.iter().all(|&l| l == Some(n)) => &BYTES[..n],
        _ => b"",
    }
}

/// `fmt::Write` into bytes.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

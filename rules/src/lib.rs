//! The rules of the pingora-dsl language that both its macro and its runtime apply: the
//! macro checks a declaration at compile time, the runtime checks the config file and the
//! command line at start and reload, and both must agree on what a duration, a retry count,
//! a weight, a managed header or a path prefix is. A proc-macro crate cannot depend on the
//! runtime, so the rules live here, in a crate with no dependencies that both use.
//!
//! Each rule returns a value or a small error kind; the wording of messages stays with each
//! user (a compile error names tokens, a config error names keys).

use std::net::{IpAddr, SocketAddr};
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

/// The bytes of a size unit (`""`/`b`, `k`/`KiB`, `m`/`MiB`, `g`/`GiB`, any case), if it is
/// one.
pub fn size_unit(unit: &str) -> Option<usize> {
    match unit.to_ascii_lowercase().as_str() {
        "" | "b" => Some(1),
        "kib" | "k" => Some(1024),
        "mib" | "m" => Some(1024 * 1024),
        "gib" | "g" => Some(1024 * 1024 * 1024),
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

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// What is wrong with an address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    Address,
    /// The prefix length is not a number within the address's bits (32 or 128).
    Prefix,
    /// Bits beyond the prefix are set (`10.0.0.1/8`): the block is unclear.
    HostBits,
}

impl std::fmt::Display for CidrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CidrError::Address => "write \"10.0.0.0/8\", \"2001:db8::/32\" or one address",
            CidrError::Prefix => "the prefix length is at most 32 for IPv4 and 128 for IPv6",
            CidrError::HostBits => {
                "bits are set past its prefix: write the block's first address (e.g. \"10.0.0.0/8\")"
            }
        })
    }
}

impl Cidr {
    /// The block of `network` with `prefix` leading bits, as checked by [`Cidr::parse`].
    pub const fn new(network: IpAddr, prefix: u8) -> Cidr {
        Cidr { network, prefix }
    }

    /// Reads `ADDR/BITS` or a bare `ADDR`.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| CidrError::Address)?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match bits {
            None => max,
            Some(bits) => match bits.parse::<u8>() {
                Ok(b) if b <= max && !bits.starts_with('+') => b,
                _ => return Err(CidrError::Prefix),
            },
        };
        let cidr = Cidr { network, prefix };
        if cidr.bits(network) != bits_of(network) {
            return Err(CidrError::HostBits);
        }
        Ok(cidr)
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.network.is_ipv4() && self.bits(ip) == bits_of(self.network)
    }

    /// `ip`'s bits with those beyond the prefix cleared, aligned as [`bits_of`].
    fn bits(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let keep = u32::from(self.prefix);
        let mask = match keep {
            0 => 0,
            k => u128::MAX << (128 - k) >> (128 - width),
        };
        bits_of(ip) & mask
    }
}

/// An address as a number (IPv4 in the low 32 bits).
fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A path with `prefix` (matched at a segment boundary, see [`path_has_prefix`]) replaced
/// by `with`; `None` when the path does not start with it. What is left always starts with
/// `/`: stripping `/v1` from `/v1` gives `/`, and from `/v1/users` gives `/users`.
pub fn replace_path_prefix(path: &str, prefix: &str, with: &str) -> Option<String> {
    if !path_has_prefix(path, prefix) {
        return None;
    }
    let rest = &path[prefix.len()..];
    if rest.is_empty() {
        // The whole path was the prefix: the replacement as written, or the root.
        return Some(if with.is_empty() { "/" } else { with }.to_owned());
    }
    let mut out = String::with_capacity(with.len() + rest.len() + 1);
    out.push_str(with.trim_end_matches('/'));
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    Some(out)
}

/// How a syslog collector is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    /// Datagrams to `IP:PORT`.
    Udp,
    /// A stream to `IP:PORT`, messages framed by octet counting (RFC 6587).
    Tcp,
    /// Datagrams to a local socket such as `/dev/log`.
    Unix,
}

/// A syslog destination, as `syslog:udp://IP:PORT`, `syslog:tcp://IP:PORT` or
/// `syslog:unix:///dev/log` write it, each optionally followed by
/// `?facility=NAME&tag=NAME` (default facility `local7`, tag `pingora-dsl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSpec {
    /// How the collector is reached.
    pub transport: SyslogTransport,
    /// `IP:PORT`, or the socket's path.
    pub address: String,
    /// The facility's number (`local0` is 16).
    pub facility: u8,
    /// The APP-NAME of every message.
    pub tag: String,
}

/// The TLS key-exchange groups `tls_groups` may name (the spelling OpenSSL and BoringSSL
/// both accept): the post-quantum hybrids, the elliptic curves and the finite-field groups.
/// Whether the TLS library in use has a group is known only at start.
pub const TLS_GROUPS: &[&str] = &[
    "X25519MLKEM768",
    "SecP256r1MLKEM768",
    "SecP384r1MLKEM1024",
    "X25519",
    "X448",
    "P-256",
    "P-384",
    "P-521",
    "ffdhe2048",
    "ffdhe3072",
    "ffdhe4096",
];

/// The groups FIPS mode allows: the NIST curves approved for key agreement (SP 800-56A)
/// and their hybrids with ML-KEM (FIPS 203).
pub const FIPS_TLS_GROUPS: &[&str] = &[
    "P-256",
    "P-384",
    "P-521",
    "SecP256r1MLKEM768",
    "SecP384r1MLKEM1024",
];

/// Why a `tls_groups` list is refused: empty, an unknown or repeated name, or (with
/// `fips`) a group FIPS mode does not allow. `Ok` is the list as the library takes it.
pub fn check_tls_groups<'a>(
    groups: impl IntoIterator<Item = &'a str>,
    fips: bool,
) -> Result<String, String> {
    let mut seen: Vec<&str> = Vec::new();
    for group in groups {
        let Some(known) = TLS_GROUPS.iter().find(|g| g.eq_ignore_ascii_case(group)) else {
            return Err(format!(
                "unknown TLS key-exchange group `{group}`: known groups are {}",
                TLS_GROUPS.join(", ")
            ));
        };
        if seen.contains(known) {
            return Err(format!("TLS key-exchange group `{group}` is named twice"));
        }
        if fips && !FIPS_TLS_GROUPS.contains(known) {
            return Err(format!(
                "TLS key-exchange group `{group}` is not approved in FIPS mode: use {}",
                FIPS_TLS_GROUPS.join(", ")
            ));
        }
        seen.push(known);
    }
    if seen.is_empty() {
        return Err("no TLS key-exchange group: name at least one, e.g. \"X25519\"".to_owned());
    }
    Ok(seen.join(":"))
}

/// Why `dsn` is not a Sentry DSN (`SCHEME://PUBLIC_KEY@HOST[:PORT]/[PATH/]PROJECT_ID`,
/// the scheme `http` or `https`, the project id a number).
pub fn check_sentry_dsn(dsn: &str) -> Result<(), String> {
    let (scheme, rest) = dsn
        .split_once("://")
        .ok_or("not a URL: write `https://PUBLIC_KEY@HOST/PROJECT_ID`")?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("the scheme must be http or https, not `{scheme}`"));
    }
    let (key, location) = rest
        .split_once('@')
        .ok_or("no public key: write `https://PUBLIC_KEY@HOST/PROJECT_ID`")?;
    if key.is_empty() {
        return Err("the public key before `@` is empty".to_owned());
    }
    let (host, path) = location
        .split_once('/')
        .ok_or("no project id: write `https://PUBLIC_KEY@HOST/PROJECT_ID`")?;
    if host.is_empty() {
        return Err("no host after `@`".to_owned());
    }
    let project = path.rsplit('/').next().unwrap_or_default();
    if project.is_empty() || !project.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the project id (the last part of the path) must be a number, not `{project}`"
        ));
    }
    Ok(())
}

/// Why `text` is not an origin a CORS policy can allow: `*`, or `SCHEME://HOST[:PORT]` as
/// a browser sends it, HOST optionally starting with `*.` (any subdomain).
pub fn check_cors_origin(text: &str) -> Result<(), String> {
    if text == "*" {
        return Ok(());
    }
    let example = "write it as a browser sends it, e.g. \"https://app.example.com\" or \"https://*.example.com\"";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("it has no scheme; {example}"));
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(format!("`{scheme}` is not a scheme; {example}"));
    }
    if rest.contains('/') {
        return Err(format!(
            "an origin has no path (browsers send none, so it could never match); {example}"
        ));
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    let (name, port) = match host.rsplit_once(':') {
        Some((name, _)) if !name.ends_with(']') && name.contains(':') => (host, None),
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{port}` is not a port; {example}"));
        }
    }
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    if valid_name {
        return Ok(());
    }
    Err(format!(
        "`{name}` is not a host name (a `*` may only start it, as `*.example.com`); {example}"
    ))
}

/// The syslog facilities by name, with their numbers (RFC 5424).
pub const SYSLOG_FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// `text` as a syslog destination: `None` when it does not start with `syslog:` (a file
/// or `stdout`), else the destination or what is wrong with it.
pub fn parse_syslog(text: &str) -> Option<Result<SyslogSpec, String>> {
    let rest = text.strip_prefix("syslog:")?;
    Some(syslog_spec(rest))
}

fn syslog_spec(rest: &str) -> Result<SyslogSpec, String> {
    let (place, options) = rest.split_once('?').unwrap_or((rest, ""));
    let (transport, address) = if let Some(a) = place.strip_prefix("udp://") {
        (SyslogTransport::Udp, a)
    } else if let Some(a) = place.strip_prefix("tcp://") {
        (SyslogTransport::Tcp, a)
    } else if let Some(a) = place.strip_prefix("unix://") {
        (SyslogTransport::Unix, a)
    } else {
        return Err(
            "write syslog:udp://IP:PORT, syslog:tcp://IP:PORT or syslog:unix:///dev/log".to_owned(),
        );
    };
    match transport {
        SyslogTransport::Unix if !address.starts_with('/') => {
            return Err(format!(
                "\"{address}\" is not an absolute socket path: e.g. syslog:unix:///dev/log"
            ));
        }
        SyslogTransport::Udp | SyslogTransport::Tcp
            if address.parse::<std::net::SocketAddr>().is_err() =>
        {
            return Err(format!(
                "\"{address}\" is not IP:PORT: e.g. syslog:udp://127.0.0.1:514"
            ));
        }
        _ => {}
    }
    let mut spec = SyslogSpec {
        transport,
        address: address.to_owned(),
        facility: 23,
        tag: "pingora-dsl".to_owned(),
    };
    for pair in options.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("facility", name)) => {
                spec.facility = SYSLOG_FACILITIES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| format!("unknown syslog facility \"{name}\": use local0 to local7, daemon, user, ..."))?;
            }
            Some(("tag", tag))
                if !tag.is_empty()
                    && tag.len() <= 48
                    && tag.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                spec.tag = tag.to_owned();
            }
            Some(("tag", tag)) => {
                return Err(format!(
                    "syslog tag \"{tag}\" must be 1 to 48 visible ASCII characters"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown syslog option \"{pair}\": use facility=NAME or tag=NAME"
                ))
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_checked() {
        for ok in [
            "https://app.example.com",
            "https://*.example.com:8443",
            "http://[::1]:3000",
            "*",
        ] {
            assert_eq!(check_cors_origin(ok), Ok(()), "{ok}");
        }
        let problem = |o: &str| check_cors_origin(o).expect_err(o);
        assert!(problem("app.example.com").contains("no scheme"));
        assert!(problem("https://app.example.com/").contains("no path"));
        assert!(problem("https://a.*.example.com").contains("host name"));
        assert!(problem("https://app.example.com:99999").contains("port"));
    }

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

    #[test]
    fn address_blocks() {
        let ten = Cidr::parse("10.0.0.0/8").expect("valid");
        assert!(ten.contains("10.1.2.3".parse().expect("ip")));
        assert!(!ten.contains("11.0.0.1".parse().expect("ip")));
        assert!(ten.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let one = Cidr::parse("192.168.1.5").expect("valid");
        assert!(one.contains("192.168.1.5".parse().expect("ip")));
        assert!(!one.contains("192.168.1.6".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("valid");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("valid")
            .contains("8.8.8.8".parse().expect("ip")));
        assert_eq!(Cidr::parse("10.0.0.1/8"), Err(CidrError::HostBits));
        assert_eq!(Cidr::parse("10.0.0.0/33"), Err(CidrError::Prefix));
        assert_eq!(Cidr::parse("ten/8"), Err(CidrError::Address));
    }

    #[test]
    fn syslog_destinations_parse_with_their_options() {
        assert_eq!(parse_syslog("/var/log/x.log"), None);
        let spec = parse_syslog("syslog:udp://127.0.0.1:514?facility=local3&tag=edge")
            .expect("syslog")
            .expect("valid");
        assert_eq!(spec.transport, SyslogTransport::Udp);
        assert_eq!((spec.facility, spec.tag.as_str()), (19, "edge"));
        let unix = parse_syslog("syslog:unix:///dev/log")
            .expect("syslog")
            .expect("valid");
        assert_eq!((unix.address.as_str(), unix.facility), ("/dev/log", 23));
        for bad in [
            "syslog:udp://localhost:514",
            "syslog:unix://dev/log",
            "syslog:smtp://1.2.3.4:1",
            "syslog:tcp://127.0.0.1:514?facility=local9",
            "syslog:tcp://127.0.0.1:514?level=info",
        ] {
            assert!(parse_syslog(bad).expect("syslog").is_err(), "{bad}");
        }
    }

    #[test]
    fn path_prefixes_are_replaced_at_segment_boundaries() {
        assert_eq!(
            replace_path_prefix("/v1/users", "/v1", ""),
            Some("/users".into())
        );
        assert_eq!(replace_path_prefix("/v1", "/v1", ""), Some("/".into()));
        assert_eq!(replace_path_prefix("/v1x", "/v1", ""), None);
        assert_eq!(
            replace_path_prefix("/v1/a", "/v1", "/v2"),
            Some("/v2/a".into())
        );
        assert_eq!(
            replace_path_prefix("/v1/a", "/v1/", "/v2/"),
            Some("/v2/a".into())
        );
        assert_eq!(
            replace_path_prefix("/old/a", "/old", "/"),
            Some("/a".into())
        );
        assert_eq!(
            replace_path_prefix("/old", "/old", "/new"),
            Some("/new".into())
        );
    }
}

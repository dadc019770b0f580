//! The PROXY protocol (HAProxy's, v1 text and v2 binary) on accepted connections: a load
//! balancer in front writes the client's address before anything else, and the connection
//! is then the client's — for access lists, rate limits, logs and `X-Forwarded-For`.
//!
//! The header is read before TLS and before HTTP, within a deadline, consuming exactly its
//! bytes (peeked first, so what follows it stays in the socket for TLS or HTTP). A `LOCAL`
//! header (the balancer's own health check) or one for an address family without ports
//! keeps the connection's own peer. With [`ProxyProtocol::Required`] a connection without
//! a valid header is closed; with [`ProxyProtocol::Optional`] it is served as it came. The
//! headers are parsed by the `ppp` crate.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Whether a listener expects a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    /// No header: the connection's peer is the client (the default).
    #[default]
    Off,
    /// A header when one is sent; connections without are served as they are.
    Optional,
    /// Every connection starts with a header; one that does not is closed.
    Required,
}

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;

/// Reads the PROXY header `mode` expects from `stream` within `deadline`: the client's
/// address it carries (`None`: no header, or one that names no client). An error means the
/// connection must be closed (no header where one is required, a malformed one, or none in
/// time).
pub async fn read_header(
    stream: &mut TcpStream,
    mode: ProxyProtocol,
    deadline: Duration,
) -> io::Result<Option<SocketAddr>> {
    if mode == ProxyProtocol::Off {
        return Ok(None);
    }
    tokio::time::timeout(deadline, read(stream, mode))
        .await
        .map_err(|_| invalid("no PROXY protocol header within the header-read timeout"))?
}

async fn read(stream: &mut TcpStream, mode: ProxyProtocol) -> io::Result<Option<SocketAddr>> {
    let mut start = [0u8; 12];
    let seen = peek_at_least(stream, &mut start, 12).await?;
    if seen >= 12 && start == V2_SIGNATURE {
        return read_v2(stream).await;
    }
    if start[..seen.min(6)] == b"PROXY "[..seen.min(6)] && seen >= 6 {
        return read_v1(stream).await;
    }
    match mode {
        ProxyProtocol::Required => Err(invalid(
            "the connection did not start with a PROXY protocol header",
        )),
        _ => Ok(None),
    }
}

/// Peeks into `buf` until `want` bytes are there or the peer stops sending (then fewer).
///
/// A peek does not consume, so the socket stays readable while the rest is on its way and
/// there is no readiness to wait for: the pause between peeks doubles from 1 ms up to
/// [`MAX_PEEK_PAUSE`], so a header split across segments is read at once while a client that
/// stalls mid-header costs a few wake-ups a second until the header-read deadline.
async fn peek_at_least(stream: &mut TcpStream, buf: &mut [u8], want: usize) -> io::Result<usize> {
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(buf).await?;
        if n >= want || n == 0 {
            return Ok(n);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PEEK_PAUSE);
    }
}

/// The longest pause between two peeks at a header that has not fully arrived.
const MAX_PEEK_PAUSE: Duration = Duration::from_millis(64);

async fn read_v2(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await?;
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let mut header = fixed.to_vec();
    header.resize(16 + len, 0);
    stream.read_exact(&mut header[16..]).await?;
    let parsed = ppp::v2::Header::try_from(&header[..])
        .map_err(|e| invalid(&format!("malformed PROXY protocol v2 header: {e}")))?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    })
}

async fn read_v1(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut line = [0u8; V1_MAX];
    let seen = stream.peek(&mut line).await?;
    let end = match line[..seen].windows(2).position(|w| w == b"\r\n") {
        Some(at) => at + 2,
        None if seen >= V1_MAX => {
            return Err(invalid("PROXY protocol v1 header longer than 107 bytes"))
        }
        // Sent in pieces: take it a byte at a time up to its CRLF.
        None => return read_v1_slowly(stream).await,
    };
    stream.read_exact(&mut line[..end]).await?;
    parse_v1(&line[..end])
}

async fn read_v1_slowly(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut line = Vec::with_capacity(V1_MAX);
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(invalid("PROXY protocol v1 header longer than 107 bytes"));
        }
        line.push(stream.read_u8().await?);
    }
    parse_v1(&line)
}

fn parse_v1(line: &[u8]) -> io::Result<Option<SocketAddr>> {
    let parsed = ppp::v1::Header::try_from(line)
        .map_err(|e| invalid(&format!("malformed PROXY protocol v1 header: {e}")))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// A v2 header for a connection made on behalf of `client`, which reached the proxy at
/// `proxy` (what a peer behind the proxy reads to learn the client).
pub fn v2_header(client: SocketAddr, proxy: SocketAddr) -> io::Result<Vec<u8>> {
    // Both addresses of one family: an IPv4 client through an IPv6 listener is mapped.
    let (client, proxy) = match (client, proxy) {
        (SocketAddr::V4(c), SocketAddr::V6(p)) => (
            SocketAddr::from((c.ip().to_ipv6_mapped(), c.port())),
            SocketAddr::V6(p),
        ),
        (SocketAddr::V6(c), SocketAddr::V4(p)) => (
            SocketAddr::V6(c),
            SocketAddr::from((p.ip().to_ipv6_mapped(), p.port())),
        ),
        pair => pair,
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, proxy),
    )
    .build()
}

/// A v2 `LOCAL` header: a connection the proxy makes for itself (a health check).
pub fn local_header() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    // Version 2, command LOCAL; family and protocol unspecified; no addresses.
    header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    header
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_headers_round_trip() {
        let client: SocketAddr = "203.0.113.9:40000".parse().expect("addr");
        let proxy: SocketAddr = "[::1]:443".parse().expect("addr");
        let header = v2_header(client, proxy).expect("builds");
        let parsed = ppp::v2::Header::try_from(&header[..]).expect("parses");
        assert_eq!(parsed.command, ppp::v2::Command::Proxy);
        match parsed.addresses {
            ppp::v2::Addresses::IPv6(a) => {
                assert_eq!(
                    a.source_address,
                    "::ffff:203.0.113.9"
                        .parse::<std::net::Ipv6Addr>()
                        .expect("ip")
                );
                assert_eq!(a.source_port, 40000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\n").expect("v1"),
            Some("192.0.2.1:5000".parse().expect("addr"))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").expect("v1"), None);
        assert!(parse_v1(b"PROXY TCP4 nonsense\r\n").is_err());
        let local = local_header();
        let parsed = ppp::v2::Header::try_from(&local[..]).expect("parses");
        assert_eq!(parsed.command, ppp::v2::Command::Local);
    }
}

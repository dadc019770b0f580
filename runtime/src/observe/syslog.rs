//! Access-log lines to a syslog collector: RFC 5424 messages over UDP, TCP (octet
//! counting, RFC 6587) or a local datagram socket such as `/dev/log`. Sent by the access
//! log's writer thread, never by a request; a collector that is absent, full or slow makes
//! lines drop (counted), and the connection is made again for the next batch.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, SystemTime};

pub use pingora_dsl_rules::{SyslogSpec, SyslogTransport};

/// How long a TCP collector may take to accept the connection or a write.
const TCP_TIMEOUT: Duration = Duration::from_secs(1);

/// Severity `info` (6): every access-log line.
const SEVERITY_INFO: u8 = 6;

/// An open connection to the collector.
enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

/// The writer thread's end of a syslog destination.
pub(crate) struct SyslogSink {
    spec: SyslogSpec,
    conn: Option<Conn>,
    hostname: String,
    pid: u32,
}

impl SyslogSink {
    /// A sink for `spec`, connecting with the first line.
    pub(crate) fn new(spec: SyslogSpec) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_owned());
        SyslogSink {
            spec,
            conn: None,
            hostname,
            pid: std::process::id(),
        }
    }

    /// Sends each line of `batch` as one message. Returns how many lines could not be
    /// sent, and the first error.
    pub(crate) fn send_lines(&mut self, batch: &[u8]) -> (u64, Option<io::Error>) {
        let mut dropped = 0;
        let mut first_error = None;
        for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Err(e) = self.send_line(SEVERITY_INFO, line) {
                dropped += 1;
                first_error.get_or_insert(e);
            }
        }
        (dropped, first_error)
    }

    /// Sends `line` as one message of `severity` (RFC 5424: 3 error ... 7 debug).
    pub(crate) fn send_line(&mut self, severity: u8, line: &[u8]) -> io::Result<()> {
        let message = self.message(severity, line, SystemTime::now());
        self.send(&message).inspect_err(|_| {
            // A stream that failed is made again for the next line.
            self.conn = None;
        })
    }

    /// `<PRI>1 TIMESTAMP HOST APP PROCID - - LINE`.
    fn message(&self, severity: u8, line: &[u8], now: SystemTime) -> Vec<u8> {
        let pri = u16::from(self.spec.facility) * 8 + u16::from(severity);
        let mut out = format!(
            "<{pri}>1 {} {} {} {} - - ",
            super::access_log::rfc3339_string(now),
            self.hostname,
            self.spec.tag,
            self.pid
        )
        .into_bytes();
        out.extend_from_slice(line);
        out
    }

    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        match self.conn.as_mut() {
            Some(Conn::Udp(s)) => s.send(message).map(|_| ()),
            Some(Conn::Unix(s)) => s.send(message).map(|_| ()),
            Some(Conn::Tcp(s)) => {
                let mut framed = format!("{} ", message.len()).into_bytes();
                framed.extend_from_slice(message);
                s.write_all(&framed)
            }
            None => Err(io::Error::other("no syslog connection")),
        }
    }

    /// A connection to the collector; datagram sockets do not wait (a full collector
    /// drops the line).
    fn connect(&self) -> io::Result<Conn> {
        let address = &self.spec.address;
        let named = |e: io::Error| io::Error::new(e.kind(), format!("syslog {address}: {e}"));
        match self.spec.transport {
            SyslogTransport::Udp => {
                let to: SocketAddr = address
                    .parse()
                    .map_err(|_| named(io::ErrorKind::InvalidInput.into()))?;
                let local: SocketAddr = if to.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local).map_err(named)?;
                socket.connect(to).map_err(named)?;
                socket.set_nonblocking(true).map_err(named)?;
                Ok(Conn::Udp(socket))
            }
            SyslogTransport::Tcp => {
                let to: SocketAddr = address
                    .parse()
                    .map_err(|_| named(io::ErrorKind::InvalidInput.into()))?;
                let stream = TcpStream::connect_timeout(&to, TCP_TIMEOUT).map_err(named)?;
                stream.set_write_timeout(Some(TCP_TIMEOUT)).map_err(named)?;
                Ok(Conn::Tcp(stream))
            }
            SyslogTransport::Unix => {
                let socket = UnixDatagram::unbound().map_err(named)?;
                socket.connect(address).map_err(named)?;
                socket.set_nonblocking(true).map_err(named)?;
                Ok(Conn::Unix(socket))
            }
        }
    }
}

/// How a syslog destination is written back (`--print-config`, errors).
pub fn describe(spec: &SyslogSpec) -> String {
    let scheme = match spec.transport {
        SyslogTransport::Udp => "udp",
        SyslogTransport::Tcp => "tcp",
        SyslogTransport::Unix => "unix",
    };
    let facility = pingora_dsl_rules::SYSLOG_FACILITIES
        .iter()
        .find(|(_, n)| *n == spec.facility)
        .map_or("local7", |(name, _)| name);
    format!(
        "syslog:{scheme}://{}?facility={facility}&tag={}",
        spec.address, spec.tag
    )
}

/// The process log (tracing's events) to a syslog collector over datagrams (UDP or a
/// local socket): each event is one message, its level mapped to a severity, sent at once
/// without waiting (a full or absent collector loses it, counted). No thread, so a
/// daemon's fork keeps it working.
#[derive(Clone)]
pub struct ProcessLogWriter {
    sink: std::sync::Arc<std::sync::Mutex<SyslogSink>>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ProcessLogWriter {
    /// A writer to `spec`; errors for a stream (`tcp`), which could block the logging
    /// thread.
    pub fn new(spec: SyslogSpec) -> io::Result<Self> {
        if spec.transport == SyslogTransport::Tcp {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the process log goes to syslog over datagrams: use syslog:udp://IP:PORT or syslog:unix:///dev/log",
            ));
        }
        Ok(ProcessLogWriter {
            sink: std::sync::Arc::new(std::sync::Mutex::new(SyslogSink::new(spec))),
            dropped: std::sync::Arc::default(),
        })
    }

    /// Events lost because the collector was absent or full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One event being formatted; sent when tracing drops it.
pub struct EventWriter {
    log: ProcessLogWriter,
    severity: u8,
    line: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let line = self.line.trim_ascii_end();
        if line.is_empty() {
            return;
        }
        let sent = match self.log.sink.lock() {
            Ok(mut sink) => sink.send_line(self.severity, line).is_ok(),
            Err(_) => false,
        };
        if !sent {
            self.log
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ProcessLogWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        self.event(SEVERITY_INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> EventWriter {
        let severity = match *meta.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        self.event(severity)
    }
}

impl ProcessLogWriter {
    fn event(&self, severity: u8) -> EventWriter {
        EventWriter {
            log: self.clone(),
            severity,
            line: Vec::with_capacity(256),
        }
    }
}

//! The access log: one line per finished request (or, for a layer-4 proxy, per finished
//! connection), in nginx's `combined` format (with the proxy's own fields appended) or as
//! a JSON object, to stdout or a file.
//!
//! Lines are formatted on the request's thread and handed to a writer thread over a
//! bounded channel, so a slow disk never stalls a request: when the channel is full the
//! line is dropped and counted ([`AccessLog::dropped`]). [`AccessLog::reopen`] reopens a
//! file after rotation (a declared proxy does it on SIGHUP).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::observe::syslog::{SyslogSink, SyslogSpec};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// nginx's `combined` line, then `rt=` (seconds), `upstream=`, `retries=`, `id=`,
    /// for TLS connections `tls_group=` and, for failed requests, `error="..."`.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

impl AccessLogFormat {
    /// `"combined"` or `"json"`.
    pub fn parse(name: &str) -> io::Result<Self> {
        match name {
            "combined" => Ok(AccessLogFormat::Combined),
            "json" => Ok(AccessLogFormat::Json),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown access log format `{other}`: use `combined` or `json`"),
            )),
        }
    }

    /// The format's name, as [`AccessLogFormat::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            AccessLogFormat::Combined => "combined",
            AccessLogFormat::Json => "json",
        }
    }
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// The process's standard output.
    Stdout,
    /// A file, appended to (created if missing).
    File(PathBuf),
    /// A syslog collector (see [`syslog`](crate::observe::syslog)).
    Syslog(SyslogSpec),
}

impl AccessLogTarget {
    /// `"stdout"`, `"syslog:udp://IP:PORT?facility=local0&tag=edge"` (or `tcp://`,
    /// `unix:///dev/log`), or a file path; errors for a malformed `syslog:` destination.
    pub fn parse(target: &str) -> io::Result<Self> {
        if let Some(syslog) = pingora_dsl_rules::parse_syslog(target) {
            return syslog.map(AccessLogTarget::Syslog).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("access log {target:?}: {e}"),
                )
            });
        }
        Ok(match target {
            "stdout" | "-" => AccessLogTarget::Stdout,
            path => AccessLogTarget::File(PathBuf::from(path)),
        })
    }

    /// As [`AccessLogTarget::parse`] reads it.
    pub fn describe(&self) -> String {
        match self {
            AccessLogTarget::Stdout => "stdout".to_owned(),
            AccessLogTarget::File(p) => p.display().to_string(),
            AccessLogTarget::Syslog(spec) => crate::observe::syslog::describe(spec),
        }
    }
}

enum Message {
    Line(Vec<u8>),
    Reopen,
}

struct Inner {
    format: AccessLogFormat,
    target: AccessLogTarget,
    sender: SyncSender<Message>,
    /// The writer thread's end of the queue, until the first line starts the thread.
    receiver: Mutex<Option<Receiver<Message>>>,
    started: Once,
    /// Lines dropped: the queue was full, or the syslog collector refused them.
    dropped: Arc<AtomicU64>,
}

/// An access log: cheap to clone, shared by every worker of a proxy.
#[derive(Clone)]
pub struct AccessLog(Arc<Inner>);

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.0.format)
            .field("target", &self.0.target)
            .finish()
    }
}

impl AccessLog {
    /// A log writing `format` lines to `target`, checking now that a file can be
    /// opened for appending (so a bad path fails at startup, and under `-t`).
    pub fn open(target: AccessLogTarget, format: AccessLogFormat) -> io::Result<Self> {
        if let AccessLogTarget::File(path) = &target {
            check_append(path, "access log")?;
        }
        Ok(AccessLog::new(target, format))
    }

    /// A log writing `format` lines to `target`. The writer thread starts, and opens
    /// (creates) the file, with the first line: a process that never serves (`-t`,
    /// `--print-config`) starts no thread and writes no file, and one that daemonizes is
    /// still single-threaded when it forks. If the file cannot be opened, the thread logs
    /// why and drops lines until a [`reopen`](AccessLog::reopen) succeeds.
    /// [`AccessLog::open`] checks the file first.
    pub fn new(target: AccessLogTarget, format: AccessLogFormat) -> Self {
        let (sender, receiver) = mpsc::sync_channel(QUEUE_LINES);
        AccessLog(Arc::new(Inner {
            format,
            target,
            sender,
            receiver: Mutex::new(Some(receiver)),
            started: Once::new(),
            dropped: Arc::default(),
        }))
    }

    /// Starts the writer thread, once.
    fn start_writer(&self) {
        self.0.started.call_once(|| {
            let Some(receiver) = self.0.receiver.lock().ok().and_then(|mut r| r.take()) else {
                return;
            };
            let target = self.0.target.clone();
            let dropped = self.0.dropped.clone();
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_lines(Sink::open(&target), receiver, &dropped));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the access log writer; lines are dropped");
            }
        });
    }

    /// Checks that the log's file can be appended to, creating nothing (stdout always
    /// can).
    pub fn check(&self) -> io::Result<()> {
        match &self.0.target {
            AccessLogTarget::File(path) => check_append(path, "access log"),
            // A collector may come and go: lines meanwhile are dropped and counted.
            AccessLogTarget::Stdout | AccessLogTarget::Syslog(_) => Ok(()),
        }
    }

    /// The line format.
    pub fn format(&self) -> AccessLogFormat {
        self.0.format
    }

    /// Where lines go.
    pub fn target(&self) -> &AccessLogTarget {
        &self.0.target
    }

    /// Lines dropped because the writer fell behind or the syslog collector refused them.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file (after logrotate moved it); nothing for stdout.
    pub fn reopen(&self) {
        self.start_writer();
        let _ = self.0.sender.try_send(Message::Reopen);
    }

    /// Formats `entry` and queues it for writing.
    pub fn write(&self, entry: &impl LogLine) {
        let mut line = Vec::with_capacity(256);
        match self.0.format {
            AccessLogFormat::Combined => entry.write_combined(&mut line),
            AccessLogFormat::Json => entry.write_json(&mut line),
        }
        line.push(b'\n');
        self.start_writer();
        match self.0.sender.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.0.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n + 1,
                        "access log writer is behind; lines dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.0.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Something the access log records, in either format.
pub trait LogLine {
    /// Appends the `combined` form (no newline).
    fn write_combined(&self, out: &mut Vec<u8>);
    /// Appends the JSON form (no newline).
    fn write_json(&self, out: &mut Vec<u8>);
}

/// One finished request, as the access log records it.
#[derive(Debug, Serialize)]
pub struct AccessEntry<'a> {
    /// When the request arrived.
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The client's address.
    pub client: SocketAddr,
    /// Who the request authenticated as (`auth`), in `combined`'s remote-user field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// The request method.
    pub method: &'a str,
    /// The `Host` asked for.
    pub host: Option<&'a str>,
    /// The request target (path and query).
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub protocol: &'a str,
    /// The status sent (0 if none was).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// From the request head to the end of the response, in seconds.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// The peer that answered (the last one tried).
    pub upstream: Option<SocketAddr>,
    /// Times the request went to another peer.
    pub retries: u32,
    /// The request id (from `x-request-id`, or generated).
    pub request_id: &'a str,
    /// `Referer`.
    pub referer: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// The key-exchange group of the client's TLS connection (`X25519MLKEM768` when it is
    /// post-quantum); absent for cleartext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_group: Option<&'a str>,
    /// Why the request failed, if it did.
    pub error: Option<String>,
}

impl LogLine for AccessEntry<'_> {
    fn write_combined(&self, out: &mut Vec<u8>) {
        let _ =
            write!(
            out,
            "{} - {} [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" rt={:.6} upstream={} retries={} id={}",
            self.client.ip(),
            Escaped(&self.user.map_or_else(|| "-".to_owned(), |u| u.replace(' ', "_"))),
            clf_time(self.time),
            self.method,
            Escaped(self.path),
            self.protocol,
            self.status,
            self.bytes,
            Escaped(self.referer.unwrap_or("-")),
            Escaped(self.user_agent.unwrap_or("-")),
            self.duration.as_secs_f64(),
            self.upstream
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            self.retries,
            Escaped(self.request_id),
        );
        if let Some(group) = self.tls_group {
            let _ = write!(out, " tls_group={group}");
        }
        if let Some(error) = &self.error {
            let _ = write!(out, " error=\"{}\"", Escaped(error));
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        json_line(self, out);
    }
}

/// Appends `entry` as one JSON object.
fn json_line(entry: &impl Serialize, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, entry).is_err() {
        out.clear();
        out.extend_from_slice(b"{\"error\":\"access log entry could not be encoded\"}");
    }
}

/// One finished connection (TCP, TLS) or client mapping (UDP) of a layer-4 proxy.
#[derive(Debug, Serialize)]
pub struct ConnectionEntry<'a> {
    /// When the connection was accepted (the first datagram, for UDP).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The client's address.
    pub client: SocketAddr,
    /// `TCP`, `TLS` or `UDP`.
    pub protocol: &'static str,
    /// The peer the connection went to, if one was reached.
    pub upstream: Option<SocketAddr>,
    /// Peers tried after the first failed to connect.
    pub retries: u32,
    /// Bytes from the client to the peer.
    pub bytes_to_upstream: u64,
    /// Bytes from the peer to the client.
    pub bytes_to_client: u64,
    /// From accept to close, in seconds.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// Why it ended: `closed`, `idle`, `shutdown`, `error`, `no_peer`, `connect_failed`
    /// or `handshake_failed`.
    pub end: &'static str,
    /// The key-exchange group of the client's TLS handshake, for `TLS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_group: Option<&'a str>,
    /// The error behind an end other than `closed`, `idle` and `shutdown`.
    pub error: Option<&'a str>,
}

impl LogLine for ConnectionEntry<'_> {
    fn write_combined(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "{} - - [{}] \"{}\" upstream={} to_upstream={} to_client={} rt={:.6} retries={} end={}",
            self.client.ip(),
            clf_time(self.time),
            self.protocol,
            self.upstream
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            self.bytes_to_upstream,
            self.bytes_to_client,
            self.duration.as_secs_f64(),
            self.retries,
            self.end,
        );
        if let Some(group) = self.tls_group {
            let _ = write!(out, " tls_group={group}");
        }
        if let Some(error) = self.error {
            let _ = write!(out, " error=\"{}\"", Escaped(error));
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        json_line(self, out);
    }
}

/// Escapes `"`, `\` and control bytes the way nginx does in its log (`\xHH`), so one
/// request is always one line and a field cannot be forged.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' | '\\' => write!(f, "\\x{:02X}", c as u32)?,
                c if c.is_control() => write!(f, "\\x{:02X}", c as u32 & 0xff)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&rfc3339_string(*t))
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-12-05T21:51:42.123Z`).
pub(crate) fn rfc3339_string(t: SystemTime) -> String {
    let (date, millis) = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        date.year, date.month, date.day, date.hour, date.minute, date.second, millis
    )
}

/// `10/Oct/2000:13:55:36 +0000`, the common log format's time (in UTC).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (d, _) = civil(t);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        d.day,
        MONTHS[(d.month as usize).saturating_sub(1) % 12],
        d.year,
        d.hour,
        d.minute,
        d.second
    )
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// The UTC calendar date and time of `t`, and its milliseconds.
fn civil(t: SystemTime) -> (Civil, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a proleptic Gregorian date, counting in 400-year eras
    // that start on March 1st (so the leap day ends a year).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        },
        since.subsec_millis(),
    )
}

enum Sink {
    Stdout,
    Syslog(SyslogSink),
    /// A file, opened with the first line (`tried` says whether that was attempted; after
    /// a failure only a reopen tries again).
    File {
        path: PathBuf,
        file: Option<File>,
        tried: bool,
    },
}

impl Sink {
    fn open(target: &AccessLogTarget) -> Sink {
        match target {
            AccessLogTarget::Stdout => Sink::Stdout,
            AccessLogTarget::Syslog(spec) => Sink::Syslog(SyslogSink::new(spec.clone())),
            // Opened with the first line (see `AccessLog::new`).
            AccessLogTarget::File(path) => Sink::File {
                file: None,
                path: path.clone(),
                tried: false,
            },
        }
    }

    /// Writes `bytes` (whole lines); returns the lines lost and the error, if any.
    fn write_lines(&mut self, bytes: &[u8]) -> (u64, Option<io::Error>) {
        if let Sink::Syslog(sink) = self {
            return sink.send_lines(bytes);
        }
        match self.write_all(bytes) {
            Ok(()) => (0, None),
            Err(e) => {
                let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                (lines, Some(e))
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Syslog(sink) => match sink.send_lines(bytes) {
                (_, Some(e)) => Err(e),
                (_, None) => Ok(()),
            },
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File {
                file: Some(file), ..
            } => file.write_all(bytes),
            Sink::File {
                file: file @ None,
                path,
                tried: tried @ false,
            } => {
                *tried = true;
                let mut opened = open_append(path)?;
                opened.write_all(bytes)?;
                *file = Some(opened);
                Ok(())
            }
            Sink::File {
                file: None, path, ..
            } => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("access log {} is not open", path.display()),
            )),
        }
    }

    fn reopen(&mut self) {
        if let Sink::File { path, file, .. } = self {
            match open_append(path) {
                Ok(fresh) => *file = Some(fresh),
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the access log; writing to the old file")
                }
            }
        }
    }
}

/// Checks that the log file `path` (`what`: "access log", "error log") can be appended to,
/// creating nothing: an existing file is opened for appending, a missing one needs a
/// writable directory.
pub(crate) fn check_append(path: &Path, what: &str) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
    match OpenOptions::new().append(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
                named(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("cannot create a file in {}: {e}", dir.display()),
                ))
            })
        }
        Err(e) => Err(named(e)),
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

/// The writer thread: batches whatever is queued into one write, until every sender
/// is gone.
fn write_lines(mut sink: Sink, receiver: Receiver<Message>, dropped: &AtomicU64) {
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut failing = false;
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Reopen => {
                    flush(&mut sink, &mut batch, &mut failing, dropped);
                    sink.reopen();
                }
            }
            if batch.len() < 64 * 1024 {
                next = receiver.try_recv().ok();
            }
        }
        flush(&mut sink, &mut batch, &mut failing, dropped);
    }
}

/// Writes the batch; lines that could not be written are counted in `dropped`, and the
/// first failure of a run of them is logged.
fn flush(sink: &mut Sink, batch: &mut Vec<u8>, failing: &mut bool, dropped: &AtomicU64) {
    if batch.is_empty() {
        return;
    }
    match sink.write_lines(batch) {
        (_, None) => *failing = false,
        (lost, Some(e)) => {
            dropped.fetch_add(lost, Ordering::Relaxed);
            if !*failing {
                tracing::error!(error = %e, "cannot write the access log; lines are dropped and counted");
            }
            *failing = true;
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates() {
        let at = |s: u64| civil(UNIX_EPOCH + Duration::from_secs(s)).0;
        let d = at(0);
        assert_eq!((d.year, d.month, d.day, d.hour), (1970, 1, 1, 0));
        // 2000-02-29T12:34:56Z, a leap day in a century year divisible by 400.
        let d = at(951_827_696);
        assert_eq!(
            (d.year, d.month, d.day, d.hour, d.minute, d.second),
            (2000, 2, 29, 12, 34, 56)
        );
        // 2026-11-26T00:00:00Z.
        let d = at(1_795_651_200);
        assert_eq!((d.year, d.month, d.day), (2026, 11, 26));
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(971_182_536)),
            "10/Oct/2000:12:55:36 +0000"
        );
    }

    #[test]
    fn combined_lines_escape_quotes_and_control_bytes() {
        let entry = AccessEntry {
            time: UNIX_EPOCH,
            client: "127.0.0.1:5000".parse().expect("addr"),
            method: "GET",
            host: Some("example.com"),
            path: "/a\"b",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 5,
            duration: Duration::from_millis(2),
            upstream: None,
            retries: 0,
            request_id: "abc",
            referer: None,
            user_agent: Some("x\ny"),
            tls_group: None,
            user: None,
            error: None,
        };
        let mut out = Vec::new();
        entry.write_combined(&mut out);
        let line = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            line,
            "127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET /a\\x22b HTTP/1.1\" 200 5 \"-\" \"x\\x0Ay\" rt=0.002000 upstream=- retries=0 id=abc"
        );
        let mut out = Vec::new();
        entry.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/a\"b");
    }
}

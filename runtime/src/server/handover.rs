//! Zero-downtime upgrade: a running (old) process hands its listening sockets to a new one
//! over a Unix socket, and stops accepting only once the new one serves.
//!
//! The steps, Pingora's model:
//! 1. the new process, started with `-u`, binds the upgrade socket and waits ([`receive`]);
//! 2. the old process gets SIGQUIT, connects, and sends its listening sockets as
//!    `SCM_RIGHTS` ancillary data ([`hand_over`]);
//! 3. the new process adopts them instead of binding (the same kernel sockets: connections
//!    waiting in the accept queue stay there), starts serving, and answers one byte: ready
//!    ([`Handover::ready`]);
//! 4. the old process stops accepting and drains its connections within the grace period.
//!
//! If the new process fails or exits before step 3, the old one reads end-of-file (or times
//! out), logs why, and keeps serving. Both sides check the other's credentials
//! (`SO_PEERCRED`): sockets are only sent to, and taken from, root, this process's own user,
//! or the user the configuration drops to.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt::PeerCredentials, ControlMessage, ControlMessageOwned,
    MsgFlags,
};
use nix::unistd::Uid;

/// First bytes of the old process's message: the protocol and its version.
const GREETING: &[u8] = b"pingora-dsl upgrade v1\n";
/// The new process's answer once it serves on the sockets.
const READY: u8 = b'R';
/// Most sockets one hand-over carries (the kernel's limit per message is 253).
pub const MAX_SOCKETS: usize = 250;

/// Where and how long a server takes part in upgrades.
#[derive(Debug, Clone)]
pub struct UpgradeConf {
    /// The Unix socket the new process waits on.
    pub socket: PathBuf,
    /// How long the new process waits for the sockets, and the old one for "ready".
    pub timeout: Duration,
    /// Who may be on the other end.
    pub access: HandoverAccess,
}

/// How long, by default, the new process waits for the sockets and the old one for the
/// new one to serve.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl UpgradeConf {
    /// The default for a server named `name`: `pingora-dsl-NAME.upgrade.sock` in the
    /// temporary directory, [`DEFAULT_TIMEOUT`], processes of this user or root.
    pub fn for_server(name: &str) -> Self {
        UpgradeConf {
            socket: std::env::temp_dir().join(format!("pingora-dsl-{name}.upgrade.sock")),
            timeout: DEFAULT_TIMEOUT,
            access: HandoverAccess::default(),
        }
    }
}

impl Default for UpgradeConf {
    fn default() -> Self {
        UpgradeConf::for_server("server")
    }
}

/// Who may be on the other end of the upgrade socket: root, this process's user, and the
/// user the configuration drops privileges to.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandoverAccess {
    /// The configured `[server] user`, if any.
    pub run_as: Option<Uid>,
}

impl HandoverAccess {
    fn check(&self, stream: &UnixStream) -> io::Result<()> {
        let creds = getsockopt(stream, PeerCredentials).map_err(io::Error::from)?;
        let uid = creds.uid();
        let me = Uid::effective().as_raw();
        if uid == 0 || uid == me || self.run_as.is_some_and(|u| u.as_raw() == uid) {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the process on the upgrade socket (pid {}) runs as uid {uid}, \
                 neither root nor this server's user: refusing to exchange sockets",
                creds.pid()
            ),
        ))
    }
}

/// The new process's end of a hand-over: tell the old process it may stop.
#[derive(Debug)]
pub struct Handover {
    stream: UnixStream,
}

impl Handover {
    /// Tells the old process that this one serves on the sockets it sent; it then stops
    /// accepting and drains.
    pub fn ready(mut self) -> io::Result<()> {
        self.stream.write_all(&[READY])?;
        self.stream.flush()
    }
}

/// New process: binds the upgrade socket at `path` (replacing a stale one), waits up to
/// `timeout` for the old process to connect, and receives its listening sockets.
pub fn receive(
    path: &Path,
    timeout: Duration,
    policy: HandoverAccess,
) -> io::Result<(Vec<OwnedFd>, Handover)> {
    let listener = bind_upgrade_socket(path, policy)?;
    let accepted = accept_within(&listener, timeout);
    // Nobody else needs the path once the old process is connected (or never came).
    let _ = std::fs::remove_file(path);
    let stream = accepted.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "upgrade socket {}: no old process handed over its sockets within {timeout:?} \
                 (send it SIGQUIT after starting this one): {e}",
                path.display()
            ),
        )
    })?;
    policy.check(&stream)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let fds = receive_fds(&stream)?;
    Ok((fds, Handover { stream }))
}

fn bind_upgrade_socket(path: &Path, policy: HandoverAccess) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "upgrade socket {}: a file that is not a socket is in the way",
                    path.display()
                ),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("upgrade socket {}: {e}", path.display())))?;
    // Only this user (and the user it drops to, who runs the old process) may connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(uid) = policy.run_as {
        if Uid::effective().is_root() {
            nix::unistd::chown(path, Some(uid), None).map_err(io::Error::from)?;
        }
    }
    Ok(listener)
}

fn accept_within(listener: &UnixListener, timeout: Duration) -> io::Result<UnixStream> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => continue,
            Ok(_) => {
                let (stream, _) = listener.accept()?;
                return Ok(stream);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn receive_fds(stream: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    let mut data = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    let mut iov = [IoSliceMut::new(&mut data)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("upgrade: receiving the sockets: {e}"),
        )
    })?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            fds.extend(raw.into_iter().map(own_received_fd));
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let len = msg.bytes;
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "upgrade: the old process sent more sockets than one hand-over carries",
        ));
    }
    if &data[..len] != GREETING {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "upgrade: the process on the upgrade socket does not speak this protocol",
        ));
    }
    Ok(fds)
}

/// Takes ownership of a descriptor that `SCM_RIGHTS` just installed in this process.
/// The one `unsafe` of the crate: nix hands received descriptors over as raw numbers.
#[allow(unsafe_code)]
fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel opened `fd` in this process while receiving the message, and
    // nothing else has seen the number: this is its only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Connects to the new process on `path`, waiting up to `timeout` for it to appear, so the
/// new process may be started before or after the old one gets SIGQUIT.
fn connect_within(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(CONNECT_RETRY);
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "upgrade socket {}: no new process came within {timeout:?} \
                         (start it with -u): {e}",
                        path.display()
                    ),
                ))
            }
        }
    }
}

/// How often the old process looks for the new one on the upgrade socket.
const CONNECT_RETRY: Duration = Duration::from_millis(50);

/// Old process: connects to the new process waiting on `path` (waiting up to `timeout`
/// for one to appear), sends `sockets`, and waits up to `timeout` for it to say it serves.
/// `Ok` means: stop accepting now.
pub fn hand_over(
    path: &Path,
    sockets: &[BorrowedFd<'_>],
    timeout: Duration,
    policy: HandoverAccess,
) -> io::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "upgrade: {} listening sockets, more than {MAX_SOCKETS} per hand-over",
                sockets.len()
            ),
        ));
    }
    let mut stream = connect_within(path, timeout)?;
    policy.check(&stream)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let raw: Vec<RawFd> = sockets.iter().map(|fd| fd.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(GREETING)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    if sent != GREETING.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "upgrade: the hand-over message was cut short",
        ));
    }
    let mut answer = [0u8; 1];
    match stream.read(&mut answer) {
        Ok(1) if answer[0] == READY => Ok(()),
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upgrade: the new process exited before it was ready",
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "upgrade: unexpected answer from the new process",
        )),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("upgrade: the new process was not ready within {timeout:?}"),
            ))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("upgrade: waiting for the new process: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_cross_and_ready_arrives() {
        let dir = std::env::temp_dir().join(format!("pdsl-upgrade-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("up.sock");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = {
            let path = path.clone();
            std::thread::spawn(move || {
                let (fds, handover) =
                    receive(&path, Duration::from_secs(10), HandoverAccess::default())
                        .expect("receive");
                let adopted: Vec<std::net::TcpListener> =
                    fds.into_iter().map(std::net::TcpListener::from).collect();
                let addrs: Vec<_> = adopted
                    .iter()
                    .map(|l| l.local_addr().expect("addr"))
                    .collect();
                handover.ready().expect("ready");
                (adopted, addrs)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(Instant::now() < deadline, "receiver never bound");
            std::thread::sleep(Duration::from_millis(5));
        }
        hand_over(
            &path,
            &[listener.as_fd()],
            Duration::from_secs(10),
            HandoverAccess::default(),
        )
        .expect("hand over");
        let (adopted, addrs) = receiver.join().expect("receiver thread");
        assert_eq!(addrs, vec![addr]);
        // The same kernel socket: a connection made now is accepted by the adopted copy.
        drop(listener);
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let (_, from) = adopted[0].accept().expect("accept on the adopted socket");
        assert!(from.ip().is_loopback());
        assert!(!path.exists(), "the upgrade socket is removed once used");
    }

    #[test]
    fn no_waiting_process_is_a_clear_error() {
        let path = std::env::temp_dir().join(format!("pdsl-nobody-{}.sock", std::process::id()));
        let e = hand_over(
            &path,
            &[],
            Duration::from_millis(200),
            HandoverAccess::default(),
        )
        .expect_err("nobody waits");
        assert!(e.to_string().contains("no new process came"), "{e}");
    }

    #[test]
    fn a_new_process_that_dies_before_ready_is_reported() {
        let path = std::env::temp_dir().join(format!("pdsl-dies-{}.sock", std::process::id()));
        let receiver = {
            let path = path.clone();
            std::thread::spawn(move || {
                let (_fds, handover) =
                    receive(&path, Duration::from_secs(10), HandoverAccess::default())
                        .expect("receive");
                drop(handover);
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(Instant::now() < deadline, "receiver never bound");
            std::thread::sleep(Duration::from_millis(5));
        }
        let e = hand_over(
            &path,
            &[],
            Duration::from_secs(10),
            HandoverAccess::default(),
        )
        .expect_err("not ready");
        assert!(e.to_string().contains("exited before it was ready"), "{e}");
        receiver.join().expect("receiver");
    }
}

//! Running in the background: daemonizing, the pid file, the error log, and dropping
//! privileges after the listening sockets are bound.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// A pid file, written atomically (a temporary file renamed into place) and removed when
/// this value is dropped, unless another process (the new one of an upgrade) rewrote it.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid to `path`.
    pub fn write(path: &Path) -> io::Result<PidFile> {
        let tmp = path.with_extension("pid.tmp");
        let mut file = File::create(&tmp)
            .map_err(|e| io::Error::new(e.kind(), format!("pid file {}: {e}", tmp.display())))?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
            .map_err(|e| io::Error::new(e.kind(), format!("pid file {}: {e}", path.display())))?;
        Ok(PidFile {
            path: path.to_owned(),
        })
    }
}

impl PidFile {
    /// Checks, without writing the pid, that a pid file can be created at `path`.
    pub fn check(path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("pid.tmp");
        File::create(&tmp)
            .map_err(|e| io::Error::new(e.kind(), format!("pid file {}: {e}", tmp.display())))?;
        std::fs::remove_file(&tmp)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // After a graceful upgrade the file names the new process: leave it.
        let current = std::fs::read_to_string(&self.path).unwrap_or_default();
        if current.trim() != std::process::id().to_string() {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot remove the pid file");
        }
    }
}

/// The user and group to run as, looked up before anything irreversible happens.
#[derive(Debug, Clone)]
pub struct Identity {
    uid: Option<Uid>,
    gid: Option<Gid>,
}

impl Identity {
    /// Looks up `user` and `group` (a user without a group runs with the user's group).
    pub fn lookup(user: Option<&str>, group: Option<&str>) -> io::Result<Identity> {
        let user = match user {
            None => None,
            Some(name) => Some(
                User::from_name(name)
                    .map_err(io::Error::from)?
                    .ok_or_else(|| invalid(format!("server.user: no user named {name:?}")))?,
            ),
        };
        let gid = match group {
            Some(name) => Some(
                Group::from_name(name)
                    .map_err(io::Error::from)?
                    .ok_or_else(|| invalid(format!("server.group: no group named {name:?}")))?
                    .gid,
            ),
            None => user.as_ref().map(|u| u.gid),
        };
        Ok(Identity {
            uid: user.map(|u| u.uid),
            gid,
        })
    }

    /// The user id to switch to, if a user is configured.
    pub fn uid(&self) -> Option<Uid> {
        self.uid
    }

    /// Checks that switching is possible at all: it needs root.
    pub fn check(&self) -> io::Result<()> {
        if (self.uid.is_some() || self.gid.is_some()) && !Uid::effective().is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "server.user/server.group: switching user or group needs root",
            ));
        }
        Ok(())
    }

    /// Switches to the group, then the user (group first: a user can no longer change it).
    pub fn assume(&self) -> io::Result<()> {
        if let Some(gid) = self.gid {
            nix::unistd::setgroups(&[gid]).map_err(|e| privileges(e, "setgroups"))?;
            nix::unistd::setgid(gid).map_err(|e| privileges(e, "setgid"))?;
        }
        if let Some(uid) = self.uid {
            nix::unistd::setuid(uid).map_err(|e| privileges(e, "setuid"))?;
        }
        Ok(())
    }
}

fn privileges(e: nix::Error, call: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("cannot drop privileges ({call}): {e}; run as root to switch user/group"),
    )
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// How long the foreground process waits for the daemon to say it started.
pub const START_REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The daemon's promise to tell the waiting foreground process how its start went.
/// [`Detached::started`] makes the foreground process exit 0; dropping it unsent (the
/// daemon failed) makes it exit 1.
#[derive(Debug)]
pub struct Detached {
    report: File,
}

impl Detached {
    /// Tells the foreground process the daemon is up (pid file written, privileges
    /// dropped), so it exits 0: a service manager reading the pid file then finds it.
    pub fn started(mut self) {
        let _ = self.report.write_all(b"1");
    }
}

/// Detaches from the terminal (fork, new session, fork again), points stdin to
/// `/dev/null` and stdout/stderr to `error_log` (or `/dev/null`), and returns in the
/// daemon. The foreground process waits until the daemon calls [`Detached::started`]
/// (exit 0) or fails (exit 1), up to [`START_REPORT_TIMEOUT`]. Must run before any thread
/// starts: a fork keeps only the calling thread.
pub fn daemonize(error_log: Option<&Path>) -> io::Result<Detached> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads > 1 {
        return Err(invalid(format!(
            "cannot run as a daemon: the process already runs {threads} threads (start helpers such as demo origins after daemonizing, or give --upstream)"
        )));
    }
    let log = match error_log {
        Some(path) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("error log {}: {e}", path.display())))?,
        None => OpenOptions::new().write(true).open("/dev/null")?,
    };
    let null = File::open("/dev/null")?;
    let (read_end, write_end) = nix::unistd::pipe().map_err(io::Error::from)?;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    if let ForkResult::Parent = fork_single_threaded()? {
        drop(write_end);
        std::process::exit(wait_for_start_report(File::from(read_end)));
    }
    drop(read_end);
    nix::unistd::setsid().map_err(io::Error::from)?;
    // The session leader forks once more and leaves: the daemon can never reacquire a
    // controlling terminal.
    if let ForkResult::Parent = fork_single_threaded()? {
        std::process::exit(0);
    }
    // The working directory stays (relative paths in the config remain valid).
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(io::Error::from)?;
    nix::unistd::dup2(log.as_raw_fd(), 1).map_err(io::Error::from)?;
    nix::unistd::dup2(log.as_raw_fd(), 2).map_err(io::Error::from)?;
    Ok(Detached {
        report: File::from(write_end),
    })
}

enum ForkResult {
    Parent,
    Child,
}

/// `fork(2)`, for a process known to run a single thread.
#[allow(unsafe_code)]
fn fork_single_threaded() -> io::Result<ForkResult> {
    // SAFETY: `daemonize` checked that this process runs one thread, so the child inherits
    // no lock held by another thread and may run any code, not only async-signal-safe
    // functions.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => Ok(ForkResult::Parent),
        nix::unistd::ForkResult::Child => Ok(ForkResult::Child),
    }
}

/// The foreground side: the exit status the daemon's start report calls for.
fn wait_for_start_report(mut report: File) -> i32 {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::Read;
    let millis = START_REPORT_TIMEOUT.as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
    let ready = loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    if !matches!(ready, Ok(n) if n > 0) {
        eprintln!(
            "error: the daemon did not report its start within {START_REPORT_TIMEOUT:?}; see its error log"
        );
        return 1;
    }
    let mut byte = [0u8; 1];
    match report.read(&mut byte) {
        Ok(1) => 0,
        _ => {
            eprintln!("error: the daemon failed to start; see its error log");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_are_written_whole_and_removed() {
        let dir = std::env::temp_dir().join(format!("pingora-dsl-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("proxy.pid");
        let pid = PidFile::write(&path).expect("written");
        let text = std::fs::read_to_string(&path).expect("readable");
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(pid);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_users_and_groups_are_clear_errors() {
        let e = Identity::lookup(Some("no-such-user-pingora"), None).expect_err("unknown");
        assert!(e.to_string().contains("no user named"), "{e}");
        let e = Identity::lookup(None, Some("no-such-group-pingora")).expect_err("unknown");
        assert!(e.to_string().contains("no group named"), "{e}");
        assert!(Identity::lookup(None, None).is_ok());
    }
}

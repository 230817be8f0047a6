//! Child processes that cannot outlive the cluster: each runs in its own process group, gets
//! SIGKILL when the thread that spawned it dies (PR_SET_PDEATHSIG), carries the cluster's marker
//! environment variable (so leftovers can be found), and its whole group is killed on drop.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::ClusterError;

/// Environment variable set on every process a cluster starts; its value is the cluster id.
pub const MARKER_ENV: &str = "FLYWHEEL_CLUSTER_ID";

/// Configures `cmd` so the child leads a new process group and dies with its parent.
pub fn harden(cmd: &mut Command, cluster_id: &str) {
    cmd.env(MARKER_ENV, cluster_id);
    cmd.process_group(0);
    cmd.kill_on_drop(true);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A running child whose process group is killed when this value is dropped.
pub struct ManagedChild {
    pub name: String,
    child: Child,
    pgid: i32,
    /// Set once [`ManagedChild::terminate`] has killed the whole group: the group id may then be
    /// reused by an unrelated process (e.g. a restarted replacement), so drop must not signal it.
    group_killed: bool,
}

impl ManagedChild {
    /// Spawns `cmd` (already configured with program and args) with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, cluster_id: &str, log: &Path) -> Result<Self, ClusterError> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(ClusterError::io(log))?;
        let file2 = file.try_clone().map_err(ClusterError::io(log))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::from(file)).stderr(Stdio::from(file2));
        harden(&mut cmd, cluster_id);
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn { what: name.to_string(), source })?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        Ok(Self { name: name.to_string(), child, pgid, group_killed: false })
    }

    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        signal_group(self.pgid, libc::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            signal_group(self.pgid, libc::SIGKILL);
            let _ = self.child.wait().await;
        }
        // Stragglers in the group (children of the child) go too.
        signal_group(self.pgid, libc::SIGKILL);
        self.group_killed = true;
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        if self.group_killed {
            return;
        }
        signal_group(self.pgid, libc::SIGKILL);
    }
}

pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall; an already-gone group yields ESRCH, which is fine.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

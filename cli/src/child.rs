//! The command lease-lock runs: started in a process group of its own, so that stopping it
//! stops everything it started, and never outliving lease-lock.
//!
//! If lease-lock itself dies (SIGKILL, the OOM killer), its renewals stop and the lease
//! expires; the command must be gone by then. Two things see to it:
//! - the command's first process gets `PR_SET_PDEATHSIG` = SIGKILL: the kernel kills it when
//!   the thread that started it (lease-lock's only runtime thread) ends;
//! - a guard process (`lease-lock guard`, in a process group of its own so a terminal's ^C does
//!   not reach it) holds the read end of a pipe whose write end only lease-lock holds. When
//!   lease-lock dies the pipe reports end of file and the guard kills the command's whole
//!   process group, children of children included. When lease-lock is done with the command it
//!   writes one byte first, and the guard exits without killing (the group id may be reused).

use rustix::process::{kill_process_group, Pid, Signal};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tracing::{debug, warn};

#[derive(clap::Args, Debug)]
pub struct GuardArgs {
    /// The process group to kill when stdin reaches end of file.
    #[arg(long)]
    pgid: i32,
}

/// The guard: waits on stdin; a byte means "done, exit", end of file means "lease-lock died,
/// kill the group". Returns the exit status.
pub fn guard(args: &GuardArgs) -> u8 {
    let mut byte = [0u8; 1];
    let stood_down = matches!(std::io::stdin().read(&mut byte), Ok(1));
    if !stood_down {
        if let Some(pgid) = Pid::from_raw(args.pgid) {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
    0
}

/// The running command, its process group, and its guard.
pub struct Cmd {
    child: Child,
    pgid: Pid,
    guard: Option<(Child, ChildStdin)>,
    status: Option<ExitStatus>,
}

/// The exit status lease-lock passes on for the command's: its code, or 128 + the signal that
/// ended it (as shells do).
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

impl Cmd {
    /// Starts `argv` with `env` added, in a new process group, with its guard.
    ///
    /// # Errors
    /// The command or the guard could not be started.
    pub fn spawn(argv: &[String], env: &[(&str, String)]) -> std::io::Result<Cmd> {
        let (program, args) = argv.split_first().ok_or_else(|| std::io::Error::other("no command given"))?;
        let mut command = Command::new(program);
        command.args(args).envs(env.iter().map(|(k, v)| (*k, v))).process_group(0).kill_on_drop(false);
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: it makes one prctl system call (through rustix,
        // no allocation, no lock) and returns.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn()?;
        let pid = child.id().and_then(|id| Pid::from_raw(id as i32)).ok_or_else(|| std::io::Error::other("no pid"))?;
        let mut cmd = Cmd { child, pgid: pid, guard: None, status: None };
        match Self::spawn_guard(pid) {
            Ok(guard) => cmd.guard = Some(guard),
            Err(e) => {
                // Without a guard the command could outlive lease-lock: do not run it.
                cmd.signal(Signal::KILL);
                return Err(e);
            }
        }
        Ok(cmd)
    }

    fn spawn_guard(pgid: Pid) -> std::io::Result<(Child, ChildStdin)> {
        // This very binary even if a package upgrade replaced the file since it started
        // (`current_exe` would then name a deleted path).
        let mut guard = Command::new("/proc/self/exe")
            .args(["guard", "--pgid", &pgid.as_raw_nonzero().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = guard.stdin.take().ok_or_else(|| std::io::Error::other("guard has no stdin"))?;
        Ok((guard, stdin))
    }

    /// Sends `signal` to the command's whole process group.
    pub fn signal(&self, signal: Signal) {
        if self.status.is_none() {
            if let Err(e) = kill_process_group(self.pgid, signal) {
                debug!(error = %e, "signal to the command's process group");
            }
        }
    }

    /// Waits for the command's first process to exit.
    ///
    /// # Cancel safety
    /// Cancel-safe: the status is kept once seen.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => {
                warn!(error = %e, "waiting for the command failed");
                ExitStatus::from_raw(1 << 8)
            }
        };
        self.status = Some(status);
        status
    }

    /// Stops the command: `first` to the group (SIGTERM, or the signal lease-lock got), SIGKILL
    /// to the group after `grace` or as soon as `hurry` resolves (the lease is gone); then
    /// kills what is left of the group and stands the guard down. The command's status.
    pub async fn stop(
        &mut self,
        first: Signal,
        grace: Duration,
        hurry: impl std::future::Future<Output = ()>,
    ) -> ExitStatus {
        self.signal(first);
        let exited = tokio::select! {
            status = self.wait() => Some(status),
            _ = tokio::time::sleep(grace) => None,
            _ = hurry => None,
        };
        let status = match exited {
            Some(status) => status,
            None => {
                self.signal(Signal::KILL);
                self.wait().await
            }
        };
        self.finish().await;
        status
    }

    /// After the command's first process exited: kills what remains of its group (children it
    /// left behind must not outlive its tenure either) and stands the guard down.
    pub async fn finish(&mut self) {
        // The group's leader has been reaped, but its id stays the group's while any member
        // lives, so this reaches only stragglers (ESRCH when there are none).
        let _ = kill_process_group(self.pgid, Signal::KILL);
        if let Some((mut guard, mut stdin)) = self.guard.take() {
            let _ = stdin.write_all(b"x").await;
            drop(stdin);
            let _ = guard.wait().await;
        }
    }
}

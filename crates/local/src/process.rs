//! Instance processes: started in their own process group (so a killed
//! daemon leaves them serving), signalled as a group, and observed either as
//! our child (reaped by a waiter task) or, after a daemon restart, by pid.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running (or finished) instance process.
#[derive(Debug, Clone)]
pub struct ProcHandle {
    pub pid: i32,
    /// Set by the waiter task when our child exits; `None` for a process
    /// adopted after a daemon restart (not our child: probe with kill 0).
    exited: Option<Arc<AtomicBool>>,
}

/// Whether a process with this pid exists and has not exited (EPERM still
/// means it exists). A zombie counts as dead: after a daemon restart our old
/// children belong to init, which may be slow (or, in a container, fail) to
/// reap them.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit(')').next().and_then(|s| s.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => true,
    }
}

/// Send `sig` to the process group led by `pid`.
pub fn signal_group(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain syscall; a stale group just yields ESRCH.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// SIGTERM each process (its whole group when it leads one), wait up to
/// `grace` for them all, then SIGKILL what is left. For processes that are
/// not our children: found by their fleet mark, or adopted.
pub async fn stop_all(pids: &[i32], grace: Duration) {
    let signal = |pid: i32, sig: i32| {
        // SAFETY: plain syscalls on a pid we just saw alive.
        if unsafe { libc::getpgid(pid) } == pid {
            signal_group(pid, sig);
        }
        unsafe {
            libc::kill(pid, sig);
        }
    };
    for &pid in pids.iter().filter(|p| pid_alive(**p)) {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for &pid in pids.iter().filter(|p| pid_alive(**p)) {
        signal(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl ProcHandle {
    /// A process found alive at daemon start.
    pub fn adopted(pid: i32) -> Self {
        Self { pid, exited: None }
    }

    /// Whether the process is still running.
    pub fn is_alive(&self) -> bool {
        match &self.exited {
            Some(flag) => !flag.load(Ordering::SeqCst),
            None => pid_alive(self.pid),
        }
    }

    /// SIGTERM the group, wait up to `grace`, then SIGKILL it.
    pub async fn stop(&self, grace: Duration) {
        signal_group(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.is_alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Also reaps stragglers the main process left in its group.
        signal_group(self.pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.is_alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Start `argv` (no shell) in `cwd` with `env`, output appended to `log`, in a
/// new process group.
pub fn spawn(argv: &[String], cwd: &Path, env: &[(String, String)], log: &Path) -> std::io::Result<ProcHandle> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let flag = Arc::new(AtomicBool::new(false));
    let done = flag.clone();
    tokio::spawn(async move {
        let _ = child.wait().await;
        done.store(true, Ordering::SeqCst);
    });
    Ok(ProcHandle {
        pid,
        exited: Some(flag),
    })
}

//! Which process holds a lease: enough for any process sharing the store to
//! tell whether the holder still runs. The run id alone is not: a `resume`
//! of a run whose original `repave run` is still alive carries the same
//! run id, and two drivers then act on one group.

use serde::{Deserialize, Serialize};

/// A process, identified so that a recycled pid or a reboot is not taken
/// for the same process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Driver {
    pub pid: u32,
    pub host: String,
    /// The kernel's boot id (Linux `/proc/sys/kernel/random/boot_id`).
    #[serde(default)]
    pub boot: String,
    /// When the process started, in clock ticks after boot (Linux
    /// `/proc/PID/stat` field 22); 0 where unknown.
    #[serde(default)]
    pub started: u64,
}

impl Driver {
    /// This process.
    pub fn current() -> Driver {
        let pid = std::process::id();
        Driver {
            pid,
            host: hostname(),
            boot: boot_id(),
            started: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether this process still runs: `Some(true)` / `Some(false)` on the
    /// same host, `None` on another host (its liveness cannot be seen from
    /// here; the lease's expiry decides).
    pub fn alive(&self) -> Option<bool> {
        if self.host != hostname() {
            return None;
        }
        if !self.boot.is_empty() && self.boot != boot_id() {
            return Some(false);
        }
        Some(match start_time(self.pid) {
            Some(t) => self.started == 0 || t == self.started,
            None => pid_exists(self.pid),
        })
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command name,
/// which may itself contain spaces and parentheses).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn pid_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = Driver::current();
        assert!(me.started > 0, "{me:?}");
        assert_eq!(me.alive(), Some(true));
        let recycled = Driver {
            started: me.started + 1,
            ..me.clone()
        };
        assert_eq!(recycled.alive(), Some(false), "same pid, another start time");
        let rebooted = Driver {
            boot: "another-boot".into(),
            ..me.clone()
        };
        assert_eq!(rebooted.alive(), Some(false));
        let elsewhere = Driver {
            host: format!("{}-elsewhere", me.host),
            ..me
        };
        assert_eq!(elsewhere.alive(), None);
    }

    #[test]
    fn a_dead_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        let gone = Driver {
            pid,
            host: hostname(),
            boot: boot_id(),
            started: 1,
        };
        assert_eq!(gone.alive(), Some(false));
    }
}

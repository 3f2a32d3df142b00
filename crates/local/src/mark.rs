//! The fleet mark: every process a fleet process starts (instances, the
//! commands run on them, whatever those start in turn) carries in its
//! environment the state dir it belongs to and the identity (device and
//! inode) of that state's lock file.
//!
//! A fleet process killed with SIGKILL leaves its instances serving, by
//! design: the next fleet process of that state adopts them. When the state
//! itself is gone (deleted, or replaced by another), nothing ever will; the
//! mark is what lets any fleet process, `repave local down` or a test tell
//! such an orphan from a process that is merely waiting for adoption.

use crate::daemon::Paths;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The state dir a marked process belongs to.
pub const STATE_VAR: &str = "REPAVE_FLEET_STATE";
/// `DEVICE:INODE` of that state's lock file when the process was started.
pub const ID_VAR: &str = "REPAVE_FLEET_ID";

/// Identity of a state: its lock file, created once and never removed, so
/// a state dir deleted and created again at the same path is another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetId {
    dev: u64,
    ino: u64,
}

impl FleetId {
    /// The identity of an open file.
    pub fn of_file(f: &std::fs::File) -> std::io::Result<FleetId> {
        f.metadata().map(|m| FleetId::from(&m))
    }

    /// The identity of the file at `path` now.
    pub fn of_path(path: &Path) -> std::io::Result<FleetId> {
        std::fs::metadata(path).map(|m| FleetId::from(&m))
    }

    fn parse(s: &str) -> Option<FleetId> {
        let (dev, ino) = s.split_once(':')?;
        Some(FleetId {
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
        })
    }
}

impl From<&std::fs::Metadata> for FleetId {
    fn from(m: &std::fs::Metadata) -> Self {
        FleetId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

impl std::fmt::Display for FleetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

/// Which fleet a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub state_dir: PathBuf,
    pub id: FleetId,
}

impl Mark {
    /// The environment variables that carry the mark.
    pub fn env(&self) -> [(String, String); 2] {
        [
            (STATE_VAR.to_string(), self.state_dir.to_string_lossy().into_owned()),
            (ID_VAR.to_string(), self.id.to_string()),
        ]
    }

    /// Why the state this mark names no longer exists, or `None` while it
    /// does (or when that cannot be told, e.g. a directory we may not read:
    /// a process is never stopped on a guess).
    pub fn gone(&self) -> Option<String> {
        let lock = Paths::new(&self.state_dir).lock;
        match FleetId::of_path(&lock) {
            Ok(id) if id == self.id => None,
            Ok(_) => Some(format!("{} was replaced", lock.display())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Some(format!("{} is gone", lock.display()))
            }
            Err(_) => None,
        }
    }
}

/// A live process carrying a fleet mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub pid: i32,
    pub mark: Mark,
    /// `REPAVE_INSTANCE_ID`, when it runs for an instance.
    pub instance: Option<String>,
    /// Its command line, for whoever reports it.
    pub command: String,
}

/// Every live process of ours (not this one) that carries a fleet mark.
/// Processes whose environment we may not read are not ours to stop.
pub fn scan() -> Vec<Marked> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<Marked> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(marked)
        .filter(|m| crate::process::pid_alive(m.pid))
        .collect();
    found.sort_by_key(|m| m.pid);
    found
}

/// The marked processes of the state in `state_dir` (whether or not it still
/// exists), e.g. what a test's fleet left behind.
pub fn of_state(state_dir: &Path) -> Vec<Marked> {
    let canonical = std::fs::canonicalize(state_dir).ok();
    scan()
        .into_iter()
        .filter(|m| m.mark.state_dir == state_dir || Some(&m.mark.state_dir) == canonical.as_ref())
        .collect()
}

/// SIGKILL whatever of the fleet of `state_dir` still runs, and say what
/// that was: the last resort of a test's guard, after `repave local down`.
pub fn kill_leftovers(state_dir: &Path) -> Vec<Marked> {
    let left = of_state(state_dir);
    for m in &left {
        // SAFETY: plain syscall on a pid just seen alive and marked.
        unsafe {
            libc::kill(m.pid, libc::SIGKILL);
        }
    }
    left
}

/// Read `pid`'s mark from its environment (as it was started).
fn marked(pid: i32) -> Option<Marked> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let (mut state, mut id, mut instance) = (None, None, None);
    for var in environ.split(|b| *b == 0) {
        let Some(eq) = var.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (key, value) = (&var[..eq], OsStr::from_bytes(&var[eq + 1..]));
        match key {
            k if k == STATE_VAR.as_bytes() => state = Some(PathBuf::from(value)),
            k if k == ID_VAR.as_bytes() => id = value.to_str().and_then(FleetId::parse),
            b"REPAVE_INSTANCE_ID" => instance = value.to_str().map(String::from),
            _ => {}
        }
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(Marked {
        pid,
        mark: Mark {
            state_dir: state?,
            id: id?,
        },
        instance,
        command,
    })
}

/// Whether the process `pid` was started for instance `id` (a recorded pid
/// may have been reused by another process since, e.g. after a reboot).
/// `None` when its environment cannot be read.
pub fn runs_instance(pid: i32, id: &str) -> Option<bool> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let wanted = format!("REPAVE_INSTANCE_ID={id}");
    Some(environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_id_round_trips_and_rejects_junk() {
        let id = FleetId { dev: 2049, ino: 77 };
        assert_eq!(FleetId::parse(&id.to_string()), Some(id));
        for junk in ["", "1", "1:", ":2", "a:b", "1:2:3"] {
            assert_eq!(FleetId::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn a_mark_is_gone_when_its_lock_is_deleted_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Paths::new(dir.path()).lock;
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::fs::write(&lock, "").unwrap();
        let mark = Mark {
            state_dir: dir.path().to_path_buf(),
            id: FleetId::of_path(&lock).unwrap(),
        };
        assert_eq!(mark.gone(), None);
        // A new file at the same path: keep the old one alive so the inode
        // cannot be reused for the new one.
        let kept = dir.path().join("old-lock");
        std::fs::rename(&lock, &kept).unwrap();
        std::fs::write(&lock, "").unwrap();
        assert!(mark.gone().unwrap().ends_with("was replaced"), "{:?}", mark.gone());
        std::fs::remove_dir_all(dir.path().join("local")).unwrap();
        assert!(mark.gone().unwrap().ends_with("is gone"), "{:?}", mark.gone());
    }
}

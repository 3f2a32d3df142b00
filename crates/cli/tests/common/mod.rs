//! A small builder that runs the real `repave` binary (after just's
//! `tests/lib.rs`): `Repave::new().args([...]).run()`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// End-to-end tests start fleets of real processes; on a 2-core machine they
/// run one at a time so timings stay meaningful.
static FLEET: Mutex<()> = Mutex::new(());

pub fn fleet_lock() -> MutexGuard<'static, ()> {
    FLEET.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_repave"))
}

pub struct Repave {
    cmd: Command,
    display: String,
}

pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
    pub fn expect_code(self, code: i32) -> Ran {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

impl Repave {
    pub fn new() -> Self {
        let mut cmd = Command::new(exe());
        cmd.env_remove("REPAVE_CONFIG").env_remove("REPAVE_STATE_DIR").env("REPAVE_LOG", "warn");
        Repave { cmd, display: "repave".into() }
    }
    pub fn in_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        for a in args {
            self.display.push(' ');
            self.display.push_str(&a.as_ref().to_string_lossy());
            self.cmd.arg(a);
        }
        self
    }
    pub fn run(mut self) -> Ran {
        let Output { status, stdout, stderr } = self.cmd.output().unwrap_or_else(|e| panic!("{}: {e}", self.display));
        Ran {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// Stops a local fleet when a test ends, pass or fail.
pub struct FleetGuard(pub PathBuf);

impl Drop for FleetGuard {
    fn drop(&mut self) {
        let state = self.0.display().to_string();
        let _stopped = Repave::new().args(["--state-dir", state.as_str(), "local", "down"]).run();
    }
}

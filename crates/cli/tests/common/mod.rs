//! A small builder that runs the real `repave` binary (after just's
//! `tests/lib.rs`): `Repave::new().args([...]).run()`.

#![allow(dead_code)]

pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// End-to-end tests start fleets of real processes; on a 2-core machine they
/// run one at a time so timings stay meaningful.
static FLEET: Mutex<()> = Mutex::new(());

pub fn fleet_lock() -> MutexGuard<'static, ()> {
    FLEET.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_repave"))
}

/// The longest any one `repave` command of the tests may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(480);

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
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
    pub fn expect_code(self, code: i32) -> Ran {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Repave {
    pub fn new() -> Self {
        let mut cmd = Command::new(exe());
        cmd.env_remove("REPAVE_CONFIG")
            .env_remove("REPAVE_STATE_DIR")
            .env("REPAVE_LOG", "warn");
        Repave {
            cmd,
            display: "repave".into(),
        }
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
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }
    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }
    /// Run to the end, at most [`RUN_LIMIT`]: a command still running then
    /// is killed and the test fails with what it printed, so a hang costs
    /// minutes, not the CI's whole budget.
    pub fn run(mut self) -> Ran {
        use std::io::Read;
        use std::process::Stdio;
        let mut child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.display));
        let pipe = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).expect("reading the command's output");
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = pipe(Box::new(child.stdout.take().unwrap()));
        let err = pipe(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                // It may exit between the check and the kill: either way it
                // is gone, and the test fails below with its output.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        let Some(status) = status else {
            panic!(
                "{} still running after {RUN_LIMIT:?}, killed\nstdout:\n{stdout}\nstderr:\n{stderr}",
                self.display
            );
        };
        Ran {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

/// Stops a local fleet when a test ends, pass or fail: `repave local down`
/// (which also stops what a killed fleet process left), then anything of
/// the fleet still running is killed and, unless the test is failing
/// already, fails it. Must drop before the state dir is deleted.
pub struct FleetGuard(pub PathBuf);

impl Drop for FleetGuard {
    fn drop(&mut self) {
        let state = self.0.display().to_string();
        let down = Repave::new()
            .args(["--state-dir", state.as_str(), "local", "down"])
            .run();
        let left = repave_local::mark::kill_leftovers(&self.0);
        if std::thread::panicking() {
            return;
        }
        assert_eq!(down.code, 0, "repave local down in {state}:\n{}", down.stderr);
        assert!(left.is_empty(), "the fleet in {state} left processes: {left:#?}");
    }
}

/// Keep-alive HTTP/1.1 GETs against `addr` from a plain thread until `stop`
/// is set (bounded: at most `max` requests). Returns (ok, failed, first errors).
pub fn http_load(
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: u64,
) -> std::thread::JoinHandle<(u64, u64, Vec<String>)> {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let (mut ok, mut failed, mut errors) = (0u64, 0u64, Vec::new());
        let mut conn: Option<BufReader<std::net::TcpStream>> = None;
        for _ in 0..max {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let result = (|| -> Result<(), String> {
                if conn.is_none() {
                    let s = std::net::TcpStream::connect(&addr).map_err(|e| format!("connect: {e}"))?;
                    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).ok();
                    conn = Some(BufReader::new(s));
                }
                let c = conn.as_mut().expect("connection");
                c.get_mut()
                    .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                    .map_err(|e| format!("write: {e}"))?;
                let mut status = String::new();
                c.read_line(&mut status).map_err(|e| format!("read: {e}"))?;
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    c.read_line(&mut h).map_err(|e| format!("read: {e}"))?;
                    if h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                c.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
                if !status.contains(" 200 ") {
                    return Err(format!("status {status:?}"));
                }
                Ok(())
            })();
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    conn = None;
                    if errors.len() < 10 {
                        errors.push(e);
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (ok, failed, errors)
    })
}

/// A local fleet for one test: a temp dir with a `repave.toml` (group and
/// pipeline `web`, golden parameter `latestAmi`, the balancer on a free
/// port), stopped when dropped.
pub struct Fleet {
    // First, so it drops (stops the fleet) before `dir` deletes the state.
    _guard: FleetGuard,
    pub dir: tempfile::TempDir,
    pub config: String,
    pub port: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Fleet {
    /// `extra` is appended to the config (pipeline sections such as
    /// `[pipelines.web.rollout]`).
    pub fn new(min: u32, desired: u32, max: u32, extra: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("repave.toml");
        std::fs::write(
            &path,
            format!(
                "[providers.local.groups.web]\nmin = {min}\nmax = {max}\ndesired = {desired}\nport = {port}\n\n\
                 [pipelines.web]\nprovider = \"local\"\ngroup = \"web\"\nparameter = \"latestAmi\"\n{extra}"
            ),
        )
        .unwrap();
        let guard = FleetGuard(dir.path().join(".repave"));
        Fleet {
            config: path.display().to_string(),
            port,
            dir,
            _guard: guard,
        }
    }

    /// `repave local up`: returns once the group serves.
    pub fn up(&self) -> &Self {
        self.repave(["local", "up"]).expect_code(0);
        self
    }

    /// Run repave with this fleet's config.
    pub fn repave<I, S>(&self, args: I) -> Ran
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Repave::new().args(["--config", self.config.as_str()]).args(args).run()
    }

    /// `repave --json status` of the only pipeline.
    pub fn status(&self) -> serde_json::Value {
        self.repave(["--json", "status"]).expect_code(0).json()[0].clone()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".repave")
    }

    /// Spawn `repave --config … ARGS` in the background, output discarded.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(exe())
            .args(["--config", self.config.as_str()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
}

/// Poll `f` every 100 ms until it yields `Some`, or fail after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait for `child` to exit, at most `limit` (then kill it and fail).
pub fn wait_status(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pid {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

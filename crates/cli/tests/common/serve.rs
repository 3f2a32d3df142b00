//! `repave serve` for tests: started on a free 127.0.0.1 port with a token,
//! plain HTTP/1.1 requests against it, waiting for a run's state.

use super::{exe, wait_for, wait_status};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const TOKEN: &str = "test-token-0123456789";

pub fn write_config(dir: &Path, port: u16, desired: u32, warmup: &str, extra: &str) -> PathBuf {
    let path = dir.join("repave.toml");
    std::fs::write(
        &path,
        format!(
            "{extra}\n[providers.local.groups.web]\nmin = 1\nmax = 8\ndesired = {desired}\nport = {port}\nderegistration_delay = \"2s\"\n\n\
             [pipelines.web]\nprovider = \"local\"\ngroup = \"web\"\nparameter = \"latestAmi\"\n\
             window = {{ cron = \"0 2 * * TUE#2+3\", timezone = \"Asia/Taipei\", duration = \"4h\", cutoff = \"1h\" }}\n\
             [pipelines.web.rollout]\nwarmup = \"{warmup}\"\n"
        ),
    )
    .unwrap();
    path
}

/// A running `repave serve`; killed when dropped.
pub struct Serve {
    pub child: Child,
    pub addr: String,
}

/// `repave --config CONFIG serve` on a free port, stdout piped.
pub fn serve_command(config: &Path) -> Command {
    let mut cmd = Command::new(exe());
    cmd.args(["--config", config.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"])
        .env("REPAVE_TOKEN", TOKEN)
        .env("REPAVE_LOG", "warn")
        .env_remove("REPAVE_CONFIG")
        .env_remove("REPAVE_STATE_DIR")
        .stdout(Stdio::piped());
    cmd
}

impl Serve {
    pub fn start(config: &Path, log: &str) -> Serve {
        Serve::start_with(config, log, &[])
    }

    /// `repave serve` with `args` added (e.g. `--shutdown-grace 20s`).
    pub fn start_with(config: &Path, log: &str, args: &[&str]) -> Serve {
        let mut cmd = serve_command(config);
        cmd.args(args);
        Serve::spawn(cmd, &config.with_file_name(log))
    }

    /// Spawn `cmd` (a [`serve_command`]) with stderr to `log`; returns once
    /// it printed the address it listens on.
    pub fn spawn(mut cmd: Command, log: &Path) -> Serve {
        let stderr = std::fs::File::create(log).unwrap();
        let mut child = cmd.stderr(stderr).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // Bounded: the fleet process starts first (a few seconds at most).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = out.read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("serve printed its address");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Serve { child, addr }
    }

    /// Send SIGTERM, not waiting for the exit.
    pub fn signal_term(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", pid.as_str()]).status().unwrap();
    }

    pub fn terminate(&mut self) -> i32 {
        self.signal_term();
        wait_status(&mut self.child, Duration::from_secs(60))
            .code()
            .unwrap_or(-1)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /api/runs` for pipeline `web`, expecting 202; the new run's id.
pub fn start_run(addr: &str) -> String {
    let (status, started) = post(addr, "/api/runs", Some(TOKEN), r#"{"pipeline":"web","kind":"run"}"#);
    assert_eq!(status, 202, "{started}");
    started["run"]["id"].as_str().unwrap().to_string()
}

/// One HTTP/1.1 request (`Connection: close`), JSON, with the bearer
/// `token` if given; returns status and body.
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let headers = format!("{auth}Content-Type: application/json\r\n");
    let (status, _, body) = raw(addr, method, path, &headers, body.unwrap_or(""));
    (status, body)
}

/// An answer: status, head (lower case) and body.
pub type Answer = (u16, String, String);

/// One HTTP/1.1 request (`Connection: close`) with exactly `headers`
/// (each ending in CRLF) and `body`.
pub fn raw(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head, body)
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub fn get(addr: &str, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, None, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

pub fn post(addr: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let (status, body) = http(addr, "POST", path, token, Some(body));
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Wait until the run's roll has its first new instances up.
pub fn wait_roll_under_way(addr: &str, run: &str) {
    wait_for("the roll to be under way", Duration::from_secs(90), || {
        let p = get(addr, &format!("/api/runs/{run}/progress"));
        p["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["new"].as_u64() > Some(0))
            .then_some(())
    });
}

pub fn wait_state(addr: &str, run: &str, states: &[&str], timeout: Duration) -> String {
    wait_for(&format!("run {run} to reach {states:?}"), timeout, || {
        let s = get(addr, &format!("/api/runs/{run}"))["run"]["state"]
            .as_str()
            .unwrap()
            .to_string();
        states.contains(&s.as_str()).then_some(s)
    })
}

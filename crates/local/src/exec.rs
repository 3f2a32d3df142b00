//! Running commands on an instance: a process in the instance root with a
//! timeout (the whole process group is killed) and bounded output capture.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes kept per stream; the tail is kept because errors come last.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// `None` when killed by a signal (or by the timeout).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Keeps the last `MAX_OUTPUT` bytes of a stream.
#[derive(Debug, Default)]
struct Tail {
    buf: Vec<u8>,
    dropped: u64,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > MAX_OUTPUT {
            let extra = self.buf.len() - MAX_OUTPUT;
            self.buf.drain(..extra);
            self.dropped += extra as u64;
        }
    }

    fn finish(self) -> String {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.dropped > 0 {
            format!("[output truncated: first {} bytes dropped]\n{text}", self.dropped)
        } else {
            text
        }
    }
}

async fn capture(mut r: impl AsyncRead + Unpin) -> Tail {
    let mut tail = Tail::default();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return tail,
            Ok(n) => tail.push(&chunk[..n]),
        }
    }
}

/// Run `program args` (no shell of ours) in `cwd` with `env` added; kill its
/// process group after `timeout`.
pub async fn run(
    program: &str,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<Output> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let out = tokio::spawn(capture(child.stdout.take().expect("piped")));
    let err = tokio::spawn(capture(child.stderr.take().expect("piped")));
    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (Some(status?), false),
        Err(_) => {
            crate::process::signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
            (None, true)
        }
    };
    // A background grandchild may still hold the pipes: don't wait forever.
    crate::process::signal_group(pid, libc::SIGKILL);
    let grab = |h: tokio::task::JoinHandle<Tail>| async move {
        match tokio::time::timeout(Duration::from_secs(2), h).await {
            Ok(Ok(t)) => t.finish(),
            _ => String::from("[output unavailable]"),
        }
    };
    let stdout = grab(out).await;
    let stderr = grab(err).await;
    Ok(Output {
        exit_code: status.and_then(|s| s.code()),
        stdout,
        stderr,
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_end() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; MAX_OUTPUT]);
        t.push(b"end");
        let s = t.finish();
        assert!(s.starts_with("[output truncated: first 3 bytes dropped]"));
        assert!(s.ends_with("aend"));
    }
}

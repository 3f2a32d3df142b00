//! Printing: human text or `--json`. A reader that closes the pipe early
//! (`repave logs RUN | head`) ends the printing quietly, never a panic.

use crate::exit::Exit;
use serde::Serialize;
use std::io::Write as _;

/// A command's report on standard output, written line by line with
/// [`outln!`]; a closed pipe stops the command (see `Exit::output`).
pub struct Out(std::io::StdoutLock<'static>);

impl Out {
    pub fn new() -> Out {
        Out(std::io::stdout().lock())
    }

    pub fn line(&mut self, line: std::fmt::Arguments<'_>) -> Result<(), Exit> {
        writeln!(self.0, "{line}").map_err(Exit::output)
    }

    pub fn json<T: Serialize>(&mut self, v: &T) -> Result<(), Exit> {
        let text = serde_json::to_string_pretty(v).expect("serializable output");
        self.line(format_args!("{text}"))
    }
}

/// `outln!(out, "...", args)?`: one line of a command's report.
macro_rules! outln {
    ($out:expr) => {
        $out.line(format_args!(""))
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// The `--json` output of commands that print nothing else. A closed pipe
/// is ignored (the command has nothing left to say); any other failure to
/// print panics, as `println!` would.
pub fn json<T: Serialize>(v: &T) {
    match Out::new().json(v) {
        Ok(()) => {}
        Err(e) if e.is_quiet() => {}
        Err(e) => panic!("failed printing to stdout: {:#}", e.error),
    }
}

/// `2026-11-26 05:50:20` (UTC) for a millisecond timestamp.
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = repave_core::patch::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `2026-11-26T05:50:20Z, in 25s` (RFC 3339, and how far from `now_ms`).
pub fn time_from_now(ms: i64, now_ms: i64) -> String {
    let rfc3339 = time(ms).replacen(' ', "T", 1) + "Z";
    let secs = (ms - now_ms) / 1000;
    let relative = match secs {
        0 => "now".to_string(),
        s if s > 0 => format!("in {}", span(s)),
        s => format!("{} ago", span(-s)),
    };
    format!("{rfc3339}, {relative}")
}

/// `25s`, `4m 10s`, `2h 5m`, `3d 4h`.
fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_time() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(super::time(1_795_672_220_000), "2026-11-26 05:50:20");
    }

    #[test]
    fn formats_time_from_now() {
        let at = 1_795_672_220_000;
        assert_eq!(super::time_from_now(at, at - 25_000), "2026-11-26T05:50:20Z, in 25s");
        assert_eq!(
            super::time_from_now(at, at + 250_000),
            "2026-11-26T05:50:20Z, 4m 10s ago"
        );
        assert_eq!(
            super::time_from_now(at, at - 7_500_000),
            "2026-11-26T05:50:20Z, in 2h 5m"
        );
        assert_eq!(super::time_from_now(at, at), "2026-11-26T05:50:20Z, now");
    }
}

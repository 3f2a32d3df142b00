//! Small helpers shared by the daemon modules: time, ids, atomic writes.

use repave_core::Timestamp;
use std::io::Write;
use std::path::Path;

/// Wall-clock now (the daemon is the local cloud's clock, like AWS's).
pub fn now() -> Timestamp {
    use repave_core::ids::Clock;
    repave_core::ids::SystemClock.now()
}

/// `prefix-` followed by 17 random hex digits, like EC2 ids.
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{prefix}-{:017x}", n & ((1u128 << 68) - 1))
}

/// Write temp + fsync + rename, so a crash leaves either the old or the new
/// file, never half of one.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Persist the rename itself.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `YYYY-MM-DD` for days since the epoch.
pub use repave_core::patch::format_date_days as format_date;

/// Days since the epoch today.
pub fn today_days() -> i64 {
    repave_core::patch::epoch_days(now().millis())
}

/// Remove an instance root. A root that cannot be removed is logged (and
/// shows up in the leak report), never silently kept.
pub(crate) fn remove_root(root: &std::path::Path) {
    match std::fs::remove_dir_all(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(root = %root.display(), error = %e, "could not remove instance root"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for s in ["1970-01-01", "2000-02-29", "2024-12-31", "2026-03-01"] {
            let d = repave_core::patch::parse_date_days(s).unwrap();
            assert_eq!(format_date(d), s);
        }
    }
}

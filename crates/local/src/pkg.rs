//! `repave pkg scan|install`: the package tool run inside an instance root
//! (cwd = root). Installed packages live in `var/lib/pkg/installed.json` (the
//! image's patch manifest); the feed comes from `REPAVE_FEED`, the selection
//! from `REPAVE_SELECTION`, the ids to install from `REPAVE_UPDATE_IDS`.
//! Values arrive in the environment, never through a shell.

use repave_core::patch::{parse_date_days, PatchSelection, Update};
use repave_core::provider::InstallReport;
use std::cmp::Ordering;
use std::path::{Component, Path};

/// Where the installed-package list lives, relative to the root.
pub const INSTALLED: &str = "var/lib/pkg/installed.json";
/// Marker written when an installed update needs a reboot; cleared at boot.
pub const REBOOT_REQUIRED: &str = "var/run/reboot-required";

/// Entry point; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let result = match args.first().map(String::as_str) {
        Some("scan") => scan(Path::new(".")),
        Some("install") => install(Path::new(".")),
        _ => Err("usage: repave pkg scan|install".to_string()),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(e) => {
            eprintln!("pkg: {e}");
            1
        }
    }
}

/// Compare versions segment by segment, numerically where both are numbers
/// (so 2.9.14 < 2.11.7 and 6.1.0-10 < 6.1.0-18).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> Vec<String> { s.split(['.', '-', '_', '+']).map(String::from).collect() };
    let (xa, xb) = (split(a), split(b));
    for (x, y) in xa.iter().zip(xb.iter()) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(p), Ok(q)) => p.cmp(&q),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    xa.len().cmp(&xb.len())
}

fn read_installed(root: &Path) -> Result<Vec<Update>, String> {
    let path = root.join(INSTALLED);
    match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| format!("parsing {INSTALLED}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("reading {INSTALLED}: {e}")),
    }
}

fn write_file(root: &Path, rel: &str, data: &[u8]) -> Result<(), String> {
    crate::util::write_atomic(&root.join(rel), data).map_err(|e| format!("writing {rel}: {e}"))
}

fn read_feed() -> Result<Vec<Update>, String> {
    let path = std::env::var("REPAVE_FEED").map_err(|_| "REPAVE_FEED is not set".to_string())?;
    Ok(crate::feed::load(Path::new(&path))?.updates)
}

fn read_selection() -> Result<PatchSelection, String> {
    match std::env::var("REPAVE_SELECTION") {
        Ok(s) if !s.trim().is_empty() => serde_json::from_str(&s).map_err(|e| format!("REPAVE_SELECTION: {e}")),
        _ => Ok(PatchSelection::default()),
    }
}

fn today() -> Result<i64, String> {
    match std::env::var("REPAVE_TODAY") {
        Ok(s) => parse_date_days(&s).ok_or_else(|| format!("REPAVE_TODAY: bad date {s:?}")),
        Err(_) => Ok(crate::util::today_days()),
    }
}

/// Not installed yet, and newer than what is installed of the same package.
fn applicable(u: &Update, installed: &[Update]) -> bool {
    !installed.iter().any(|i| i.id == u.id)
        && installed
            .iter()
            .filter(|i| i.package == u.package)
            .all(|i| compare_versions(&u.version, &i.version) == Ordering::Greater)
}

/// Updates applicable to the root and chosen by the selection, as JSON.
pub fn scan(root: &Path) -> Result<String, String> {
    let feed = read_feed()?;
    let installed = read_installed(root)?;
    let candidates: Vec<Update> = feed.into_iter().filter(|u| applicable(u, &installed)).collect();
    let chosen: Vec<&Update> = read_selection()?.select(&candidates, today()?);
    serde_json::to_string(&chosen).map_err(|e| e.to_string())
}

fn check_relative(rel: &str) -> Result<(), String> {
    let p = Path::new(rel);
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "refusing file path {rel:?}: only relative paths inside the root are allowed"
        ));
    }
    Ok(())
}

/// Install exactly `REPAVE_UPDATE_IDS`, stopping after an update that needs a
/// reboot; prints an [`InstallReport`].
pub fn install(root: &Path) -> Result<String, String> {
    let feed = read_feed()?;
    let ids: Vec<String> = std::env::var("REPAVE_UPDATE_IDS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut wanted = Vec::new();
    for id in &ids {
        let u = feed
            .iter()
            .find(|u| &u.id == id)
            .ok_or_else(|| format!("update {id:?} is not in the feed"))?;
        for rel in u.files.keys() {
            check_relative(rel)?;
        }
        wanted.push(u.clone());
    }
    let mut installed = read_installed(root)?;
    let mut report = InstallReport::default();
    if root.join(REBOOT_REQUIRED).exists() {
        // A reboot is pending: nothing else applies until it happens.
        report.reboot_required = true;
        return serde_json::to_string(&report).map_err(|e| e.to_string());
    }
    for u in wanted {
        if !applicable(&u, &installed) {
            continue;
        }
        for (rel, content) in &u.files {
            write_file(root, rel, content.as_bytes())?;
        }
        installed.retain(|i| i.package != u.package);
        installed.push(u.clone());
        let json = serde_json::to_vec_pretty(&installed).map_err(|e| e.to_string())?;
        write_file(root, INSTALLED, &json)?;
        report.installed.push(u.clone());
        if u.reboot {
            write_file(root, REBOOT_REQUIRED, u.id.as_bytes())?;
            report.reboot_required = true;
            break;
        }
    }
    serde_json::to_string(&report).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(compare_versions("2.9.14", "2.11.7"), Ordering::Less);
        assert_eq!(compare_versions("6.1.0-18", "6.1.0-10"), Ordering::Greater);
        assert_eq!(compare_versions("2024b", "2024a"), Ordering::Greater);
        assert_eq!(compare_versions("3.0.11", "3.0.11"), Ordering::Equal);
    }

    #[test]
    fn paths_checked() {
        assert!(check_relative("usr/share/x").is_ok());
        assert!(check_relative("/etc/passwd").is_err());
        assert!(check_relative("a/../../b").is_err());
        assert!(check_relative("").is_err());
    }
}

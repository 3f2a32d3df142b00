//! Mapping repave's patch vocabulary onto SSM documents, and their output
//! back into repave's JSON.
//!
//! - Windows: `AWS-InstallWindowsUpdates`. Scan: `Action=Scan` with
//!   `Categories`, `SeverityLevels`, `PublishedDaysOld`, `ExcludeKbs` from the
//!   selection. Install: `Action=Install`, `IncludeKbs` = the frozen list (the
//!   filters already chose it; passing them again could drop an `include`d
//!   KB), `ExcludeKbs`, `AllowReboot`. The document prints a table; every line
//!   naming a KB becomes an [`Update`] (severity / classification taken from
//!   the line when it names one, otherwise `Unspecified` / empty; the
//!   release date is not printed, so `released` is empty). Install lines
//!   saying `Failed` go to `failed`; a reboot is reported as required when
//!   the output says one is required or pending.
//! - Linux: `AWS-RunPatchBaseline` (`Operation=Scan|Install`,
//!   `RebootOption=NoReboot`: the engine reboots and re-runs, bounded by
//!   `max_reboots`). Its output is a log, so the result comes from
//!   `DescribeInstancePatches`: `Missing`/`Failed` patches after a scan,
//!   filtered by the selection (severity, classification, include, exclude;
//!   the minimum age is the patch baseline's ApproveAfterDays, SSM does not
//!   report release dates per instance); after an install, `Installed` and
//!   `InstalledPendingReboot` (→ `reboot_required`) and `Failed`. The
//!   baseline decides what Install installs; a selection narrower than the
//!   baseline needs a baseline of its own.
//! - [`crate::AwsOptions::empty_patch_output_is_clean`]: an emulator runs
//!   nothing and returns empty output; with the option set, empty output of
//!   a successful scan / install means "nothing to install" / "nothing
//!   installed".

use repave_core::patch::{PatchSelection, Update, CLASSIFICATIONS, SEVERITIES};
use repave_core::provider::InstallReport;
use std::collections::HashMap;

/// The OS family of an instance, which picks the SSM documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Linux,
    Windows,
}

/// What a command was, remembered in its [`repave_core::CommandId`] so a
/// resumed process can interpret its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Shell,
    WindowsScan,
    WindowsInstall,
    LinuxScan,
    LinuxInstall,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Shell => "shell",
            CommandKind::WindowsScan => "win-scan",
            CommandKind::WindowsInstall => "win-install",
            CommandKind::LinuxScan => "linux-scan",
            CommandKind::LinuxInstall => "linux-install",
        }
    }
    pub fn parse(s: &str) -> Option<CommandKind> {
        Some(match s {
            "shell" => CommandKind::Shell,
            "win-scan" => CommandKind::WindowsScan,
            "win-install" => CommandKind::WindowsInstall,
            "linux-scan" => CommandKind::LinuxScan,
            "linux-install" => CommandKind::LinuxInstall,
            _ => return None,
        })
    }
}

/// SSM document parameters: name → list of values.
pub type DocParams = HashMap<String, Vec<String>>;

fn one(v: impl Into<String>) -> Vec<String> {
    vec![v.into()]
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// `AWS-InstallWindowsUpdates` parameters for a scan with `selection`.
pub fn windows_scan_params(selection: &PatchSelection) -> DocParams {
    let mut p = DocParams::new();
    p.insert("Action".into(), one("Scan"));
    p.insert("AllowReboot".into(), one("False"));
    if !selection.classifications.is_empty() {
        p.insert("Categories".into(), one(selection.classifications.join(",")));
    }
    if !selection.severities.is_empty() {
        p.insert("SeverityLevels".into(), one(selection.severities.join(",")));
    }
    if selection.min_age_days > 0 {
        p.insert("PublishedDaysOld".into(), one(selection.min_age_days.to_string()));
    }
    if !selection.exclude.is_empty() {
        p.insert("ExcludeKbs".into(), one(selection.exclude.join(",")));
    }
    p
}

/// `AWS-InstallWindowsUpdates` parameters installing exactly `ids`.
pub fn windows_install_params(selection: &PatchSelection, ids: &[String], allow_reboot: bool) -> DocParams {
    let mut p = DocParams::new();
    p.insert("Action".into(), one("Install"));
    p.insert("AllowReboot".into(), one(py_bool(allow_reboot)));
    let ids: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| !selection.exclude.iter().any(|x| x == id))
        .collect();
    p.insert("IncludeKbs".into(), one(ids.join(",")));
    if !selection.exclude.is_empty() {
        p.insert("ExcludeKbs".into(), one(selection.exclude.join(",")));
    }
    p
}

/// `AWS-RunPatchBaseline` parameters.
pub fn linux_params(install: bool) -> DocParams {
    let mut p = DocParams::new();
    p.insert("Operation".into(), one(if install { "Install" } else { "Scan" }));
    p.insert("RebootOption".into(), one("NoReboot"));
    p
}

fn kb_in(line: &str) -> Option<String> {
    let up = line.to_ascii_uppercase();
    let bytes = up.as_bytes();
    let mut i = 0;
    while let Some(pos) = up[i..].find("KB") {
        let start = i + pos;
        let digits = bytes[start + 2..].iter().take_while(|b| b.is_ascii_digit()).count();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if digits >= 6 && before_ok {
            return Some(up[start..start + 2 + digits].to_string());
        }
        i = start + 2;
    }
    None
}

fn word_in(line: &str, words: &[&str]) -> Option<String> {
    let squashed: String = line
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    words
        .iter()
        .find(|w| squashed.contains(&w.to_ascii_lowercase()))
        .map(|w| w.to_string())
}

fn update_from_line(kb: String, line: &str) -> Update {
    let title = line.replace(&kb, "").split_whitespace().collect::<Vec<_>>().join(" ");
    Update {
        id: kb,
        package: title,
        version: String::new(),
        severity: word_in(line, SEVERITIES).unwrap_or_else(|| "Unspecified".into()),
        classification: word_in(line, CLASSIFICATIONS).unwrap_or_default(),
        released: String::new(),
        reboot: false,
        files: Default::default(),
    }
}

/// Updates listed in an `AWS-InstallWindowsUpdates` scan output (one per KB).
pub fn parse_windows_scan(output: &str) -> Vec<Update> {
    let mut seen = std::collections::BTreeSet::new();
    output
        .lines()
        .filter_map(|l| kb_in(l).map(|kb| (kb, l)))
        .filter(|(kb, _)| seen.insert(kb.clone()))
        .map(|(kb, l)| update_from_line(kb, l))
        .collect()
}

/// Install report from an `AWS-InstallWindowsUpdates` install output.
pub fn parse_windows_install(output: &str) -> InstallReport {
    let mut report = InstallReport::default();
    for line in output.lines() {
        let Some(kb) = kb_in(line) else { continue };
        let lower = line.to_ascii_lowercase();
        if lower.contains("failed") || lower.contains("aborted") {
            if !report.failed.contains(&kb) {
                report.failed.push(kb);
            }
        } else if !report.installed.iter().any(|u| u.id == kb) {
            report.installed.push(update_from_line(kb, line));
        }
    }
    let lower = output.to_ascii_lowercase();
    report.reboot_required = [
        "reboot is required",
        "reboot required",
        "rebootrequired : true",
        "pending reboot",
        "restart is required",
    ]
    .iter()
    .any(|p| lower.contains(p));
    report
}

/// One patch as Patch Manager reports it for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePatch {
    pub id: String,
    pub title: String,
    pub classification: String,
    pub severity: String,
    /// Patch Manager state (`Missing`, `Installed`, `InstalledPendingReboot`, `Failed`, ...).
    pub state: String,
}

fn to_update(p: &InstancePatch) -> Update {
    Update {
        id: p.id.clone(),
        package: p.title.clone(),
        version: String::new(),
        severity: if p.severity.is_empty() {
            "Unspecified".into()
        } else {
            p.severity.clone()
        },
        classification: p.classification.clone(),
        released: String::new(),
        reboot: p.state == "InstalledPendingReboot",
        files: Default::default(),
    }
}

fn selected(p: &InstancePatch, s: &PatchSelection) -> bool {
    let eq =
        |a: &str, b: &str| a.eq_ignore_ascii_case(b) || a.replace(' ', "").eq_ignore_ascii_case(&b.replace(' ', ""));
    if s.exclude.iter().any(|x| eq(x, &p.id)) {
        return false;
    }
    if s.include.iter().any(|x| eq(x, &p.id)) {
        return true;
    }
    (s.severities.is_empty() || s.severities.iter().any(|x| eq(x, &p.severity)))
        && (s.classifications.is_empty() || s.classifications.iter().any(|x| eq(x, &p.classification)))
}

/// Updates to install after a RunPatchBaseline scan: missing (or failed)
/// patches the selection chooses.
pub fn linux_scan_result(patches: &[InstancePatch], selection: &PatchSelection) -> Vec<Update> {
    patches
        .iter()
        .filter(|p| p.state == "Missing" || p.state == "Failed")
        .filter(|p| selected(p, selection))
        .map(to_update)
        .collect()
}

/// Install report after a RunPatchBaseline install.
pub fn linux_install_result(patches: &[InstancePatch]) -> InstallReport {
    let mut r = InstallReport::default();
    for p in patches {
        match p.state.as_str() {
            "Installed" | "InstalledOther" => r.installed.push(to_update(p)),
            "InstalledPendingReboot" => {
                r.installed.push(to_update(p));
                r.reboot_required = true;
            }
            "Failed" => r.failed.push(p.id.clone()),
            _ => {}
        }
    }
    r
}

/// Quote `v` for a POSIX shell: single quotes, `'` written as `'\''`.
pub fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// Quote `v` for PowerShell: single quotes, `'` doubled.
pub fn ps_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Environment variable names that are safe to export.
pub fn valid_env_name(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_values() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(sh_quote("$(rm -rf /); `x`"), "'$(rm -rf /); `x`'");
        assert_eq!(ps_quote("it's $env:X"), "'it''s $env:X'");
        assert!(valid_env_name("A_1"));
        assert!(!valid_env_name("1A"));
        assert!(!valid_env_name("A;B"));
        assert!(!valid_env_name(""));
    }

    #[test]
    fn windows_params_map_the_selection() {
        let s = PatchSelection {
            severities: vec!["Critical".into(), "Important".into()],
            classifications: vec!["SecurityUpdates".into()],
            min_age_days: 7,
            include: vec![],
            exclude: vec!["KB1234567".into()],
        };
        let p = windows_scan_params(&s);
        assert_eq!(p["Action"], vec!["Scan"]);
        assert_eq!(p["SeverityLevels"], vec!["Critical,Important"]);
        assert_eq!(p["Categories"], vec!["SecurityUpdates"]);
        assert_eq!(p["PublishedDaysOld"], vec!["7"]);
        assert_eq!(p["ExcludeKbs"], vec!["KB1234567"]);
        let p = windows_install_params(&s, &["KB5000001".into(), "KB1234567".into()], true);
        assert_eq!(p["Action"], vec!["Install"]);
        assert_eq!(p["IncludeKbs"], vec!["KB5000001"]);
        assert_eq!(p["AllowReboot"], vec!["True"]);
    }

    #[test]
    fn parses_windows_output() {
        let scan = "Title                                   KB          Classification   Severity\n\
                    -----                                   --          --------------   --------\n\
                    2024-01 Cumulative Update for Windows   KB5034127   Security Updates Critical\n\
                    Definition Update for Defender          KB2267602   Definition Updates\n";
        let u = parse_windows_scan(scan);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].id, "KB5034127");
        assert_eq!(u[0].severity, "Critical");
        assert_eq!(u[0].classification, "SecurityUpdates");
        assert_eq!(u[1].severity, "Unspecified");
        let inst = "KB5034127 Installed\nKB2267602 Failed\nA reboot is required to complete the installation.";
        let r = parse_windows_install(inst);
        assert_eq!(r.installed.len(), 1);
        assert_eq!(r.failed, vec!["KB2267602".to_string()]);
        assert!(r.reboot_required);
        assert!(parse_windows_scan("").is_empty());
    }

    #[test]
    fn linux_results_follow_patch_manager_states() {
        let p = |id: &str, sev: &str, cls: &str, state: &str| InstancePatch {
            id: id.into(),
            title: id.into(),
            classification: cls.into(),
            severity: sev.into(),
            state: state.into(),
        };
        let patches = vec![
            p("openssl", "Critical", "Security", "Missing"),
            p("vim", "Low", "Bugfix", "Missing"),
            p("curl", "Important", "Security", "Installed"),
            p("tzdata", "Low", "Bugfix", "Missing"),
        ];
        let sel = PatchSelection {
            severities: vec!["Critical".into()],
            include: vec!["tzdata".into()],
            ..Default::default()
        };
        let ids: Vec<String> = linux_scan_result(&patches, &sel).into_iter().map(|u| u.id).collect();
        assert_eq!(ids, vec!["openssl", "tzdata"]);
        let r = linux_install_result(&[
            p("openssl", "Critical", "Security", "InstalledPendingReboot"),
            p("vim", "", "", "Failed"),
        ]);
        assert!(r.reboot_required);
        assert_eq!(r.installed[0].id, "openssl");
        assert_eq!(r.failed, vec!["vim".to_string()]);
    }
}

//! Patching through Patch Manager, the same way on every OS family: a
//! patch baseline per run that says exactly what the pipeline selected,
//! `AWS-RunPatchBaseline` to scan and install, and the results read from
//! Patch Manager's structured answers — never from the command's text.
//!
//! Why a baseline per run, not `InstallOverrideList`:
//! - the selection is evaluated by Patch Manager itself, in the OS's own
//!   words (CLASSIFICATION / SEVERITY on Amazon Linux, RHEL and SUSE,
//!   MSRC_SEVERITY on Windows, PRIORITY / SECTION on Ubuntu and Debian), and
//!   `min_age_days` is the rule's `ApproveAfterDays` — AWS knows the release
//!   dates, DescribeInstancePatches does not report them;
//! - the scan's `Missing` patches are then exactly the selection; the
//!   install baseline approves exactly that frozen list (`ApprovedPatches`,
//!   no rules), so Install installs nothing else;
//! - it needs only SSM (an override list must be written to S3 or HTTPS
//!   where the builder can read it, with its own permissions and cleanup).
//!
//! The baseline (`repave-<pipeline>-<run>`, tagged `repave:run`) is
//! registered to a patch group of the same name and the builder is tagged
//! `Patch Group = <name>`; `finish_patching` removes both, `repave gc`
//! sweeps what a killed run left.
//!
//! Results: after a scan, `DescribeInstancePatches` (`Missing`, `Failed`);
//! after an install, the same filtered to the baseline's approved list
//! (this bake's patches only, nothing installed before), plus
//! `DescribeInstancePatchStates` (`InstalledPendingRebootCount`) and the
//! command's exit code (3010: reboot required) for the reboot. The
//! command's output is kept as a log only: SSM returns its first 24,000
//! characters inline, and a long install's failures come at the end.
//! Commands are sent with `RebootOption=NoReboot`: the engine reboots
//! (RebootInstances), waits for SSM and re-scans, bounded by `max_reboots`,
//! so every reboot is one it counted.

use repave_core::patch::{OsFamily, PatchSelection, Update};
use repave_core::provider::InstallReport;
use std::collections::HashMap;

/// SSM keeps this many characters of a command's output inline
/// (GetCommandInvocation `StandardOutputContent`).
pub const SSM_OUTPUT_LIMIT: usize = 24_000;

/// Exit code asking SSM Agent for a reboot on Windows (and Windows
/// Update's ERROR_SUCCESS_REBOOT_REQUIRED).
pub const EXIT_REBOOT_REQUIRED: i32 = 3010;

/// The tag key that puts an instance in a patch group.
pub const PATCH_GROUP_TAG: &str = "Patch Group";

/// The document every patch command runs.
pub const PATCH_DOCUMENT: &str = "AWS-RunPatchBaseline";

/// The OS family of an instance, which picks the shell documents.
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
    Scan,
    Install,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Shell => "shell",
            CommandKind::Scan => "scan",
            CommandKind::Install => "install",
        }
    }
    pub fn parse(s: &str) -> Option<CommandKind> {
        Some(match s {
            "shell" => CommandKind::Shell,
            // Ids journaled before one document served every OS.
            "scan" | "win-scan" | "linux-scan" => CommandKind::Scan,
            "install" | "win-install" | "linux-install" => CommandKind::Install,
            _ => return None,
        })
    }
}

/// SSM document parameters: name → list of values.
pub type DocParams = HashMap<String, Vec<String>>;

/// `AWS-RunPatchBaseline` parameters.
pub fn run_patch_baseline_params(install: bool) -> DocParams {
    let mut p = DocParams::new();
    p.insert(
        "Operation".into(),
        vec![if install { "Install" } else { "Scan" }.into()],
    );
    p.insert("RebootOption".into(), vec!["NoReboot".into()]);
    p
}

/// Patch Manager's `OperatingSystem` for a family; Amazon Linux versions
/// differ, told apart by the image name (AL2023 when it does not say).
pub fn operating_system(os: OsFamily, image_name: &str) -> &'static str {
    let name = image_name.to_ascii_lowercase();
    match os {
        OsFamily::Windows => "WINDOWS",
        OsFamily::AmazonLinux if name.contains("amzn2-") => "AMAZON_LINUX_2",
        OsFamily::AmazonLinux if name.contains("amzn-ami") => "AMAZON_LINUX",
        OsFamily::AmazonLinux => "AMAZON_LINUX_2023",
        OsFamily::Rhel => "REDHAT_ENTERPRISE_LINUX",
        OsFamily::Suse => "SUSE",
        OsFamily::Ubuntu => "UBUNTU",
        OsFamily::Debian => "DEBIAN",
    }
}

/// `repave-<pipeline>-<run>` in the characters baseline names allow
/// (`[a-zA-Z0-9_\-.]`, at most 128).
pub fn baseline_name(pipeline: &str, run: &str) -> String {
    let raw = format!("repave-{pipeline}-{run}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

/// One approval rule: patches matching every filter, approved
/// `approve_after_days` after release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub filters: Vec<(&'static str, Vec<String>)>,
    pub approve_after_days: Option<u32>,
    pub enable_non_security: bool,
}

/// What the run's patch baseline says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    pub name: String,
    pub operating_system: &'static str,
    pub rule: Option<Rule>,
    pub approved: Vec<String>,
    /// Blocked outright (`RejectedPatchesAction = BLOCK`).
    pub rejected: Vec<String>,
    pub approved_enable_non_security: bool,
}

/// The baseline a scan runs against: the selection as an approval rule.
pub fn scan_baseline(name: &str, operating_system: &'static str, os: OsFamily, s: &PatchSelection) -> Baseline {
    let (severity_key, class_key) = match os {
        OsFamily::Windows => ("MSRC_SEVERITY", "CLASSIFICATION"),
        OsFamily::Ubuntu | OsFamily::Debian => ("PRIORITY", "SECTION"),
        _ => ("SEVERITY", "CLASSIFICATION"),
    };
    let mut filters = Vec::new();
    if !s.classifications.is_empty() {
        filters.push((class_key, s.classifications.clone()));
    }
    if !s.severities.is_empty() {
        filters.push((severity_key, s.severities.clone()));
    }
    if filters.is_empty() {
        // A rule needs a filter; PRODUCT * is "every patch of this OS".
        filters.push(("PRODUCT", vec!["*".into()]));
    }
    // Non-security updates (Bugfix, Enhancement, ...) are only approved on
    // Linux when the rule enables them.
    let enable_non_security =
        !os.is_windows() && (s.classifications.is_empty() || s.classifications.iter().any(|c| c != "Security"));
    Baseline {
        name: name.to_string(),
        operating_system,
        rule: Some(Rule {
            filters,
            // Patch Manager has no release dates on Ubuntu / Debian; the
            // config refuses min_age_days there.
            approve_after_days: (!os.is_apt()).then_some(s.min_age_days),
            enable_non_security,
        }),
        approved: s.include.clone(),
        rejected: s.exclude.clone(),
        approved_enable_non_security: enable_non_security,
    }
}

/// The baseline an install runs against: exactly the frozen list.
pub fn install_baseline(scan: &Baseline, ids: &[String]) -> Baseline {
    Baseline {
        rule: None,
        approved: ids.iter().filter(|id| !scan.rejected.contains(id)).cloned().collect(),
        ..scan.clone()
    }
}

/// One patch as DescribeInstancePatches reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePatch {
    /// KBId: "KB5034441" on Windows, "openssl.x86_64" on Linux.
    pub id: String,
    pub title: String,
    pub classification: String,
    pub severity: String,
    /// `Installed`, `InstalledOther`, `InstalledPendingReboot`,
    /// `InstalledRejected`, `Missing`, `NotApplicable`, `Failed`.
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
        // DescribeInstancePatches reports no release date (the baseline's
        // ApproveAfterDays already applied it).
        released: String::new(),
        reboot: p.state == "InstalledPendingReboot",
        files: Default::default(),
    }
}

/// The frozen list after a scan against the run's baseline: what is
/// missing (or failed before), i.e. exactly what the selection approves.
pub fn scan_result(patches: &[InstancePatch]) -> Vec<Update> {
    patches
        .iter()
        .filter(|p| p.state == "Missing" || p.state == "Failed")
        .map(to_update)
        .collect()
}

/// What an install against the frozen baseline did: only the `approved`
/// (this bake's) patches count; a reboot is required when one of them is
/// pending reboot, when Patch Manager counts any pending, or when the
/// command exited 3010.
pub fn install_result(
    patches: &[InstancePatch],
    approved: &[String],
    pending_reboot_count: i32,
    exit_code: i32,
) -> InstallReport {
    let ours = |p: &&InstancePatch| approved.iter().any(|a| a.eq_ignore_ascii_case(&p.id));
    let mut r = InstallReport::default();
    for p in patches.iter().filter(ours) {
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
    r.reboot_required |= pending_reboot_count > 0 || exit_code == EXIT_REBOOT_REQUIRED;
    r
}

/// Generalize a Windows builder with EC2Launch v2 before its image is
/// taken: `reset` clears the instance-specific state so the launch tasks
/// run again on first boot, `sysprep` generalizes Windows. The instance
/// is left running; the engine stops it.
pub const SYSPREP_SCRIPT: &str = r#"$ec2launch = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'
if (-not (Test-Path $ec2launch)) { Write-Error "EC2Launch v2 is not installed on this image; set builder.generalize = false to capture it as it is"; exit 1 }
& $ec2launch reset --clean
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
& $ec2launch sysprep --clean --shutdown=false
exit $LASTEXITCODE"#;

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

    fn sel(os: OsFamily, sev: &[&str], class: &[&str], age: u32) -> PatchSelection {
        PatchSelection {
            os: Some(os),
            severities: sev.iter().map(|s| s.to_string()).collect(),
            classifications: class.iter().map(|s| s.to_string()).collect(),
            min_age_days: age,
            include: vec!["tzdata.noarch".into()],
            exclude: vec!["kernel.x86_64".into()],
        }
    }

    #[test]
    fn the_selection_becomes_the_baseline_rule_per_os() {
        type Case = (
            &'static str,
            OsFamily,
            &'static str,
            PatchSelection,
            Vec<(&'static str, Vec<&'static str>)>,
            Option<u32>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "amazon linux security critical/important",
                OsFamily::AmazonLinux,
                "al2023-ami-2023.5-x86_64",
                sel(OsFamily::AmazonLinux, &["Critical", "Important"], &["Security"], 7),
                vec![
                    ("CLASSIFICATION", vec!["Security"]),
                    ("SEVERITY", vec!["Critical", "Important"]),
                ],
                Some(7),
                false,
            ),
            (
                "amazon linux bugfixes need non-security",
                OsFamily::AmazonLinux,
                "amzn2-ami-kernel-5.10",
                sel(OsFamily::AmazonLinux, &[], &["Security", "Bugfix"], 0),
                vec![("CLASSIFICATION", vec!["Security", "Bugfix"])],
                Some(0),
                true,
            ),
            (
                "windows msrc severity",
                OsFamily::Windows,
                "Windows_Server-2022",
                sel(OsFamily::Windows, &["Critical"], &["SecurityUpdates"], 3),
                vec![
                    ("CLASSIFICATION", vec!["SecurityUpdates"]),
                    ("MSRC_SEVERITY", vec!["Critical"]),
                ],
                Some(3),
                false,
            ),
            (
                "ubuntu priority and section, no delay",
                OsFamily::Ubuntu,
                "ubuntu-jammy",
                sel(OsFamily::Ubuntu, &["Required"], &["libs"], 0),
                vec![("SECTION", vec!["libs"]), ("PRIORITY", vec!["Required"])],
                None,
                true,
            ),
            (
                "anything on suse",
                OsFamily::Suse,
                "suse-sles-15",
                sel(OsFamily::Suse, &[], &[], 0),
                vec![("PRODUCT", vec!["*"])],
                Some(0),
                true,
            ),
        ];
        for (name, os, image, s, filters, days, non_security) in cases {
            let b = scan_baseline("repave-web-r1", operating_system(os, image), os, &s);
            let rule = b.rule.clone().expect("a rule");
            let want: Vec<(&str, Vec<String>)> = filters
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().map(String::from).collect()))
                .collect();
            assert_eq!(rule.filters, want, "{name}");
            assert_eq!(rule.approve_after_days, days, "{name}");
            assert_eq!(rule.enable_non_security, non_security, "{name}");
            assert_eq!(b.approved, vec!["tzdata.noarch"], "{name}: include is approved");
            assert_eq!(b.rejected, vec!["kernel.x86_64"], "{name}: exclude is blocked");
            let frozen = install_baseline(&b, &["openssl.x86_64".into(), "kernel.x86_64".into()]);
            assert_eq!(frozen.rule, None, "{name}: the install approves the list only");
            assert_eq!(frozen.approved, vec!["openssl.x86_64"], "{name}");
        }
        assert_eq!(
            operating_system(OsFamily::AmazonLinux, "amzn2-ami-hvm"),
            "AMAZON_LINUX_2"
        );
        assert_eq!(operating_system(OsFamily::AmazonLinux, "custom"), "AMAZON_LINUX_2023");
        assert_eq!(operating_system(OsFamily::Rhel, ""), "REDHAT_ENTERPRISE_LINUX");
        assert_eq!(baseline_name("web", "r 1/x"), "repave-web-r-1-x");
    }

    #[test]
    fn results_follow_patch_manager_states() {
        let p = |id: &str, state: &str| InstancePatch {
            id: id.into(),
            title: format!("{id} title"),
            classification: "Security".into(),
            severity: "Critical".into(),
            state: state.into(),
        };
        let scanned = scan_result(&[
            p("openssl.x86_64", "Missing"),
            p("curl.x86_64", "Installed"),
            p("glibc.x86_64", "Failed"),
            p("vim.x86_64", "NotApplicable"),
        ]);
        let ids: Vec<&str> = scanned.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, vec!["openssl.x86_64", "glibc.x86_64"]);

        let frozen = vec!["openssl.x86_64".to_string(), "glibc.x86_64".to_string()];
        let after = [
            p("openssl.x86_64", "InstalledPendingReboot"),
            p("glibc.x86_64", "Failed"),
            // Installed long before this bake: not in its manifest.
            p("curl.x86_64", "Installed"),
        ];
        let r = install_result(&after, &frozen, 1, 0);
        assert_eq!(
            r.installed.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            vec!["openssl.x86_64"]
        );
        assert_eq!(r.failed, vec!["glibc.x86_64"]);
        assert!(r.reboot_required);
        assert!(!r.rebooted, "NoReboot: the engine reboots");
        let clean = install_result(&[p("openssl.x86_64", "Installed")], &frozen, 0, 0);
        assert!(!clean.reboot_required);
        assert!(
            install_result(&[], &frozen, 0, EXIT_REBOOT_REQUIRED).reboot_required,
            "exit 3010"
        );
        assert_eq!(CommandKind::parse("win-install"), Some(CommandKind::Install));
        assert_eq!(CommandKind::parse(CommandKind::Scan.as_str()), Some(CommandKind::Scan));
    }
}

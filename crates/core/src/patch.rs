//! Patch selection: which updates a bake installs. One selection, in the
//! vocabulary of the builder's OS family ([`os`]): Windows Update's
//! severities and classifications, the yum advisory types and severities of
//! Amazon Linux and RHEL, SUSE's patch categories, the priorities and
//! sections of Ubuntu and Debian packages — the words Patch Manager uses,
//! so a selection means the same locally and on AWS.

pub mod os;

pub use os::{Axis, OsFamily, PlatformChoice};
use serde::{Deserialize, Serialize};

/// Windows severities, most severe first (MSRC ratings as SSM uses them).
pub const SEVERITIES: &[&str] = os::WINDOWS_SEVERITIES;

/// Windows classifications (AWS-InstallWindowsUpdates' `Categories`).
pub const CLASSIFICATIONS: &[&str] = os::WINDOWS_CLASSIFICATIONS;

/// One entry of an update feed (a KB, or a package version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// KB number or package update id, e.g. "KB5034441" or "openssl-3.0.13".
    pub id: String,
    pub package: String,
    pub version: String,
    pub severity: String,
    pub classification: String,
    /// Release date, `YYYY-MM-DD`.
    pub released: String,
    /// Installing it needs a reboot before further updates apply.
    #[serde(default)]
    pub reboot: bool,
    /// Files the update writes (relative paths inside the instance root).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub files: std::collections::BTreeMap<String, String>,
}

/// Which updates to install. Empty `severities` / `classifications` mean
/// "any". `include` wins over the filters, `exclude` over everything.
/// On Ubuntu / Debian `severities` holds package priorities and
/// `classifications` sections (the config calls them `priorities` and
/// `sections`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PatchSelection {
    /// The OS family the names are in, once the engine knows the builder's
    /// (providers pick the patch documents and baselines from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OsFamily>,
    #[serde(default)]
    pub severities: Vec<String>,
    #[serde(default)]
    pub classifications: Vec<String>,
    /// Only updates released at least this many days before the bake.
    #[serde(default)]
    pub min_age_days: u32,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Why an update was or wasn't selected; recorded so a bake can be explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision", content = "reason")]
pub enum Decision {
    Selected,
    Included,
    Excluded,
    Severity(String),
    Classification(String),
    TooNew { age_days: i64 },
    BadDate(String),
}

impl Decision {
    pub fn installs(&self) -> bool {
        matches!(self, Decision::Selected | Decision::Included)
    }
}

/// Days since the Unix epoch for a `YYYY-MM-DD` date (proleptic Gregorian).
pub fn parse_date_days(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[5..7].parse().ok()?;
    let d: i64 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// (year, month, day) for days since the Unix epoch (Howard Hinnant's
/// civil_from_days); the inverse of [`parse_date_days`].
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` for days since the Unix epoch (the feed's date format).
pub fn format_date_days(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl PatchSelection {
    /// Decide one update at `today` (days since epoch).
    pub fn decide(&self, u: &Update, today: i64) -> Decision {
        if self.exclude.iter().any(|x| x == &u.id || x == &u.package) {
            return Decision::Excluded;
        }
        if self.include.iter().any(|x| x == &u.id || x == &u.package) {
            return Decision::Included;
        }
        if !self.severities.is_empty() && !self.severities.iter().any(|s| s.eq_ignore_ascii_case(&u.severity)) {
            return Decision::Severity(u.severity.clone());
        }
        if !self.classifications.is_empty()
            && !self
                .classifications
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&u.classification))
        {
            return Decision::Classification(u.classification.clone());
        }
        let Some(released) = parse_date_days(&u.released) else {
            return Decision::BadDate(u.released.clone());
        };
        let age = today - released;
        if age < self.min_age_days as i64 {
            return Decision::TooNew { age_days: age };
        }
        Decision::Selected
    }

    /// The updates to install, in feed order, each id once.
    pub fn select<'a>(&self, feed: &'a [Update], today: i64) -> Vec<&'a Update> {
        let mut seen = std::collections::BTreeSet::new();
        feed.iter()
            .filter(|u| self.decide(u, today).installs() && seen.insert(u.id.as_str()))
            .collect()
    }

    /// Problems with the selection itself on `os` (names the family does
    /// not know, include/exclude overlap), each prefixed with the list it is
    /// about (`"severities: ..."`).
    pub fn problems(&self) -> Vec<String> {
        let os = self.os.unwrap_or(OsFamily::Windows);
        let (sev_key, class_key) = ("severities", "classifications");
        let mut out = Vec::new();
        for (key, axis, values) in [
            (sev_key, Axis::Severity, &self.severities),
            (class_key, Axis::Classification, &self.classifications),
        ] {
            for v in values {
                if !os.knows(axis, v) {
                    out.push(format!(
                        "{key}: unknown {} {v:?} on {os} (expected one of {})",
                        singular(key),
                        os.names(axis).join(", ")
                    ));
                }
            }
        }
        for x in &self.exclude {
            if self.include.contains(x) {
                out.push(format!("{x:?} is in both include and exclude; exclude would win"));
            }
        }
        out
    }
}

/// "severities" -> "severity", for messages.
pub fn singular(key: &str) -> &str {
    match key {
        "severities" => "severity",
        "classifications" => "classification",
        "priorities" => "priority",
        "sections" => "section",
        other => other,
    }
}

/// Days since the epoch for a timestamp in milliseconds.
pub fn epoch_days(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(id: &str, sev: &str, class: &str, released: &str) -> Update {
        Update {
            id: id.into(),
            package: format!("pkg-{id}"),
            version: "1".into(),
            severity: sev.into(),
            classification: class.into(),
            released: released.into(),
            reboot: false,
            files: Default::default(),
        }
    }

    fn feed() -> Vec<Update> {
        vec![
            u("KB1", "Critical", "SecurityUpdates", "2026-01-01"),
            u("KB2", "Important", "SecurityUpdates", "2026-01-20"),
            u("KB3", "Moderate", "Updates", "2026-01-01"),
            u("KB4", "Low", "Drivers", "2026-01-01"),
            u("KB5", "Critical", "CriticalUpdates", "2026-01-29"),
            u("KB6", "Unspecified", "DefinitionUpdates", "not-a-date"),
        ]
    }

    #[test]
    fn selection_table() {
        let today = parse_date_days("2026-01-30").unwrap();
        let s = |sev: &[&str], class: &[&str], age: u32, inc: &[&str], exc: &[&str]| PatchSelection {
            os: None,
            severities: sev.iter().map(|x| x.to_string()).collect(),
            classifications: class.iter().map(|x| x.to_string()).collect(),
            min_age_days: age,
            include: inc.iter().map(|x| x.to_string()).collect(),
            exclude: exc.iter().map(|x| x.to_string()).collect(),
        };
        let cases: Vec<(&str, PatchSelection, Vec<&str>)> = vec![
            (
                "everything dated",
                s(&[], &[], 0, &[], &[]),
                vec!["KB1", "KB2", "KB3", "KB4", "KB5"],
            ),
            (
                "critical+important",
                s(&["Critical", "Important"], &[], 0, &[], &[]),
                vec!["KB1", "KB2", "KB5"],
            ),
            (
                "security only",
                s(&[], &["SecurityUpdates"], 0, &[], &[]),
                vec!["KB1", "KB2"],
            ),
            ("age 7 days", s(&[], &[], 7, &[], &[]), vec!["KB1", "KB2", "KB3", "KB4"]),
            (
                "age 10 days (boundary: 10 days old counts)",
                s(&[], &[], 10, &[], &[]),
                vec!["KB1", "KB2", "KB3", "KB4"],
            ),
            ("age 11 days", s(&[], &[], 11, &[], &[]), vec!["KB1", "KB3", "KB4"]),
            ("age 30 drops everything", s(&[], &[], 30, &[], &[]), vec![]),
            (
                "include beats filters",
                s(&["Critical"], &[], 30, &["KB4"], &[]),
                vec!["KB4"],
            ),
            (
                "exclude beats include",
                s(&[], &[], 0, &["KB4"], &["KB4"]),
                vec!["KB1", "KB2", "KB3", "KB5"],
            ),
            (
                "exclude by package",
                s(&[], &[], 0, &[], &["pkg-KB1"]),
                vec!["KB2", "KB3", "KB4", "KB5"],
            ),
            (
                "case-insensitive severity",
                s(&["critical"], &[], 0, &[], &[]),
                vec!["KB1", "KB5"],
            ),
            (
                "include bad date",
                s(&["Low"], &[], 0, &["KB6"], &[]),
                vec!["KB4", "KB6"],
            ),
        ];
        let feed = feed();
        for (name, sel, want) in cases {
            let got: Vec<&str> = sel.select(&feed, today).iter().map(|u| u.id.as_str()).collect();
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date_days("1970-01-01"), Some(0));
        assert_eq!(parse_date_days("2000-03-01"), Some(11_017));
        assert_eq!(parse_date_days("2024-02-29"), Some(19_782));
        assert_eq!(parse_date_days("2023-02-29"), None);
        for d in ["1970-01-01", "2000-02-29", "2024-12-31", "1969-07-20"] {
            assert_eq!(format_date_days(parse_date_days(d).unwrap()), d);
        }
        assert_eq!(parse_date_days("2023-13-01"), None);
        assert_eq!(parse_date_days("20230101"), None);
    }

    #[test]
    fn problems_named() {
        let sel = PatchSelection {
            severities: vec!["Severe".into()],
            ..Default::default()
        };
        assert!(sel.problems()[0].contains("Severe"));
    }
}

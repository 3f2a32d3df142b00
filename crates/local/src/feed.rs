//! The update feed the local cloud serves: the built-in demo feed (dates
//! relative to today, so `min_age_days` behaves the same any day) or a JSON
//! file given with `--feed`.
//!
//! A feed is written in one OS family's vocabulary, like the updates of a
//! real image: `{"os": "amazon-linux", "updates": [...]}` (a bare JSON
//! array is a Windows-vocabulary feed, the original format). The local
//! images report that family, so a Linux-style selection can be tried
//! without an account (`repave demo --os amazon-linux`).

use crate::util::{format_date, today_days};
use repave_core::patch::{OsFamily, Update};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// An update feed: its OS family and its updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    pub os: OsFamily,
    pub updates: Vec<Update>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FeedFile {
    Feed(Feed),
    Windows(Vec<Update>),
}

fn update(id: &str, package: &str, version: &str, severity: &str, class: &str, age_days: i64) -> Update {
    Update {
        id: id.into(),
        package: package.into(),
        version: version.into(),
        severity: severity.into(),
        classification: class.into(),
        released: format_date(today_days() - age_days),
        reboot: false,
        files: Default::default(),
    }
}

/// Twelve updates over the demo image's packages: every severity, several
/// classifications, ages from 1 to 90 days, and one kernel update that needs
/// a reboot.
pub fn demo_feed() -> Vec<Update> {
    let mut feed = vec![
        update("openssl-3.0.13", "openssl", "3.0.13", "Critical", "SecurityUpdates", 40),
        update("openssl-3.0.15", "openssl", "3.0.15", "Important", "SecurityUpdates", 3),
        update(
            "kernel-6.1.0-18",
            "kernel",
            "6.1.0-18",
            "Critical",
            "CriticalUpdates",
            20,
        ),
        update("curl-8.5.0", "curl", "8.5.0", "Important", "SecurityUpdates", 30),
        update("curl-8.6.0", "curl", "8.6.0", "Moderate", "Updates", 1),
        update("tzdata-2024b", "tzdata", "2024b", "Low", "Updates", 60),
        update("nginx-1.24.1", "nginx", "1.24.1", "Moderate", "SecurityUpdates", 14),
        update("nginx-1.26.0", "nginx", "1.26.0", "Low", "FeaturePacks", 7),
        update(
            "libxml2-2.9.16",
            "libxml2",
            "2.9.16",
            "Important",
            "SecurityUpdates",
            10,
        ),
        update("e1000e-3.8.7", "e1000e", "3.8.7", "Low", "Drivers", 90),
        update("libxml2-2.11.7", "libxml2", "2.11.7", "Moderate", "UpdateRollups", 5),
        update("tzdata-2024c", "tzdata", "2024c", "Unspecified", "Updates", 2),
    ];
    for u in &mut feed {
        u.files.insert(
            format!("usr/share/doc/{}/VERSION", u.package),
            format!("{}\n", u.version),
        );
    }
    feed[2].reboot = true;
    feed
}

/// How the demo's packages are described on each Linux family:
/// (Windows severity, Windows classification) -> (severity or priority,
/// classification or section).
fn translate(os: OsFamily, severity: &str, class: &str) -> (String, String) {
    fn yum(sev: &str) -> &str {
        match sev {
            "Moderate" => "Medium",
            "Unspecified" => "Low",
            other => other,
        }
    }
    let (sev, class): (&str, &str) = match os {
        OsFamily::Windows => (severity, class),
        OsFamily::AmazonLinux | OsFamily::Rhel => (
            yum(severity),
            match class {
                "SecurityUpdates" | "CriticalUpdates" => "Security",
                "FeaturePacks" => "Enhancement",
                "Drivers" => "Newpackage",
                "UpdateRollups" => "Recommended",
                _ => "Bugfix",
            },
        ),
        OsFamily::Suse => (
            if severity == "Unspecified" { "Low" } else { severity },
            match class {
                "SecurityUpdates" | "CriticalUpdates" => "Security",
                "FeaturePacks" => "Feature",
                "Drivers" => "Optional",
                _ => "Recommended",
            },
        ),
        OsFamily::Ubuntu | OsFamily::Debian => (
            match severity {
                "Critical" => "Required",
                "Important" => "Important",
                "Moderate" => "Standard",
                _ => "Optional",
            },
            match class {
                "CriticalUpdates" => "kernel",
                "Drivers" => "kernel",
                "FeaturePacks" => "httpd",
                _ => "libs",
            },
        ),
    };
    (sev.to_string(), class.to_string())
}

/// Windows-vocabulary `updates` as `os` would describe them.
pub fn for_os(os: OsFamily, mut updates: Vec<Update>) -> Feed {
    for u in &mut updates {
        let (sev, class) = translate(os, &u.severity, &u.classification);
        u.severity = sev;
        u.classification = class;
    }
    Feed { os, updates }
}

/// The demo feed in `os`'s vocabulary (same packages, versions and dates).
pub fn demo_feed_for(os: OsFamily) -> Feed {
    for_os(os, demo_feed())
}

/// Read a feed file: `{"os": ..., "updates": [...]}` or a JSON array of
/// [`Update`] (Windows vocabulary).
pub fn load(path: &Path) -> Result<Feed, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading feed {}: {e}", path.display()))?;
    match serde_json::from_str(&text).map_err(|e| format!("parsing feed {}: {e}", path.display()))? {
        FeedFile::Feed(f) => Ok(f),
        FeedFile::Windows(updates) => Ok(Feed {
            os: OsFamily::Windows,
            updates,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_feed_is_varied() {
        let feed = demo_feed();
        assert_eq!(feed.len(), 12);
        assert_eq!(feed.iter().filter(|u| u.reboot).count(), 1);
        for sev in ["Critical", "Important", "Moderate", "Low"] {
            assert!(feed.iter().any(|u| u.severity == sev), "{sev}");
        }
        for u in &feed {
            assert!(repave_core::patch::parse_date_days(&u.released).is_some());
        }
    }

    #[test]
    fn demo_feed_speaks_each_family() {
        use repave_core::patch::{os::FAMILIES, Axis};
        for &os in FAMILIES {
            let feed = demo_feed_for(os);
            assert_eq!(feed.updates.len(), 12);
            for u in &feed.updates {
                assert!(os.knows(Axis::Severity, &u.severity), "{os}: {}", u.severity);
                assert!(
                    os.knows(Axis::Classification, &u.classification),
                    "{os}: {}",
                    u.classification
                );
            }
        }
        let al = demo_feed_for(OsFamily::AmazonLinux);
        assert!(al
            .updates
            .iter()
            .any(|u| u.classification == "Security" && u.severity == "Critical"));
        assert!(al.updates.iter().any(|u| u.severity == "Medium"));
    }

    #[test]
    fn feed_files_old_and_new() {
        let dir = std::env::temp_dir().join(format!("repave-feed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let old = dir.join("old.json");
        std::fs::write(&old, serde_json::to_vec(&demo_feed()).expect("json")).expect("write");
        assert_eq!(load(&old).expect("loads").os, OsFamily::Windows);
        let new = dir.join("new.json");
        let feed = demo_feed_for(OsFamily::Ubuntu);
        std::fs::write(&new, serde_json::to_vec(&feed).expect("json")).expect("write");
        assert_eq!(load(&new).expect("loads"), feed);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

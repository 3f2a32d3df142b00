//! The update feed the local cloud serves: the built-in demo feed (dates
//! relative to today, so `min_age_days` behaves the same any day) or a JSON
//! file given with `--feed`.

use crate::util::{format_date, today_days};
use repave_core::patch::Update;
use std::path::Path;

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

/// Read a feed file: a JSON array of [`Update`].
pub fn load(path: &Path) -> Result<Vec<Update>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading feed {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parsing feed {}: {e}", path.display()))
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
}

//! The patch selection checked against the OS families a builder may be:
//! at load against `builder.platform` (every family for "auto"), and again
//! before anything is launched against the family detected from the image.
//! A name no allowed family knows, or a key the family does not use, would
//! make the selection match nothing: that is an error, never a silent
//! empty bake.

use super::{Patch, Pipeline};
use crate::patch::{singular, Axis, OsFamily, PlatformChoice};
use crate::provider::Image;

/// ApproveAfterDays' upper bound (AWS PatchRule).
const MAX_APPROVE_AFTER_DAYS: u32 = 360;

/// One problem: the key (and element) it is about, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchProblem {
    pub key: &'static str,
    pub index: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for PatchProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "patch.{}[{i}]: {}", self.key, self.message),
            None => write!(f, "patch.{}: {}", self.key, self.message),
        }
    }
}

fn names(families: &[OsFamily], axis: Axis) -> String {
    let mut seen: Vec<String> = Vec::new();
    for f in families {
        let list = f.names(axis).join(", ");
        if let Some(entry) = seen.iter_mut().find(|e| e.ends_with(&format!(": {list}"))) {
            *entry = format!("{}/{f}: {list}", entry.split(": ").next().unwrap_or_default());
        } else {
            seen.push(format!("{f}: {list}"));
        }
    }
    seen.join("; ")
}

impl Patch {
    /// Problems of this selection on a builder that may be any family of
    /// `choice`. `aws`: the provider is AWS (ApproveAfterDays bounds apply).
    pub fn problems(&self, choice: PlatformChoice, aws: bool) -> Vec<PatchProblem> {
        let families = choice.families();
        let apt: Vec<OsFamily> = families.iter().copied().filter(|f| f.is_apt()).collect();
        let other: Vec<OsFamily> = families.iter().copied().filter(|f| !f.is_apt()).collect();
        let mut out = Vec::new();
        let lists: [(&'static str, Axis, &Vec<String>, &Vec<OsFamily>); 4] = [
            ("severities", Axis::Severity, &self.severities, &other),
            ("classifications", Axis::Classification, &self.classifications, &other),
            ("priorities", Axis::Severity, &self.priorities, &apt),
            ("sections", Axis::Classification, &self.sections, &apt),
        ];
        for (key, axis, values, users) in lists {
            if values.is_empty() {
                continue;
            }
            if users.is_empty() {
                let family = families.first().copied().unwrap_or(OsFamily::Windows);
                let (sev, class) = family.keys();
                let instead = if axis == Axis::Severity { sev } else { class };
                out.push(PatchProblem {
                    key,
                    index: None,
                    message: format!("{family} patches have no {key}; write `{instead}` instead"),
                });
                continue;
            }
            for (i, v) in values.iter().enumerate() {
                if users.iter().any(|f| f.knows(axis, v)) {
                    continue;
                }
                let on = match users.as_slice() {
                    [one] => format!(" on {one}"),
                    _ => String::new(),
                };
                out.push(PatchProblem {
                    key,
                    index: Some(i),
                    message: format!("unknown {} {v:?}{on} (expected {})", singular(key), names(users, axis)),
                });
            }
        }
        let uses_other = !self.severities.is_empty() || !self.classifications.is_empty();
        let uses_apt = !self.priorities.is_empty() || !self.sections.is_empty();
        if uses_other && uses_apt && !apt.is_empty() && !other.is_empty() {
            let key = if self.priorities.is_empty() {
                "sections"
            } else {
                "priorities"
            };
            out.push(PatchProblem {
                key,
                index: None,
                message: "mixes Ubuntu/Debian keys (priorities, sections) with severities/classifications; a builder has one OS, so one of them would match nothing".into(),
            });
        }
        if self.min_age_days > 0 && other.is_empty() {
            out.push(PatchProblem {
                key: "min_age_days",
                index: None,
                message: format!(
                    "Patch Manager cannot delay approval on {} (it has no release dates there); remove min_age_days",
                    apt.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("/")
                ),
            });
        }
        if aws && self.min_age_days > MAX_APPROVE_AFTER_DAYS {
            out.push(PatchProblem {
                key: "min_age_days",
                index: None,
                message: format!(
                    "{} is more than {MAX_APPROVE_AFTER_DAYS} (Patch Manager's ApproveAfterDays limit)",
                    self.min_age_days
                ),
            });
        }
        for (i, x) in self.exclude.iter().enumerate() {
            if self.include.contains(x) {
                out.push(PatchProblem {
                    key: "exclude",
                    index: Some(i),
                    message: format!("{x:?} is in both include and exclude; exclude would win"),
                });
            }
        }
        out
    }
}

/// The OS family of a builder launched from `image` for `pipeline`: what
/// the image says it is, checked against `builder.platform` and the patch
/// selection (a selection in another family's words would match nothing).
/// Run before anything is launched, and by `repave plan`.
pub fn builder_os(pipeline: &Pipeline, image: &Image) -> Result<OsFamily, String> {
    let detected = OsFamily::detect(image.platform.as_deref().unwrap_or_default(), &image.name, "");
    let os = pipeline
        .builder
        .platform
        .resolve(detected)
        .map_err(|m| format!("source image {}: {m}", image.id))?;
    let problems = pipeline.patch.problems(
        PlatformChoice::Family(os),
        pipeline.provider == crate::config::ProviderKind::Aws,
    );
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        return Err(format!(
            "the patch selection cannot match anything on {os} (image {}): {}",
            image.id,
            list.join("; ")
        ));
    }
    Ok(os)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::OsFamily::*;

    fn patch(sev: &[&str], class: &[&str], prio: &[&str], sect: &[&str], age: u32) -> Patch {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Patch {
            severities: v(sev),
            classifications: v(class),
            priorities: v(prio),
            sections: v(sect),
            min_age_days: age,
            ..Patch::default()
        }
    }

    #[test]
    fn selection_per_os_family() {
        use PlatformChoice::{Auto, Family, Linux};
        // (case, selection, platform, first problem: key and part of message, or none)
        type Case = (
            &'static str,
            Patch,
            PlatformChoice,
            Option<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "windows words on windows",
                patch(&["Critical"], &["SecurityUpdates"], &[], &[], 7),
                Family(Windows),
                None,
            ),
            (
                "windows words on amazon linux",
                patch(&[], &["SecurityUpdates"], &[], &[], 0),
                Family(AmazonLinux),
                Some((
                    "classifications",
                    "unknown classification \"SecurityUpdates\" on amazon-linux",
                )),
            ),
            (
                "Medium is an Amazon Linux severity",
                patch(&["Critical", "Medium"], &["Security"], &[], &[], 7),
                Family(AmazonLinux),
                None,
            ),
            (
                "Medium is not a Windows severity",
                patch(&["Medium"], &[], &[], &[], 0),
                Family(Windows),
                Some(("severities", "unknown severity \"Medium\" on windows")),
            ),
            (
                "rhel shares the yum words",
                patch(&["Important"], &["Bugfix", "Enhancement"], &[], &[], 0),
                Family(Rhel),
                None,
            ),
            (
                "suse categories",
                patch(&["Moderate"], &["Security", "Yast"], &[], &[], 0),
                Family(Suse),
                None,
            ),
            (
                "suse has no Bugfix",
                patch(&[], &["Bugfix"], &[], &[], 0),
                Family(Suse),
                Some(("classifications", "on suse")),
            ),
            (
                "ubuntu priorities and sections",
                patch(&[], &[], &["Required", "Important"], &["libs", "universe/python"], 0),
                Family(Ubuntu),
                None,
            ),
            (
                "ubuntu has no severities",
                patch(&["Critical"], &[], &[], &[], 0),
                Family(Ubuntu),
                Some(("severities", "ubuntu patches have no severities; write `priorities`")),
            ),
            (
                "amazon linux has no priorities",
                patch(&[], &[], &["Required"], &[], 0),
                Family(AmazonLinux),
                Some(("priorities", "write `severities`")),
            ),
            (
                "no delay on debian",
                patch(&[], &[], &["Required"], &[], 3),
                Family(Debian),
                Some(("min_age_days", "cannot delay approval on debian")),
            ),
            (
                "auto accepts any family's words",
                patch(&["Medium"], &["SecurityUpdates"], &[], &[], 0),
                Auto,
                None,
            ),
            (
                "auto still catches typos",
                patch(&[], &["Securty"], &[], &[], 0),
                Auto,
                Some((
                    "classifications",
                    "unknown classification \"Securty\" (expected windows:",
                )),
            ),
            (
                "linux excludes windows words",
                patch(&[], &["SecurityUpdates"], &[], &[], 0),
                Linux,
                Some(("classifications", "unknown classification")),
            ),
            (
                "auto refuses a mix of apt and other keys",
                patch(&["Critical"], &[], &["Required"], &[], 0),
                Auto,
                Some(("priorities", "mixes")),
            ),
        ];
        for (name, p, choice, want) in cases {
            let got = p.problems(choice, true);
            match want {
                None => assert!(got.is_empty(), "{name}: {got:?}"),
                Some((key, msg)) => {
                    let first = got.first().unwrap_or_else(|| panic!("{name}: no problem"));
                    assert_eq!(first.key, key, "{name}: {first}");
                    assert!(first.message.contains(msg), "{name}: {first}");
                }
            }
        }
    }

    #[test]
    fn selection_for_spells_as_the_family_does() {
        let p = patch(&["critical", "medium"], &["security"], &[], &[], 0);
        let s = p.selection_for(AmazonLinux);
        assert_eq!(s.os, Some(AmazonLinux));
        assert_eq!(s.severities, vec!["Critical", "Medium"]);
        assert_eq!(s.classifications, vec!["Security"]);
        let u = patch(&[], &[], &["required"], &["libs"], 0).selection_for(Ubuntu);
        assert_eq!(
            (u.severities, u.classifications),
            (vec!["Required".to_string()], vec!["libs".to_string()])
        );
        assert!(p.problems(PlatformChoice::Family(AmazonLinux), true).is_empty());
        assert_eq!(
            patch(&[], &[], &[], &[], 400).problems(PlatformChoice::Auto, true)[0].key,
            "min_age_days"
        );
        assert!(patch(&[], &[], &[], &[], 400)
            .problems(PlatformChoice::Auto, false)
            .is_empty());
    }
}

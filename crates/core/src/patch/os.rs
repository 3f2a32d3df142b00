//! Operating-system families and the patch vocabulary each one reports.
//!
//! Patch Manager (and so repave) describes patches in each OS family's own
//! words: Windows Update's MSRC severities and update classifications;
//! Amazon Linux and RHEL the `updateinfo` advisory types and severities of
//! their repositories; SUSE its patch categories; Ubuntu and Debian the
//! priority and section of each package. A selection written in one
//! family's words matches nothing on another, so it is checked against the
//! family before anything is launched.
//!
//! Values: AWS Systems Manager, DescribePatchProperties (CLASSIFICATION /
//! SEVERITY / MSRC_SEVERITY / PRIORITY / SECTION per operating system) and
//! "Patch baseline filters" in the Patch Manager user guide.

use serde::{Deserialize, Serialize};

/// The OS family of an image: which vocabulary its patches use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OsFamily {
    Windows,
    AmazonLinux,
    Rhel,
    Suse,
    Ubuntu,
    Debian,
}

/// Every family, in the order they are listed to users.
pub const FAMILIES: &[OsFamily] = &[
    OsFamily::Windows,
    OsFamily::AmazonLinux,
    OsFamily::Rhel,
    OsFamily::Suse,
    OsFamily::Ubuntu,
    OsFamily::Debian,
];

/// Windows: MSRC severities, most severe first.
pub const WINDOWS_SEVERITIES: &[&str] = &["Critical", "Important", "Moderate", "Low", "Unspecified"];

/// Windows: the update classifications Windows Update (and
/// AWS-InstallWindowsUpdates' `Categories`) know.
pub const WINDOWS_CLASSIFICATIONS: &[&str] = &[
    "CriticalUpdates",
    "SecurityUpdates",
    "DefinitionUpdates",
    "Drivers",
    "FeaturePacks",
    "ServicePacks",
    "Tools",
    "UpdateRollups",
    "Updates",
    "Application",
    "Connectors",
    "DeveloperKits",
    "Guidance",
    "Microsoft",
];

/// Amazon Linux / RHEL: `updateinfo` advisory types.
pub const YUM_CLASSIFICATIONS: &[&str] = &["Security", "Bugfix", "Enhancement", "Recommended", "Newpackage"];
/// Amazon Linux / RHEL: advisory severities.
pub const YUM_SEVERITIES: &[&str] = &["Critical", "Important", "Medium", "Low"];

/// SUSE: patch categories.
pub const SUSE_CLASSIFICATIONS: &[&str] = &["Security", "Recommended", "Optional", "Feature", "Document", "Yast"];
/// SUSE: patch severities.
pub const SUSE_SEVERITIES: &[&str] = &["Critical", "Important", "Moderate", "Low"];

/// Ubuntu / Debian: package priorities.
pub const APT_PRIORITIES: &[&str] = &["Required", "Important", "Standard", "Optional", "Extra"];
/// Ubuntu / Debian: archive sections (Debian policy 2.4), which Ubuntu may
/// prefix with its component (`universe/python`).
pub const APT_SECTIONS: &[&str] = &[
    "admin",
    "cli-mono",
    "comm",
    "database",
    "debug",
    "devel",
    "doc",
    "editors",
    "education",
    "electronics",
    "embedded",
    "fonts",
    "games",
    "gnome",
    "gnu-r",
    "gnustep",
    "golang",
    "graphics",
    "hamradio",
    "haskell",
    "httpd",
    "interpreters",
    "introspection",
    "java",
    "javascript",
    "kde",
    "kernel",
    "libdevel",
    "libs",
    "lisp",
    "localization",
    "mail",
    "math",
    "metapackages",
    "misc",
    "net",
    "news",
    "ocaml",
    "oldlibs",
    "otherosfs",
    "perl",
    "php",
    "python",
    "ruby",
    "rust",
    "science",
    "shells",
    "sound",
    "tasks",
    "tex",
    "text",
    "utils",
    "vcs",
    "video",
    "web",
    "x11",
    "xfce",
    "zope",
];
/// Archive components a section may be prefixed with.
const APT_COMPONENTS: &[&str] = &["main", "restricted", "universe", "multiverse", "contrib", "non-free"];

/// Which list of a selection a vocabulary applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// `severities` (Windows, yum, SUSE) or `priorities` (apt).
    Severity,
    /// `classifications` (Windows, yum, SUSE) or `sections` (apt).
    Classification,
}

impl OsFamily {
    /// The name used in `repave.toml` (`builder.platform`) and on the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Windows => "windows",
            OsFamily::AmazonLinux => "amazon-linux",
            OsFamily::Rhel => "rhel",
            OsFamily::Suse => "suse",
            OsFamily::Ubuntu => "ubuntu",
            OsFamily::Debian => "debian",
        }
    }

    pub fn parse(s: &str) -> Option<OsFamily> {
        FAMILIES.iter().copied().find(|f| f.as_str() == s)
    }

    /// How a cloud would describe an image of this family (AWS
    /// `PlatformDetails` style); [`OsFamily::detect`] reads it back.
    pub fn platform_details(self) -> &'static str {
        match self {
            OsFamily::Windows => "Windows",
            OsFamily::AmazonLinux => "Linux/UNIX (Amazon Linux)",
            OsFamily::Rhel => "Red Hat Enterprise Linux",
            OsFamily::Suse => "SUSE Linux",
            OsFamily::Ubuntu => "Ubuntu",
            OsFamily::Debian => "Linux/UNIX (Debian)",
        }
    }

    pub fn is_windows(self) -> bool {
        self == OsFamily::Windows
    }

    /// Ubuntu and Debian describe packages by priority and section, and
    /// Patch Manager cannot delay approval there (no release dates).
    pub fn is_apt(self) -> bool {
        matches!(self, OsFamily::Ubuntu | OsFamily::Debian)
    }

    /// The config keys a selection uses on this family.
    pub fn keys(self) -> (&'static str, &'static str) {
        if self.is_apt() {
            ("priorities", "sections")
        } else {
            ("severities", "classifications")
        }
    }

    /// The names one axis accepts on this family.
    pub fn names(self, axis: Axis) -> &'static [&'static str] {
        match (self, axis) {
            (OsFamily::Windows, Axis::Severity) => WINDOWS_SEVERITIES,
            (OsFamily::Windows, Axis::Classification) => WINDOWS_CLASSIFICATIONS,
            (OsFamily::AmazonLinux | OsFamily::Rhel, Axis::Severity) => YUM_SEVERITIES,
            (OsFamily::AmazonLinux | OsFamily::Rhel, Axis::Classification) => YUM_CLASSIFICATIONS,
            (OsFamily::Suse, Axis::Severity) => SUSE_SEVERITIES,
            (OsFamily::Suse, Axis::Classification) => SUSE_CLASSIFICATIONS,
            (OsFamily::Ubuntu | OsFamily::Debian, Axis::Severity) => APT_PRIORITIES,
            (OsFamily::Ubuntu | OsFamily::Debian, Axis::Classification) => APT_SECTIONS,
        }
    }

    /// Whether `name` is a word of this family on `axis` (case-insensitive;
    /// apt sections may carry a component prefix).
    pub fn knows(self, axis: Axis, name: &str) -> bool {
        let name = if self.is_apt() && axis == Axis::Classification {
            match name.split_once('/') {
                Some((component, section)) if APT_COMPONENTS.iter().any(|c| c.eq_ignore_ascii_case(component)) => {
                    section
                }
                _ => name,
            }
        } else {
            name
        };
        self.names(axis).iter().any(|k| k.eq_ignore_ascii_case(name))
    }

    /// The family's spelling of `name`, if it knows it.
    pub fn canonical(self, axis: Axis, name: &str) -> Option<&'static str> {
        self.names(axis).iter().copied().find(|k| k.eq_ignore_ascii_case(name))
    }

    /// Detect the family of an image from what the cloud says about it:
    /// AWS `PlatformDetails` (billing product: "Windows", "Red Hat
    /// Enterprise Linux", "SUSE Linux", "Ubuntu Pro", or the generic
    /// "Linux/UNIX") refined by the image name and description, which is
    /// all that tells Amazon Linux, Ubuntu and Debian apart. `None`: the
    /// image does not say.
    pub fn detect(platform_details: &str, name: &str, description: &str) -> Option<OsFamily> {
        let details = platform_details.to_ascii_lowercase();
        if details.contains("windows") {
            return Some(OsFamily::Windows);
        }
        if details.contains("red hat") {
            return Some(OsFamily::Rhel);
        }
        if details.contains("suse") {
            return Some(OsFamily::Suse);
        }
        if details.contains("ubuntu") {
            return Some(OsFamily::Ubuntu);
        }
        let text = format!("{details} {name} {description}").to_ascii_lowercase();
        let has = |w: &str| text.contains(w);
        if has("al2023-ami") || has("amzn2-ami") || has("amzn-ami") || has("amazon linux") || has("amazon-linux") {
            Some(OsFamily::AmazonLinux)
        } else if has("ubuntu") {
            Some(OsFamily::Ubuntu)
        } else if has("debian") {
            Some(OsFamily::Debian)
        } else if has("rhel") || has("red hat") {
            Some(OsFamily::Rhel)
        } else if has("suse") || has("sles") {
            Some(OsFamily::Suse)
        } else if has("windows") {
            Some(OsFamily::Windows)
        } else {
            None
        }
    }
}

impl std::fmt::Display for OsFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `builder.platform`: which OS families a pipeline's builder may be.
/// In the config it is one word ("auto", "linux" or a family's name); an
/// unknown one is refused by serde at the value's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PlatformChoice {
    /// Whatever the image is (detected before anything is launched).
    #[default]
    Auto,
    /// Any Linux family (detected from the image).
    Linux,
    /// Exactly this family.
    Family(OsFamily),
}

/// The values `builder.platform` accepts.
pub const PLATFORM_VALUES: &str =
    "\"auto\", \"linux\", \"windows\", \"amazon-linux\", \"rhel\", \"suse\", \"ubuntu\", \"debian\"";

impl TryFrom<String> for PlatformChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        PlatformChoice::parse(&s).ok_or_else(|| format!("unknown platform {s:?}; expected one of {PLATFORM_VALUES}"))
    }
}

impl From<PlatformChoice> for String {
    fn from(c: PlatformChoice) -> String {
        c.as_str().to_string()
    }
}

impl std::fmt::Display for PlatformChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PlatformChoice {
    /// The config's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformChoice::Auto => "auto",
            PlatformChoice::Linux => "linux",
            PlatformChoice::Family(f) => f.as_str(),
        }
    }

    /// Whether only Windows builders are allowed.
    pub fn is_windows(self) -> bool {
        matches!(self, PlatformChoice::Family(f) if f.is_windows())
    }

    pub fn parse(s: &str) -> Option<PlatformChoice> {
        match s {
            "auto" => Some(PlatformChoice::Auto),
            "linux" => Some(PlatformChoice::Linux),
            other => OsFamily::parse(other).map(PlatformChoice::Family),
        }
    }

    /// The families this choice allows.
    pub fn families(self) -> Vec<OsFamily> {
        match self {
            PlatformChoice::Auto => FAMILIES.to_vec(),
            PlatformChoice::Linux => FAMILIES.iter().copied().filter(|f| !f.is_windows()).collect(),
            PlatformChoice::Family(f) => vec![f],
        }
    }

    /// The family of a builder launched from an image detected as
    /// `detected`, or why the pipeline cannot run on it.
    pub fn resolve(self, detected: Option<OsFamily>) -> Result<OsFamily, String> {
        match (self, detected) {
            (PlatformChoice::Family(f), None) => Ok(f),
            (PlatformChoice::Family(f), Some(d)) if f == d => Ok(f),
            // Several families share a generic "Linux/UNIX" image; a name
            // that suggests one Linux does not overrule a config naming
            // another, but Windows and Linux never mix.
            (PlatformChoice::Family(f), Some(d)) if !f.is_windows() && !d.is_windows() => Ok(f),
            (PlatformChoice::Family(f), Some(d)) => Err(format!(
                "builder.platform is {f:?} but the image is {d}",
                f = f.as_str()
            )),
            (PlatformChoice::Linux, Some(d)) if d.is_windows() => {
                Err("builder.platform is \"linux\" but the image is windows".into())
            }
            (_, Some(d)) => Ok(d),
            (_, None) => Err(
                "cannot tell the image's OS family from its platform details or name; set builder.platform (one of \"windows\", \"amazon-linux\", \"rhel\", \"suse\", \"ubuntu\", \"debian\")"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_per_family() {
        // (family, axis, name, known)
        let cases = [
            (OsFamily::Windows, Axis::Severity, "Moderate", true),
            (OsFamily::Windows, Axis::Severity, "Medium", false),
            (OsFamily::Windows, Axis::Classification, "SecurityUpdates", true),
            (OsFamily::Windows, Axis::Classification, "Security", false),
            (OsFamily::AmazonLinux, Axis::Severity, "Medium", true),
            (OsFamily::AmazonLinux, Axis::Severity, "Moderate", false),
            (OsFamily::AmazonLinux, Axis::Classification, "Security", true),
            (OsFamily::AmazonLinux, Axis::Classification, "SecurityUpdates", false),
            (OsFamily::AmazonLinux, Axis::Classification, "newpackage", true),
            (OsFamily::Rhel, Axis::Classification, "Bugfix", true),
            (OsFamily::Suse, Axis::Classification, "Yast", true),
            (OsFamily::Suse, Axis::Classification, "Bugfix", false),
            (OsFamily::Suse, Axis::Severity, "Moderate", true),
            (OsFamily::Ubuntu, Axis::Severity, "Optional", true),
            (OsFamily::Ubuntu, Axis::Severity, "Critical", false),
            (OsFamily::Ubuntu, Axis::Classification, "python", true),
            (OsFamily::Ubuntu, Axis::Classification, "universe/python", true),
            (OsFamily::Ubuntu, Axis::Classification, "elsewhere/python", false),
            (OsFamily::Debian, Axis::Classification, "Security", false),
        ];
        for (family, axis, name, known) in cases {
            assert_eq!(family.knows(axis, name), known, "{family} {axis:?} {name}");
        }
    }

    #[test]
    fn detection_from_platform_details_and_name() {
        let cases = [
            (
                "Windows",
                "Windows_Server-2022-English-Full-Base",
                Some(OsFamily::Windows),
            ),
            ("Windows BYOL", "", Some(OsFamily::Windows)),
            ("Red Hat Enterprise Linux", "RHEL-9.4.0_HVM", Some(OsFamily::Rhel)),
            ("SUSE Linux", "suse-sles-15-sp5", Some(OsFamily::Suse)),
            ("Ubuntu Pro", "ubuntu-pro-server", Some(OsFamily::Ubuntu)),
            (
                "Linux/UNIX",
                "al2023-ami-2023.5.20240730.0-kernel-6.1-x86_64",
                Some(OsFamily::AmazonLinux),
            ),
            (
                "Linux/UNIX",
                "amzn2-ami-kernel-5.10-hvm-2.0.20240719.0-x86_64-gp2",
                Some(OsFamily::AmazonLinux),
            ),
            (
                "Linux/UNIX",
                "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server",
                Some(OsFamily::Ubuntu),
            ),
            ("Linux/UNIX", "debian-12-amd64-20240717-1811", Some(OsFamily::Debian)),
            ("Linux/UNIX", "my-golden-image", None),
        ];
        for (details, name, want) in cases {
            assert_eq!(OsFamily::detect(details, name, ""), want, "{details} {name}");
        }
    }

    #[test]
    fn platform_choice_against_detection() {
        let al = Some(OsFamily::AmazonLinux);
        let win = Some(OsFamily::Windows);
        assert_eq!(PlatformChoice::Auto.resolve(al), Ok(OsFamily::AmazonLinux));
        assert!(PlatformChoice::Auto.resolve(None).is_err());
        assert!(PlatformChoice::Linux.resolve(win).is_err());
        assert_eq!(
            PlatformChoice::Family(OsFamily::Rhel).resolve(al),
            Ok(OsFamily::Rhel),
            "a configured Linux family wins over a name that suggests another"
        );
        assert!(PlatformChoice::Family(OsFamily::Windows).resolve(al).is_err());
        assert_eq!(
            PlatformChoice::Family(OsFamily::Ubuntu).resolve(None),
            Ok(OsFamily::Ubuntu)
        );
        assert_eq!(PlatformChoice::parse("linux"), Some(PlatformChoice::Linux));
        assert_eq!(PlatformChoice::parse("macos"), None);
    }
}

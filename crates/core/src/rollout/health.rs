//! The roll's readiness timing: `health_grace` and `warmup` as the config
//! sets them, or as the group's own configuration implies. A fixed default
//! was wrong everywhere but the local demo: a real ALB health check of
//! 3 × 10 s plus boot outlasts 30 s, and AWS's default 5 × 30 s takes
//! minutes, so good images were failed for being slow to boot.

use crate::config::Rollout;
use crate::duration::format_duration;
use crate::provider::HealthTiming;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Warmup when neither the config nor the group names one.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(2);
/// `health_grace` when nothing at all is known about the group.
pub const FALLBACK_HEALTH_GRACE: Duration = Duration::from_secs(30);
/// The smallest margin added on top of what the group needs: boot and
/// registration jitter, and the roll's own observation interval.
pub const MIN_MARGIN: Duration = Duration::from_secs(10);

/// `health_grace` and `warmup` in effect for a roll, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSettings {
    pub health_grace: Duration,
    pub warmup: Duration,
    /// What the group needs at least before a new instance can be healthy:
    /// the slowest launch hook + the grace period + the slowest balancer
    /// check (threshold × interval).
    pub needed: Duration,
    /// One line per value, saying where it came from (for `plan` and the
    /// run's first event).
    pub sources: Vec<String>,
}

impl HealthSettings {
    /// The config's values where set, the group's otherwise.
    pub fn new(rollout: &Rollout, timing: &HealthTiming) -> HealthSettings {
        let (needed, parts) = needed(timing);
        let health_grace = match rollout.health_grace {
            Some(g) => {
                let g = g.get();
                let mut line = format!("health_grace {} (set in the config)", format_duration(g));
                if !parts.is_empty() && g < needed {
                    line.push_str(&format!(
                        "; shorter than the {} the group needs ({}): healthy new instances may be failed",
                        format_duration(needed),
                        parts.join(" + ")
                    ));
                }
                (g, line)
            }
            None if parts.is_empty() => (
                FALLBACK_HEALTH_GRACE,
                format!(
                    "health_grace {} (default: the group names no grace period, health check or launch hook)",
                    format_duration(FALLBACK_HEALTH_GRACE)
                ),
            ),
            None => {
                let margin = (needed / 4).max(MIN_MARGIN);
                let g = needed + margin;
                (
                    g,
                    format!(
                        "health_grace {} (from the group: {} + margin {})",
                        format_duration(g),
                        parts.join(" + "),
                        format_duration(margin)
                    ),
                )
            }
        };
        let warmup = match (rollout.warmup, timing.default_warmup) {
            (Some(w), _) => (
                w.get(),
                format!("warmup {} (set in the config)", format_duration(w.get())),
            ),
            (None, Some(w)) => (
                w,
                format!(
                    "warmup {} (from the group's default instance warmup)",
                    format_duration(w)
                ),
            ),
            (None, None) => (
                DEFAULT_WARMUP,
                format!(
                    "warmup {} (default: the group names no instance warmup)",
                    format_duration(DEFAULT_WARMUP)
                ),
            ),
        };
        HealthSettings {
            health_grace: health_grace.0,
            warmup: warmup.0,
            needed,
            sources: vec![health_grace.1, warmup.1],
        }
    }

    /// The sources as one line.
    pub fn describe(&self) -> String {
        self.sources.join("; ")
    }
}

/// What the group needs, and its parts in words.
fn needed(t: &HealthTiming) -> (Duration, Vec<String>) {
    let mut parts = Vec::new();
    let mut total = Duration::ZERO;
    // Hooks on one transition run side by side: the slowest one counts.
    if let Some(h) = t.launch_hooks.iter().max_by_key(|h| h.heartbeat) {
        total += h.heartbeat;
        parts.push(format!(
            "launch hook {} heartbeat {}",
            h.name,
            format_duration(h.heartbeat)
        ));
    }
    if let Some(g) = t.grace_period.filter(|g| !g.is_zero()) {
        total += g;
        parts.push(format!("grace period {}", format_duration(g)));
    }
    if let Some(c) = t.checks.iter().max_by_key(|c| c.time_to_healthy()) {
        total += c.time_to_healthy();
        parts.push(format!(
            "health check {} {} × {}",
            c.name,
            c.healthy_threshold,
            format_duration(c.interval)
        ));
    }
    (total, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::HumanDuration;
    use crate::provider::{BalancerCheck, LaunchHook};

    fn check(name: &str, interval: u64, threshold: u32) -> BalancerCheck {
        BalancerCheck {
            name: name.into(),
            interval: Duration::from_secs(interval),
            healthy_threshold: threshold,
            deregistration_delay: None,
            port: None,
        }
    }

    #[test]
    fn derived_from_the_group_covers_grace_checks_and_hooks() {
        let t = HealthTiming {
            grace_period: Some(Duration::from_secs(300)),
            health_check_type: Some("ELB".into()),
            checks: vec![check("fast", 5, 2), check("slow", 30, 5)],
            launch_hooks: vec![
                LaunchHook {
                    name: "a".into(),
                    heartbeat: Duration::from_secs(60),
                },
                LaunchHook {
                    name: "b".into(),
                    heartbeat: Duration::from_secs(120),
                },
            ],
            termination_hooks: vec![],
            default_warmup: Some(Duration::from_secs(45)),
        };
        let h = HealthSettings::new(&Rollout::default(), &t);
        // 120 (slowest hook) + 300 (grace) + 150 (5 × 30) = 570, + 25 %.
        assert_eq!(h.needed, Duration::from_secs(570));
        assert_eq!(h.health_grace, Duration::from_millis(570_000 + 142_500));
        assert_eq!(h.warmup, Duration::from_secs(45));
        assert!(h.sources[0].contains("launch hook b heartbeat 2m"), "{:?}", h.sources);
        assert!(h.sources[0].contains("health check slow 5 × 30s"), "{:?}", h.sources);
        assert!(h.sources[1].contains("default instance warmup"), "{:?}", h.sources);
    }

    #[test]
    fn a_small_group_gets_the_minimum_margin() {
        let t = HealthTiming {
            grace_period: Some(Duration::from_secs(2)),
            checks: vec![check("tg", 2, 2)],
            ..Default::default()
        };
        let h = HealthSettings::new(&Rollout::default(), &t);
        assert_eq!(h.health_grace, Duration::from_secs(6) + MIN_MARGIN);
        assert_eq!(h.warmup, DEFAULT_WARMUP);
    }

    #[test]
    fn the_config_wins_and_a_short_value_is_called_out() {
        let t = HealthTiming {
            grace_period: Some(Duration::from_secs(300)),
            checks: vec![check("tg", 10, 3)],
            ..Default::default()
        };
        let r = Rollout {
            health_grace: Some(HumanDuration::from_secs(30)),
            warmup: Some(HumanDuration::from_secs(0)),
            ..Default::default()
        };
        let h = HealthSettings::new(&r, &t);
        assert_eq!(h.health_grace, Duration::from_secs(30));
        assert_eq!(h.warmup, Duration::ZERO);
        assert!(
            h.sources[0].contains("shorter than the 5m30s the group needs"),
            "{:?}",
            h.sources
        );
    }

    #[test]
    fn nothing_known_falls_back() {
        let h = HealthSettings::new(&Rollout::default(), &HealthTiming::default());
        assert_eq!(h.health_grace, FALLBACK_HEALTH_GRACE);
        assert!(h.sources[0].contains("default"), "{:?}", h.sources);
    }
}

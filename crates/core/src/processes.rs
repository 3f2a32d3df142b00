//! Auto Scaling processes and a roll: which ones it needs running (a group
//! with one of them suspended is refused by `plan` and `run`), and which
//! ones repave suspends while it rolls (as CloudFormation's rolling update
//! does). The engine's `processes` module does the suspending.

/// Processes a roll cannot do without.
pub const REQUIRED: &[&str] = &["Launch", "Terminate", "AddToLoadBalancer", "ReplaceUnhealthy"];
/// Also required by `strategy = "native"` (Instance Refresh).
pub const REQUIRED_NATIVE: &str = "InstanceRefresh";
/// Suspended for the duration of a roll.
pub const DURING_ROLL: &[&str] = &["AZRebalance", "AlarmNotification", "ScheduledActions"];

/// Why the group cannot be rolled, naming the suspended processes it needs.
pub fn refusal(group: &str, suspended: &[String], native: bool) -> Option<String> {
    let needed: Vec<&str> = suspended
        .iter()
        .map(String::as_str)
        .filter(|p| REQUIRED.contains(p) || (native && *p == REQUIRED_NATIVE))
        .collect();
    (!needed.is_empty()).then(|| {
        format!(
            "group {group} has suspended process(es) {} that a roll needs; resume them (aws autoscaling resume-processes --auto-scaling-group-name {group} --scaling-processes {})",
            needed.join(", "),
            needed.join(" ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roll_needs_its_processes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(refusal("web", &s(&["AZRebalance", "ScheduledActions"]), false), None);
        let r = refusal("web", &s(&["Launch", "AZRebalance", "ReplaceUnhealthy"]), false).expect("refused");
        assert!(r.contains("Launch, ReplaceUnhealthy"), "{r}");
        assert!(!r.contains("AZRebalance"), "{r}");
        assert_eq!(refusal("web", &s(&["InstanceRefresh"]), false), None);
        assert!(refusal("web", &s(&["InstanceRefresh"]), true).is_some());
    }
}

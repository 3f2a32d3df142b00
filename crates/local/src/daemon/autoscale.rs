//! Target-tracking scaling of a local group, like an AWS target-tracking
//! policy on `ALBRequestCountPerTarget`: desired capacity follows the
//! balancer's request rate divided by the per-instance target, within min
//! and max. Scale-out is immediate; scale-in goes one instance at a time,
//! after the rate has wanted fewer for `scale_in_cooldown`, and never while
//! the group is changing (members launching, draining or terminating — a
//! roll in progress), so it does not fight a roll's surge.

use repave_core::config::Scaling;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often the request rate is sampled.
const PERIOD: Duration = Duration::from_secs(1);
/// Samples averaged for a decision.
const WINDOW: usize = 3;

/// One group's recent request rates.
#[derive(Debug, Default)]
pub(crate) struct Scaler {
    last: Option<(Instant, u64)>,
    rates: VecDeque<f64>,
    low_since: Option<Instant>,
}

/// What the group looks like now.
pub(crate) struct Now {
    pub at: Instant,
    /// The balancer's count of requests proxied so far.
    pub proxied: u64,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// No member launching, draining or terminating.
    pub settled: bool,
}

/// A new desired capacity and why, or `None` to leave it.
pub(crate) fn decide(s: &mut Scaler, sc: &Scaling, now: &Now) -> Option<(u32, String)> {
    match s.last {
        Some((at, _)) if now.at.duration_since(at) < PERIOD => return None,
        Some((at, count)) if now.proxied >= count => {
            let rate = (now.proxied - count) as f64 / now.at.duration_since(at).as_secs_f64();
            s.rates.push_back(rate);
            if s.rates.len() > WINDOW {
                s.rates.pop_front();
            }
        }
        // First sample, or the balancer restarted and its count with it.
        _ => {}
    }
    s.last = Some((now.at, now.proxied));
    if s.rates.is_empty() {
        return None;
    }
    let rate = s.rates.iter().sum::<f64>() / s.rates.len() as f64;
    let target = sc.target_requests_per_instance.max(1);
    // At least one instance: with none there is no traffic to measure.
    let wanted = ((rate / target as f64).ceil() as u32).max(1).clamp(now.min, now.max);
    let why = |to: u32, what: &str| {
        format!(
            "{rate:.0} req/s, target {target} per instance: {what} from {} to {to}",
            now.desired
        )
    };
    if wanted > now.desired {
        s.low_since = None;
        return Some((wanted, why(wanted, "scale out")));
    }
    if wanted < now.desired && now.settled {
        let since = *s.low_since.get_or_insert(now.at);
        if now.at.duration_since(since) >= sc.scale_in_cooldown.get() {
            s.low_since = Some(now.at);
            return Some((now.desired - 1, why(now.desired - 1, "scale in")));
        }
        return None;
    }
    s.low_since = None;
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use repave_core::duration::HumanDuration;

    fn scaling() -> Scaling {
        Scaling {
            target_requests_per_instance: 10,
            scale_in_cooldown: HumanDuration::from_secs(5),
        }
    }

    /// Feed one sample per second at `rate`; returns the decisions.
    fn run(s: &mut Scaler, t0: Instant, secs: std::ops::Range<u64>, rate: u64, desired: &mut u32, settled: bool) {
        for i in secs {
            let now = Now {
                at: t0 + Duration::from_secs(i),
                proxied: s.last.map_or(0, |(_, c)| c) + rate,
                desired: *desired,
                min: 1,
                max: 6,
                settled,
            };
            if let Some((d, _)) = decide(s, &scaling(), &now) {
                *desired = d;
            }
        }
    }

    #[test]
    fn scales_out_at_once_and_in_one_at_a_time_after_the_cooldown() {
        let (mut s, t0, mut desired) = (Scaler::default(), Instant::now(), 1);
        // 45 req/s at 10 per instance: 5 instances, as soon as measured.
        run(&mut s, t0, 0..2, 45, &mut desired, true);
        assert_eq!(desired, 5);
        // 500 req/s: capped at max.
        run(&mut s, t0, 2..6, 500, &mut desired, true);
        assert_eq!(desired, 6);
        // Quiet: nothing for the cooldown, then one step per cooldown.
        run(&mut s, t0, 6..12, 5, &mut desired, true);
        assert_eq!(desired, 6, "within the first cooldown");
        run(&mut s, t0, 12..40, 5, &mut desired, true);
        assert!((1..6).contains(&desired), "{desired}");
        run(&mut s, t0, 40..80, 5, &mut desired, true);
        assert_eq!(desired, 1, "down to what 5 req/s needs, not below min");
    }

    #[test]
    fn no_scale_in_while_the_group_is_changing() {
        let (mut s, t0, mut desired) = (Scaler::default(), Instant::now(), 4);
        run(&mut s, t0, 0..30, 5, &mut desired, false);
        assert_eq!(desired, 4, "a roll's surge is not scaled in");
        // Scale-out still happens mid-roll.
        run(&mut s, t0, 30..33, 100, &mut desired, false);
        assert_eq!(desired, 6);
    }

    #[test]
    fn a_restarted_balancer_counter_is_not_a_negative_rate() {
        let (mut s, t0) = (Scaler::default(), Instant::now());
        let at = |i| t0 + Duration::from_secs(i);
        let now = |i, proxied| Now {
            at: at(i),
            proxied,
            desired: 2,
            min: 1,
            max: 6,
            settled: true,
        };
        assert_eq!(decide(&mut s, &scaling(), &now(0, 1000)), None);
        assert_eq!(decide(&mut s, &scaling(), &now(1, 3)), None, "reset, no sample");
        assert!(s.rates.is_empty());
    }
}

//! Request budgets: the token bucket AWS throttles with, kept on our side so
//! many pipelines sharing an account and region stay inside it instead of
//! being throttled and retrying.
//!
//! EC2 documents its buckets (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>):
//! each request takes one token; a bucket holds at most its capacity and is
//! refilled at a fixed rate per second. Pure: time is passed in (seconds on
//! any monotonic scale), so the same bucket runs on the wall clock (the AWS
//! provider) and on virtual time (the simulator).

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens the bucket holds when full: the largest burst.
    pub capacity: f64,
    /// Tokens added per second: the sustained rate.
    pub refill_per_second: f64,
}

impl Limit {
    pub const fn new(capacity: f64, refill_per_second: f64) -> Limit {
        Limit {
            capacity,
            refill_per_second,
        }
    }

    /// This limit scaled by `percent` (repave's share of the account's
    /// budget); at least one token and a tenth of a token per second.
    pub fn share(self, percent: u32) -> Limit {
        let f = f64::from(percent.clamp(1, 100)) / 100.0;
        Limit {
            capacity: (self.capacity * f).floor().max(1.0),
            refill_per_second: (self.refill_per_second * f).max(0.1),
        }
    }
}

/// A token bucket, full at creation.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: Limit,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: f64,
}

impl TokenBucket {
    pub fn new(limit: Limit, now: f64) -> TokenBucket {
        TokenBucket {
            limit,
            tokens: limit.capacity,
            at: now,
        }
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    fn refill(&mut self, now: f64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) * self.limit.refill_per_second).min(self.limit.capacity);
            self.at = now;
        }
    }

    /// Take one token at `now`, or say how many seconds until one is there.
    pub fn take(&mut self, now: f64) -> Result<(), f64> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / self.limit.refill_per_second)
        }
    }
}

/// Whether request times (seconds, any order) stay within `limit` the way
/// a token bucket that starts full allows: over every interval `[a, b]`, at
/// most `capacity + refill × (b − a)` requests. On failure, the interval
/// and its count. (Checking intervals that start and end at requests is
/// enough: any other interval holds no more requests and is longer.)
pub fn conforms(times: &[f64], limit: Limit) -> Result<(), (f64, f64, usize)> {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    // Rounding: a bucket refilled in floating point may hand out a token a
    // hair early.
    let slack = 1e-6;
    for i in 0..t.len() {
        for j in i..t.len() {
            let count = j - i + 1;
            let allowed = limit.capacity + limit.refill_per_second * (t[j] - t[i]) + slack;
            if count as f64 > allowed {
                return Err((t[i], t[j], count));
            }
        }
    }
    Ok(())
}

/// The AWS services repave calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Ec2,
    AutoScaling,
    LoadBalancing,
    SystemsManager,
}

/// One throttling bucket of an account and region, as repave budgets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiBucket {
    /// EC2 `Describe*` / `Get*`.
    Ec2NonMutating,
    /// Every other EC2 action (RunInstances, CreateImage, CreateTags, ...).
    Ec2Mutating,
    /// Every EC2 Auto Scaling action: one shared bucket.
    AutoScaling,
    /// Elastic Load Balancing (v2 and Classic).
    LoadBalancing,
    /// Systems Manager (Run Command, Parameter Store, Patch Manager).
    SystemsManager,
}

impl ApiBucket {
    pub const ALL: [ApiBucket; 5] = [
        ApiBucket::Ec2NonMutating,
        ApiBucket::Ec2Mutating,
        ApiBucket::AutoScaling,
        ApiBucket::LoadBalancing,
        ApiBucket::SystemsManager,
    ];

    /// The bucket an AWS action draws from.
    pub fn for_action(service: Service, action: &str) -> ApiBucket {
        match service {
            Service::Ec2 if action.starts_with("Describe") || action.starts_with("Get") => ApiBucket::Ec2NonMutating,
            Service::Ec2 => ApiBucket::Ec2Mutating,
            Service::AutoScaling => ApiBucket::AutoScaling,
            Service::LoadBalancing => ApiBucket::LoadBalancing,
            Service::SystemsManager => ApiBucket::SystemsManager,
        }
    }

    /// The account's bucket before repave takes its share.
    ///
    /// - EC2, documented (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>,
    ///   "Request token bucket sizes and refill rates"): non-mutating
    ///   actions 100 tokens, refilled at 20 per second; mutating actions 50,
    ///   refilled at 5. EC2 keeps one such bucket per API; repave budgets
    ///   each category as one bucket, so every API stays inside its own.
    /// - EC2 Auto Scaling: one bucket shared by all its actions, per account
    ///   and Region (<https://repost.aws/knowledge-center/autoscaling-api-calls-throttled>);
    ///   AWS does not publish its size. ELB and Systems Manager do not
    ///   publish theirs either (SSM lists per-API TPS quotas in Service
    ///   Quotas). For these repave assumes 40 tokens refilled at 10 per
    ///   second, the order of EC2's mutating bucket; an account that knows
    ///   better sets `request_budget_percent`.
    pub fn documented_limit(self) -> Limit {
        match self {
            ApiBucket::Ec2NonMutating => Limit::new(100.0, 20.0),
            ApiBucket::Ec2Mutating => Limit::new(50.0, 5.0),
            ApiBucket::AutoScaling | ApiBucket::LoadBalancing | ApiBucket::SystemsManager => Limit::new(40.0, 10.0),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ApiBucket::Ec2NonMutating => "ec2-non-mutating",
            ApiBucket::Ec2Mutating => "ec2-mutating",
            ApiBucket::AutoScaling => "autoscaling",
            ApiBucket::LoadBalancing => "elasticloadbalancing",
            ApiBucket::SystemsManager => "ssm",
        }
    }
}

/// repave's default share of each bucket: half, leaving the rest to the
/// console, other tools and AWS's own callers in the account.
pub const DEFAULT_BUDGET_PERCENT: u32 = 50;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_bursts_then_refills_at_its_rate() {
        let limit = Limit::new(3.0, 2.0);
        let mut b = TokenBucket::new(limit, 0.0);
        for _ in 0..3 {
            assert_eq!(b.take(0.0), Ok(()));
        }
        let wait = b.take(0.0).unwrap_err();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        assert_eq!(b.take(0.5), Ok(()));
        assert!(b.take(0.5).is_err());
        // Idle for a long time: never more than the capacity.
        let taken = (0..10).filter(|_| b.take(100.0).is_ok()).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn requests_paced_by_the_bucket_conform_and_a_burst_beyond_it_does_not() {
        let limit = Limit::new(5.0, 1.0);
        let mut b = TokenBucket::new(limit, 0.0);
        let mut times = Vec::new();
        let mut now = 0.0;
        while times.len() < 40 {
            match b.take(now) {
                Ok(()) => times.push(now),
                Err(wait) => now += wait,
            }
        }
        assert_eq!(conforms(&times, limit), Ok(()));
        // One more request inside the same second is over.
        times.push(times[times.len() - 1]);
        assert!(conforms(&times, limit).is_err());
        assert!(conforms(&[0.0; 6], limit).is_err());
    }

    #[test]
    fn a_share_scales_both_numbers() {
        let l = Limit::new(100.0, 20.0).share(50);
        assert_eq!((l.capacity, l.refill_per_second), (50.0, 10.0));
        assert_eq!(Limit::new(1.0, 0.1).share(1).capacity, 1.0);
    }
}

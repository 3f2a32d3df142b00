//! Latency distributions and faults.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use repave_core::config::SimConfig;
use repave_core::patch::{OsFamily, PlatformChoice};
use std::time::Duration;

/// Median latency per operation; each draw is `median × exp(σ·Z)` (log-normal,
/// right-skewed like real cloud latencies), `σ = variance`.
#[derive(Debug, Clone, PartialEq)]
pub struct Latencies {
    /// RunInstances → running.
    pub launch: Duration,
    /// Running → command channel reachable / app started.
    pub boot: Duration,
    /// Booted → healthy at the balancer.
    pub health: Duration,
    /// Installing updates.
    pub updates: Duration,
    /// Scanning for updates, and any shell command.
    pub scan: Duration,
    pub command: Duration,
    pub create_image: Duration,
    pub stop: Duration,
    pub terminate: Duration,
    /// Upper bound of a drain (the target group's deregistration delay).
    pub deregistration_delay: Duration,
    /// Typical time for in-flight requests to finish: drains end after an
    /// exponential draw with this mean, capped by the delay.
    pub in_flight_tail: Duration,
    /// Log-normal sigma (0: every draw is its median).
    pub variance: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::from_config(&SimConfig::default(), PlatformChoice::Family(OsFamily::Windows))
    }
}

impl Latencies {
    /// From `[pipelines.X.simulate]`; `boot` defaults by platform (Windows
    /// to SSM ~10 min, Linux ~90 s) when the config leaves it at its default.
    pub fn from_config(c: &SimConfig, platform: PlatformChoice) -> Self {
        let boot = if c.boot == SimConfig::default().boot && !platform.is_windows() {
            Duration::from_secs(90)
        } else {
            c.boot.get()
        };
        Self {
            launch: c.launch.get(),
            boot,
            health: c.health.get(),
            updates: c.updates.get(),
            scan: Duration::from_secs(60),
            command: Duration::from_secs(2),
            create_image: c.create_image.get(),
            stop: Duration::from_secs(60),
            terminate: Duration::from_secs(30),
            deregistration_delay: c.deregistration_delay.get(),
            in_flight_tail: Duration::from_secs(10),
            variance: c.variance_percent as f64 / 100.0,
        }
    }

    /// The same medians with no variance.
    pub fn fixed(mut self) -> Self {
        self.variance = 0.0;
        self
    }

    /// One draw around `median`.
    pub fn draw(&self, rng: &mut ChaCha8Rng, median: Duration) -> Duration {
        if self.variance <= 0.0 {
            return median;
        }
        // Box–Muller: one standard normal from two uniforms.
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median.mul_f64((self.variance * z).exp())
    }

    /// How long a drain takes: in-flight requests finish early, bounded by
    /// the deregistration delay; a slow drain runs to the bound.
    pub fn drain(&self, rng: &mut ChaCha8Rng, slow: bool) -> Duration {
        if slow {
            return self.deregistration_delay;
        }
        let tail = if self.variance <= 0.0 {
            self.in_flight_tail
        } else {
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            self.in_flight_tail.mul_f64(-u.ln())
        };
        tail.min(self.deregistration_delay)
    }
}

/// Fault injection. Percentages are per event (per launch, per call, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Launches that fail (direct launches return an error; the group
    /// retries after a back-off, as an ASG does).
    pub launch_failure_percent: f64,
    /// InstallUpdates fails on the builder.
    pub patch_failure: bool,
    /// Instances from images baked in the simulation that never turn
    /// healthy (per instance).
    pub never_healthy_percent: f64,
    /// Every instance from a baked image stays unhealthy at the balancer
    /// (the test instance probe passes: a bug only real traffic shows).
    pub bad_image: bool,
    /// Calls that return `ErrorKind::Throttled`.
    pub throttle_percent: f64,
    /// Drains that run the full deregistration delay.
    pub slow_drain_percent: f64,
}

pub(crate) fn chance(rng: &mut ChaCha8Rng, percent: f64) -> bool {
    percent > 0.0 && rng.gen::<f64>() * 100.0 < percent
}

//! The lock-step baseline: the same fleet and latency distributions rolled
//! the way ASG Instance Refresh does it — fixed batches, each waiting for
//! its whole batch to be drained, healthy and warmed up before the next
//! starts.

use crate::latency::{chance, Faults, Latencies};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// Instance Refresh's batch: `desired × (100 − min_healthy)%`, rounded, at
/// least 1.
pub fn instance_refresh_batch(fleet: u32, min_healthy_percent: u32) -> u32 {
    ((fleet as u64 * (100 - min_healthy_percent.min(100)) as u64 + 50) / 100).max(1) as u32
}

/// Seconds an Instance Refresh style roll of `fleet` instances takes with
/// batches of [`instance_refresh_batch`].
pub fn lockstep_roll_seconds(
    fleet: u32,
    min_healthy_percent: u32,
    warmup: Duration,
    lat: &Latencies,
    faults: &Faults,
    seed: u64,
) -> f64 {
    let batch = instance_refresh_batch(fleet, min_healthy_percent);
    lockstep_with_batch(fleet, batch, warmup, lat, faults, seed)
}

/// Seconds a lock-step roll with batches of `batch` takes.
pub fn lockstep_with_batch(
    fleet: u32,
    batch: u32,
    warmup: Duration,
    lat: &Latencies,
    faults: &Faults,
    seed: u64,
) -> f64 {
    let batch = batch.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x10c4_57e9);
    let mut total = Duration::ZERO;
    let mut left = fleet;
    while left > 0 {
        let n = batch.min(left);
        let mut slowest_ready = Duration::ZERO;
        let mut slowest_drain = Duration::ZERO;
        for _ in 0..n {
            let ready = lat.draw(&mut rng, lat.launch) + lat.draw(&mut rng, lat.boot) + lat.draw(&mut rng, lat.health);
            slowest_ready = slowest_ready.max(ready);
            let slow = chance(&mut rng, faults.slow_drain_percent);
            slowest_drain = slowest_drain.max(lat.drain(&mut rng, slow));
        }
        // Drain the batch's old instances, launch their replacements, wait
        // for all of them to be healthy and past warmup.
        total += slowest_drain + slowest_ready + warmup;
        left -= n;
    }
    total.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_min_healthy() {
        assert_eq!(instance_refresh_batch(1000, 90), 100);
        assert_eq!(instance_refresh_batch(10, 100), 1);
        assert_eq!(instance_refresh_batch(7, 90), 1);
        assert_eq!(instance_refresh_batch(10, 50), 5);
    }

    #[test]
    fn zero_variance_is_batches_times_one_wave() {
        let lat = Latencies::default().fixed();
        let wave = lat.launch + lat.boot + lat.health + lat.in_flight_tail + Duration::from_secs(60);
        let got = lockstep_roll_seconds(1000, 90, Duration::from_secs(60), &lat, &Faults::default(), 1);
        assert!((got - 10.0 * wave.as_secs_f64()).abs() < 1e-6, "{got}");
    }
}

//! repave-sim: a provider that lives in virtual time.
//!
//! Everything is computed from timestamps on a paused tokio clock: an
//! instance launched at `t` with a drawn launch latency `l` *is* running at
//! `t + l` when someone looks, no task ticks it there. That keeps fleets of
//! ten thousand instances cheap and makes runs reproducible from a seed.

mod clock;
pub mod conformance;
mod latency;
mod lockstep;
mod native;
mod provider;
mod rate;
mod simulate;
mod world;

pub use clock::SimClock;
pub use latency::{Faults, Latencies};
pub use lockstep::{instance_refresh_batch, lockstep_roll_seconds, lockstep_with_batch};
pub use provider::SimProvider;
pub use rate::{ApiRates, Rate};
pub use simulate::{pipeline, simulate, simulate_paused, SimOptions, SimReport, StepSeconds};

//! Virtual wall time: an epoch plus the paused tokio clock's elapsed time.

use repave_core::ids::{Clock, Timestamp};
use tokio::time::Instant;

/// `repave_core::ids::Clock` over `tokio::time::Instant`: under a paused
/// runtime it advances only when every task sleeps, by exactly the sleep.
#[derive(Debug, Clone)]
pub struct SimClock {
    start: Instant,
    epoch: Timestamp,
}

impl SimClock {
    /// Starts at `epoch`; must be created inside the runtime it reads.
    pub fn new(epoch: Timestamp) -> Self {
        Self {
            start: Instant::now(),
            epoch,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        self.epoch.plus(self.start.elapsed())
    }
}

//! repave-local: the embedded default cloud. A background daemon owns the
//! image store, instances (real processes), one HTTP load balancer per group
//! and the group reconciler; the engine reaches it through [`LocalClient`],
//! which implements the core provider traits over a Unix socket. Killing the
//! engine never stops the fleet from serving.

pub mod balancer;
pub mod builtin;
pub mod client;
pub mod daemon;
pub mod demo_app;
pub mod down;
pub mod error;
pub mod exec;
pub mod feed;
pub mod images;
pub mod mark;
pub mod pkg;
pub mod process;
pub mod protocol;
pub mod state;
mod util;

pub use client::{LocalClient, Tether};
pub use error::LocalError;
pub use protocol::{BalancerStats, GroupSetup, GroupSetupResult, ImageSource, LeakReport};

//! The engine timing a pipeline wants, in one place for every surface that
//! builds an engine (`repave run` and friends, `repave serve`): a run must
//! poll the same way whoever drives it.

use crate::EngineOptions;
use repave_core::config::{Config, Pipeline};
use std::time::Duration;

impl EngineOptions {
    /// Timing for `pipeline`'s provider. The local fleet is observed every
    /// 100 ms (the defaults); AWS every `[providers.aws] poll_interval`,
    /// because each observation costs API calls, with provider waits polled
    /// at most every 5 s and a group lease that outlives six observations.
    pub fn for_pipeline(config: &Config, pipeline: &Pipeline) -> EngineOptions {
        let mut opts = EngineOptions::default();
        if pipeline.provider == repave_core::config::ProviderKind::Aws {
            let poll = config.providers.aws.clone().unwrap_or_default().poll_interval.get();
            opts.tick = poll;
            opts.poll = poll.min(Duration::from_secs(5));
            opts.lease_ttl = opts.lease_ttl.max(poll * 6);
        }
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_pipelines_poll_at_their_interval_and_local_ones_fast() {
        let c = repave_core::config::parse(
            "[providers.aws]\npoll_interval = \"30s\"\n\
             [pipelines.a]\nprovider = \"aws\"\ngroup = \"g\"\nparameter = \"p\"\n",
            "repave.toml",
        )
        .unwrap();
        let aws = EngineOptions::for_pipeline(&c, &c.pipelines["a"]);
        assert_eq!(
            (aws.tick, aws.poll, aws.lease_ttl),
            (
                Duration::from_secs(30),
                Duration::from_secs(5),
                Duration::from_secs(180)
            )
        );
        let mut local = c.pipelines["a"].clone();
        local.provider = repave_core::config::ProviderKind::Local;
        let local = EngineOptions::for_pipeline(&c, &local);
        let default = EngineOptions::default();
        assert_eq!(
            (local.tick, local.poll, local.lease_ttl),
            (default.tick, default.poll, default.lease_ttl)
        );
    }
}

//! Waiting: poll until the cloud shows what a step is waiting for, within a
//! bound, keeping the run's lease and honouring cancel meanwhile.

use crate::call::retry;
use crate::context::Ctx;
use crate::error::EngineError;
use repave_core::provider::InstanceState;
use repave_core::InstanceId;
use std::time::Duration;
use tokio::time::Instant;

/// Poll `f` until it yields a value or `timeout` passes.
pub(crate) async fn wait_for<T, F, Fut>(
    ctx: &Ctx<'_>,
    step: &str,
    what: &str,
    timeout: Duration,
    mut f: F,
) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, EngineError>>,
{
    let start = Instant::now();
    loop {
        ctx.check_cancel()?;
        // Long waits (a 40-minute Windows patch) must keep the group lease.
        ctx.keep_lease()?;
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(EngineError::Timeout {
                step: step.into(),
                seconds: timeout.as_secs(),
                what: what.into(),
            });
        }
        tokio::time::sleep(ctx.poll()).await;
    }
}

pub(crate) async fn wait_state(
    ctx: &Ctx<'_>,
    step: &str,
    id: &InstanceId,
    want: InstanceState,
    timeout: Duration,
) -> Result<(), EngineError> {
    let p = ctx.provider();
    wait_for(ctx, step, &format!("{id} to be {want:?}"), timeout, || async {
        let got = retry(step, || p.describe_instances(std::slice::from_ref(id))).await?;
        match got.first() {
            Some(i) if i.state == want => Ok(Some(())),
            Some(i) if i.state.is_gone() && want != InstanceState::Terminated => Err(EngineError::InstanceGone {
                step: step.to_string(),
                instance: id.to_string(),
                state: format!("{:?}", i.state),
            }),
            None if want == InstanceState::Terminated => Ok(Some(())),
            _ => Ok(None),
        }
    })
    .await
}

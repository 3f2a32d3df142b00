//! The provider contract, as one suite any provider can run:
//! `repave_sim::conformance::run(&provider, &fixture).await`.
//!
//! It waits with `tokio::time::sleep` against a `tokio::time::Instant`
//! deadline, so it runs in virtual time on a paused runtime (sim) and in
//! real time elsewhere (local, aws).

use repave_core::ids::{ImageId, InstanceId};
use repave_core::provider::*;
use repave_core::ErrorKind;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// What the suite may use: an existing group (with at least one in-service
/// instance behind its balancer, and room to grow by one), its golden
/// parameter and an available image. The suite leaves desired capacity as
/// it found it.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub group: String,
    pub image: ImageId,
    /// A parameter name the suite may create and overwrite.
    pub scratch_parameter: String,
    /// Bound on every wait (provider latency, not test logic).
    pub timeout: Duration,
    pub poll: Duration,
}

/// A broken contract: which check, and what was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.check, self.detail)
    }
}

type Outcome = std::result::Result<(), Violation>;

fn fail(check: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        check,
        detail: detail.into(),
    }
}

fn ensure(ok: bool, check: &'static str, detail: impl FnOnce() -> String) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(fail(check, detail()))
    }
}

fn call<T>(check: &'static str, r: Result<T>) -> std::result::Result<T, Violation> {
    r.map_err(|e| fail(check, e.to_string()))
}

/// Poll `f` until it returns `Some`, or fail after the fixture's timeout.
async fn eventually<T, F, Fut>(
    fx: &Fixture,
    check: &'static str,
    what: &str,
    mut f: F,
) -> std::result::Result<T, Violation>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, Violation>>,
{
    let deadline = Instant::now() + fx.timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(fail(
                check,
                format!("timed out after {:?} waiting for {what}", fx.timeout),
            ));
        }
        tokio::time::sleep(fx.poll).await;
    }
}

/// Run every check; the first broken one is returned.
pub async fn run<P: Provider + ?Sized>(p: &P, fx: &Fixture) -> Outcome {
    not_found_is_classified(p, fx).await?;
    launch_is_idempotent_and_terminate_ends_terminated(p, fx).await?;
    commands_complete(p, fx).await?;
    parameters_are_versioned(p, fx).await?;
    launch_spec_version_copies_data(p, fx).await?;
    desired_capacity_is_respected(p, fx).await?;
    drain_ends_unused(p, fx).await?;
    Ok(())
}

async fn not_found_is_classified<P: Provider + ?Sized>(p: &P, _fx: &Fixture) -> Outcome {
    const CHECK: &str = "unknown resources are NotFound";
    let image = p.describe_image(&ImageId::new("ami-does-not-exist")).await;
    ensure(matches!(&image, Err(e) if e.kind == ErrorKind::NotFound), CHECK, || {
        format!("describe_image: {image:?}")
    })?;
    let param = p.get_parameter("/repave/conformance/does-not-exist").await;
    ensure(matches!(&param, Err(e) if e.kind == ErrorKind::NotFound), CHECK, || {
        format!("get_parameter: {param:?}")
    })?;
    let described = call(
        CHECK,
        p.describe_instances(&[InstanceId::new("i-does-not-exist")]).await,
    )?;
    ensure(described.is_empty(), CHECK, || {
        format!("describe_instances returned {described:?} for an unknown id")
    })
}

async fn launch_is_idempotent_and_terminate_ends_terminated<P: Provider + ?Sized>(p: &P, fx: &Fixture) -> Outcome {
    const CHECK: &str = "launch is idempotent by token; terminate ends Terminated";
    let mut tags = Tags::new();
    tags.insert(tag::ROLE.into(), "conformance".into());
    tags.insert(tag::RUN.into(), "conformance-1".into());
    let req = LaunchRequest {
        image: fx.image.clone(),
        spec: InstanceSpec::default(),
        tags: tags.clone(),
        token: "conformance-launch-1".into(),
    };
    let a = call(CHECK, p.launch(req.clone()).await)?;
    let b = call(CHECK, p.launch(req).await)?;
    ensure(a.id == b.id, CHECK, || {
        format!("same token, two instances: {} and {}", a.id, b.id)
    })?;
    ensure(a.image == fx.image, CHECK, || {
        format!("launched {} on {}, asked for {}", a.id, a.image, fx.image)
    })?;
    // Eventually: a cloud may not list what it just launched (AWS's
    // eventual consistency), but must list it once, and only once.
    eventually(fx, CHECK, "the instance to be listed by its tags", || async {
        let listed = call(CHECK, p.list_instances(&tags).await)?;
        match listed.iter().filter(|i| i.id == a.id).count() {
            0 => Ok(None),
            1 => Ok(Some(())),
            _ => Err(fail(CHECK, format!("listed twice by tags: {listed:?}"))),
        }
    })
    .await?;
    eventually(fx, CHECK, "the instance to run", || async {
        let v = call(CHECK, p.describe_instances(std::slice::from_ref(&a.id)).await)?;
        Ok(v.first().filter(|i| i.state == InstanceState::Running).map(|_| ()))
    })
    .await?;
    call(CHECK, p.terminate_instance(&a.id).await)?;
    eventually(fx, CHECK, "the instance to be terminated", || async {
        let v = call(CHECK, p.describe_instances(std::slice::from_ref(&a.id)).await)?;
        Ok(v.first()
            .is_none_or(|i| i.state == InstanceState::Terminated)
            .then_some(()))
    })
    .await?;
    let listed = call(CHECK, p.list_instances(&tags).await)?;
    ensure(
        listed
            .iter()
            .any(|i| i.id == a.id && i.state == InstanceState::Terminated),
        CHECK,
        || format!("terminated instances must still be listed by tags: {listed:?}"),
    )
}

async fn commands_complete<P: Provider + ?Sized>(p: &P, fx: &Fixture) -> Outcome {
    const CHECK: &str = "a shell command on a running instance succeeds";
    let mut tags = Tags::new();
    tags.insert(tag::RUN.into(), "conformance-2".into());
    let req = LaunchRequest {
        image: fx.image.clone(),
        spec: InstanceSpec::default(),
        tags,
        token: "conformance-launch-2".into(),
    };
    let inst = call(CHECK, p.launch(req).await)?;
    let cmd = CommandRequest {
        instance: inst.id.clone(),
        document: CommandDocument::Shell {
            script: "true".into(),
            env: BTreeMap::new(),
        },
        timeout: fx.timeout,
        token: "conformance-command".into(),
    };
    let result = async {
        let id = call(CHECK, p.send_command(cmd).await)?;
        eventually(fx, CHECK, "the command to finish", || async {
            let r = call(CHECK, p.command_result(&id).await)?;
            Ok(r.status.is_terminal().then_some(r))
        })
        .await
    }
    .await;
    // Clean up before judging.
    call(CHECK, p.terminate_instance(&inst.id).await)?;
    let r = result?;
    ensure(
        r.status == CommandStatus::Success && r.exit_code == Some(0),
        CHECK,
        || format!("{r:?}"),
    )
}

async fn parameters_are_versioned<P: Provider + ?Sized>(p: &P, fx: &Fixture) -> Outcome {
    const CHECK: &str = "parameters are versioned and keep their description";
    let name = fx.scratch_parameter.as_str();
    let v1 = call(CHECK, p.put_parameter(name, "ami-1", Some("golden image")).await)?;
    let v2 = call(CHECK, p.put_parameter(name, "ami-2", None).await)?;
    ensure(v2 == v1 + 1, CHECK, || format!("versions {v1} then {v2}"))?;
    let cur = call(CHECK, p.get_parameter(name).await)?;
    ensure(cur.value == "ami-2" && cur.version == v2, CHECK, || {
        format!("current: {cur:?}")
    })?;
    ensure(cur.description.as_deref() == Some("golden image"), CHECK, || {
        format!("description lost: {:?}", cur.description)
    })?;
    call(
        CHECK,
        p.label_parameter_version(name, v1, &["repave-previous".to_string()])
            .await,
    )?;
    let history = call(CHECK, p.parameter_history(name).await)?;
    let versions: Vec<u64> = history.iter().map(|h| h.version).collect();
    ensure(
        versions.windows(2).all(|w| w[0] < w[1]) && versions.ends_with(&[v1, v2]),
        CHECK,
        || format!("history order: {versions:?}"),
    )?;
    let labeled = history
        .iter()
        .find(|h| h.version == v1)
        .is_some_and(|h| h.labels.iter().any(|l| l == "repave-previous"));
    ensure(labeled, CHECK, || format!("label missing on version {v1}: {history:?}"))
}

async fn launch_spec_version_copies_data<P: Provider + ?Sized>(p: &P, fx: &Fixture) -> Outcome {
    const CHECK: &str = "a new launch spec version copies its base and changes only the image";
    let g = call(CHECK, p.describe_group(&fx.group).await)?;
    let base = call(CHECK, p.describe_launch_spec(&g.launch_spec).await)?;
    let new = call(CHECK, p.create_launch_spec_version(&g.launch_spec, &fx.image).await)?;
    ensure(new.name == base.name && new.version > base.version, CHECK, || {
        format!("{new:?} from {:?}", g.launch_spec)
    })?;
    let got = call(CHECK, p.describe_launch_spec(&new).await)?;
    ensure(got.image == fx.image && got.spec == base.spec, CHECK, || {
        format!("{got:?} vs base {base:?}")
    })?;
    // The group still points where it did: creating a version is not using it.
    let after = call(CHECK, p.describe_group(&fx.group).await)?;
    ensure(after.launch_spec == g.launch_spec, CHECK, || {
        format!("group moved to {:?}", after.launch_spec)
    })
}

fn live(g: &Group) -> usize {
    g.members
        .iter()
        .filter(|m| !matches!(m.lifecycle, Lifecycle::Terminating | Lifecycle::Terminated))
        .count()
}

async fn desired_capacity_is_respected<P: Provider + ?Sized>(p: &P, fx: &Fixture) -> Outcome {
    const CHECK: &str = "set_desired_capacity is respected";
    let g = call(CHECK, p.describe_group(&fx.group).await)?;
    let before = g.desired;
    for want in [before + 1, before] {
        call(CHECK, p.set_desired_capacity(&fx.group, want).await)?;
        eventually(fx, CHECK, &format!("{want} live members"), || async {
            let g = call(CHECK, p.describe_group(&fx.group).await)?;
            if g.desired != want {
                return Err(fail(CHECK, format!("desired reads {} after setting {want}", g.desired)));
            }
            Ok((live(&g) == want as usize).then_some(()))
        })
        .await?;
    }
    let too_many = p.set_desired_capacity(&fx.group, g.max + 1).await;
    ensure(too_many.is_err(), CHECK, || {
        format!("desired above max ({}) accepted", g.max)
    })
}

async fn drain_ends_unused<P: Provider + ?Sized>(p: &P, fx: &Fixture) -> Outcome {
    const CHECK: &str = "a deregistered target drains and ends unused";
    // A healthy target of a member in service: one the group is scaling in
    // (after the previous check) may still answer healthy for a moment,
    // and leaves the group under our feet.
    let g = call(CHECK, p.describe_group(&fx.group).await)?;
    let in_service = |id: &InstanceId| {
        g.members
            .iter()
            .any(|m| &m.id == id && m.lifecycle == Lifecycle::InService)
    };
    let health = call(CHECK, p.target_health(&fx.group).await)?;
    let Some(t) = health
        .iter()
        .find(|t| t.state == TargetState::Healthy && in_service(&t.instance))
    else {
        return Err(fail(
            CHECK,
            format!("fixture group has no healthy in-service target: {health:?}"),
        ));
    };
    let id = t.instance.clone();
    call(CHECK, p.deregister_target(&fx.group, &id).await)?;
    let first = call(CHECK, p.target_health(&fx.group).await)?;
    let state = first.iter().find(|t| t.instance == id).map(|t| t.state);
    ensure(
        matches!(state, None | Some(TargetState::Draining) | Some(TargetState::Unused)),
        CHECK,
        || format!("right after deregistering: {state:?}"),
    )?;
    eventually(fx, CHECK, "the drain to finish", || async {
        let h = call(CHECK, p.target_health(&fx.group).await)?;
        let s = h.iter().find(|t| t.instance == id).map(|t| t.state);
        Ok(matches!(s, None | Some(TargetState::Unused)).then_some(()))
    })
    .await?;
    // Put it back so the fixture group is as it was.
    call(CHECK, p.register_target(&fx.group, &id).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Faults, Latencies, SimClock, SimProvider};
    use repave_core::ids::Timestamp;
    use std::sync::Arc;

    fn fixture(p: &SimProvider) -> Fixture {
        let image = p.add_image("golden");
        p.add_group("web", "latestAmi", &image, 3);
        Fixture {
            group: "web".into(),
            image,
            scratch_parameter: "scratch".into(),
            timeout: Duration::from_secs(3600),
            poll: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sim_provider_passes() {
        let clock = Arc::new(SimClock::new(Timestamp(1_000_000)));
        let p = SimProvider::new(clock, Latencies::default(), Faults::default(), 3);
        let fx = fixture(&p);
        run(&p, &fx).await.unwrap_or_else(|v| panic!("{v}"));
    }

    #[tokio::test(start_paused = true)]
    async fn sim_provider_passes_with_zero_variance() {
        let clock = Arc::new(SimClock::new(Timestamp(1_000_000)));
        let p = SimProvider::new(clock, Latencies::default().fixed(), Faults::default(), 4);
        let fx = fixture(&p);
        run(&p, &fx).await.unwrap_or_else(|v| panic!("{v}"));
    }
}

//! Turns each typed [`Request`] into the operation on the state owner and
//! its [`Response`]; errors become `Response::Error` with their kind.

use super::catalog;
use super::groups;
use super::instances::{self, StopMode};
use super::Shared;
use crate::error::LocalError;
use crate::protocol::{LeakReport, Request, Response};
use repave_core::InstanceId;
use std::sync::Arc;

/// Execute one request.
pub(crate) async fn handle(shared: &Arc<Shared>, req: Request) -> Response {
    match dispatch(shared, req).await {
        Ok(r) => r,
        Err(e) => Response::Error {
            kind: e.kind(),
            message: e.to_string(),
        },
    }
}

async fn dispatch(shared: &Arc<Shared>, req: Request) -> Result<Response, LocalError> {
    use Request as Q;
    use Response as R;
    let kick = matches!(
        req,
        Q::EnsureGroup { .. }
            | Q::SetGroupLaunchSpec { .. }
            | Q::SetDesiredCapacity { .. }
            | Q::TerminateGroupInstance { .. }
            | Q::RegisterTarget { .. }
            | Q::DeregisterTarget { .. }
            | Q::TerminateInstance { .. }
    );
    // Once the state is gone, this process only stops what it started.
    shared.writable()?;
    let resp = match req {
        Q::Ping => R::Pong {
            pid: std::process::id(),
        },
        Q::Shutdown => {
            super::lifetime::stop(shared, "shutdown requested").await;
            R::Unit
        }
        // The connection's end is what counts (serve_connection).
        Q::Tether => R::Unit,
        Q::EnsureGroup { setup } => R::GroupSetup(groups::ensure_group(shared, &mut shared.cloud(), setup)?),
        Q::ImportImage { source, name, tags } => R::ImageId(catalog::import_image(
            shared,
            &mut shared.cloud(),
            &source,
            &name,
            tags,
        )?),
        Q::LeakReport => R::Leaks(leak_report(shared)),
        Q::BalancerAddress { group } => {
            let cloud = shared.cloud();
            let g = cloud
                .state
                .groups
                .get(&group)
                .ok_or_else(|| LocalError::not_found(format!("group {group}")))?;
            R::Address(format!("127.0.0.1:{}", g.port))
        }
        Q::BalancerStats { group } => {
            let cloud = shared.cloud();
            let b = cloud
                .balancers
                .get(&group)
                .ok_or_else(|| LocalError::not_found(format!("balancer of group {group}")))?;
            R::Stats(b.stats())
        }
        Q::DescribeImage { id } => R::Image(stamp(shared, catalog::describe_image(&shared.cloud(), &id)?)),
        Q::CreateImage { req } => R::ImageId(catalog::create_image(shared, &mut shared.cloud(), req)?),
        Q::DeregisterImage { id } => {
            catalog::deregister_image(shared, &mut shared.cloud(), &id)?;
            R::Unit
        }
        Q::ListImages { tags } => R::Images(
            catalog::list_images(&shared.cloud(), &tags)
                .into_iter()
                .map(|i| stamp(shared, i))
                .collect(),
        ),
        Q::ReferencedImages => R::ImageIds(catalog::referenced_images(&shared.cloud())),
        Q::TagImage { id, tags } => {
            catalog::tag_image(shared, &mut shared.cloud(), &id, &tags)?;
            R::Unit
        }
        Q::Launch { req } => R::Instance(instances::launch_locked(shared, &mut shared.cloud(), req, None)?),
        Q::DescribeInstances { ids } => {
            let cloud = shared.cloud();
            R::Instances(
                ids.iter()
                    .filter_map(|id| cloud.state.instances.get(id))
                    .map(|r| r.instance.clone())
                    .collect(),
            )
        }
        Q::ListInstances { tags } => {
            let cloud = shared.cloud();
            R::Instances(
                cloud
                    .state
                    .instances
                    .values()
                    .filter(|r| tags.iter().all(|(k, v)| r.instance.tags.get(k) == Some(v)))
                    .map(|r| r.instance.clone())
                    .collect(),
            )
        }
        Q::StopInstance { id } => {
            instances::stop(shared, &id, StopMode::Stop).await?;
            R::Unit
        }
        Q::StartInstance { id } => {
            instances::start(shared, &id)?;
            R::Unit
        }
        Q::RebootInstance { id } => {
            instances::stop(shared, &id, StopMode::Reboot).await?;
            R::Unit
        }
        Q::TerminateInstance { id } => {
            instances::stop(shared, &id, StopMode::Terminate).await?;
            R::Unit
        }
        Q::ProbeHealth { id, path } => {
            let address = {
                let cloud = shared.cloud();
                let rec = cloud
                    .state
                    .instances
                    .get(&id)
                    .ok_or_else(|| LocalError::not_found(format!("instance {id}")))?;
                rec.instance.address.clone()
            };
            match address {
                Some(a) => R::Health(instances::probe(&a, &path).await),
                None => R::Health(repave_core::provider::HealthProbe {
                    healthy: false,
                    detail: format!("instance {id} is not running"),
                }),
            }
        }
        Q::SendCommand { req } => R::CommandId(super::commands::send(shared, req)?),
        Q::CommandResult { id } => R::CommandResult(super::commands::result(shared, &id)?),
        Q::GetParameter { name } => R::Parameter(catalog::get_parameter(&shared.cloud(), &name)?),
        Q::PutParameter {
            name,
            value,
            description,
        } => R::Version(catalog::put_parameter(
            shared,
            &mut shared.cloud(),
            &name,
            &value,
            description,
        )?),
        Q::ParameterHistory { name } => R::Parameters(catalog::parameter_history(&shared.cloud(), &name)?),
        Q::LabelParameterVersion { name, version, labels } => {
            catalog::label_parameter(shared, &mut shared.cloud(), &name, version, &labels)?;
            R::Unit
        }
        Q::DescribeGroup { name } => R::Group(groups::describe_group(&shared.cloud(), &name)?),
        Q::DescribeLaunchSpec { spec } => R::LaunchSpec(catalog::describe_launch_spec(&shared.cloud(), &spec)?),
        Q::CreateLaunchSpecVersion { base, image } => R::LaunchSpecRef(catalog::create_launch_spec_version(
            shared,
            &mut shared.cloud(),
            &base,
            &image,
        )?),
        Q::SetGroupLaunchSpec { group, spec } => {
            groups::set_group_launch_spec(shared, &mut shared.cloud(), &group, &spec)?;
            R::Unit
        }
        Q::SetDesiredCapacity { group, desired } => {
            groups::set_desired(shared, &mut shared.cloud(), &group, desired)?;
            R::Unit
        }
        Q::TerminateGroupInstance {
            group,
            instance,
            decrement,
        } => {
            groups::terminate_group_instance(shared, &mut shared.cloud(), &group, &instance, decrement)?;
            R::Unit
        }
        Q::SetInstanceProtection {
            group,
            instance,
            protected,
        } => {
            groups::set_protection(shared, &mut shared.cloud(), &group, &instance, protected)?;
            R::Unit
        }
        Q::TargetHealth { group } => R::Targets(groups::target_health(&shared.cloud(), &group)?),
        Q::DeregisterTarget { group, instance } => {
            groups::set_registered(shared, &mut shared.cloud(), &group, &instance, false)?;
            R::Unit
        }
        Q::RegisterTarget { group, instance } => {
            groups::set_registered(shared, &mut shared.cloud(), &group, &instance, true)?;
            R::Unit
        }
    };
    if kick {
        shared.kick.notify_one();
    }
    Ok(resp)
}

fn leak_report(shared: &Shared) -> LeakReport {
    let cloud = shared.cloud();
    let mut report = LeakReport::default();
    for (id, rec) in &cloud.state.instances {
        let live = cloud.procs.get(id).map(|h| h.is_alive()).unwrap_or(false)
            || rec.pid.is_some_and(crate::process::pid_alive);
        if live {
            report.live_processes.push(id.clone());
        }
        report.instances.push(rec.instance.clone());
    }
    if let Ok(entries) = std::fs::read_dir(&shared.paths.instances) {
        for e in entries.flatten() {
            if e.path().join("root").exists() {
                report
                    .roots
                    .push(InstanceId::new(e.file_name().to_string_lossy().to_string()));
            }
        }
    }
    report.roots.sort();
    report
}

/// Local images are of the feed's OS family: every image reports it as its
/// platform (the engine checks the selection against it).
fn stamp(shared: &Shared, mut image: repave_core::provider::Image) -> repave_core::provider::Image {
    image.platform = Some(shared.os.platform_details().to_string());
    image
}

//! Instance lifecycle inside the daemon: launch (materialize the root,
//! allocate a port, start the process), stop / start / reboot / terminate.
//! Waiting for a process to exit happens outside the state lock.

use super::{Cloud, Shared};
use crate::error::LocalError;
use crate::state::InstanceRecord;
use repave_core::provider::{HealthProbe, Instance, InstanceState, LaunchRequest};
use repave_core::InstanceId;
use std::time::Duration;

/// How long a stopping process gets after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A port on 127.0.0.1 the OS says is free right now.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Launch an instance; a token already used returns the same instance.
/// A group's member (`group`) joins the group's member list in the same
/// state write that first records it: a fleet process killed between two
/// writes would otherwise leave a running instance that names the group
/// but that no group counts, replaced and never terminated.
pub(crate) fn launch_locked(
    shared: &Shared,
    cloud: &mut Cloud,
    req: LaunchRequest,
    group: Option<String>,
) -> Result<Instance, LocalError> {
    if !req.token.is_empty() {
        if let Some(rec) = cloud
            .state
            .instance_tokens
            .get(&req.token)
            .and_then(|id| cloud.state.instances.get(id))
        {
            return Ok(rec.instance.clone());
        }
    }
    let image = cloud
        .state
        .images
        .get(&req.image)
        .ok_or_else(|| LocalError::not_found(format!("image {} does not exist", req.image)))?;
    if image.image.state != repave_core::provider::ImageState::Available {
        return Err(LocalError::invalid(format!(
            "image {} is {:?}",
            req.image, image.image.state
        )));
    }
    shared.writable()?;
    let id = InstanceId::new(crate::util::new_id("i"));
    let root = shared.paths.root(&id);
    if let Err(e) = shared.blobs.materialize(&image.manifest, &root) {
        crate::util::remove_root(&shared.paths.instances.join(id.as_str()));
        return Err(LocalError::io(format!("materializing {} from {}", id, req.image), e));
    }
    let port = free_port().map_err(|e| LocalError::io("allocating a port", e))?;
    let rec = InstanceRecord {
        instance: Instance {
            id: id.clone(),
            image: req.image.clone(),
            state: InstanceState::Pending,
            launched_at: crate::util::now(),
            tags: req.tags.clone(),
            address: None,
        },
        spec: req.spec.clone(),
        port,
        pid: None,
        group: group.clone(),
    };
    cloud.state.instances.insert(id.clone(), rec);
    if let Some(g) = group.as_ref().and_then(|g| cloud.state.groups.get_mut(g)) {
        g.members.push(crate::state::MemberRecord {
            id: id.clone(),
            launch_spec: g.launch_spec.clone(),
            protected: false,
            terminating: false,
            registered: true,
        });
    }
    if !req.token.is_empty() {
        cloud.state.instance_tokens.insert(req.token.clone(), id.clone());
    }
    if let Err(e) = boot_locked(shared, cloud, &id) {
        // A launch that cannot start leaves nothing behind.
        crate::util::remove_root(&shared.paths.instances.join(id.as_str()));
        if let Some(r) = cloud.state.instances.get_mut(&id) {
            r.instance.state = InstanceState::Terminated;
        }
        if let Some(g) = group.as_ref().and_then(|g| cloud.state.groups.get_mut(g)) {
            g.members.retain(|m| m.id != id);
        }
        shared.save(cloud)?;
        return Err(e);
    }
    shared.save(cloud)?;
    tracing::info!(instance = %id, image = %req.image, "launched");
    Ok(cloud.state.instances[&id].instance.clone())
}

/// Start the instance's process (a boot: `var/run` is cleared first).
pub(crate) fn boot_locked(shared: &Shared, cloud: &mut Cloud, id: &InstanceId) -> Result<(), LocalError> {
    let root = shared.paths.root(id);
    let _ = std::fs::remove_dir_all(root.join("var/run"));
    let rec = cloud
        .state
        .instances
        .get_mut(id)
        .ok_or_else(|| LocalError::not_found(format!("instance {id}")))?;
    let address = format!("127.0.0.1:{}", rec.port);
    if !rec.spec.command.is_empty() {
        let root_s = root.to_string_lossy().to_string();
        let exe = shared.exe.to_string_lossy().to_string();
        let argv: Vec<String> = rec
            .spec
            .command
            .iter()
            .map(|a| {
                a.replace("{port}", &rec.port.to_string())
                    .replace("{root}", &root_s)
                    .replace("{repave}", &exe)
            })
            .collect();
        let env = instance_env(shared, id, rec.instance.image.as_str());
        let log = shared.paths.instance_logs.join(format!("{id}.log"));
        let handle = crate::process::spawn(&argv, &root, &env, &log)
            .map_err(|e| LocalError::io(format!("starting {id}: {argv:?}"), e))?;
        rec.pid = Some(handle.pid);
        cloud.procs.insert(id.clone(), handle);
    }
    rec.instance.state = InstanceState::Running;
    rec.instance.address = Some(address);
    Ok(())
}

/// The environment of everything run for an instance: who it is, and the
/// fleet mark (so it can be found and stopped should its state go).
pub(crate) fn instance_env(shared: &Shared, id: &InstanceId, image: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("REPAVE_INSTANCE_ID".to_string(), id.to_string()),
        ("REPAVE_IMAGE_ID".to_string(), image.to_string()),
        (
            "REPAVE_FEED".to_string(),
            shared.paths.feed.to_string_lossy().to_string(),
        ),
    ];
    env.extend(shared.mark.env());
    env
}

/// What [`stop`] leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
    /// Stopped, root kept.
    Stop,
    /// Started again at once (the instance stays busy throughout, so the
    /// reconciler never sees it stopped).
    Reboot,
    /// Root removed, Terminated.
    Terminate,
}

/// Stop, reboot or terminate an instance, waiting for its process to exit.
pub(crate) async fn stop(shared: &Shared, id: &InstanceId, mode: StopMode) -> Result<(), LocalError> {
    let terminate = mode == StopMode::Terminate;
    let mut waited = Duration::ZERO;
    let handle = loop {
        {
            let mut cloud = shared.cloud();
            let busy = cloud.busy.contains(id);
            let rec = cloud
                .state
                .instances
                .get_mut(id)
                .ok_or_else(|| LocalError::not_found(format!("instance {id}")))?;
            match rec.instance.state {
                InstanceState::Terminated if terminate => return Ok(()),
                InstanceState::Terminated => return Err(LocalError::invalid(format!("instance {id} is terminated"))),
                InstanceState::Stopped if mode == StopMode::Stop => return Ok(()),
                InstanceState::Stopped if mode == StopMode::Reboot => {
                    return Err(LocalError::invalid(format!(
                        "instance {id} is stopped; start it instead"
                    )))
                }
                _ if busy => {}
                _ => {
                    rec.instance.state = if terminate {
                        InstanceState::ShuttingDown
                    } else {
                        InstanceState::Stopping
                    };
                    let pid = rec.pid;
                    cloud.busy.insert(id.clone());
                    // Fall back to the recorded pid: a process must never
                    // outlive its instance just because we lost its handle.
                    let h = cloud.procs.remove(id).or_else(|| {
                        pid.filter(|p| crate::process::pid_alive(*p))
                            .map(crate::process::ProcHandle::adopted)
                    });
                    // A state file that cannot be written (a full disk)
                    // must not leave the instance half-stopped and busy for
                    // ever: stop it anyway (terminating frees the disk), and
                    // write the final state below.
                    if let Err(e) = shared.save(&cloud) {
                        tracing::warn!(instance = %id, error = %e, "could not record the stop; stopping anyway");
                    }
                    break h;
                }
            }
        }
        // Someone else is stopping it: wait for them, then act.
        if waited > STOP_GRACE * 2 {
            return Err(LocalError::request(
                repave_core::ErrorKind::Transient,
                format!("instance {id} is busy"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    };
    // Whatever happens from here — the request dropped half-way, a failed
    // write — the instance must not stay busy for ever (every later stop
    // would wait on it and fail).
    let _busy = Busy { shared, id };
    if let Some(h) = handle {
        h.stop(STOP_GRACE).await;
    }
    let mut cloud = shared.cloud();
    if terminate && shared.writable().is_ok() {
        crate::util::remove_root(&shared.paths.instances.join(id.as_str()));
    }
    if let Some(rec) = cloud.state.instances.get_mut(id) {
        rec.pid = None;
        rec.instance.address = None;
        rec.instance.state = if terminate {
            InstanceState::Terminated
        } else {
            InstanceState::Stopped
        };
    }
    let booted = if mode == StopMode::Reboot {
        boot_locked(shared, &mut cloud, id)
    } else {
        Ok(())
    };
    cloud.busy.remove(id);
    shared.save(&cloud)?;
    tracing::info!(instance = %id, ?mode, "stopped");
    booted
}

/// Clears an instance's busy mark when a stop ends in any way.
struct Busy<'a> {
    shared: &'a Shared,
    id: &'a InstanceId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.shared.cloud().busy.remove(self.id);
    }
}

/// Start a stopped instance.
pub(crate) fn start(shared: &Shared, id: &InstanceId) -> Result<(), LocalError> {
    let mut cloud = shared.cloud();
    let state = cloud
        .state
        .instances
        .get(id)
        .ok_or_else(|| LocalError::not_found(format!("instance {id}")))?
        .instance
        .state;
    match state {
        InstanceState::Running | InstanceState::Pending => Ok(()),
        InstanceState::Stopped => {
            boot_locked(shared, &mut cloud, id)?;
            shared.save(&cloud)
        }
        s => Err(LocalError::invalid(format!(
            "instance {id} is {s:?}; only a stopped instance starts"
        ))),
    }
}

/// Whether the instance is running as it should (an idle builder has no
/// process and counts as alive while Running).
pub(crate) fn alive(cloud: &Cloud, id: &InstanceId) -> bool {
    let Some(rec) = cloud.state.instances.get(id) else {
        return false;
    };
    if !matches!(rec.instance.state, InstanceState::Running | InstanceState::Pending) {
        return false;
    }
    rec.spec.command.is_empty() || cloud.procs.get(id).is_some_and(|h| h.is_alive())
}

/// GET http://address{path}; healthy iff 2xx.
pub(crate) async fn probe(address: &str, path: &str) -> HealthProbe {
    match http_get(address, path, Duration::from_secs(2)).await {
        Ok(code) => HealthProbe {
            healthy: (200..300).contains(&code),
            detail: format!("HTTP {code}"),
        },
        Err(e) => HealthProbe {
            healthy: false,
            detail: e,
        },
    }
}

async fn http_get(address: &str, path: &str, timeout: Duration) -> Result<u16, String> {
    use http_body_util::{BodyExt, Empty};
    let work = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", address)
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Ok(code)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))?
}

//! [`LocalClient`]: the engine's handle on the local cloud. Each call opens
//! a fresh connection to the daemon socket (cheap on a Unix socket), so a
//! restarted daemon is picked up without any reconnect logic, and concurrent
//! calls never queue behind a slow one.

use crate::daemon::Paths;
use crate::error::LocalError;
use crate::protocol::{BalancerStats, GroupSetup, GroupSetupResult, ImageSource, LeakReport, Request, Response};
use async_trait::async_trait;
use repave_core::provider::{
    CommandRequest, CommandResult, Commands, CreateImageRequest, Group, Groups, HealthProbe, Image, Images, Instance,
    Instances, LaunchRequest, LaunchSpec, LaunchSpecRef, Parameter, Parameters, Provider, Tags, TargetHealth, Traffic,
};
use repave_core::{CommandId, ImageId, InstanceId, ProviderError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long `ensure_running` waits for a freshly spawned daemon.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Daemons `ensure_running` starts before it gives up.
const START_ATTEMPTS: u32 = 3;
/// How long `shutdown` waits for the daemon to stop answering.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

/// Client of the local daemon; implements every core provider trait.
#[derive(Debug, Clone)]
pub struct LocalClient {
    socket: PathBuf,
}

type PResult<T> = std::result::Result<T, ProviderError>;

/// Unwrap the expected response variant or report a protocol error.
macro_rules! expect {
    ($resp:expr, $pat:pat => $out:expr) => {
        match $resp {
            $pat => Ok($out),
            other => Err(LocalError::Protocol(format!("unexpected response {other:?}"))),
        }
    };
}

impl LocalClient {
    /// Connect to a running daemon; fails when none answers.
    pub async fn connect(state_dir: &Path) -> Result<LocalClient, LocalError> {
        let client = LocalClient {
            socket: Paths::new(state_dir).socket,
        };
        client.daemon_pid().await?;
        Ok(client)
    }

    /// Connect, or start `<exe> local daemon --state-dir DIR [--feed F]`
    /// detached (own session, output to `<state_dir>/logs/daemon.log`) and
    /// wait until it answers.
    pub async fn ensure_running(state_dir: &Path, exe: &Path, feed: Option<&Path>) -> Result<LocalClient, LocalError> {
        if let Ok(c) = Self::connect(state_dir).await {
            return Ok(c);
        }
        let logs = state_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| LocalError::io("creating logs dir", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join("daemon.log"))
            .map_err(|e| LocalError::io("opening daemon.log", e))?;
        let err = log.try_clone().map_err(|e| LocalError::io("opening daemon.log", e))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("local").arg("daemon").arg("--state-dir").arg(state_dir);
        if let Some(f) = feed {
            cmd.arg("--feed").arg(f);
        }
        cmd.stdin(std::process::Stdio::null()).stdout(log).stderr(err);
        // A fleet process started from inside an instance belongs to its own
        // state, not to the fleet of that instance.
        cmd.env_remove(crate::mark::STATE_VAR).env_remove(crate::mark::ID_VAR);
        // SAFETY: setsid is async-signal-safe; it detaches the daemon from
        // the caller's session so killing the CLI leaves the fleet serving.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        // A daemon killed a moment ago may still hold the lock after its
        // socket stopped answering (the kernel closes its files one by one):
        // the new one then exits at once, and a second try goes through.
        let mut attempts = 0;
        'spawn: loop {
            attempts += 1;
            let mut child = cmd
                .spawn()
                .map_err(|e| LocalError::StartDaemon(format!("spawning {}: {e}", exe.display())))?;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Ok(c) = Self::connect(state_dir).await {
                    // Reap the child in the background if it ever exits while we live.
                    std::thread::spawn(move || {
                        let _ = child.wait();
                    });
                    return Ok(c);
                }
                if let Ok(Some(status)) = child.try_wait() {
                    // It may have lost the race to a daemon started concurrently
                    // (it exits on the lock): that one will answer shortly.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if let Ok(c) = Self::connect(state_dir).await {
                        return Ok(c);
                    }
                    if attempts < START_ATTEMPTS {
                        continue 'spawn;
                    }
                    return Err(LocalError::StartDaemon(format!(
                        "daemon exited with {status}; see {}",
                        logs.join("daemon.log").display()
                    )));
                }
                if Instant::now() > deadline {
                    return Err(LocalError::StartDaemon(format!(
                        "daemon did not answer within {START_TIMEOUT:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn call(&self, req: &Request) -> Result<Response, LocalError> {
        self.call_on(req).await.map(|(response, _)| response)
    }

    /// One request on a fresh connection: the answer, and the connection.
    async fn call_on(&self, req: &Request) -> Result<(Response, UnixStream), LocalError> {
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| LocalError::Connect {
                socket: self.socket.display().to_string(),
                source: e,
            })?;
        let mut line = serde_json::to_string(req).map_err(|e| LocalError::Protocol(e.to_string()))?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .await
            .map_err(|e| LocalError::Protocol(format!("sending: {e}")))?;
        // One answer per request: whatever the buffer read past it is
        // nothing, so the connection can be kept (a tether).
        let mut answer = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut answer)
            .await
            .map_err(|e| LocalError::Protocol(format!("receiving: {e}")))?;
        if answer.is_empty() {
            return Err(LocalError::Protocol("daemon closed the connection".into()));
        }
        match serde_json::from_str(&answer).map_err(|e| LocalError::Protocol(format!("bad answer: {e}")))? {
            Response::Error { kind, message } => Err(LocalError::Request { kind, message }),
            r => Ok((r, stream)),
        }
    }

    /// Tie the fleet's life to this process: once the returned [`Tether`]
    /// is dropped, or this process ends in any way (SIGKILL included), the
    /// fleet process stops the fleet as `shutdown` does and exits.
    pub async fn tether(&self) -> Result<Tether, LocalError> {
        let (response, stream) = self.call_on(&Request::Tether).await?;
        expect!(response, Response::Unit => Tether { _connection: stream })
    }

    async fn unit(&self, req: Request) -> Result<(), LocalError> {
        expect!(self.call(&req).await?, Response::Unit => ())
    }

    /// Start a stopped instance again. The fleet's own call: the engine
    /// never restarts an instance (it is not a provider operation, and
    /// `repave iam-policy` grants no `ec2:StartInstances`).
    pub async fn start_instance(&self, id: &InstanceId) -> Result<(), LocalError> {
        self.unit(Request::StartInstance { id: id.clone() }).await
    }

    /// Pid of the daemon process (also a liveness check).
    pub async fn daemon_pid(&self) -> Result<u32, LocalError> {
        expect!(self.call(&Request::Ping).await?, Response::Pong { pid } => pid)
    }

    /// Stop balancers, terminate every instance, remove roots; the daemon
    /// exits. Returns once it no longer answers on its socket (bounded by
    /// [`SHUTDOWN_WAIT`]), so a caller can start a new one right away.
    pub async fn shutdown(&self) -> Result<(), LocalError> {
        self.unit(Request::Shutdown).await?;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while self.daemon_pid().await.is_ok() {
            if tokio::time::Instant::now() >= deadline {
                return Err(LocalError::io(
                    "waiting for the fleet process to exit",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("still answering {} s after shutdown", SHUTDOWN_WAIT.as_secs()),
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Create the group with its image, launch spec and parameter unless it
    /// exists (idempotent).
    pub async fn ensure_group(&self, setup: GroupSetup) -> Result<GroupSetupResult, LocalError> {
        let setup = GroupSetup {
            image: absolute(setup.image)?,
            ..setup
        };
        expect!(self.call(&Request::EnsureGroup { setup }).await?, Response::GroupSetup(r) => r)
    }

    /// Import an image from the built-in demo or a directory.
    pub async fn import_image(&self, source: ImageSource, name: &str, tags: Tags) -> Result<ImageId, LocalError> {
        let source = absolute(source)?;
        expect!(self.call(&Request::ImportImage { source, name: name.into(), tags }).await?, Response::ImageId(i) => i)
    }

    /// Live processes, roots on disk and every known instance.
    pub async fn leak_report(&self) -> Result<LeakReport, LocalError> {
        expect!(self.call(&Request::LeakReport).await?, Response::Leaks(r) => r)
    }

    /// `127.0.0.1:PORT` of the group's balancer.
    pub async fn balancer_address(&self, group: &str) -> Result<String, LocalError> {
        expect!(self.call(&Request::BalancerAddress { group: group.into() }).await?, Response::Address(a) => a)
    }

    /// Requests proxied / failed / retried by the group's balancer.
    pub async fn balancer_stats(&self, group: &str) -> Result<BalancerStats, LocalError> {
        expect!(self.call(&Request::BalancerStats { group: group.into() }).await?, Response::Stats(s) => s)
    }
}

/// An open connection the fleet process stops the fleet on closing (see
/// [`LocalClient::tether`]).
#[derive(Debug)]
pub struct Tether {
    _connection: UnixStream,
}

/// The daemon has its own working directory: send it absolute paths.
fn absolute(source: ImageSource) -> Result<ImageSource, LocalError> {
    match source {
        ImageSource::Directory(d) => std::fs::canonicalize(&d)
            .map(ImageSource::Directory)
            .map_err(|e| LocalError::io(format!("image directory {}", d.display()), e)),
        s => Ok(s),
    }
}

#[async_trait]
impl Images for LocalClient {
    async fn describe_image(&self, id: &ImageId) -> PResult<Image> {
        Ok(expect!(self.call(&Request::DescribeImage { id: id.clone() }).await?, Response::Image(i) => i)?)
    }
    async fn create_image(&self, req: CreateImageRequest) -> PResult<ImageId> {
        Ok(expect!(self.call(&Request::CreateImage { req }).await?, Response::ImageId(i) => i)?)
    }
    async fn deregister_image(&self, id: &ImageId) -> PResult<()> {
        Ok(self.unit(Request::DeregisterImage { id: id.clone() }).await?)
    }
    async fn list_images(&self, tags: &Tags) -> PResult<Vec<Image>> {
        Ok(expect!(self.call(&Request::ListImages { tags: tags.clone() }).await?, Response::Images(i) => i)?)
    }
    async fn referenced_images(&self) -> PResult<std::collections::BTreeSet<ImageId>> {
        let ids = expect!(self.call(&Request::ReferencedImages).await?, Response::ImageIds(i) => i)?;
        Ok(ids.into_iter().collect())
    }
    async fn tag_image(&self, id: &ImageId, tags: &Tags) -> PResult<()> {
        Ok(self
            .unit(Request::TagImage {
                id: id.clone(),
                tags: tags.clone(),
            })
            .await?)
    }
}

#[async_trait]
impl Instances for LocalClient {
    async fn launch(&self, req: LaunchRequest) -> PResult<Instance> {
        Ok(expect!(self.call(&Request::Launch { req }).await?, Response::Instance(i) => i)?)
    }
    async fn describe_instances(&self, ids: &[InstanceId]) -> PResult<Vec<Instance>> {
        Ok(expect!(self.call(&Request::DescribeInstances { ids: ids.to_vec() }).await?, Response::Instances(i) => i)?)
    }
    async fn list_instances(&self, tags: &Tags) -> PResult<Vec<Instance>> {
        Ok(expect!(self.call(&Request::ListInstances { tags: tags.clone() }).await?, Response::Instances(i) => i)?)
    }
    async fn stop_instance(&self, id: &InstanceId) -> PResult<()> {
        Ok(self.unit(Request::StopInstance { id: id.clone() }).await?)
    }
    async fn reboot_instance(&self, id: &InstanceId) -> PResult<()> {
        Ok(self.unit(Request::RebootInstance { id: id.clone() }).await?)
    }
    async fn terminate_instance(&self, id: &InstanceId) -> PResult<()> {
        Ok(self.unit(Request::TerminateInstance { id: id.clone() }).await?)
    }
    async fn probe_health(&self, id: &InstanceId, path: &str) -> PResult<HealthProbe> {
        let req = Request::ProbeHealth {
            id: id.clone(),
            path: path.into(),
        };
        Ok(expect!(self.call(&req).await?, Response::Health(h) => h)?)
    }
}

#[async_trait]
impl Commands for LocalClient {
    async fn send_command(&self, req: CommandRequest) -> PResult<CommandId> {
        Ok(expect!(self.call(&Request::SendCommand { req }).await?, Response::CommandId(i) => i)?)
    }
    async fn command_result(&self, id: &CommandId) -> PResult<CommandResult> {
        Ok(expect!(self.call(&Request::CommandResult { id: id.clone() }).await?, Response::CommandResult(r) => r)?)
    }
}

#[async_trait]
impl Parameters for LocalClient {
    async fn get_parameter(&self, name: &str) -> PResult<Parameter> {
        Ok(expect!(self.call(&Request::GetParameter { name: name.into() }).await?, Response::Parameter(p) => p)?)
    }
    async fn put_parameter(&self, name: &str, value: &str, description: Option<&str>) -> PResult<u64> {
        let req = Request::PutParameter {
            name: name.into(),
            value: value.into(),
            description: description.map(String::from),
        };
        Ok(expect!(self.call(&req).await?, Response::Version(v) => v)?)
    }
    async fn parameter_history(&self, name: &str) -> PResult<Vec<Parameter>> {
        Ok(expect!(self.call(&Request::ParameterHistory { name: name.into() }).await?, Response::Parameters(p) => p)?)
    }
    async fn label_parameter_version(&self, name: &str, version: u64, labels: &[String]) -> PResult<()> {
        Ok(self
            .unit(Request::LabelParameterVersion {
                name: name.into(),
                version,
                labels: labels.to_vec(),
            })
            .await?)
    }
}

#[async_trait]
impl Groups for LocalClient {
    async fn describe_group(&self, name: &str) -> PResult<Group> {
        Ok(expect!(self.call(&Request::DescribeGroup { name: name.into() }).await?, Response::Group(g) => g)?)
    }
    async fn describe_launch_spec(&self, spec: &LaunchSpecRef) -> PResult<LaunchSpec> {
        Ok(
            expect!(self.call(&Request::DescribeLaunchSpec { spec: spec.clone() }).await?, Response::LaunchSpec(s) => s)?,
        )
    }
    async fn create_launch_spec_version(&self, base: &LaunchSpecRef, image: &ImageId) -> PResult<LaunchSpecRef> {
        let req = Request::CreateLaunchSpecVersion {
            base: base.clone(),
            image: image.clone(),
        };
        Ok(expect!(self.call(&req).await?, Response::LaunchSpecRef(r) => r)?)
    }
    async fn set_group_launch_spec(&self, group: &str, spec: &LaunchSpecRef) -> PResult<()> {
        Ok(self
            .unit(Request::SetGroupLaunchSpec {
                group: group.into(),
                spec: spec.clone(),
            })
            .await?)
    }
    async fn set_desired_capacity(&self, group: &str, desired: u32) -> PResult<()> {
        Ok(self
            .unit(Request::SetDesiredCapacity {
                group: group.into(),
                desired,
            })
            .await?)
    }
    async fn terminate_group_instance(&self, group: &str, instance: &InstanceId, decrement: bool) -> PResult<()> {
        let req = Request::TerminateGroupInstance {
            group: group.into(),
            instance: instance.clone(),
            decrement,
        };
        Ok(self.unit(req).await?)
    }
    async fn set_instance_protection(&self, group: &str, instance: &InstanceId, protected: bool) -> PResult<()> {
        let req = Request::SetInstanceProtection {
            group: group.into(),
            instance: instance.clone(),
            protected,
        };
        Ok(self.unit(req).await?)
    }
}

#[async_trait]
impl Traffic for LocalClient {
    async fn target_health(&self, group: &str) -> PResult<Vec<TargetHealth>> {
        Ok(expect!(self.call(&Request::TargetHealth { group: group.into() }).await?, Response::Targets(t) => t)?)
    }
    async fn deregister_target(&self, group: &str, instance: &InstanceId) -> PResult<()> {
        Ok(self
            .unit(Request::DeregisterTarget {
                group: group.into(),
                instance: instance.clone(),
            })
            .await?)
    }
    async fn register_target(&self, group: &str, instance: &InstanceId) -> PResult<()> {
        Ok(self
            .unit(Request::RegisterTarget {
                group: group.into(),
                instance: instance.clone(),
            })
            .await?)
    }
}

impl Provider for LocalClient {
    fn name(&self) -> &str {
        "local"
    }
}

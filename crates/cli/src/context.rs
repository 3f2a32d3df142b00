//! Loading what every command needs: the config (validated once), the state
//! directory, the store, the provider.

use crate::cli::Cli;
use crate::exit::Exit;
use anyhow::{anyhow, Context as _};
use repave_core::config::{Config, LocalGroup, Pipeline};
use repave_core::provider::Provider;
use repave_local::{GroupSetup, ImageSource, LocalClient};
use repave_store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Loaded {
    pub config: Config,
    /// AWS providers, one per account + region + role, sharing one request
    /// budget per account + region (so `serve` shares them across pipelines).
    aws_pool: repave_aws::ProviderPool,
    /// `--profile` / `--region` for the AWS provider.
    pub aws_overrides: (Option<String>, Option<String>),
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// Read and validate the config file. Any problem is exit code 2.
pub fn load(cli: &Cli) -> Result<Loaded, Exit> {
    let path = &cli.config;
    let bytes = std::fs::read(path).map_err(|e| {
        Exit::bad_input(anyhow!(
            "{}: cannot read config: {e} (create one with `repave init`, or try `repave demo`)",
            path.display()
        ))
    })?;
    let config = repave_core::config::parse_bytes_with(&bytes, &path.display().to_string(), &window_problems)
        .map_err(Exit::bad_input)?;
    let config_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let state_dir = match (&cli.state_dir, &config.state_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) if d.is_absolute() => d.clone(),
        (None, Some(d)) => config_dir.join(d),
        (None, None) => config_dir.join(".repave"),
    };
    Ok(Loaded::new(
        config,
        config_dir,
        state_dir,
        (cli.profile.clone(), cli.region.clone()),
    ))
}

impl Loaded {
    pub fn new(
        config: Config,
        config_dir: PathBuf,
        state_dir: PathBuf,
        aws_overrides: (Option<String>, Option<String>),
    ) -> Loaded {
        let aws = config.providers.aws.clone().unwrap_or_default();
        let aws_pool = repave_aws::ProviderPool::new(
            repave_aws::AwsOptions {
                empty_patch_output_is_clean: aws.emulator,
            },
            aws.request_budget_percent,
        );
        Loaded {
            aws_pool,
            config,
            config_dir,
            state_dir,
            aws_overrides,
        }
    }

    /// The pipeline by name, or the only one.
    pub fn pipeline(&self, name: Option<&str>) -> Result<(String, Pipeline), Exit> {
        match name {
            Some(n) => self
                .config
                .pipelines
                .get(n)
                .map(|p| (n.to_string(), p.clone()))
                .ok_or_else(|| {
                    let known: Vec<&str> = self.config.pipelines.keys().map(String::as_str).collect();
                    Exit::bad_input(anyhow!("unknown pipeline {n:?} (known: {})", known.join(", ")))
                }),
            None if self.config.pipelines.len() == 1 => {
                let (n, p) = self.config.pipelines.iter().next().expect("one pipeline");
                Ok((n.clone(), p.clone()))
            }
            None => {
                let known: Vec<&str> = self.config.pipelines.keys().map(String::as_str).collect();
                Err(Exit::bad_input(anyhow!(
                    "several pipelines defined; name one of: {}",
                    known.join(", ")
                )))
            }
        }
    }

    pub fn store(&self) -> Result<Arc<Store>, Exit> {
        let store = Store::open(&self.state_dir.join("repave.db"))
            .with_context(|| format!("opening the store in {}", self.state_dir.display()))
            .map_err(Exit::failed)?;
        Ok(Arc::new(store))
    }

    /// The provider a pipeline runs on; for the local provider this starts
    /// the fleet process on demand and creates the config's groups.
    pub async fn provider(&self, pipeline: &Pipeline) -> Result<Arc<dyn Provider>, Exit> {
        match pipeline.provider {
            repave_core::config::ProviderKind::Local => Ok(Arc::new(self.local().await?)),
            repave_core::config::ProviderKind::Aws => Ok(self.aws_for(pipeline).await?),
            repave_core::config::ProviderKind::Sim => Err(Exit::bad_input(anyhow!(
                "provider \"sim\" is the simulator's: `repave simulate` runs it"
            ))),
        }
    }

    /// The AWS provider of a pipeline: its own region and role when
    /// `[pipelines.X.aws]` names them (the role assumed through STS).
    pub async fn aws_for(&self, pipeline: &Pipeline) -> Result<Arc<repave_aws::AwsProvider>, Exit> {
        self.aws_target(pipeline.aws.as_ref()).await
    }

    /// Where a pipeline's AWS calls go: `[providers.aws]` with `--profile`
    /// / `--region`, then the pipeline's own region and role.
    pub fn aws_place(&self, pipeline: &Pipeline) -> repave_aws::AwsTarget {
        self.aws_target_of(pipeline.aws.as_ref())
    }

    fn aws_target_of(&self, pipeline: Option<&repave_core::config::PipelineAws>) -> repave_aws::AwsTarget {
        let mut cfg = self.config.providers.aws.clone().unwrap_or_default();
        if let Some(p) = &self.aws_overrides.0 {
            cfg.profile = Some(p.clone());
        }
        if let Some(r) = &self.aws_overrides.1 {
            cfg.region = Some(r.clone());
        }
        repave_aws::AwsTarget::new(&cfg, pipeline)
    }

    async fn aws_target(
        &self,
        pipeline: Option<&repave_core::config::PipelineAws>,
    ) -> Result<Arc<repave_aws::AwsProvider>, Exit> {
        let target = self.aws_target_of(pipeline);
        let what = match &target.role {
            Some(r) => format!("configuring the AWS provider (role {})", r.role_arn),
            None => "configuring the AWS provider".to_string(),
        };
        self.aws_pool
            .provider(&target)
            .await
            .context(what)
            .map_err(Exit::failed)
    }

    /// Engine timing for a pipeline's provider (the same function
    /// `repave serve` uses, so a run polls alike whoever drives it).
    pub fn engine_options(&self, pipeline: &Pipeline) -> repave_engine::EngineOptions {
        repave_engine::EngineOptions::for_pipeline(&self.config, pipeline)
    }

    pub async fn local(&self) -> Result<LocalClient, Exit> {
        let local = self.config.providers.local.clone().unwrap_or_default();
        let feed = local.feed.as_ref().map(|f| {
            if f.is_absolute() {
                f.clone()
            } else {
                self.config_dir.join(f)
            }
        });
        let client = start_local(&self.state_dir, feed.as_deref()).await?;
        for (name, g) in &local.groups {
            let parameter = self
                .config
                .pipelines
                .values()
                .find(|p| p.provider == repave_core::config::ProviderKind::Local && &p.group == name)
                .map(|p| p.parameter.clone());
            client
                .ensure_group(group_setup(name, g, parameter, &self.config_dir))
                .await
                .with_context(|| format!("creating local group {name}"))
                .map_err(Exit::failed)?;
        }
        Ok(client)
    }
}

pub async fn start_local(state_dir: &Path, feed: Option<&Path>) -> Result<LocalClient, Exit> {
    let exe = std::env::current_exe()
        .context("locating the repave executable")
        .map_err(Exit::failed)?;
    LocalClient::ensure_running(state_dir, &exe, feed)
        .await
        .with_context(|| format!("starting the local fleet process in {}", state_dir.display()))
        .map_err(Exit::failed)
}

pub fn group_setup(name: &str, g: &LocalGroup, parameter: Option<String>, config_dir: &Path) -> GroupSetup {
    let image = if g.image == "builtin:demo" {
        ImageSource::BuiltinDemo
    } else {
        let p = PathBuf::from(&g.image);
        ImageSource::Directory(if p.is_absolute() { p } else { config_dir.join(p) })
    };
    GroupSetup {
        name: name.to_string(),
        min: g.min,
        max: g.max,
        desired: g.desired,
        port: g.port,
        command: g.command.clone(),
        image,
        health_check: g.health_check.clone(),
        deregistration_delay: g.deregistration_delay.get(),
        parameter,
        scaling: g.scaling.clone(),
    }
}

/// Wait until `n` targets of the group are healthy at its balancer.
pub async fn wait_healthy(client: &LocalClient, group: &str, n: u32) -> Result<(), Exit> {
    use repave_core::provider::{TargetState, Traffic};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let health = client.target_health(group).await.map_err(Exit::failed)?;
        let healthy = health.iter().filter(|t| t.state == TargetState::Healthy).count() as u32;
        if healthy >= n {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Exit::failed(anyhow!(
                "group {group}: only {healthy}/{n} instances healthy after 60s"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Maintenance windows must parse (cron, time zone) and fire: checked with
/// every other config error, so `validate` and every command catch them.
fn window_problems(config: &repave_core::config::Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let now = repave_core::ids::Clock::now(&repave_core::ids::SystemClock);
    for (name, p) in &config.pipelines {
        let Some(w) = &p.window else { continue };
        let problem = match repave_server::schedule::WindowSchedule::parse(w) {
            Err(message) => Some(message),
            Ok(ws) if ws.next_fire(now).is_none() => Some(format!("cron: {:?} never fires", w.cron)),
            Ok(_) => None,
        };
        if let Some(message) = problem {
            // The scheduler's messages start with the field they are about.
            let field = ["timezone", "duration", "cutoff", "cron"]
                .into_iter()
                .find(|f| message.starts_with(f))
                .unwrap_or("cron");
            let message = message
                .strip_prefix(field)
                .map(|m| m.trim_start_matches(':').trim())
                .unwrap_or(&message);
            out.push((format!("pipelines.{name}.window.{field}"), message.to_string()));
        }
    }
    out
}

/// A run by id; an unknown id is bad input (exit 2).
pub fn run_record(store: &Store, run: &str) -> Result<repave_store::RunRecord, Exit> {
    store
        .get_run(&repave_core::RunId::new(run))
        .map_err(Exit::failed)?
        .ok_or_else(|| Exit::bad_input(anyhow!("run {run} not found (see `repave history`)")))
}

//! Command-line surface. Every command takes `--json`; exit codes are mapped
//! in one place (`exit.rs`).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "repave",
    version,
    about = "Keep auto-scaling fleets on freshly patched OS images, with zero downtime.",
    long_about = "repave bakes a patched image from the golden image (builder → OS updates → image → test), \
publishes it (launch spec, group, golden parameter) and rolls every instance behind the load balancer \
without dropping a request, with rollback.\n\nStart with `repave demo` (no config needed), or `repave init` \
to write a starter repave.toml.",
    after_help = "Exit codes: 0 success · 1 run failed or error · 2 bad config or usage · 3 run rolled back · \
4 group leased by another run · 5 run paused or cancelled"
)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, default_value = "repave.toml", env = "REPAVE_CONFIG")]
    pub config: PathBuf,
    /// State directory (SQLite store, local images, logs). Default: the
    /// config's `state_dir`, else `.repave` next to the config file.
    #[arg(long, global = true, env = "REPAVE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// AWS profile (overrides `[providers.aws] profile`; the standard
    /// credential chain otherwise).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// AWS region (overrides `[providers.aws] region`).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log verbosity for stderr (e.g. `info`, `repave_engine=debug`).
    #[arg(long, global = true, env = "REPAVE_LOG", default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole loop on a local demo fleet under load (no config needed).
    Demo(DemoArgs),
    /// Write a commented starter repave.toml for the local provider.
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check a config file; errors name file:line:col and the field.
    Validate,
    /// Bake, test, publish, roll, verify and retain, for one pipeline.
    Run(PipelineArg),
    /// Bake and test a new image without publishing it.
    Bake(PipelineArg),
    /// Roll the group onto the golden parameter's image.
    Roll(PipelineArg),
    /// Put the golden parameter, launch spec and fleet back on the previous image.
    Rollback(PipelineArg),
    /// Read-only preflight: what a run would create and replace, and the problems in its way.
    Plan(PipelineArg),
    /// Terminate leftover builders and test instances; deregister bad or surplus images nothing references; delete the patch baselines of finished AWS runs; resume scaling processes a run suspended and never resumed. AWS: every account and region the pipelines name, each with its own pipelines.
    Gc {
        /// Only say what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the least-privilege IAM policy (JSON) an AWS pipeline needs;
    /// for a pipeline with `[pipelines.X.aws] role_arn`, an object with the
    /// role's `policy` and the `trust_policy` it needs (who may assume it:
    /// `--principal`, else the caller STS reports for the standard
    /// credential chain; `sts:ExternalId` when `external_id` is set).
    IamPolicy {
        #[command(flatten)]
        pipeline: PipelineArg,
        /// The IAM user or role ARN (or account id) that runs repave and
        /// assumes the pipeline's role. Default: STS GetCallerIdentity.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Ask the process driving a run to stop at its next safe point (before
    /// publish: clean up, `cancelled`; during the roll: `paused`, resumable).
    Cancel {
        /// Run id.
        run: String,
    },
    /// Continue an interrupted or paused run from its journal.
    Resume {
        /// Run id (see `repave history`).
        run: String,
    },
    /// The group: each instance, its image and health; the golden parameter and its versions; the last run.
    Status {
        /// Pipeline (default: every pipeline).
        pipeline: Option<String>,
    },
    /// Images with their lineage (run, parent, patch manifest, bad marks).
    Images(PipelineArg),
    /// Past runs, newest first.
    History {
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A run's steps and audit events.
    Logs {
        /// Run id.
        run: String,
    },
    /// Predict a run in virtual time: bake and roll durations, the lower
    /// bound, minimum capacity, whether it fits the window.
    Simulate(crate::commands::simulate::SimulateArgs),
    /// Scheduler for maintenance windows, HTTP JSON API, dashboard and /metrics in one process.
    ///
    /// One server per state dir: a second one exits 4 naming the first.
    Serve(crate::commands::serve::ServeArgs),
    /// Show, enable or disable the window schedules `repave serve` follows.
    ///
    /// A schedule disables itself after `max_consecutive_failures` failed
    /// runs in a row and stays off (across restarts) until enabled again.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Manage the local fleet's background process.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// The demo HTTP service (what local demo instances run).
    #[command(hide = true)]
    DemoApp {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        root: PathBuf,
    },
    /// Steady keep-alive HTTP load at a loopback address; prints requests/s
    /// (what the balancer benchmark compares).
    #[command(hide = true)]
    Load {
        /// `127.0.0.1:PORT` (loopback only).
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 64)]
        connections: u32,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// The package tool local instances patch with.
    #[command(hide = true)]
    Pkg {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct PipelineArg {
    /// Pipeline name from repave.toml (may be omitted when there is only one).
    pub pipeline: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Each windowed pipeline: enabled or why not, failures in a row.
    Show {
        /// Only this pipeline.
        pipeline: Option<String>,
    },
    /// Enable a pipeline's schedule again (clears the failure count).
    Enable { pipeline: String },
    /// Disable a pipeline's schedule: its windows start nothing until enabled.
    Disable {
        /// Pipeline name.
        pipeline: String,
        /// Why (shown by `show`, the API and the dashboard).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start the local fleet process (and the config's local groups).
    Up,
    /// Stop every local instance and balancer, and the fleet process.
    Down,
    /// The fleet process itself (started by `up` or on demand).
    #[command(hide = true)]
    Daemon {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        feed: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Instances in the demo group.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub instances: u32,
    /// Concurrent keep-alive HTTP clients driving load at the balancer.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub clients: u32,
    /// Leave the demo fleet running afterwards (`repave --state-dir DIR local down` stops it).
    #[arg(long)]
    pub keep: bool,
    /// Make the new image fail its health checks (shows the rollback path).
    #[arg(long)]
    pub break_image: bool,
    /// The OS family the demo image pretends to be: its update feed and the
    /// demo's selection use that family's patch vocabulary (amazon-linux:
    /// Security/Bugfix/... with Critical/Important/Medium/Low; ubuntu:
    /// priorities and sections).
    #[arg(long, default_value = "windows", value_parser = ["windows", "amazon-linux", "rhel", "suse", "ubuntu", "debian"])]
    pub os: String,
    /// Only updates released at least this many days ago (not on ubuntu /
    /// debian). A large value selects nothing: the run then ends without
    /// publishing.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub min_age_days: u32,
}

//! `repave local up | down | daemon`.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use anyhow::Context as _;
use repave_local::daemon::DaemonOptions;
use repave_local::down::Down;
use std::path::Path;

pub async fn up(cli: &Cli) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let client = loaded.local().await?;
    let mut groups = Vec::new();
    for (name, g) in loaded.config.providers.local.iter().flat_map(|l| l.groups.iter()) {
        // Up means serving: wait for the group's instances to pass health checks.
        crate::context::wait_healthy(&client, name, g.desired).await?;
        let addr = client.balancer_address(name).await.map_err(Exit::failed)?;
        groups.push(serde_json::json!({ "group": name, "balancer": addr }));
    }
    if cli.json {
        crate::output::json(&serde_json::json!({ "state_dir": loaded.state_dir, "groups": groups }));
    } else {
        println!("local fleet up in {}", loaded.state_dir.display());
        for g in groups {
            println!(
                "  group {} behind http://{}",
                g["group"].as_str().unwrap_or(""),
                g["balancer"].as_str().unwrap_or("")
            );
        }
    }
    Ok(exit::OK)
}

/// Stop the fleet of the state dir: also what a fleet process killed with
/// SIGKILL left running (a new one adopts it to stop it), and what a fleet
/// whose state dir is gone left.
pub async fn down(cli: &Cli) -> Result<i32, Exit> {
    let state_dir = match &cli.state_dir {
        Some(d) => d.clone(),
        None => crate::context::load(cli)?.state_dir,
    };
    let exe = std::env::current_exe()
        .context("locating the repave executable")
        .map_err(Exit::failed)?;
    let down = repave_local::down::down(&state_dir, &exe, None)
        .await
        .context("stopping the local fleet")
        .map_err(Exit::failed)?;
    let (stopped, note) = match down {
        Down::NotRunning => (false, format!("no local fleet running in {}", state_dir.display())),
        Down::Stopped => (true, format!("local fleet in {} stopped", state_dir.display())),
        Down::Adopted { processes } => (
            true,
            format!(
                "local fleet in {} stopped (its fleet process was gone; {processes} processes it left were adopted and stopped)",
                state_dir.display()
            ),
        ),
        Down::Orphans { processes } => (
            true,
            format!(
                "the state in {} is gone; stopped {processes} processes its fleet left",
                state_dir.display()
            ),
        ),
    };
    if cli.json {
        if stopped {
            crate::output::json(&serde_json::json!({ "stopped": state_dir }));
        }
    } else {
        println!("{note}");
    }
    Ok(exit::OK)
}

pub async fn daemon(state_dir: &Path, feed: Option<&Path>) -> Result<i32, Exit> {
    let exe = std::env::current_exe()
        .context("locating the repave executable")
        .map_err(Exit::failed)?;
    let opts = DaemonOptions {
        state_dir: state_dir.to_path_buf(),
        exe,
        feed: feed.map(Path::to_path_buf),
    };
    repave_local::daemon::run(opts)
        .await
        .context("local fleet process")
        .map_err(Exit::failed)?;
    Ok(exit::OK)
}

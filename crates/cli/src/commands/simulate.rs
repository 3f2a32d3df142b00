//! `repave simulate` (being built; see issue 3).

use crate::cli::Cli;
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Pipeline (may be omitted when the config has only one).
    pub pipeline: Option<String>,
}

pub async fn run(_cli: &Cli, _args: &SimulateArgs) -> Result<i32, Exit> {
    Err(Exit::failed(anyhow::anyhow!("repave simulate is not built yet")))
}

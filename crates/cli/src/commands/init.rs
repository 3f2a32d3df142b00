use crate::cli::Cli;
use crate::exit::{self, Exit};
use anyhow::anyhow;

/// `repave init`: write the starter config.
pub fn run(cli: &Cli, force: bool) -> Result<i32, Exit> {
    let path = &cli.config;
    if path.exists() && !force {
        return Err(Exit::bad_input(anyhow!(
            "{} already exists (use --force to overwrite)",
            path.display()
        )));
    }
    std::fs::write(path, repave_core::config::starter_config())
        .map_err(|e| Exit::failed(anyhow!("writing {}: {e}", path.display())))?;
    if cli.json {
        crate::output::json(&serde_json::json!({ "written": path }));
    } else {
        println!("wrote {}; next: `repave validate`, then `repave run`", path.display());
    }
    Ok(exit::OK)
}

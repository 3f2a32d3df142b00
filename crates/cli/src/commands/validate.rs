use crate::cli::Cli;
use crate::exit::{self, Exit};

/// `repave validate`: parse and check the config; errors are exit code 2.
pub fn run(cli: &Cli) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let names: Vec<&String> = loaded.config.pipelines.keys().collect();
    if cli.json {
        crate::output::json(&serde_json::json!({ "valid": true, "file": cli.config, "pipelines": names }));
    } else {
        println!(
            "{}: ok ({} pipeline(s): {})",
            cli.config.display(),
            names.len(),
            names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(exit::OK)
}

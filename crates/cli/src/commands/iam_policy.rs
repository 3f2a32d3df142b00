//! `repave iam-policy`: the least-privilege IAM policy a pipeline needs.

use crate::cli::Cli;
use crate::exit::{self, Exit};

pub fn run(cli: &Cli, name: Option<&str>) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let (name, pipeline) = loaded.pipeline(name)?;
    if pipeline.provider != "aws" {
        return Err(Exit::bad_input(anyhow::anyhow!(
            "pipeline {name} runs on the {} provider; an IAM policy is for provider = \"aws\"",
            pipeline.provider
        )));
    }
    // The policy document is JSON either way; `--json` changes nothing.
    crate::output::json(&repave_aws::iam_policy(&name, &pipeline));
    Ok(exit::OK)
}

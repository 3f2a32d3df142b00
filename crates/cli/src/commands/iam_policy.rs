//! `repave iam-policy`: the least-privilege IAM policy a pipeline needs.
//! Scoped with what the account says (the group's templates and subnets,
//! the instance profiles' roles, the volumes' KMS keys): it reads, never
//! changes, and needs the group to exist.

use crate::cli::Cli;
use crate::exit::{self, Exit};

pub async fn run(cli: &Cli, name: Option<&str>) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let (name, pipeline) = loaded.pipeline(name)?;
    if pipeline.provider != "aws" {
        return Err(Exit::bad_input(anyhow::anyhow!(
            "pipeline {name} runs on the {} provider; an IAM policy is for provider = \"aws\"",
            pipeline.provider
        )));
    }
    let provider = loaded.aws().await?;
    let scope = match provider.policy_scope(&pipeline).await {
        Ok(s) => s,
        // The config names a group or profile the account does not have.
        Err(e) if e.is_not_found() => {
            return Err(Exit::bad_input(
                anyhow::Error::new(e).context(format!("pipeline {name} (group {})", pipeline.group)),
            ))
        }
        Err(e) => {
            return Err(Exit::failed(
                anyhow::Error::new(e).context(format!("reading what pipeline {name}'s policy is scoped to")),
            ))
        }
    };
    // The policy document is JSON either way; `--json` changes nothing.
    crate::output::json(&repave_aws::iam_policy(&name, &pipeline, &scope));
    Ok(exit::OK)
}

//! `repave images`: the images a pipeline's provider holds, with lineage.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use crate::output::time;
use repave_core::provider::{tag, Tags};

pub async fn run(cli: &Cli, pipeline: Option<&str>) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let (_, p) = loaded.pipeline(pipeline)?;
    let provider = loaded.provider(&p).await?;
    let mut images = provider.list_images(&Tags::new()).await.map_err(Exit::failed)?;
    images.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    if cli.json {
        crate::output::json(&images);
        return Ok(exit::OK);
    }
    for i in &images {
        let get = |k: &str| i.tags.get(k).map(String::as_str).unwrap_or("-");
        println!(
            "{}  {:<10} {}  run {}  parent {}{}",
            i.id,
            format!("{:?}", i.state).to_lowercase(),
            time(i.created_at.millis()),
            get(tag::RUN),
            get(tag::PARENT),
            if get(tag::STATUS) == tag::STATUS_BAD {
                "  BAD"
            } else {
                ""
            }
        );
        if let Some(m) = i.tags.get(tag::MANIFEST) {
            println!("    manifest {m}");
        }
    }
    Ok(exit::OK)
}

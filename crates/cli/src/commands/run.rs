//! `repave run | bake | roll | rollback | resume`.

use crate::cli::{Cli, PipelineArg};
use crate::exit::{self, Exit};
use crate::progress::Bars;
use repave_core::ids::SystemClock;
use repave_core::provider::Provider;
use repave_engine::{Engine, EngineOptions, RunOutcome};
use repave_store::{RunKind, Store};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn start(cli: &Cli, arg: &PipelineArg, kind: RunKind) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let (name, pipeline) = loaded.pipeline(arg.pipeline.as_deref())?;
    let engine = driving_engine(cli, &loaded, &pipeline, loaded.store()?).await?;
    let outcome = engine.start(&name, &pipeline, kind).await?;
    finish(cli, &outcome)
}

pub async fn resume(cli: &Cli, run: &str) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let store = loaded.store()?;
    let record = crate::context::run_record(&store, run)?;
    let id = record.id.clone();
    let (_, pipeline) = loaded.pipeline(Some(&record.pipeline))?;
    let engine = driving_engine(cli, &loaded, &pipeline, store).await?;
    let outcome = engine.resume(&id).await?;
    finish(cli, &outcome)
}

/// The engine a `run` / `resume` in this terminal drives: the pipeline's
/// provider, progress bars, Ctrl-C as cancel.
async fn driving_engine(
    cli: &Cli,
    loaded: &crate::context::Loaded,
    pipeline: &repave_core::config::Pipeline,
    store: Arc<Store>,
) -> Result<Engine, Exit> {
    let provider = loaded.provider(pipeline).await?;
    let bars = Arc::new(Bars::new(cli.json));
    Ok(engine(
        provider,
        store,
        bars,
        cancel_on_ctrl_c(),
        loaded.engine_options(pipeline),
    ))
}

pub fn engine(
    provider: Arc<dyn Provider>,
    store: Arc<Store>,
    bars: Arc<Bars>,
    cancel: CancellationToken,
    opts: EngineOptions,
) -> Engine {
    Engine::new(provider, store, Arc::new(SystemClock), bars, cancel, opts)
}

/// First Ctrl-C: stop at the next safe point (the run is journaled and can
/// be resumed). Second: exit at once.
pub fn cancel_on_ctrl_c() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping at the next safe point (Ctrl-C again to exit now)");
            t.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(exit::PAUSED);
            }
        }
    });
    token
}

fn finish(cli: &Cli, o: &RunOutcome) -> Result<i32, Exit> {
    if cli.json {
        crate::output::json(o);
    } else {
        print_outcome(o);
    }
    Ok(exit::for_run_state(&o.state))
}

pub fn print_outcome(o: &RunOutcome) {
    let s = &o.summary;
    println!("run {} ({}): {}", o.run, o.pipeline, o.state);
    if let (Some(a), Some(b)) = (&s.source_image, &s.new_image) {
        println!("  image      {a} → {b}");
    }
    if !s.installed_updates.is_empty() {
        let ids: Vec<&str> = s.installed_updates.iter().map(|u| u.id.as_str()).collect();
        println!("  installed  {} update(s): {}", ids.len(), ids.join(", "));
    }
    if s.nothing_to_install {
        println!("  updates    none selected: no image made, nothing published (patch.when_empty = \"publish\" bakes one anyway)");
    }
    if let Some(r) = &s.roll {
        println!(
            "  roll       {} replaced in {:.1}s (lower bound {:.1}s, ratio {:.2}); min in service {} (floor {})",
            r.replaced,
            r.seconds,
            r.lower_bound_seconds,
            if r.lower_bound_seconds > 0.0 {
                r.seconds / r.lower_bound_seconds
            } else {
                0.0
            },
            r.min_in_service,
            r.floor
        );
        if !r.left_on_old_image.is_empty() {
            println!(
                "  left       {} on the old image by the policy: {}",
                r.left_on_old_image.len(),
                r.left_on_old_image.join(", ")
            );
        }
        if !r.warm_pool_replaced.is_empty() {
            println!(
                "  warm pool  {} on the old image terminated before the roll (the pool refilled from the new launch spec): {}",
                r.warm_pool_replaced.len(),
                r.warm_pool_replaced.join(", ")
            );
        }
    }
    if !s.api_calls.is_empty() {
        let total: u64 = s.api_calls.values().sum();
        println!(
            "  api calls  {total} ({})",
            s.api_calls
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if s.rolled_back {
        println!(
            "  rolled back to {}",
            s.source_image.as_ref().map(|i| i.to_string()).unwrap_or_default()
        );
    }
    if let Some(e) = &s.error {
        println!("  error      {e}");
    }
}

//! `repave`: the command-line binary.

mod cli;
mod commands;
mod context;
mod demo;
mod exit;
mod output;
mod progress;

use clap::Parser;
use cli::{Cli, Command, LocalCommand};
use exit::Exit;

fn main() {
    let cli = Cli::parse();
    // The package tool and the demo app run inside instances: keep them
    // free of the CLI's logging and runtime choices.
    if let Command::Pkg { args } = &cli.command {
        std::process::exit(repave_local::pkg::main(args));
    }
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log that cannot be written (a full disk under the fleet
        // process's daemon.log, a closed pipe) must not panic the request
        // that logged: losing a line beats losing the request half-done.
        .log_internal_errors(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let json = cli.json;
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(exit) if exit.is_quiet() => exit.code,
        Err(Exit { code, error }) => {
            if json {
                let v = serde_json::json!({ "error": format!("{error:#}"), "exit_code": code });
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                eprintln!("error: {error:#}");
            }
            code
        }
    };
    // Don't wait for stray blocking tasks (progress bars, sockets).
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> Result<i32, Exit> {
    match &cli.command {
        Command::Demo(args) => demo::run(&cli, args).await,
        Command::Init { force } => commands::init::run(&cli, *force),
        Command::Validate => commands::validate::run(&cli),
        Command::Run(p) => commands::run::start(&cli, p, repave_store::RunKind::Run).await,
        Command::Bake(p) => commands::run::start(&cli, p, repave_store::RunKind::Bake).await,
        Command::Roll(p) => commands::run::start(&cli, p, repave_store::RunKind::Roll).await,
        Command::Rollback(p) => commands::run::start(&cli, p, repave_store::RunKind::Rollback).await,
        Command::Plan(p) => commands::plan::run(&cli, p.pipeline.as_deref()).await,
        Command::Gc { dry_run } => commands::gc::run(&cli, *dry_run).await,
        Command::IamPolicy { pipeline, principal } => {
            commands::iam_policy::run(&cli, pipeline.pipeline.as_deref(), principal.as_deref()).await
        }
        Command::Cancel { run } => commands::cancel::run(&cli, run),
        Command::Resume { run } => commands::run::resume(&cli, run).await,
        Command::Status { pipeline } => commands::status::run(&cli, pipeline.as_deref()).await,
        Command::Images(p) => commands::images::run(&cli, p.pipeline.as_deref()).await,
        Command::History { pipeline, limit } => commands::history::run(&cli, pipeline.as_deref(), *limit),
        Command::Logs { run } => commands::history::logs(&cli, run),
        Command::Simulate(args) => commands::simulate::run(&cli, args).await,
        Command::Serve(args) => commands::serve::run(&cli, args).await,
        Command::Schedule { command } => commands::schedule::run(&cli, command),
        Command::Local { command } => match command {
            LocalCommand::Up => commands::local::up(&cli).await,
            LocalCommand::Down => commands::local::down(&cli).await,
            LocalCommand::Daemon { state_dir, feed } => commands::local::daemon(state_dir, feed.as_deref()).await,
        },
        Command::DemoApp { port, root } => {
            repave_local::demo_app::run(*port, root.clone())
                .await
                .map_err(Exit::failed)?;
            Ok(exit::OK)
        }
        Command::Load {
            target,
            connections,
            seconds,
        } => demo::load_command(&cli, target, *connections, *seconds).await,
        Command::Pkg { .. } => unreachable!("handled before the runtime starts"),
    }
}

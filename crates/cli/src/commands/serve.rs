//! `repave serve`: the scheduler, the HTTP API and the dashboard in one
//! process, over the same `repave.toml` and state directory as the CLI.

use crate::cli::Cli;
use crate::exit::{self, Exit};
use anyhow::{anyhow, Context as _};
use repave_core::ids::{Clock as _, SystemClock};
use repave_server::{Server, ServerOptions};
use repave_store::{Lease, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
#[command(after_help = LOCAL_FLEET_NOTE)]
pub struct ServeArgs {
    /// Address to listen on (default: `[server] listen`, else
    /// 127.0.0.1:8787). Port 0 picks a free port; the address is printed.
    #[arg(long)]
    pub listen: Option<String>,
    /// How long SIGTERM waits for runs to reach a safe point (meanwhile
    /// HTTP connections get at most 5s to finish their request).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// How long an HTTP client may take to send a request's headers,
    /// counted from when it connects or got its last response: closes slow
    /// clients and idle keep-alive connections.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub header_read_timeout: Duration,
}

/// What `--help` says (and the log at start and exit) about the local fleet.
const LOCAL_FLEET_NOTE: &str = "Local pipelines: the local fleet process that serve starts (or finds) keeps running, \
and its instances keep serving, after serve exits, like a cloud outlives its console. \
`repave local down` (with the same --config or --state-dir) stops it.";

fn parse_duration(s: &str) -> Result<Duration, String> {
    repave_core::duration::parse_duration(s)
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).and_then(|d| {
        if d.is_zero() {
            Err("must be longer than 0s".into())
        } else {
            Ok(d)
        }
    })
}

pub async fn run(cli: &Cli, args: &ServeArgs) -> Result<i32, Exit> {
    let loaded = crate::context::load(cli)?;
    let config = loaded.config.clone();
    // Before the fleet process starts: a bad window is a config error.
    repave_server::check_windows(&config, SystemClock.now()).map_err(Exit::bad_input)?;
    let token = token(&config.server)?;
    let store = loaded.store()?;
    // One server per state dir, checked before anything starts.
    let lease = take_serve_lease(&store, &loaded.state_dir)?;
    let mut providers = BTreeMap::new();
    let mut engine = BTreeMap::new();
    for (name, pipeline) in &config.pipelines {
        providers.insert(name.clone(), loaded.provider(pipeline).await?);
        engine.insert(name.clone(), loaded.engine_options(pipeline));
    }
    let local_fleet = config
        .pipelines
        .values()
        .any(|p| p.provider == repave_core::config::ProviderKind::Local);
    if local_fleet {
        eprintln!("note: {}", fleet_keeps_running(&loaded.state_dir));
    }
    let listen = args.listen.clone().unwrap_or_else(|| config.server.listen.clone());
    let opts = ServerOptions {
        config,
        token,
        store: store.clone(),
        providers,
        clock: Arc::new(SystemClock),
        engine,
        scheduler_tick: Duration::from_secs(30),
        shutdown_grace: args.shutdown_grace,
        header_read_timeout: args.header_read_timeout,
    };
    let server = Server::new(opts).map_err(Exit::bad_input)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))
        .map_err(Exit::failed)?;
    let addr = listener.local_addr().map_err(|e| Exit::failed(anyhow!(e)))?;
    // Tests and scripts read the address from the first line.
    println!("listening on http://{addr}");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("shutting down: runs stop at the next safe point and resume on the next start");
        stop.cancel();
    });
    let renewing = tokio::spawn(renew_serve_lease(store.clone(), lease.clone(), shutdown.clone()));
    let served = server.serve(listener, shutdown.clone()).await;
    shutdown.cancel();
    let _ = renewing.await;
    if let Err(e) = store.release_lease(&lease) {
        tracing::warn!(error = %e, "could not release the serve lease; it expires by itself");
    }
    if local_fleet {
        eprintln!("{}", fleet_keeps_running(&loaded.state_dir));
    }
    served.map_err(Exit::failed)?;
    Ok(exit::OK)
}

fn fleet_keeps_running(state_dir: &std::path::Path) -> String {
    format!(
        "the local fleet in {dir} keeps running after serve exits: `repave --state-dir {dir} local down` stops it",
        dir = state_dir.display()
    )
}

/// The lease that makes `repave serve` one per state dir. Its name is not a
/// valid group name, so it never meets a group's lease.
const SERVE_LEASE: &str = "@serve";
const SERVE_LEASE_TTL: Duration = Duration::from_secs(30);

/// Take the serve lease, or say who holds it (exit code 4). A holder that
/// died without releasing it (kill -9) is taken over at once when its pid is
/// gone from this host, instead of after the TTL.
fn take_serve_lease(store: &Store, state_dir: &std::path::Path) -> Result<Lease, Exit> {
    let holder = format!("repave serve pid {}", std::process::id());
    let acquire = || store.acquire_lease(SERVE_LEASE, &holder, SERVE_LEASE_TTL, SystemClock.now());
    match acquire() {
        Ok(lease) => Ok(lease),
        Err(StoreError::LeaseHeld { holder: other, .. }) => {
            let pid = other
                .strip_prefix("repave serve pid ")
                .and_then(|p| p.parse::<libc::pid_t>().ok());
            // SAFETY: signal 0 only checks that the process exists.
            let dead = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0);
            if dead {
                if let Ok(Some(stale)) = store.current_lease(SERVE_LEASE) {
                    if stale.holder == other {
                        store.release_lease(&stale).map_err(Exit::failed)?;
                        eprintln!("note: took over from {other}, which is gone");
                        return acquire().map_err(Exit::failed);
                    }
                }
            }
            Err(Exit {
                code: exit::LEASED,
                error: anyhow!(
                    "another server ({other}) is serving the state dir {}: stop it first, or give this one its own --state-dir",
                    state_dir.display()
                ),
            })
        }
        Err(e) => Err(Exit::failed(e)),
    }
}

/// Renew the serve lease until shutdown.
async fn renew_serve_lease(store: Arc<Store>, mut lease: Lease, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SERVE_LEASE_TTL / 3) => {}
        }
        match store.renew_lease(&lease, SERVE_LEASE_TTL, SystemClock.now()) {
            Ok(renewed) => lease = renewed,
            Err(e) => tracing::error!(error = %e, "could not renew the serve lease"),
        }
    }
}

/// The API token: `[server] token`, else the variable `token_env` names,
/// else `REPAVE_TOKEN`. Read once here, never elsewhere.
fn token(s: &repave_core::config::ServerConfig) -> Result<Option<String>, Exit> {
    if let Some(t) = &s.token {
        return Ok(Some(t.clone()));
    }
    let var = s.token_env.as_deref().unwrap_or("REPAVE_TOKEN");
    match std::env::var(var) {
        Ok(t) if t.len() >= 16 => Ok(Some(t)),
        Ok(_) => Err(Exit::bad_input(anyhow!(
            "${var}: the API token must be at least 16 characters"
        ))),
        Err(_) if s.token_env.is_some() => Err(Exit::bad_input(anyhow!("${var} (server.token_env) is not set"))),
        Err(_) => {
            eprintln!("warning: no API token (set REPAVE_TOKEN): mutating API calls are refused");
            Ok(None)
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

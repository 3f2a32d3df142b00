//! Requests/s through the local load balancer and directly to one instance,
//! side by side in one run, with the same keep-alive load generator
//! (`repave load`). Loopback only; bounded in time.
//!
//! `cargo bench -p repave --bench balancer` (env: BENCH_CONNECTIONS, default
//! 256; BENCH_SECONDS, default 5; BENCH_INSTANCES, default 16).

use std::process::Command;

fn repave(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_repave"))
        .args(args)
        .output()
        .expect("run repave");
    assert!(
        out.status.success(),
        "repave {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let connections = env("BENCH_CONNECTIONS", 256).to_string();
    let seconds = env("BENCH_SECONDS", 5).to_string();
    let instances = env("BENCH_INSTANCES", 16);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("repave.toml");
    std::fs::write(
        &config,
        format!("[providers.local.groups.web]\nmin = 1\nmax = {instances}\ndesired = {instances}\nport = {port}\n\n[pipelines.web]\nprovider = \"local\"\ngroup = \"web\"\nparameter = \"latestAmi\"\n"),
    )
    .unwrap();
    let c = config.display().to_string();
    repave(&["--config", &c, "--json", "local", "up"]);
    let status = repave(&["--config", &c, "--json", "status"]);
    let direct = status[0]["instances"][0]["address"]
        .as_str()
        .expect("instance address")
        .to_string();
    let balancer = format!("127.0.0.1:{port}");
    let run = |target: &str| {
        repave(&[
            "--json",
            "load",
            "--target",
            target,
            "--connections",
            &connections,
            "--seconds",
            &seconds,
        ])
    };
    let via = run(&balancer);
    let one = run(&direct);
    let _ = Command::new(env!("CARGO_BIN_EXE_repave"))
        .args(["--config", &c, "local", "down"])
        .output();
    let rps = |v: &serde_json::Value| v["per_second"].as_f64().unwrap_or(0.0);
    println!("balancer benchmark: {connections} keep-alive connections, {seconds}s each, {instances} instances behind the balancer");
    println!(
        "  through the balancer     {:>9.0} req/s  ({} failed)",
        rps(&via),
        via["failed"]
    );
    println!(
        "  directly to one instance {:>9.0} req/s  ({} failed)",
        rps(&one),
        one["failed"]
    );
    println!("  ratio balancer / direct  {:>9.2}", rps(&via) / rps(&one).max(1.0));
}

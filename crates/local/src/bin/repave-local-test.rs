//! Test-only binary dispatching exactly like the real `repave` CLI will:
//! `local daemon --state-dir D [--feed F]`, `demo-app --port P --root R`,
//! `pkg scan|install`.

use std::path::PathBuf;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("pkg") => repave_local::pkg::main(&args[1..]),
        Some("demo-app") => {
            let port: u16 = flag(&args, "--port").and_then(|p| p.parse().ok()).expect("--port");
            let root = PathBuf::from(flag(&args, "--root").expect("--root"));
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            match rt.block_on(repave_local::demo_app::run(port, root)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("demo-app: {e}");
                    1
                }
            }
        }
        Some("local") if args.get(1).map(String::as_str) == Some("daemon") => {
            let opts = repave_local::daemon::DaemonOptions {
                state_dir: PathBuf::from(flag(&args, "--state-dir").expect("--state-dir")),
                exe: std::env::current_exe().expect("current exe"),
                feed: flag(&args, "--feed").map(PathBuf::from),
            };
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            match rt.block_on(repave_local::daemon::run(opts)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("daemon: {e}");
                    1
                }
            }
        }
        _ => {
            eprintln!("usage: repave-local-test local daemon|demo-app|pkg");
            2
        }
    };
    std::process::exit(code);
}

//! The provider conformance suite (`repave_sim::conformance`) against the
//! local provider: the same contract the sim provider passes.

mod common;

use common::{FleetGuard, Repave};
use repave_core::ImageId;
use repave_sim::conformance::{run, Fixture};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_provider_passes_the_conformance_suite() {
    // The only test in this binary: no fleet lock needed.
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("repave.toml");
    std::fs::write(
        &config,
        format!("[providers.local.groups.web]\nmin = 1\nmax = 4\ndesired = 2\nport = {port}\n\n[pipelines.web]\nprovider = \"local\"\ngroup = \"web\"\nparameter = \"latestAmi\"\n"),
    )
    .unwrap();
    let c = config.display().to_string();
    let state = dir.path().join(".repave");
    let _guard = FleetGuard(state.clone());
    Repave::new()
        .args(["--config", c.as_str(), "local", "up"])
        .run()
        .expect_code(0);
    let st = Repave::new()
        .args(["--config", c.as_str(), "--json", "status"])
        .run()
        .expect_code(0)
        .json();
    let image = st[0]["parameter"]["versions"][0]["value"].as_str().unwrap().to_string();
    let client = repave_local::LocalClient::connect(&state).await.unwrap();
    let fx = Fixture {
        group: "web".into(),
        image: ImageId::new(image),
        scratch_parameter: "conformance-scratch".into(),
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(100),
    };
    if let Err(v) = run(&client, &fx).await {
        panic!("local provider breaks the provider contract: {v}");
    }
}

//! The provider conformance suite (`repave_sim::conformance`) against the
//! local provider: the same contract the sim provider passes.

use crate::common;

use common::Fleet;
use repave_core::ImageId;
use repave_sim::conformance::{run, Fixture};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_provider_passes_the_conformance_suite() {
    // The only test in this binary: no fleet lock needed.
    let fleet = Fleet::new(1, 2, 4, "");
    fleet.up();
    let image = fleet.status()["parameter"]["versions"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let client = repave_local::LocalClient::connect(&fleet.state_dir()).await.unwrap();
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

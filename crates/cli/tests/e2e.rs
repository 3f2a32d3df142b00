//! The whole pipeline on the local provider: real processes, real HTTP,
//! real SQLite.

use crate::common;

use common::{fleet_lock, Fleet, FleetGuard, Repave};
use serde_json::Value;
use std::path::Path;

fn demo(dir: &Path, extra: &[&str]) -> common::Ran {
    let state = dir.join("state");
    let _guard = FleetGuard(state.clone());
    let s = state.display().to_string();
    let mut args = vec!["demo", "--json", "--state-dir", s.as_str()];
    args.extend_from_slice(extra);
    Repave::new().args(args).run()
}

/// The names of the steps in a run summary.
fn step_names(v: &Value) -> Vec<&str> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

#[test]
fn demo_eight_instances_zero_failed_requests() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let ran = demo(dir.path(), &["--instances", "8"]).expect_code(0);
    let v = ran.json();
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let total = v["requests"]["total"].as_u64().unwrap();
    assert!(total > 500, "steady load throughout: {total} requests");
    assert_eq!(v["requests"]["failed"], 0, "errors: {}", v["requests"]["errors"]);
    assert_eq!(v["instances_on_new_image"], 8);
    assert_eq!(v["leaked_instances"], 0, "{}", v["leaked"]);
    let min = v["roll"]["min_in_service"].as_u64().unwrap();
    let floor = v["roll"]["floor"].as_u64().unwrap();
    assert_eq!(floor, 8);
    assert!(min >= floor, "min in service {min} < floor {floor}");
    assert_ne!(v["image"]["before"], v["image"]["after"]);
    assert!(v["roll"]["lower_bound_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["roll"]["max_live"].as_u64().unwrap() <= v["roll"]["max_total"].as_u64().unwrap());
    // Severities Critical+Important, at least 3 days old: the demo feed has some.
    let installed: Vec<&str> = v["installed_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert!(!installed.is_empty());
    for u in v["installed_updates"].as_array().unwrap() {
        let sev = u["severity"].as_str().unwrap();
        assert!(sev == "Critical" || sev == "Important", "{u}");
    }
    // The new image answered real traffic.
    let after = v["image"]["after"].as_str().unwrap();
    assert!(v["requests"]["by_image"][after].as_u64().unwrap() > 0);
    let report = std::fs::read_to_string(v["report"].as_str().unwrap()).unwrap();
    assert!(report.contains("<svg id=\"capacity\"") && report.contains("<svg id=\"requests\""));
}

/// `--os amazon-linux`: the feed and the selection in Amazon Linux's words
/// (advisory severities Critical/Important/Medium/Low, types
/// Security/Bugfix/...), tried without an account.
#[test]
fn demo_on_amazon_linux_selects_in_its_vocabulary() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let ran = demo(dir.path(), &["--instances", "2", "--os", "amazon-linux"]).expect_code(0);
    let v = ran.json();
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(v["requests"]["failed"], 0, "errors: {}", v["requests"]["errors"]);
    let installed = v["installed_updates"].as_array().unwrap();
    assert!(!installed.is_empty(), "{v:#}");
    for u in installed {
        let sev = u["severity"].as_str().unwrap();
        assert!(sev == "Critical" || sev == "Important", "{u}");
        let class = u["classification"].as_str().unwrap();
        assert!(
            ["Security", "Bugfix", "Enhancement", "Recommended", "Newpackage"].contains(&class),
            "{u}"
        );
    }
    assert_eq!(v["instances_on_new_image"], 2);
}

/// A selection that resolves to nothing (nothing in the feed is old
/// enough): the demo's run ends without an image and publishes nothing;
/// the fleet keeps serving the old image.
#[test]
fn demo_with_nothing_selected_publishes_nothing() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let ran = demo(
        dir.path(),
        &["--instances", "2", "--os", "amazon-linux", "--min-age-days", "1000"],
    )
    .expect_code(0);
    let v = ran.json();
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(v["nothing_to_install"], true, "{v:#}");
    assert_eq!(v["image"]["after"], Value::Null, "{v:#}");
    assert_eq!(v["installed_updates"].as_array().unwrap().len(), 0);
    assert_eq!(v["requests"]["failed"], 0);
    assert_eq!(v["leaked_instances"], 0, "{}", v["leaked"]);
    let steps = step_names(&v);
    assert!(
        !steps.contains(&"publish") && !steps.contains(&"create_image"),
        "{steps:?}"
    );
}

#[test]
fn unhealthy_new_image_rolls_back_without_failed_requests() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let ran = demo(dir.path(), &["--instances", "4", "--break-image"]).expect_code(3);
    let v = ran.json();
    assert_eq!(v["state"], "rolled_back", "{v:#}");
    assert_eq!(v["rolled_back"], true);
    assert_eq!(v["requests"]["failed"], 0, "errors: {}", v["requests"]["errors"]);
    assert_eq!(v["leaked_instances"], 0, "{}", v["leaked"]);
    // Every request was answered by the old image.
    let before = v["image"]["before"].as_str().unwrap();
    let by_image = v["requests"]["by_image"].as_object().unwrap();
    assert_eq!(by_image.keys().collect::<Vec<_>>(), vec![before], "{by_image:?}");
    assert!(v["error"].as_str().unwrap().contains("not healthy"), "{}", v["error"]);
    let steps = step_names(&v);
    assert!(
        steps.contains(&"rollback_roll") && steps.contains(&"rollback_verify"),
        "{steps:?}"
    );

    // Parameter and launch spec back on the old image, the fleet with them.
    let config = dir.path().join("state/repave.toml");
    let c = config.display().to_string();
    let status = Repave::new()
        .args(["--config", c.as_str(), "--json", "status"])
        .run()
        .expect_code(0)
        .json();
    let p = &status[0];
    let versions = p["parameter"]["versions"].as_array().unwrap();
    assert_eq!(versions.last().unwrap()["value"], before);
    assert!(versions.len() >= 3, "published, then restored: {versions:?}");
    for i in p["instances"].as_array().unwrap() {
        assert_eq!(i["image"], before, "{i}");
    }
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

fn local_config(dir: &Path, port: u16, extra_pipeline: &str, feed: Option<&str>) -> String {
    let feed = feed.map(|f| format!("feed = {f:?}\n")).unwrap_or_default();
    format!(
        r#"state_dir = "state"

[providers.local]
{feed}
[providers.local.groups.web]
min = 2
max = 4
desired = 2
port = {port}

[pipelines.web]
provider = "local"
group = "web"
parameter = "latestAmi"
{extra_pipeline}
"#
    )
    .replace("{dir}", &dir.display().to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(config: &str) -> Value {
    Repave::new()
        .args(["--config", config, "--json", "status"])
        .run()
        .expect_code(0)
        .json()
}

#[test]
fn failed_patch_publishes_nothing_and_leaves_no_builder() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    // A hostile feed entry: an update that writes outside the instance root.
    let feed = r#"[{"id":"KB-EVIL","package":"evil","version":"1","severity":"Critical","classification":"SecurityUpdates","released":"2020-01-01","files":{"/etc/passwd":"x"}}]"#;
    let feed_path = write(dir.path(), "feed.json", feed);
    let config = write(
        dir.path(),
        "repave.toml",
        &local_config(dir.path(), free_port(), "", Some(&feed_path)),
    );
    let _guard = FleetGuard(dir.path().join("state"));
    let before = status(&config);
    let ran = Repave::new()
        .args(["--config", config.as_str(), "--json", "run", "web"])
        .run()
        .expect_code(1);
    let v = ran.json();
    assert_eq!(v["state"], "failed");
    let err = v["summary"]["error"].as_str().unwrap();
    assert!(err.contains("patch"), "{err}");
    let after = status(&config);
    assert_eq!(
        before[0]["parameter"]["versions"], after[0]["parameter"]["versions"],
        "parameter untouched"
    );
    assert_eq!(
        before[0]["group"]["launch_spec"], after[0]["group"]["launch_spec"],
        "launch spec untouched"
    );
    // The hostile update did not write outside the instance root.
    assert_ne!(std::fs::read_to_string("/etc/passwd").unwrap(), "x");
    // The builder is gone: no instance of this run is alive.
    let logs = Repave::new()
        .args([
            "--config",
            config.as_str(),
            "--json",
            "logs",
            v["run"].as_str().unwrap(),
        ])
        .run()
        .expect_code(0)
        .json();
    let events: Vec<&str> = logs["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        events.iter().any(|m| m.starts_with("terminating builder")),
        "{events:#?}"
    );
    let builder = logs["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "launch_builder")
        .unwrap()["output"]["builder"]
        .as_str()
        .unwrap()
        .to_string();
    let instances_root = dir.path().join("state/local/instances").join(&builder);
    assert!(!instances_root.exists(), "builder root {instances_root:?} left behind");
}

#[test]
fn patch_timeout_fails_the_run() {
    let _l = fleet_lock();
    let fleet = Fleet::new(2, 2, 4, "[pipelines.web.patch]\ntimeout = \"1ms\"\n");
    let config = fleet.config.clone();
    let v = Repave::new()
        .args(["--config", config.as_str(), "--json", "run"])
        .run()
        .expect_code(1)
        .json();
    assert_eq!(v["state"], "failed");
    let err = v["summary"]["error"].as_str().unwrap();
    assert!(err.contains("TimedOut") || err.contains("timed out"), "{err}");
    let st = status(&config);
    assert_eq!(
        st[0]["parameter"]["versions"].as_array().unwrap().len(),
        1,
        "nothing published"
    );
}

#[test]
fn run_then_history_logs_status_and_rollback() {
    let _l = fleet_lock();
    let fleet = Fleet::new(2, 2, 4, "[pipelines.web.rollout]\nwarmup = \"500ms\"\n");
    let config = fleet.config.clone();
    let v = Repave::new()
        .args(["--config", config.as_str(), "--json", "run", "web"])
        .run()
        .expect_code(0)
        .json();
    let new_image = v["summary"]["new_image"].as_str().unwrap().to_string();
    let source = v["summary"]["source_image"].as_str().unwrap().to_string();
    let st = status(&config);
    let versions = st[0]["parameter"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["value"], new_image.as_str());
    assert!(versions[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "repave-previous"));
    let hist = Repave::new()
        .args(["--config", config.as_str(), "--json", "history"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(hist.as_array().unwrap().len(), 1);
    let logs = Repave::new()
        .args(["--config", config.as_str(), "logs", v["run"].as_str().unwrap()])
        .run()
        .expect_code(0);
    assert!(
        logs.stdout.contains("create_image") && logs.stdout.contains("publish"),
        "{}",
        logs.stdout
    );

    // Rollback: parameter, launch spec and fleet back on the source image.
    let rb = Repave::new()
        .args(["--config", config.as_str(), "--json", "rollback"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(rb["summary"]["new_image"], source.as_str());
    let st = status(&config);
    assert_eq!(
        st[0]["parameter"]["versions"].as_array().unwrap().last().unwrap()["value"],
        source.as_str()
    );
    for i in st[0]["instances"].as_array().unwrap() {
        assert_eq!(i["image"], source.as_str());
    }
}

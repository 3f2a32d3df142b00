//! Disk trouble while creating an image: the image store on a full, then a
//! read-only, filesystem. The run fails cleanly with the OS's reason, the
//! builder is gone, and nothing is published. Needs root for `mount`
//! (CI runs as root); without it the test fails, it never skips.

use crate::common;

use common::{fleet_lock, Fleet, Repave};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_path_buf())
    }
    fn remount(&self, opts: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn used_kib(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=used", "-k"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[test]
fn full_or_read_only_image_store_fails_cleanly() {
    let _l = fleet_lock();
    let fleet = Fleet::new(2, 2, 4, "");
    let c = fleet.config.clone();
    // The image store gets its own small filesystem.
    let blobs = Mount::tmpfs(&fleet.state_dir().join("local/blobs"), "4m");
    fleet.up();
    let before = Repave::new()
        .args(["--config", c.as_str(), "--json", "status"])
        .run()
        .expect_code(0)
        .json();

    for (what, opts, reason) in [
        ("full", format!("size={}k", blobs.used_kib().max(4)), "No space left"),
        ("read-only", "ro".to_string(), "Read-only file system"),
    ] {
        blobs.remount(&opts);
        let ran = Repave::new().args(["--config", c.as_str(), "--json", "run"]).run();
        assert_eq!(ran.code, 1, "{what}: {}\n{}", ran.stdout, ran.stderr);
        let v = ran.json();
        assert_eq!(v["state"], "failed", "{what}");
        let err = v["summary"]["error"].as_str().unwrap();
        assert!(err.contains("create_image") || err.contains("image"), "{what}: {err}");
        assert!(err.contains(reason), "{what}: the OS's reason is in the message: {err}");
        let after = Repave::new()
            .args(["--config", c.as_str(), "--json", "status"])
            .run()
            .expect_code(0)
            .json();
        assert_eq!(
            before[0]["parameter"], after[0]["parameter"],
            "{what}: nothing published"
        );
        assert_eq!(
            before[0]["group"]["launch_spec"], after[0]["group"]["launch_spec"],
            "{what}"
        );
        let images = Repave::new()
            .args(["--config", c.as_str(), "--json", "images"])
            .run()
            .expect_code(0)
            .json();
        assert_eq!(
            images.as_array().unwrap().len(),
            1,
            "{what}: no half-made image registered: {images}"
        );
        // The builder is gone.
        let roots = std::fs::read_dir(fleet.state_dir().join("local/instances"))
            .unwrap()
            .count();
        assert_eq!(roots, 2, "{what}: builder root left behind");
        blobs.remount("rw,size=4m");
    }
    // With room again, the same pipeline runs through.
    let v = Repave::new()
        .args(["--config", c.as_str(), "--json", "run"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["state"], "succeeded");
}

/// The whole state dir (journal, fleet state, instance roots) on a nearly
/// full filesystem: the run fails at launch and its cleanup may fail too,
/// so the run can be left `running` with a builder half-made. With room
/// again, `gc` ends the run and sweeps what it left: nothing leaked.
#[test]
fn a_full_state_dir_leaves_nothing_gc_cannot_sweep() {
    let _l = fleet_lock();
    let fleet = Fleet::new(2, 2, 4, "");
    let c = fleet.config.clone();
    let state = Mount::tmpfs(&fleet.state_dir(), "64m");
    fleet.up();
    let members: Vec<String> = fleet.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    // Leave about 160 KB free.
    state.remount(&format!("size={}k", state.used_kib() + 160));
    let ran = Repave::new().args(["--config", c.as_str(), "--json", "run"]).run();
    assert_ne!(ran.code, 0, "a run on a full disk cannot succeed: {}", ran.stdout);
    state.remount("size=64m");

    let dry = Repave::new()
        .args(["--config", c.as_str(), "--json", "gc", "--dry-run"])
        .run()
        .expect_code(0)
        .json();
    let swept = Repave::new()
        .args(["--config", c.as_str(), "--json", "gc"])
        .run()
        .expect_code(0)
        .json();
    // Whatever the run left is gone: only the members' roots remain, no
    // run is still `running`, and gc said beforehand what it would do.
    let roots: Vec<String> = std::fs::read_dir(fleet.state_dir().join("local/instances"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for r in &roots {
        assert!(
            members.contains(r),
            "root {r} left behind; gc said {swept} (dry run {dry})"
        );
    }
    let hist = Repave::new()
        .args(["--config", c.as_str(), "--json", "history"])
        .run()
        .expect_code(0)
        .json();
    for r in hist.as_array().unwrap() {
        assert_ne!(r["state"], "running", "a run left running: {r}; gc said {swept}");
    }
    let leaks = Repave::new()
        .args(["--config", c.as_str(), "--json", "status"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(leaks[0]["instances"].as_array().unwrap().len(), 2);
    // And the next run goes through.
    let v = Repave::new()
        .args(["--config", c.as_str(), "--json", "run"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["state"], "succeeded");
    // Stop the fleet while its state is still mounted.
    fleet.repave(["local", "down"]).expect_code(0);
}

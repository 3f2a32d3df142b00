//! What production does to a run: two runs racing for one group, slow
//! requests in flight while their instance drains, many connections during
//! a roll.

use crate::common;

use common::{fleet_lock, Fleet, FleetGuard, Repave};
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

/// A fleet of `desired` (room to double) with a short warmup.
fn fleet(desired: u32) -> Fleet {
    let fleet = Fleet::new(
        desired,
        desired,
        desired * 2,
        "[pipelines.web.rollout]
warmup = \"500ms\"
",
    );
    fleet.up();
    fleet
}

#[test]
fn two_runs_on_one_group_exactly_one_proceeds() {
    let _l = fleet_lock();
    let fleet = fleet(2);
    let c = fleet.config.clone();
    let spawn = || {
        std::process::Command::new(common::exe())
            .args(["--config", c.as_str(), "--json", "run"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    assert_eq!(codes, [0, 4], "one succeeds, one is refused with exit 4");
    let (winner, loser) = if a.status.code() == Some(0) { (a, b) } else { (b, a) };
    let won: serde_json::Value = serde_json::from_slice(&winner.stdout).unwrap();
    let lost: serde_json::Value = serde_json::from_slice(&loser.stdout).unwrap();
    let holder = won["run"].as_str().unwrap();
    let err = lost["error"].as_str().unwrap();
    assert!(err.contains(holder), "the refusal names the holder {holder}: {err}");
    // The refused run created nothing: one image was baked.
    let images = Repave::new()
        .args(["--config", c.as_str(), "--json", "images"])
        .run()
        .expect_code(0)
        .json();
    let baked: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["tags"]["repave:run"].as_str())
        .collect();
    assert_eq!(baked, vec![holder], "only the holder's run baked an image");
}

/// One request with a body that takes `ms` to produce; returns the status line.
fn slow_get(addr: &str, ms: u64) -> Result<String, String> {
    let s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(format!("GET /slow?ms={ms} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    Ok(status)
}

#[test]
fn slow_requests_in_flight_during_drain_all_complete() {
    let _l = fleet_lock();
    let fleet = fleet(3);
    let (c, port) = (fleet.config.clone(), fleet.port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Six clients, each sending 2–5 s requests back to back for the whole
    // roll: whichever instance drains has several in flight.
    let clients: Vec<_> = (0..6u64)
        .map(|i| {
            let stop = stop.clone();
            let addr = format!("127.0.0.1:{port}");
            std::thread::spawn(move || {
                let mut results = Vec::new();
                let mut n = i;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && results.len() < 50 {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let ms = 2000 + (n >> 33) % 3001;
                    results.push((ms, slow_get(&addr, ms)));
                }
                results
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let v = Repave::new()
        .args(["--config", c.as_str(), "--json", "run"])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["summary"]["roll"]["replaced"], 3);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for h in clients {
        for (ms, r) in h.join().unwrap() {
            total += 1;
            let status = r.unwrap_or_else(|e| panic!("{ms} ms request failed: {e}"));
            assert!(status.contains(" 200 "), "{ms} ms request: {status:?}");
        }
    }
    assert!(total >= 12, "slow requests were in flight through the roll: {total}");
}

#[test]
fn many_connections_during_a_roll_of_sixteen() {
    let _l = fleet_lock();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _guard = FleetGuard(state.clone());
    let s = state.display().to_string();
    let v = Repave::new()
        .args([
            "demo",
            "--json",
            "--instances",
            "16",
            "--clients",
            "256",
            "--state-dir",
            s.as_str(),
        ])
        .run()
        .expect_code(0)
        .json();
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["requests"]["clients"], 256);
    assert_eq!(v["requests"]["failed"], 0, "{}", v["requests"]["errors"]);
    assert_eq!(v["instances_on_new_image"], 16);
    assert!(v["roll"]["min_in_service"].as_u64() >= v["roll"]["floor"].as_u64());
}

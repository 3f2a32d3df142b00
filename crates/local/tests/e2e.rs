//! End-to-end tests of the local provider: a real daemon, real instance
//! processes, real HTTP through the balancer.

mod common;

use common::*;
use repave_core::duration::HumanDuration;
use repave_core::patch::{PatchSelection, Update};
use repave_core::provider::{
    CommandDocument, CommandRequest, CommandResult, CommandStatus, Commands, CreateImageRequest, Groups, Images,
    InstallReport, InstanceSpec, InstanceState, Instances, LaunchRequest, Parameters, TargetState, Traffic,
};
use repave_core::{ErrorKind, ImageId, InstanceId};
use repave_local::{ImageSource, LocalClient};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn launch_req(image: &ImageId, command: Vec<String>, token: &str) -> LaunchRequest {
    LaunchRequest {
        image: image.clone(),
        spec: InstanceSpec {
            command,
            ..Default::default()
        },
        tags: BTreeMap::from([("repave:role".to_string(), "builder".to_string())]),
        token: token.into(),
    }
}

async fn builder(fx: &Fixture) -> InstanceId {
    let image = fx
        .client
        .import_image(ImageSource::BuiltinDemo, "base", Default::default())
        .await
        .unwrap();
    fx.client.launch(launch_req(&image, vec![], "")).await.unwrap().id
}

async fn run_command(
    client: &LocalClient,
    instance: &InstanceId,
    doc: CommandDocument,
    timeout: Duration,
) -> CommandResult {
    let req = CommandRequest {
        instance: instance.clone(),
        document: doc,
        timeout,
        token: String::new(),
    };
    let id = client.send_command(req).await.unwrap();
    wait_for("command result", Duration::from_secs(15), || async {
        let r = client.command_result(&id).await.unwrap();
        r.status.is_terminal().then_some(r)
    })
    .await
}

fn shell(script: &str, env: &[(&str, &str)]) -> CommandDocument {
    CommandDocument::Shell {
        script: script.into(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_is_immutable() {
    let fx = Fixture::start().await;
    let id = builder(&fx).await;
    let root = fx.root(&id);
    std::fs::write(root.join("etc/app.txt"), "v1").unwrap();
    let req = CreateImageRequest {
        instance: id.clone(),
        name: "img".into(),
        tags: Default::default(),
        token: "tok".into(),
    };
    let err = fx.client.create_image(req.clone()).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Permanent,
        "running instance must be refused: {err}"
    );
    fx.client.stop_instance(&id).await.unwrap();
    let image = fx.client.create_image(req.clone()).await.unwrap();
    assert_eq!(
        fx.client.create_image(req).await.unwrap(),
        image,
        "same token, same image"
    );

    // Writing to the stopped instance's root must not reach the image.
    std::fs::write(root.join("etc/app.txt"), "v2").unwrap();
    std::fs::write(root.join("README"), "scribbled").unwrap();
    let copy = fx.client.launch(launch_req(&image, vec![], "")).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(fx.root(&copy.id).join("etc/app.txt")).unwrap(),
        "v1"
    );
    assert!(std::fs::read_to_string(fx.root(&copy.id).join("README"))
        .unwrap()
        .starts_with("repave demo base image"));

    // Blobs are read-only; the unique one goes with its image.
    let blobs = fx.state_dir().join("local/blobs");
    let count = || std::fs::read_dir(&blobs).unwrap().count();
    for b in std::fs::read_dir(&blobs).unwrap() {
        assert!(b.unwrap().metadata().unwrap().permissions().readonly());
    }
    let before = count();
    fx.client.terminate_instance(&copy.id).await.unwrap();
    fx.client.deregister_image(&image).await.unwrap();
    assert_eq!(count(), before - 1, "only the blob of etc/app.txt=v1 was unique");
    assert!(fx.client.describe_image(&image).await.unwrap_err().is_not_found());
    let report = fx.client.leak_report().await.unwrap();
    assert!(!report.roots.contains(&copy.id));
    let t = report.instances.iter().find(|i| i.id == copy.id).unwrap();
    assert_eq!(t.state, InstanceState::Terminated);
    assert_eq!(
        t.tags.get("repave:role").map(String::as_str),
        Some("builder"),
        "terminated keeps tags"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_history_labels_description() {
    let fx = Fixture::start().await;
    let c = &fx.client;
    assert!(c.get_parameter("/golden").await.unwrap_err().is_not_found());
    assert_eq!(
        c.put_parameter("/golden", "img-1", Some("golden image")).await.unwrap(),
        1
    );
    assert_eq!(c.put_parameter("/golden", "img-2", None).await.unwrap(), 2);
    let p = c.get_parameter("/golden").await.unwrap();
    assert_eq!(
        (p.value.as_str(), p.version, p.description.as_deref()),
        ("img-2", 2, Some("golden image"))
    );
    c.label_parameter_version("/golden", 1, &["previous".into()])
        .await
        .unwrap();
    assert_eq!(c.put_parameter("/golden", "img-3", Some("new text")).await.unwrap(), 3);
    c.label_parameter_version("/golden", 2, &["previous".into()])
        .await
        .unwrap();
    let h = c.parameter_history("/golden").await.unwrap();
    let summary: Vec<(u64, &str, Vec<String>)> = h
        .iter()
        .map(|p| (p.version, p.value.as_str(), p.labels.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "img-1", vec![]),
            (2, "img-2", vec!["previous".to_string()]),
            (3, "img-3", vec![])
        ]
    );
    assert_eq!(h[2].description.as_deref(), Some("new text"));
    assert!(c
        .label_parameter_version("/golden", 9, &["x".into()])
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_replaces_killed_instance_while_serving() {
    let fx = Fixture::start().await;
    let setup = group("web", 2);
    let created = fx.client.ensure_group(setup.clone()).await.unwrap();
    assert!(created.created);
    assert!(!fx.client.ensure_group(setup).await.unwrap().created, "idempotent");
    assert_eq!(
        fx.client.get_parameter("/web/golden").await.unwrap().value,
        created.image.to_string()
    );
    let addr = fx.client.balancer_address("web").await.unwrap();
    let before = wait_healthy(&fx.client, "web", 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (stop, answers, addr) = (stop.clone(), answers.clone(), addr.clone());
        tokio::spawn(async move {
            let http = http_client();
            while !stop.load(Ordering::SeqCst) {
                let a = get(&http, &addr, "/").await;
                answers.lock().unwrap().push(a.map(|a| a.status));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = before[0].clone();
    unsafe { libc::kill(fx.pid(&victim), libc::SIGKILL) };
    let after = wait_for("replacement", Duration::from_secs(15), || async {
        let ids = wait_healthy(&fx.client, "web", 2).await;
        (!ids.contains(&victim)).then_some(ids)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let answers = answers.lock().unwrap().clone();
    assert!(answers.len() > 20, "load ran: {}", answers.len());
    let bad: Vec<_> = answers.iter().filter(|a| **a != Ok(200)).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests failed: {:?}",
        bad.len(),
        answers.len(),
        bad
    );
    assert!(after.contains(&before[1]));
    let gone = fx
        .client
        .describe_instances(std::slice::from_ref(&victim))
        .await
        .unwrap();
    assert_eq!(gone[0].state, InstanceState::Terminated);
    let stats = fx.client.balancer_stats("web").await.unwrap();
    assert_eq!(stats.failed, 0);
    assert!(stats.proxied as usize >= answers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_target_finishes_in_flight_request() {
    let fx = Fixture::start().await;
    fx.client.ensure_group(group("drain", 2)).await.unwrap();
    let addr = fx.client.balancer_address("drain").await.unwrap();
    let members = wait_healthy(&fx.client, "drain", 2).await;
    let slow = {
        let addr = addr.clone();
        tokio::spawn(async move { get(&http_client(), &addr, "/slow?ms=2000").await })
    };
    let busy = wait_for("request in flight", Duration::from_secs(5), || async {
        let h = fx.client.target_health("drain").await.unwrap();
        h.iter().find(|t| t.in_flight == Some(1)).map(|t| t.instance.clone())
    })
    .await;
    let other = members.iter().find(|m| **m != busy).unwrap().clone();
    fx.client.deregister_target("drain", &busy).await.unwrap();
    let h = fx.client.target_health("drain").await.unwrap();
    assert_eq!(
        h.iter().find(|t| t.instance == busy).unwrap().state,
        TargetState::Draining
    );
    let http = http_client();
    for _ in 0..10 {
        let a = get(&http, &addr, "/").await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(
            a.target.as_deref(),
            Some(other.as_str()),
            "new requests avoid the draining target"
        );
    }
    let a = slow.await.unwrap().unwrap();
    assert_eq!((a.status, a.target.as_deref()), (200, Some(busy.as_str())));
    wait_for("drain finished", Duration::from_secs(3), || async {
        let h = fx.client.target_health("drain").await.unwrap();
        (h.iter().find(|t| t.instance == busy).unwrap().state == TargetState::Unused).then_some(())
    })
    .await;
    // Still deregistered: the reconciler must not put it back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = fx.client.target_health("drain").await.unwrap();
    assert_eq!(
        h.iter().find(|t| t.instance == busy).unwrap().state,
        TargetState::Unused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_timeout_output_exit_env() {
    let fx = Fixture::start().await;
    let id = builder(&fx).await;
    let c = &fx.client;
    let started = std::time::Instant::now();
    let r = run_command(c, &id, shell("sleep 30", &[]), Duration::from_millis(500)).await;
    assert_eq!(r.status, CommandStatus::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));

    let r = run_command(
        c,
        &id,
        shell(
            "head -c 300000 /dev/zero | tr '\\0' x; echo END; echo oops >&2; exit 3",
            &[],
        ),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!((r.status, r.exit_code), (CommandStatus::Failed, Some(3)));
    assert!(r.stdout.len() <= 64 * 1024 + 100, "bounded: {}", r.stdout.len());
    assert!(r.stdout.contains("truncated") && r.stdout.ends_with("xEND\n"));
    assert_eq!(r.stderr, "oops\n");

    let nasty = "$(touch pwned); `touch pwned2` \"quoted\" 'single' ; | & \n newline $HOME";
    let r = run_command(
        c,
        &id,
        shell("printf %s \"$VALUE\"; pwd", &[("VALUE", nasty)]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r.status, CommandStatus::Success);
    let root = std::fs::canonicalize(fx.root(&id)).unwrap();
    assert_eq!(r.stdout, format!("{nasty}{}\n", root.display()));
    assert!(!root.join("pwned").exists() && !root.join("pwned2").exists());

    let r = run_command(c, &id, shell("printf 'a\\377b'", &[]), Duration::from_secs(10)).await;
    assert_eq!(r.stdout, "a\u{FFFD}b", "invalid UTF-8 converted lossily");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkg_scan_install_with_reboot() {
    let fx = Fixture::start().await;
    let id = builder(&fx).await;
    let c = &fx.client;
    let root = fx.root(&id);
    let all = PatchSelection::default();
    let scan = |sel: PatchSelection| {
        let id = id.clone();
        async move {
            let r = run_command(
                c,
                &id,
                CommandDocument::ScanUpdates { selection: sel },
                Duration::from_secs(10),
            )
            .await;
            assert_eq!(r.status, CommandStatus::Success, "{r:?}");
            serde_json::from_str::<Vec<Update>>(&r.stdout).unwrap()
        }
    };
    let install = |ids: Vec<String>| {
        let id = id.clone();
        async move {
            let doc = CommandDocument::InstallUpdates {
                selection: PatchSelection::default(),
                ids,
                allow_reboot: false,
            };
            let r = run_command(c, &id, doc, Duration::from_secs(10)).await;
            assert_eq!(r.status, CommandStatus::Success, "{r:?}");
            serde_json::from_str::<InstallReport>(&r.stdout).unwrap()
        }
    };
    let pending = scan(all.clone()).await;
    assert_eq!(pending.len(), 12);
    let critical = scan(PatchSelection {
        severities: vec!["Critical".into()],
        min_age_days: 30,
        ..Default::default()
    })
    .await;
    assert_eq!(
        critical.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        vec!["openssl-3.0.13"]
    );

    let ids: Vec<String> = pending.iter().map(|u| u.id.clone()).collect();
    let first = install(ids.clone()).await;
    assert!(first.reboot_required);
    let names: Vec<&str> = first.installed.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(names, vec!["openssl-3.0.13", "openssl-3.0.15", "kernel-6.1.0-18"]);
    assert!(root.join("var/run/reboot-required").exists());
    let blocked = install(ids.clone()).await;
    assert!(
        blocked.installed.is_empty() && blocked.reboot_required,
        "nothing installs before the reboot"
    );

    c.reboot_instance(&id).await.unwrap();
    assert!(!root.join("var/run/reboot-required").exists(), "reboot clears var/run");
    let rest = scan(all.clone()).await;
    assert_eq!(rest.len(), 9);
    let second = install(rest.iter().map(|u| u.id.clone()).collect()).await;
    assert!(!second.reboot_required);
    assert_eq!(second.installed.len(), 9);
    assert!(scan(all).await.is_empty());
    let installed: Vec<Update> =
        serde_json::from_str(&std::fs::read_to_string(root.join("var/lib/pkg/installed.json")).unwrap()).unwrap();
    let version = |p: &str| installed.iter().find(|u| u.package == p).unwrap().version.clone();
    assert_eq!(installed.iter().filter(|u| u.package == "openssl").count(), 1);
    assert_eq!(
        (version("openssl"), version("curl"), version("libxml2")),
        ("3.0.15".into(), "8.6.0".into(), "2.11.7".into())
    );
    assert_eq!(
        std::fs::read_to_string(root.join("usr/share/doc/kernel/VERSION")).unwrap(),
        "6.1.0-18\n"
    );
}

#[test]
fn pkg_tool_rejects_unknown_ids_and_escaping_paths() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = repave_local::feed::demo_feed();
    bad[0].files.insert("../escape".into(), "x".into());
    bad[1].files.insert("/etc/evil".into(), "x".into());
    let feed = dir.path().join("feed.json");
    std::fs::write(&feed, serde_json::to_vec(&bad).unwrap()).unwrap();
    let run = |args: &[&str], ids: &str, today: &str| {
        std::process::Command::new(EXE)
            .args(args)
            .current_dir(dir.path())
            .env("REPAVE_FEED", &feed)
            .env("REPAVE_UPDATE_IDS", ids)
            .env("REPAVE_TODAY", today)
            .env("REPAVE_SELECTION", r#"{"min_age_days": 10}"#)
            .output()
            .unwrap()
    };
    for (ids, needle) in [
        ("nope-1.0", "nope-1.0"),
        ("openssl-3.0.13", "../escape"),
        ("openssl-3.0.15", "/etc/evil"),
    ] {
        let out = run(&["pkg", "install"], ids, "2030-01-01");
        assert_eq!(out.status.code(), Some(1), "{ids}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{ids}");
    }
    assert!(!dir.path().parent().unwrap().join("escape").exists());
    // REPAVE_TODAY decides ages: far in the future everything is old enough.
    let out = run(&["pkg", "scan"], "", "2099-01-01");
    assert_eq!(serde_json::from_slice::<Vec<Update>>(&out.stdout).unwrap().len(), 12);
    let out = run(&["pkg", "scan"], "", "1999-01-01");
    assert!(serde_json::from_slice::<Vec<Update>>(&out.stdout).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_results_and_tokens_outlive_the_fleet_process() {
    let fx = Fixture::start().await;
    let id = builder(&fx).await;
    let send = |client: LocalClient, script: &'static str, token: &'static str| {
        let id = id.clone();
        async move {
            client
                .send_command(CommandRequest {
                    instance: id,
                    document: shell(script, &[]),
                    timeout: Duration::from_secs(60),
                    token: token.into(),
                })
                .await
                .unwrap()
        }
    };
    let done = send(fx.client.clone(), "echo finished", "run-1/scan").await;
    wait_for("command done", Duration::from_secs(15), || async {
        let r = fx.client.command_result(&done).await.unwrap();
        r.status.is_terminal().then_some(())
    })
    .await;
    let running = send(fx.client.clone(), "sleep 30", "run-1/patch").await;
    // The fleet process dies with one command finished and one running.
    let pid = fx.client.daemon_pid().await.unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("daemon gone", Duration::from_secs(5), || async {
        LocalClient::connect(fx.state_dir()).await.is_err().then_some(())
    })
    .await;
    let client = LocalClient::ensure_running(fx.state_dir(), std::path::Path::new(EXE), None)
        .await
        .unwrap();
    // The finished command's result is still there ...
    let r = client.command_result(&done).await.unwrap();
    assert_eq!((r.status, r.stdout.trim()), (CommandStatus::Success, "finished"));
    // ... the running one says what happened instead of vanishing ...
    let r = client.command_result(&running).await.unwrap();
    assert_eq!(r.status, CommandStatus::Failed);
    assert!(
        r.stderr.contains("fleet process stopped while this command ran"),
        "{r:?}"
    );
    // ... and a retried token still names the command it started.
    assert_eq!(send(client.clone(), "echo again", "run-1/scan").await, done);
    assert_ne!(send(client.clone(), "echo new", "run-2/scan").await, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_and_restarted_adopts_instances() {
    let fx = Fixture::start().await;
    fx.client.ensure_group(group("phoenix", 2)).await.unwrap();
    let addr = fx.client.balancer_address("phoenix").await.unwrap();
    let members = wait_healthy(&fx.client, "phoenix", 2).await;
    let described = fx.client.describe_instances(&members).await.unwrap();
    let pid = fx.client.daemon_pid().await.unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("daemon gone", Duration::from_secs(5), || async {
        LocalClient::connect(fx.state_dir()).await.is_err().then_some(())
    })
    .await;

    // The fleet keeps running without its daemon.
    let http = http_client();
    for inst in &described {
        let a = get(&http, inst.address.as_ref().unwrap(), "/").await.unwrap();
        assert_eq!(a.status, 200);
        assert!(a.body.contains(inst.id.as_str()));
    }

    let client = LocalClient::ensure_running(fx.state_dir(), std::path::Path::new(EXE), None)
        .await
        .unwrap();
    assert_ne!(client.daemon_pid().await.unwrap(), pid);
    assert_eq!(
        fx.client.daemon_pid().await.unwrap(),
        client.daemon_pid().await.unwrap(),
        "an existing client reaches the restarted daemon"
    );
    let again = wait_healthy(&client, "phoenix", 2).await;
    let (mut a, mut b) = (members.clone(), again.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same instances, adopted");
    let answer = wait_for("balancer serving", Duration::from_secs(5), || async {
        get(&http_client(), &addr, "/").await.ok().filter(|a| a.status == 200)
    })
    .await;
    assert!(members.iter().any(|m| answer.body.contains(m.as_str())));
    let leaks = client.leak_report().await.unwrap();
    for m in &members {
        assert!(leaks.live_processes.contains(m));
    }
    // And the adopted instances still get replaced when they die.
    unsafe { libc::kill(fx.pid(&members[0]), libc::SIGKILL) };
    wait_for("replacement after adoption", Duration::from_secs(15), || async {
        let ids = wait_healthy(&client, "phoenix", 2).await;
        (!ids.contains(&members[0])).then_some(())
    })
    .await;

    let final_members = wait_healthy(&client, "phoenix", 2).await;
    let pids: Vec<i32> = final_members.iter().map(|m| fx.pid(m)).collect();
    client.shutdown().await.unwrap();
    let report_dir = fx.state_dir().join("local/instances");
    let roots: Vec<_> = std::fs::read_dir(report_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("root").exists())
        .collect();
    assert!(roots.is_empty(), "shutdown removes roots");
    for pid in pids {
        assert!(
            !repave_local::process::pid_alive(pid),
            "instance process {pid} survived shutdown"
        );
    }
    assert!(LocalClient::connect(fx.state_dir()).await.is_err(), "daemon exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_tracking_follows_the_request_rate() {
    let fx = Fixture::start().await;
    let c = &fx.client;
    let mut setup = group("tracked", 1);
    setup.scaling = Some(repave_core::config::Scaling {
        target_requests_per_instance: 20,
        scale_in_cooldown: HumanDuration::from_secs(1),
    });
    c.ensure_group(setup).await.unwrap();
    wait_healthy(c, "tracked", 1).await;
    let addr = c.balancer_address("tracked").await.unwrap();
    // Four clients as fast as they go: far more than 20 req/s per instance,
    // so the group grows to max (4), every request answered meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failed, addr) = (stop.clone(), failed.clone(), addr.clone());
        clients.push(tokio::spawn(async move {
            let http = http_client();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                match get(&http, &addr, "/").await {
                    Ok(a) if a.status == 200 => {}
                    other => failed.lock().unwrap().push(format!("{other:?}")),
                }
            }
        }));
    }
    wait_for("scale out to max", Duration::from_secs(20), || async {
        (c.describe_group("tracked").await.unwrap().desired == 4).then_some(())
    })
    .await;
    wait_healthy(c, "tracked", 4).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    assert!(failed.lock().unwrap().is_empty(), "{:?}", failed.lock().unwrap());
    // Quiet: back to min, one instance per cooldown.
    wait_for("scale in to min", Duration::from_secs(30), || async {
        let g = c.describe_group("tracked").await.unwrap();
        (g.desired == 1 && g.members.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_scaling_and_unhealthy_replacement() {
    let fx = Fixture::start().await;
    let c = &fx.client;
    let setup = group("scale", 2);
    let created = c.ensure_group(setup).await.unwrap();
    let old = wait_healthy(c, "scale", 2).await;
    for bad in [0, 5] {
        let e = c.set_desired_capacity("scale", bad).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "desired {bad}: {e}");
    }
    let v2 = c
        .create_launch_spec_version(&created.launch_spec, &created.image)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        c.describe_launch_spec(&v2).await.unwrap().spec.command,
        repave_core::config::default_command()
    );
    c.set_group_launch_spec("scale", &v2).await.unwrap();
    c.set_desired_capacity("scale", 3).await.unwrap();
    let three = wait_healthy(c, "scale", 3).await;
    let newest = three.iter().find(|m| !old.contains(m)).unwrap().clone();
    let g = c.describe_group("scale").await.unwrap();
    assert_eq!(
        g.members.iter().find(|m| m.id == newest).unwrap().launch_spec,
        Some(v2.clone())
    );

    // Scale-in takes the oldest launch spec first, oldest instance first.
    let oldest = g
        .members
        .iter()
        .filter(|m| m.id != newest)
        .min_by_key(|m| m.launched_at)
        .unwrap()
        .id
        .clone();
    c.set_desired_capacity("scale", 2).await.unwrap();
    let two = wait_healthy(c, "scale", 2).await;
    assert!(two.contains(&newest) && !two.contains(&oldest), "{two:?}");

    c.terminate_group_instance("scale", &newest, true).await.unwrap();
    let one = wait_healthy(c, "scale", 1).await;
    assert_eq!(c.describe_group("scale").await.unwrap().desired, 1);
    let e = c.terminate_group_instance("scale", &one[0], true).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "below min: {e}");

    // A member failing its health check past the grace period is replaced.
    std::fs::write(fx.root(&one[0]).join("etc/demo-app.conf"), "health = fail\n").unwrap();
    let replaced = wait_for("unhealthy replaced", Duration::from_secs(15), || async {
        let ids = wait_healthy(c, "scale", 1).await;
        (ids[0] != one[0]).then_some(ids)
    })
    .await;
    assert_eq!(
        c.describe_instances(&one).await.unwrap()[0].state,
        InstanceState::Terminated
    );
    assert_eq!(replaced.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_graceful_and_start_resumes() {
    let fx = Fixture::start().await;
    let c = &fx.client;
    let image = c
        .import_image(ImageSource::BuiltinDemo, "base", Default::default())
        .await
        .unwrap();
    let req = launch_req(&image, repave_core::config::default_command(), "launch-1");
    let inst = c.launch(req.clone()).await.unwrap();
    assert_eq!(c.launch(req).await.unwrap().id, inst.id, "same token, same instance");
    let addr = inst.address.clone().unwrap();
    wait_for("app up", Duration::from_secs(5), || async {
        c.probe_health(&inst.id, "/health").await.unwrap().healthy.then_some(())
    })
    .await;
    let body = get(&http_client(), &addr, "/").await.unwrap().body;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["instance"], inst.id.as_str());
    assert_eq!(v["image"], image.as_str());
    assert_eq!(v["packages"].as_array().unwrap().len(), 6);

    let slow = {
        let addr = addr.clone();
        tokio::spawn(async move { get(&http_client(), &addr, "/slow?ms=1500").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop_instance(&inst.id).await.unwrap();
    assert_eq!(
        slow.await.unwrap().unwrap().status,
        200,
        "in-flight request finished during stop"
    );
    assert_eq!(
        c.describe_instances(std::slice::from_ref(&inst.id)).await.unwrap()[0].state,
        InstanceState::Stopped
    );
    assert!(!c.probe_health(&inst.id, "/health").await.unwrap().healthy);
    c.start_instance(&inst.id).await.unwrap();
    wait_for("app back", Duration::from_secs(5), || async {
        c.probe_health(&inst.id, "/health").await.unwrap().healthy.then_some(())
    })
    .await;
    c.terminate_instance(&inst.id).await.unwrap();
    let leaks = c.leak_report().await.unwrap();
    assert!(leaks.live_processes.is_empty() && leaks.roots.is_empty(), "{leaks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_with_allow_reboot_reboots_the_instance() {
    let fx = Fixture::start().await;
    let id = builder(&fx).await;
    let doc = CommandDocument::InstallUpdates {
        selection: PatchSelection::default(),
        ids: vec!["kernel-6.1.0-18".into(), "curl-8.5.0".into()],
        allow_reboot: true,
    };
    let r = run_command(&fx.client, &id, doc.clone(), Duration::from_secs(10)).await;
    assert_eq!(r.status, CommandStatus::Success, "{r:?}");
    let report: InstallReport = serde_json::from_str(&r.stdout).unwrap();
    assert!(report.reboot_required);
    assert_eq!(report.installed.len(), 1);
    // The provider rebooted it (as SSM does with AllowReboot), so the next
    // install proceeds.
    assert!(!fx.root(&id).join("var/run/reboot-required").exists());
    let r = run_command(&fx.client, &id, doc, Duration::from_secs(10)).await;
    let report: InstallReport = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        report.installed.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        vec!["curl-8.5.0"]
    );
    assert!(!report.reboot_required);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_running_twice_concurrently_starts_one_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = FleetGuard(dir.path());
    let exe = std::path::Path::new(EXE);
    let (a, b) = tokio::join!(
        LocalClient::ensure_running(dir.path(), exe, None),
        LocalClient::ensure_running(dir.path(), exe, None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.daemon_pid().await.unwrap(), b.daemon_pid().await.unwrap());
    a.shutdown().await.unwrap();
    assert!(LocalClient::connect(dir.path()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_image_runs_a_custom_command() {
    let fx = Fixture::start().await;
    let src = fx.state_dir().join("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/hello"), "hello from the image\n").unwrap();
    let image = fx
        .client
        .import_image(ImageSource::Directory(src), "custom", Default::default())
        .await
        .unwrap();
    // No shell: the argument reaches the program verbatim, placeholders filled.
    let cmd = [
        "sh",
        "-c",
        "cat bin/hello > out.txt; echo \"$REPAVE_INSTANCE_ID {port}\" >> out.txt; sleep 30",
    ];
    let inst = fx
        .client
        .launch(launch_req(&image, cmd.map(String::from).to_vec(), ""))
        .await
        .unwrap();
    let out = fx.root(&inst.id).join("out.txt");
    let port = inst.address.as_ref().unwrap().rsplit(':').next().unwrap().to_string();
    let text = wait_for("process output", Duration::from_secs(5), || async {
        std::fs::read_to_string(&out).ok().filter(|t| t.lines().count() == 2)
    })
    .await;
    assert_eq!(text, format!("hello from the image\n{} {port}\n", inst.id));
    let started = std::time::Instant::now();
    fx.client.terminate_instance(&inst.id).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM reached the process group"
    );
}

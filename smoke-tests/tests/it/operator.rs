//! What operators use: the API document, metrics, the dashboard, the CLI client.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use smoke_tests::harness::{artefact_dir, coordinator_binary, Coordinator, TempDir};
use smoke_tests::http::Client;

use crate::agents::{submit, wait_status};
use crate::sim::{Behaviour, SimAgent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let doc = admin.get("/openapi.json").await.unwrap();
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15);
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let concrete = path.replace("{id}", "nope").replace("{agent_id}", "nope");
            // A stream never ends: its route is checked with HEAD (same route,
            // no body).
            let streams = operation["responses"]["200"]["content"]
                .get("text/event-stream")
                .is_some();
            let method = if streams {
                "HEAD".to_owned()
            } else {
                method.to_uppercase()
            };
            let r = admin
                .send(&method, &concrete, Some(&json!({})))
                .await
                .unwrap();
            if streams {
                assert_eq!(r.status, 200, "{method} {path}");
            }
            assert_ne!(
                r.body["error"], "no_route",
                "{method} {path} is documented but not served"
            );
            assert_ne!(r.body["error"], "method_not_allowed", "{method} {path}");
        }
    }
    assert_eq!(
        admin.get("/api/no/such/route").await.unwrap().body["error"],
        "no_route"
    );
    assert_eq!(
        admin.send("PUT", "/api/tasks", None).await.unwrap().status,
        405
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_queue_moving() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let mut anon = Client::new(&c.addr, None);
    let before = anon
        .get("/metrics")
        .await
        .unwrap()
        .body
        .as_str()
        .unwrap()
        .to_owned();
    let _a = SimAgent::start(&c, "m1", &[], Behaviour::Complete).await;
    for i in 0..3 {
        let id = submit(&mut admin, json!({"description": format!("m{i}")})).await;
        wait_status(&mut admin, &id, "completed", Duration::from_secs(10)).await;
    }
    let after = anon
        .get("/metrics")
        .await
        .unwrap()
        .body
        .as_str()
        .unwrap()
        .to_owned();
    for name in [
        "coordinator_tasks_submitted_total",
        "coordinator_tasks_assigned_total",
        "coordinator_tasks_completed_total",
        "coordinator_submit_to_assign_seconds_count",
        "coordinator_submit_to_complete_seconds_count",
        "coordinator_writer_batch_rows_count",
        "coordinator_writer_commit_seconds_count",
    ] {
        assert!(
            metric(&after, name) >= metric(&before, name) + 3.0,
            "{name} did not move:\n{after}"
        );
    }
    assert!(
        after.contains("coordinator_agents{state=\"idle\"} 1"),
        "{after}"
    );
    assert!(
        after.contains("coordinator_tasks{status=\"completed\",priority=\"normal\"} 3"),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_agents_and_counts_in_a_browser() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ensure-chromium.sh");
    let status = Command::new("bash")
        .arg(script)
        .status()
        .expect("run ensure-chromium.sh");
    assert!(
        status.success(),
        "chromium is needed for this test and could not be installed"
    );

    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let _busy = SimAgent::start(&c, "dash-busy", &["gpu"], Behaviour::Ignore).await;
    let _free = SimAgent::start(&c, "dash-free", &[], Behaviour::Complete).await;
    submit(
        &mut admin,
        json!({"description": "held forever", "needed_capabilities": ["gpu"]}),
    )
    .await;
    let done = submit(&mut admin, json!({"description": "quick one"})).await;
    wait_status(&mut admin, &done, "completed", Duration::from_secs(10)).await;
    for i in 0..3 {
        submit(&mut admin, json!({"description": format!("waits {i}"), "priority": "high", "needed_capabilities": ["nobody-has-this"]})).await;
    }
    let state = admin.get("/api/dashboard/state").await.unwrap().body;
    assert_eq!(state["queue_depth"]["high"], 3, "{state}");
    assert_eq!(state["agents"].as_array().unwrap().len(), 2);

    let profile = TempDir::new("chromium-profile");
    let url = format!("http://{}/dashboard?token={}", c.addr, c.admin_token);
    let chromium = |extra: &[&str]| -> std::process::Output {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=4000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium")
    };
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).into_owned();
    assert!(
        dom.contains("data-agent=\"dash-busy\""),
        "busy agent card missing:\n{dom}"
    );
    assert!(
        dom.contains("data-agent=\"dash-free\""),
        "free agent card missing"
    );
    assert!(
        dom.contains("card assigned"),
        "the busy agent is shown as assigned"
    );
    assert!(
        dom.contains("id=\"lane-high\">3<"),
        "queue depth by lane shown"
    );
    assert!(dom.contains("quick one"), "recent completion shown");
    assert!(!dom.contains("cdt_"), "the token is not left in the page");

    let shot = artefact_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&[
        "--window-size=1280,900",
        &format!("--screenshot={}", shot.display()),
    ]);
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_wait_returns_with_the_result() {
    let c = Coordinator::start(&[]);
    let _a = SimAgent::start(&c, "cli-agent", &[], Behaviour::Complete).await;
    let url = format!("http://{}", c.addr);
    let out = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), c.admin_token.clone());
        move || {
            Command::new(coordinator_binary())
                .args([
                    "submit",
                    "from the cli",
                    "--priority",
                    "high",
                    "--metadata",
                    "{\"k\":1}",
                    "--wait",
                    "--url",
                    &url,
                ])
                .env("COORDINATOR_TOKEN", token)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("completed") && stdout.contains("cli-agent"),
        "{stdout}"
    );

    let list = Command::new(coordinator_binary())
        .args(["tasks", "--json", "--url", &url, "--token", &c.admin_token])
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(body["count"], 1);
    let table = Command::new(coordinator_binary())
        .args(["agents", "--url", &url, "--token", &c.admin_token])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("AGENT"));
    let missing = Command::new(coordinator_binary())
        .args(["task", "nope", "--url", &url, "--token", &c.admin_token])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
}

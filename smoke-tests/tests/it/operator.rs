//! What operators use: the API document, metrics, the CLI client (the dashboard
//! has its own module).

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use smoke_tests::harness::{coordinator_binary, Coordinator};
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

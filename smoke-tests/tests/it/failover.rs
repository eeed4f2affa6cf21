//! Clients given several coordinators: one that cannot be reached is skipped
//! (the HTTP client, the CLI, the agent runner), with the real binary. (Following
//! a standby to its leader needs a PostgreSQL lease; its decisions are tested in
//! `coordinator-transport`'s `failover` and the SDK's tests.)

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use smoke_tests::harness::{coordinator_binary, Coordinator, RunnerProcess, TempDir};
use smoke_tests::http::Client;

use crate::agents::{submit, wait_status};

/// An address nothing listens on (bound, then released).
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    drop(listener);
    addr
}

async fn cli(args: Vec<String>, token: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(coordinator_binary())
            .args(&args)
            .env("COORDINATOR_TOKEN", token)
            .output()
            .expect("run the CLI")
    })
    .await
    .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_cannot_be_reached_is_skipped_for_the_next() {
    let c = Coordinator::start(&[]);
    let dead = dead_addr();

    // The HTTP client (also the load generator's).
    let mut admin = Client::new(&format!("{dead},{}", c.addr), Some(&c.admin_token));
    let stats = admin.get("/api/tasks/stats").await.expect("stats");
    assert_eq!(stats.status, 200, "{:?}", stats.body);
    assert_eq!(admin.addr(), c.addr);

    // The agent runner, its first hub dead.
    let dir = TempDir::new("failover");
    let hubs = format!("ws://{dead}/ws,{}", c.ws_url());
    let _runner = RunnerProcess::start_at(
        &c,
        &hubs,
        "r1",
        r#"sh -c "cat; echo done""#,
        dir.path(),
        &[],
    );

    // The CLI, its first URL dead.
    let urls = format!("http://{dead},http://{}", c.addr);
    let out = cli(
        vec![
            "submit".into(),
            "through the second url".into(),
            "--json".into(),
            "--url".into(),
            urls,
        ],
        c.admin_token.clone(),
    )
    .await;
    assert!(
        out.status.success(),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the CLI prints the receipt as JSON");
    let id = receipt["task_id"].as_str().expect("a task id").to_owned();
    let t = wait_status(&mut admin, &id, "completed", Duration::from_secs(30)).await;
    assert!(
        t["result"]["output"]
            .as_str()
            .is_some_and(|o| o.contains("through the second url")),
        "{}",
        t["result"]
    );
    let _ = submit(&mut admin, json!({"description": "and one more"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_coordinator_can_be_reached_the_cli_fails_naming_each() {
    let (a, b) = (dead_addr(), dead_addr());
    let out = cli(
        vec![
            "tasks".into(),
            "--url".into(),
            format!("http://{a},http://{b}"),
        ],
        "any".into(),
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no coordinator serves") && stderr.contains(&a) && stderr.contains(&b),
        "{stderr}"
    );
}

//! Task options against the real binary: run later (also across a kill -9),
//! submit once (also across a restart), run after (a chain passes results on;
//! a failed step cancels the rest).

use std::time::Duration;

use coordinator_transport::client::{ClientConfig, Connection};
use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage};
use serde_json::{json, Value};
use smoke_tests::harness::{Backend, Coordinator};
use smoke_tests::http::Client;

use crate::agents::{connect, task, wait_status};
use crate::sim::{Behaviour, SimAgent};

on_both_backends!(
    a_delayed_task_runs_after_its_delay_and_not_before,
    a_delayed_task_keeps_its_time_across_kill_9,
    a_repeated_submit_after_a_restart_returns_the_first_task,
    a_three_step_chain_runs_in_order_and_passes_results_on,
    a_failed_middle_step_cancels_the_last,
    a_far_future_backlog_stays_in_storage_and_near_tasks_run_on_time
);

const FINAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The timestamp of the first history entry of `event`.
fn event_at(task: &Value, event: &str) -> u64 {
    task["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["event"] == event))
        .and_then(|e| e["timestamp"].as_u64())
        .unwrap_or_else(|| panic!("no {event} in {task}"))
}

async fn post(client: &mut Client, body: Value) -> (u16, Value) {
    let r = client.post("/api/tasks", &body).await.unwrap();
    (r.status, r.body)
}

/// A repeated submit's answer: 200, the first task's id, `"duplicate": true`.
fn assert_duplicate_of(status: u16, answer: &Value, first_id: &str) {
    assert_eq!(
        (
            status,
            answer["task_id"].as_str(),
            answer["duplicate"].as_bool()
        ),
        (200, Some(first_id), Some(true)),
        "{answer}"
    );
}

async fn a_delayed_task_runs_after_its_delay_and_not_before(backend: Backend) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let _agent = SimAgent::start(&c, "a1", &[], Behaviour::Complete).await;
    let (status, receipt) = post(
        &mut admin,
        json!({"description": "later", "delay_ms": 2000}),
    )
    .await;
    assert_eq!(
        (status, receipt["status"].as_str()),
        (201, Some("scheduled"))
    );
    let id = receipt["task_id"].as_str().unwrap().to_owned();
    let t = task(&mut admin, &id).await;
    let created = t["created_at"].as_u64().unwrap();
    assert_eq!(t["run_at"].as_u64(), Some(created + 2000));
    let t = wait_status(&mut admin, &id, "completed", FINAL_TIMEOUT).await;
    // Measured on the task's own clock: assigned no earlier than its run_at.
    let assigned = event_at(&t, "assigned");
    assert!(
        assigned >= created + 2000,
        "assigned {} ms after submit",
        assigned - created
    );
    assert!(event_at(&t, "released") >= created + 2000);
}

async fn a_delayed_task_keeps_its_time_across_kill_9(backend: Backend) {
    let mut c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let (status, receipt) = post(
        &mut admin,
        json!({"description": "later", "delay_ms": 2000}),
    )
    .await;
    assert_eq!(status, 201);
    let id = receipt["task_id"].as_str().unwrap().to_owned();
    c.kill();
    c.restart();
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let _agent = SimAgent::start(&c, "a1", &[], Behaviour::Complete).await;
    let t = wait_status(&mut admin, &id, "completed", FINAL_TIMEOUT).await;
    let created = t["created_at"].as_u64().unwrap();
    let assigned = event_at(&t, "assigned");
    assert!(
        assigned >= created + 2000,
        "assigned {} ms after submit",
        assigned - created
    );
}

async fn a_repeated_submit_after_a_restart_returns_the_first_task(backend: Backend) {
    let mut c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let (status, first) = post(
        &mut admin,
        json!({"description": "once", "idempotency_key": "order-42"}),
    )
    .await;
    assert_eq!(status, 201);
    let id = first["task_id"].as_str().unwrap().to_owned();
    // A repeat while it is live.
    let (status, again) = post(
        &mut admin,
        json!({"description": "once more", "idempotency_key": "order-42"}),
    )
    .await;
    assert_duplicate_of(status, &again, &id);
    // Finished and out of memory; then a kill -9 and a restart.
    let agent = SimAgent::start(&c, "a1", &[], Behaviour::Complete).await;
    wait_status(&mut admin, &id, "completed", FINAL_TIMEOUT).await;
    agent.kill();
    c.kill();
    c.restart();
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let (status, again) = post(
        &mut admin,
        json!({"description": "a different body", "idempotency_key": "order-42"}),
    )
    .await;
    assert_duplicate_of(status, &again, &id);
    let stats = admin.get("/api/tasks/stats").await.unwrap().body;
    assert_eq!(stats["total"], 1, "{stats}");
    // Too long a key, or both times, is refused.
    let (status, _) = post(
        &mut admin,
        json!({"description": "x", "idempotency_key": "k".repeat(257)}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = post(
        &mut admin,
        json!({"description": "x", "run_at": 1, "delay_ms": 1}),
    )
    .await;
    assert_eq!(status, 422);
}

/// An agent that records each assignment's description and metadata, then
/// completes it with `{"step": description}` or, for a description starting
/// with `fail`, fails it.
async fn recording_agent(
    c: &Coordinator,
    id: &str,
) -> tokio::task::JoinHandle<Vec<(String, Value)>> {
    let config = ClientConfig::new(c.ws_url(), id, c.agent_token(id));
    let mut conn: Connection = connect(&config).await;
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(message) = conn.recv().await {
            let CoordinatorMessage::TaskAssign {
                task_id,
                description,
                metadata,
                generation,
                ..
            } = message
            else {
                continue;
            };
            seen.push((description.clone(), metadata));
            let _ = conn
                .send(&AgentMessage::TaskAccepted {
                    task_id: task_id.clone(),
                })
                .await;
            let reply = if description.starts_with("fail") {
                AgentMessage::TaskFailed {
                    task_id,
                    generation,
                    error: Some("boom".into()),
                    reason: None,
                }
            } else {
                AgentMessage::TaskComplete {
                    task_id,
                    generation,
                    result: json!({"step": description}),
                    tokens_used: None,
                }
            };
            if conn.send(&reply).await.is_err() {
                break;
            }
            // The report counts once it is acknowledged (the connection stays).
            while let Some(message) = conn.recv().await {
                if matches!(message, CoordinatorMessage::TaskAck { .. }) {
                    break;
                }
            }
            if seen.len() == 3 || description.starts_with("fail") {
                break;
            }
        }
        seen
    })
}

async fn a_three_step_chain_runs_in_order_and_passes_results_on(backend: Backend) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let (_, one) = post(&mut admin, json!({"description": "one"})).await;
    let one = one["task_id"].as_str().unwrap().to_owned();
    let (_, two) = post(
        &mut admin,
        json!({"description": "two", "depends_on": [one]}),
    )
    .await;
    assert_eq!(two["status"], "waiting");
    let two = two["task_id"].as_str().unwrap().to_owned();
    let (_, three) = post(
        &mut admin,
        json!({"description": "three", "depends_on": [two], "metadata": {"k": 1}}),
    )
    .await;
    let three = three["task_id"].as_str().unwrap().to_owned();
    let detail = task(&mut admin, &two).await;
    assert_eq!(detail["depends_on"], json!([one]));
    assert_eq!(detail["dependents"], json!([three]));
    let (status, _) = post(
        &mut admin,
        json!({"description": "x", "depends_on": ["no-such-task"]}),
    )
    .await;
    assert_eq!(status, 422);
    let agent = recording_agent(&c, "a1").await;
    let seen = tokio::time::timeout(FINAL_TIMEOUT, agent)
        .await
        .expect("three assignments")
        .unwrap();
    let order: Vec<&str> = seen.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(order, ["one", "two", "three"]);
    assert_eq!(
        seen[1].1["dependencies"],
        json!({ one.clone(): {"step": "one"} })
    );
    assert_eq!(
        seen[2].1,
        json!({"k": 1, "dependencies": { two.clone(): {"step": "two"} }})
    );
    wait_status(&mut admin, &three, "completed", FINAL_TIMEOUT).await;
}

async fn a_failed_middle_step_cancels_the_last(backend: Backend) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let (_, one) = post(&mut admin, json!({"description": "one"})).await;
    let one = one["task_id"].as_str().unwrap().to_owned();
    let (_, two) = post(
        &mut admin,
        json!({"description": "fail two", "max_retries": 0, "depends_on": [one]}),
    )
    .await;
    let two = two["task_id"].as_str().unwrap().to_owned();
    let (_, three) = post(
        &mut admin,
        json!({"description": "three", "depends_on": [two]}),
    )
    .await;
    let three = three["task_id"].as_str().unwrap().to_owned();
    let agent = recording_agent(&c, "a1").await;
    let seen = tokio::time::timeout(FINAL_TIMEOUT, agent)
        .await
        .expect("two assignments")
        .unwrap();
    assert_eq!(seen.len(), 2);
    wait_status(&mut admin, &two, "dead_letter", FINAL_TIMEOUT).await;
    let t = wait_status(&mut admin, &three, "cancelled", FINAL_TIMEOUT).await;
    assert_eq!(t["last_error"], format!("dependency_failed:{two}"));
}

/// A gauge of `/metrics` (panics if it is missing).
async fn gauge(client: &mut Client, name: &str) -> u64 {
    let r = client.get("/metrics").await.unwrap();
    let text = r.body.as_str().unwrap_or_default().to_owned();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// The resident memory of a process in kB (`VmRSS` of `/proc/PID/status`).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn scheduled_count(client: &mut Client) -> u64 {
    let stats = client.get("/api/tasks/stats").await.unwrap().body;
    stats["by_status"]["scheduled"].as_u64().unwrap_or(0)
}

/// Waits until `/metrics` says memory holds at most `tasks` live tasks;
/// returns the live and the scheduled tasks in memory then.
async fn wait_in_memory(client: &mut Client, tasks: u64) -> (u64, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live = gauge(client, "coordinator_tasks_in_memory").await;
        let scheduled = gauge(client, "coordinator_scheduled_tasks_in_memory").await;
        if live <= tasks {
            return (live, scheduled);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{live} live tasks still in memory, waiting for at most {tasks}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Many tasks a day ahead, a few due in seconds: the backlog is stored and
/// not held in memory (the coordinator's own gauges), the near ones run at
/// their time (one within the window at once, one read back from storage as
/// it comes within a 1 s window), a far one can be read and cancelled, and
/// after a restart the backlog is still stored and still not in memory.
async fn a_far_future_backlog_stays_in_storage_and_near_tasks_run_on_time(backend: Backend) {
    const N_FAR: usize = 3_000;
    let mut c = Coordinator::start_on(backend, &["--scheduled-window-ms", "1000"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let pid = c.pid().expect("running");
    let rss_before = rss_kb(pid);
    let day_ms = 24 * 3_600_000u64;
    for batch in 0..N_FAR / 1_000 {
        let tasks: Vec<Value> = (0..1_000)
            .map(|i| json!({"description": format!("far {batch}-{i}"), "delay_ms": day_ms + i}))
            .collect();
        let r = admin
            .post("/api/tasks/batch", &json!({"tasks": tasks}))
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let (_, far) = post(
        &mut admin,
        json!({"description": "far one", "delay_ms": day_ms}),
    )
    .await;
    let far_id = far["task_id"].as_str().unwrap().to_owned();
    let (_, soon) = post(&mut admin, json!({"description": "soon", "delay_ms": 500})).await;
    let (_, read_back) = post(
        &mut admin,
        json!({"description": "read back", "delay_ms": 2_500}),
    )
    .await;
    // The backlog is stored; memory holds at most the one due within the window.
    let (live, scheduled) = wait_in_memory(&mut admin, 1).await;
    let rss_after = rss_kb(pid);
    assert!(scheduled <= 1, "{scheduled} scheduled tasks in memory");
    assert_eq!(scheduled_count(&mut admin).await, N_FAR as u64 + 3);
    println!(
        "{backend:?}: {} scheduled tasks stored, {live} live task(s) in memory, VmRSS {rss_before} kB before, {rss_after} kB after",
        N_FAR + 3
    );
    // Detail and cancel of a task only storage holds.
    assert_eq!(task(&mut admin, &far_id).await["status"], "scheduled");
    let r = admin
        .post(&format!("/api/tasks/{far_id}/cancel"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(task(&mut admin, &far_id).await["status"], "cancelled");
    // The near ones run, no earlier than their time.
    let _agent = SimAgent::start(&c, "a1", &[], Behaviour::Complete).await;
    for receipt in [&soon, &read_back] {
        let id = receipt["task_id"].as_str().unwrap();
        let t = wait_status(&mut admin, id, "completed", FINAL_TIMEOUT).await;
        let run_at = t["run_at"].as_u64().unwrap();
        assert!(event_at(&t, "assigned") >= run_at, "{t}");
    }
    wait_in_memory(&mut admin, 0).await;
    // After a restart: still stored, still not in memory; new work runs.
    c.kill();
    c.restart();
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let (live, scheduled) = wait_in_memory(&mut admin, 0).await;
    assert_eq!((live, scheduled), (0, 0));
    assert_eq!(scheduled_count(&mut admin).await, N_FAR as u64);
    let pid = c.pid().expect("running");
    println!(
        "{backend:?} after a restart: {N_FAR} scheduled tasks stored, none in memory, VmRSS {} kB",
        rss_kb(pid)
    );
    let _agent = SimAgent::start(&c, "a2", &[], Behaviour::Complete).await;
    let (_, later) = post(
        &mut admin,
        json!({"description": "after the restart", "delay_ms": 1_500}),
    )
    .await;
    let id = later["task_id"].as_str().unwrap();
    let t = wait_status(&mut admin, id, "completed", FINAL_TIMEOUT).await;
    assert!(event_at(&t, "assigned") >= t["run_at"].as_u64().unwrap());
}

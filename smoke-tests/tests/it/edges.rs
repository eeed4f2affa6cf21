//! Edges (SPEC §12) with a third-party sidecar written for the original hub's
//! protocol v1: it ignores `task_cancel`, treats every `task_assign` as new work,
//! rejects one as `busy` while it works, and sends `task_recovering` only after
//! its own restart. Each scenario asserts how often the sidecar's work started,
//! how the task ended, that its generation grew by a bounded amount and that the
//! holder's correct result was not refused as stale.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use smoke_tests::harness::{Backend, Coordinator};
use smoke_tests::http::Client;
use smoke_tests::sidecar::{Journal, Sidecar, SidecarConfig, Work};

use crate::agents::{completions, submit, task, task_action};

on_both_backends!(a_coordinator_restart_longer_than_the_recovery_grace_keeps_the_holder_s_result);

/// How long a scenario waits for one step it expects.
const STEP: Duration = Duration::from_secs(15);

/// How much a task's generation may grow around one holder's trouble: the
/// reclaim, the re-attach and one more. A busy-rejection loop grows it by two a
/// round.
const GENERATION_SLACK: u64 = 3;

/// Starts a sidecar for `agent_id` against `c`, shaped by `shape`.
async fn sidecar(
    c: &Coordinator,
    agent_id: &str,
    shape: impl FnOnce(&mut SidecarConfig),
) -> Sidecar {
    let mut config = SidecarConfig::new(agent_id, &c.agent_token(agent_id));
    shape(&mut config);
    Sidecar::start(&c.addr, config).await
}

/// GETs `path` until `check` of the body gives `Some`, at most [`STEP`].
async fn poll<T>(
    admin: &mut Client,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        let body = admin.get(path).await.map(|r| r.body).unwrap_or_default();
        if let Some(value) = check(&body) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until task `id` has `status`, at most `timeout`; on a timeout the
/// failure shows the task and what the sidecar saw.
async fn wait_task(
    admin: &mut Client,
    node: &Sidecar,
    id: &str,
    status: &str,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let t = task(admin, id).await;
        if t["status"] == status {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for task {id} to be {status}: {t}\nthe sidecar saw:\n{}",
            node.journal().summary()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the coordinator shows `agent_id` as connected or not.
async fn wait_connected(admin: &mut Client, agent_id: &str, connected: bool) {
    let what = format!("agent {agent_id} connected = {connected}");
    poll(admin, &format!("/api/agents/{agent_id}"), &what, |agent| {
        (agent["connected"] == connected).then_some(())
    })
    .await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn history_count(task: &Value, event: &str) -> usize {
    task["history"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|e| e["event"] == event).count())
}

/// The sidecar's report on `task_id` was acknowledged with `status` (so not
/// refused as `not_assigned`), and nothing it sent was refused as stale.
fn assert_acknowledged(journal: &Journal, task_id: &str, status: &str) {
    let acks = journal.received_of("task_ack", Some(task_id));
    assert!(
        acks.iter().any(|a| a["status"] == status),
        "the report on {task_id} is acknowledged {status}:\n{}",
        journal.summary()
    );
    let stale: Vec<_> = journal
        .errors()
        .into_iter()
        .filter(|e| e["error"] == "stale_generation")
        .collect();
    assert!(
        stale.is_empty(),
        "no stale_generation: {stale:?}\n{}",
        journal.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_cancel_holds_back_new_work_until_the_late_report() {
    let c = Coordinator::start(&["--cancel-grace-ms", "60000"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let node = sidecar(&c, "node", |_| {}).await;
    let first = submit(&mut admin, json!({"description": "to be cancelled"})).await;
    node.wait_started(&first, 1, STEP).await;
    let second = submit(&mut admin, json!({"description": "queued behind it"})).await;
    assert_eq!(task_action(&mut admin, &first, "cancel").await, 200);
    node.wait(STEP, "task_cancel", |j| {
        (!j.received_of("task_cancel", Some(&first)).is_empty()).then_some(())
    })
    .await;
    // The sidecar ignores the cancel and works on for two more seconds, during
    // which the coordinator must offer it nothing.
    node.finish_in(&first, Duration::from_secs(2));
    node.wait(STEP, "the late report on the cancelled task", |j| {
        (!j.sent_of("task_complete", Some(&first)).is_empty()).then_some(())
    })
    .await;
    let second_generation = node.wait_started(&second, 1, STEP).await;
    node.finish(&second);
    let done = wait_task(&mut admin, &node, &second, "completed", STEP).await;

    let journal = node.journal();
    let cancel_at = journal
        .log
        .iter()
        .position(|l| !l.sent && l.frame["type"] == "task_cancel")
        .expect("task_cancel logged");
    let report_at = journal
        .log
        .iter()
        .position(|l| {
            l.sent && l.frame["type"] == "task_complete" && l.frame["task_id"] == first.as_str()
        })
        .expect("report logged");
    let offered_meanwhile = journal.log[cancel_at..report_at]
        .iter()
        .filter(|l| !l.sent && l.frame["type"] == "task_assign")
        .count();
    assert_eq!(
        offered_meanwhile,
        0,
        "no task offered while the cancelled task's report is awaited:\n{}",
        journal.summary()
    );
    assert!(
        journal.sent_of("task_rejected", None).is_empty(),
        "no busy rejections:\n{}",
        journal.summary()
    );
    assert_acknowledged(&journal, &first, "cancelled");
    assert_acknowledged(&journal, &second, "complete");
    assert_eq!(journal.starts_of(&first), 1);
    assert_eq!(journal.starts_of(&second), 1);

    let cancelled = task(&mut admin, &first).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(
        cancelled["result"],
        Value::Null,
        "the late report changes nothing: {cancelled}"
    );
    assert_eq!(
        done["generation"], 1,
        "assigned once, never bounced: {done}"
    );
    assert_eq!(second_generation, 1);
    assert_eq!(done["last_error"], Value::Null, "{done}");
    assert_eq!(done["result"], json!({"by": "node"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cancel_grace_ends_for_a_sidecar_that_never_reports() {
    let c = Coordinator::start(&["--cancel-grace-ms", "500"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let node = sidecar(&c, "node", |_| {}).await;
    let first = submit(
        &mut admin,
        json!({"description": "cancelled, never reported"}),
    )
    .await;
    node.wait_started(&first, 1, STEP).await;
    let second = submit(&mut admin, json!({"description": "after the grace"})).await;
    assert_eq!(task_action(&mut admin, &first, "cancel").await, 200);
    // The sidecar never reports on the first task; after the grace the
    // coordinator offers it work again (which it, still busy, turns down).
    node.wait(STEP, "an offer of the second task after the cancel", |j| {
        let cancel_at = j
            .log
            .iter()
            .position(|l| !l.sent && l.frame["type"] == "task_cancel")?;
        j.log[cancel_at..]
            .iter()
            .any(|l| {
                !l.sent && l.frame["type"] == "task_assign" && l.frame["task_id"] == second.as_str()
            })
            .then_some(())
    })
    .await;
    assert_eq!(task(&mut admin, &first).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_frame_limit_ends_in_the_dead_letter() {
    let c = Coordinator::start(&["--max-frame-bytes", "4096"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let node = sidecar(&c, "node", |config| {
        config.work = Work::For(Duration::ZERO);
        config.result = json!({"report": "x".repeat(10_000)});
        config.reconnect_after = Some(Duration::from_millis(100));
    })
    .await;
    let max_retries = 1;
    let id = submit(
        &mut admin,
        json!({"description": "answers too much", "max_retries": max_retries}),
    )
    .await;
    let dead = wait_task(
        &mut admin,
        &node,
        &id,
        "dead_letter",
        Duration::from_secs(40),
    )
    .await;
    let journal = node.journal();
    assert_eq!(dead["last_error"], "result_too_large", "{dead}");
    assert_eq!(dead["retry_count"], max_retries + 1, "{dead}");
    assert_eq!(
        journal.starts_of(&id),
        max_retries as u32 + 1,
        "one run per attempt:\n{}",
        journal.summary()
    );
    let generation = dead["generation"].as_u64().unwrap();
    assert!(
        generation <= 2 * (max_retries + 1) + GENERATION_SLACK,
        "generation {generation} bounded: {dead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sidecar_recovers_its_task_instead_of_running_it_again() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let node = sidecar(&c, "node", |_| {}).await;
    let id = submit(
        &mut admin,
        json!({"description": "survives a sidecar restart"}),
    )
    .await;
    let generation = node.wait_started(&id, 1, STEP).await;
    wait_task(&mut admin, &node, &id, "working", STEP).await;
    let stopped = node.kill().await;
    wait_connected(&mut admin, "node", false).await;
    let node = stopped.restart(&c.addr).await;
    node.wait(STEP, "task_continue", |j| {
        (!j.received_of("task_continue", Some(&id)).is_empty()).then_some(())
    })
    .await;
    node.finish(&id);
    let done = wait_task(&mut admin, &node, &id, "completed", STEP).await;

    let journal = node.journal();
    assert_eq!(
        journal.starts_of(&id),
        1,
        "the work ran once:\n{}",
        journal.summary()
    );
    assert_eq!(
        journal.received_of("task_assign", Some(&id)).len(),
        1,
        "no assignment after the restart:\n{}",
        journal.summary()
    );
    assert_acknowledged(&journal, &id, "complete");
    assert_eq!(completions(&done), 1, "{done}");
    assert_eq!(done["last_error"], Value::Null, "{done}");
    assert_eq!(done["result"], json!({"by": "node"}));
    let final_generation = done["generation"].as_u64().unwrap();
    assert!(
        final_generation <= generation + GENERATION_SLACK,
        "generation {generation} -> {final_generation}: {done}"
    );
}

async fn a_coordinator_restart_longer_than_the_recovery_grace_keeps_the_holder_s_result(
    backend: Backend,
) {
    let mut c = Coordinator::start_on(
        backend,
        &["--recovery-grace-ms", "1000", "--sweep-interval-ms", "200"],
    );
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    // Silent while it works: after the restart only its `identify` tells the
    // coordinator that it is back.
    let node = sidecar(&c, "node", |config| config.progress_every = None).await;
    let id = submit(
        &mut admin,
        json!({"description": "outlives the coordinator"}),
    )
    .await;
    let generation = node.wait_started(&id, 1, STEP).await;
    wait_task(&mut admin, &node, &id, "working", STEP).await;
    c.kill();
    node.wait(STEP, "the lost connection", |j| {
        (!j.identified).then_some(())
    })
    .await;
    c.restart();
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    node.reconnect(&c.addr).await;
    // The work goes on well past the recovery grace (1 s).
    node.finish_in(&id, Duration::from_secs(3));
    let done = wait_task(&mut admin, &node, &id, "completed", STEP).await;

    let journal = node.journal();
    assert!(
        journal.sent_of("task_recovering", None).is_empty(),
        "a reconnect, not a restart"
    );
    let reports = journal.sent_of("task_complete", Some(&id));
    assert_eq!(reports.len(), 1, "{}", journal.summary());
    assert_eq!(
        reports[0]["generation"], generation,
        "reported with the original generation"
    );
    assert_acknowledged(&journal, &id, "complete");
    assert_eq!(
        journal.starts_of(&id),
        1,
        "the work ran once:\n{}",
        journal.summary()
    );
    assert!(
        journal.sent_of("task_rejected", None).is_empty(),
        "no busy rejections:\n{}",
        journal.summary()
    );
    assert_eq!(completions(&done), 1, "{done}");
    assert_eq!(done["last_error"], Value::Null, "{done}");
    assert_eq!(done["result"], json!({"by": "node"}));
    let final_generation = done["generation"].as_u64().unwrap();
    assert!(
        final_generation <= generation + GENERATION_SLACK,
        "generation {generation} -> {final_generation}: {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_blip_mid_task_neither_reruns_nor_refuses_the_result() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let node = sidecar(&c, "node", |_| {}).await;
    let id = submit(&mut admin, json!({"description": "through a blip"})).await;
    let generation = node.wait_started(&id, 1, STEP).await;
    wait_task(&mut admin, &node, &id, "working", STEP).await;
    node.cut().await;
    wait_connected(&mut admin, "node", false).await;
    node.reconnect(&c.addr).await;
    // The work goes on past the coordinator's settle time after identify (1 s).
    node.finish_in(&id, Duration::from_secs(2));
    let done = wait_task(&mut admin, &node, &id, "completed", STEP).await;

    let journal = node.journal();
    let reports = journal.sent_of("task_complete", Some(&id));
    assert_eq!(reports.len(), 1, "{}", journal.summary());
    assert_eq!(
        reports[0]["generation"], generation,
        "reported with the original generation"
    );
    assert_acknowledged(&journal, &id, "complete");
    assert_eq!(
        journal.starts_of(&id),
        1,
        "the work ran once:\n{}",
        journal.summary()
    );
    assert!(
        journal.sent_of("task_rejected", None).is_empty(),
        "no busy rejections:\n{}",
        journal.summary()
    );
    assert_eq!(completions(&done), 1, "{done}");
    assert_eq!(done["last_error"], Value::Null, "{done}");
    let final_generation = done["generation"].as_u64().unwrap();
    assert!(
        final_generation <= generation + GENERATION_SLACK,
        "generation {generation} -> {final_generation}: {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_task_is_a_counted_failure_and_reaches_the_dead_letter() {
    let c = Coordinator::start(&["--sweep-interval-ms", "200"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let node = sidecar(&c, "node", |_| {}).await;
    let max_retries = 1;
    let id = submit(
        &mut admin,
        json!({
            "description": "runs past its deadline",
            "max_retries": max_retries,
            "complete_by": now_ms() + 1_500,
        }),
    )
    .await;
    node.wait_started(&id, 1, STEP).await;
    // The deadline passes while the sidecar works: a counted failure.
    let failed = poll(
        &mut admin,
        &format!("/api/tasks/{id}"),
        "the first deadline failure",
        |t| (t["retry_count"].as_u64() >= Some(1)).then(|| t.clone()),
    )
    .await;
    assert_eq!(failed["last_error"], "deadline_exceeded", "{failed}");
    // The sidecar's work ends late; its next run (the retry) is overdue at once.
    node.finish(&id);
    let dead = wait_task(&mut admin, &node, &id, "dead_letter", STEP).await;
    let journal = node.journal();
    assert_eq!(dead["last_error"], "deadline_exceeded", "{dead}");
    assert_eq!(dead["retry_count"], max_retries + 1, "{dead}");
    let assignments = history_count(&dead, "assigned");
    assert!(
        assignments <= 2 * (max_retries as usize + 1),
        "{assignments} assignments, bounded: {dead}\n{}",
        journal.summary()
    );
    assert!(
        journal.starts_of(&id) <= max_retries as u32 + 1,
        "at most one run per attempt:\n{}",
        journal.summary()
    );
    let generation = dead["generation"].as_u64().unwrap();
    assert!(
        generation <= 4 * (max_retries + 1),
        "generation {generation} bounded: {dead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_by_already_past_is_refused() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let r = admin
        .post(
            "/api/tasks",
            &json!({"description": "too late", "complete_by": now_ms() - 1_000}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{:?}", r.body);
    let stats = admin.get("/api/tasks/stats").await.unwrap().body;
    assert_eq!(stats["total"], 0, "nothing stored: {stats}");
}

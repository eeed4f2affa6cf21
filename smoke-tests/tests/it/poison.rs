//! Poison tasks end: a result too large to deliver, a deadline already past or
//! passing while the task runs, an agent that keeps dropping its connection.
//! Each ends in the dead letter after a bounded number of runs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coordinator_transport::client::Connection;
use serde_json::{json, Value};
use smoke_tests::harness::Coordinator;
use smoke_tests::http::Client;

use crate::agents::{submit, task, wait_status};

/// How long a test waits for a frame, a close or a status it expects.
const TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

async fn raw(conn: &Connection, frame: Value) {
    conn.sender()
        .send_raw(frame.to_string().into_bytes())
        .await
        .unwrap();
}

/// Skips frames until one of type `kind`, all within [`TIMEOUT`].
async fn next_of(conn: &mut Connection, kind: &str) -> Value {
    next_of_any(conn, &[kind]).await
}

/// Skips frames until one of the types `kinds`, all within [`TIMEOUT`].
async fn next_of_any(conn: &mut Connection, kinds: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let m = tokio::time::timeout_at(deadline, conn.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kinds:?} frame within {TIMEOUT:?}"))
            .unwrap_or_else(|| panic!("the socket closed before {kinds:?}"));
        let m = serde_json::to_value(m).unwrap();
        if kinds.iter().any(|k| m["type"] == *k) {
            return m;
        }
    }
}

/// A raw v1 agent: opens a socket and identifies as `agent_id`.
async fn identify(c: &Coordinator, agent_id: &str) -> Connection {
    let mut conn = tokio::time::timeout(TIMEOUT, Connection::open(&c.ws_url()))
        .await
        .expect("the upgrade in time")
        .expect("the upgrade");
    let token = c.agent_token(agent_id);
    raw(
        &conn,
        json!({"type": "identify", "agent_id": agent_id, "token": token}),
    )
    .await;
    next_of(&mut conn, "identified").await;
    conn
}

/// Reads until the coordinator closes the socket, within [`TIMEOUT`].
async fn until_closed(conn: &mut Connection) {
    tokio::time::timeout(TIMEOUT, async { while conn.recv().await.is_some() {} })
        .await
        .expect("the coordinator closes the socket");
}

fn events(t: &Value, event: &str) -> usize {
    t["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == event)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_frame_limit_is_a_counted_failure_that_ends_in_the_dead_letter() {
    let c = Coordinator::start(&["--max-frame-bytes", "4096"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let id = submit(
        &mut admin,
        json!({"description": "huge output", "max_retries": 1}),
    )
    .await;
    let huge = "x".repeat(10_000);
    let mut runs = 0;
    // max_retries 1: two runs, then the dead letter. The bound only stops a
    // regression from looping forever.
    while runs < 5 {
        let mut conn = identify(&c, "verbose").await;
        let assign = next_of(&mut conn, "task_assign").await;
        assert_eq!(assign["task_id"], id.as_str());
        runs += 1;
        raw(
            &conn,
            json!({"type": "task_accepted", "task_id": id.as_str()}),
        )
        .await;
        raw(
            &conn,
            json!({"type": "task_complete", "task_id": id.as_str(),
                   "generation": assign["generation"], "result": {"out": huge}}),
        )
        .await;
        until_closed(&mut conn).await;
        let t = wait_for_failure(&mut admin, &id, runs).await;
        if t["status"] == "dead_letter" {
            break;
        }
    }
    let t = task(&mut admin, &id).await;
    assert_eq!(runs, 2, "one run plus one retry: {t}");
    assert_eq!(t["status"], "dead_letter", "{t}");
    assert_eq!(t["last_error"], "result_too_large", "{t}");
    assert_eq!(t["retry_count"], 2, "{t}");
    assert_eq!(t["reclaim_count"], 0, "failures, not reclaims: {t}");
    assert_eq!(events(&t, "assigned"), 2, "{t}");
    assert_eq!(events(&t, "completed"), 0, "{t}");
}

/// Polls the task until `done` says so, within [`TIMEOUT`].
async fn wait_task(
    admin: &mut Client,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let t = task(admin, id).await;
        if done(&t) {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} of {id}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the task's `retry_count` reaches `n` (the oversize close is
/// handled after the socket ended, so the record may lag behind the close).
async fn wait_for_failure(admin: &mut Client, id: &str, n: u64) -> Value {
    wait_task(admin, id, &format!("failure {n}"), |t| {
        t["retry_count"].as_u64() == Some(n)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_already_past_at_submit_is_refused_with_422() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let past = now_ms() - 1_000;
    let r = admin
        .post(
            "/api/tasks",
            &json!({"description": "too late", "complete_by": past}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"], "invalid_field", "{:?}", r.body);
    let r = admin
        .post(
            "/api/tasks/batch",
            &json!({"tasks": [{"description": "fine"},
                              {"description": "too late", "complete_by": past}]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"], "invalid_field", "{:?}", r.body);
    let stats = admin.get("/api/tasks/stats").await.unwrap().body;
    assert_eq!(stats["total"], 0, "nothing was queued: {stats}");
    // A deadline in the future is fine.
    let id = submit(
        &mut admin,
        json!({"description": "in time", "complete_by": now_ms() + 60_000}),
    )
    .await;
    assert_eq!(task(&mut admin, &id).await["status"], "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_while_the_task_runs_fails_it_until_the_dead_letter() {
    let c = Coordinator::start(&["--sweep-interval-ms", "100"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let mut conn = identify(&c, "slowpoke").await;
    let id = submit(
        &mut admin,
        json!({"description": "never finishes", "max_retries": 1,
               "complete_by": now_ms() + 1_500}),
    )
    .await;
    // The agent accepts every assignment and never reports: only the deadline
    // can end the task. Once it is past, each run is failed at the next sweep.
    let mut generations = Vec::new();
    let t = loop {
        let assign = tokio::select! {
            assign = next_of(&mut conn, "task_assign") => assign,
            t = wait_status(&mut admin, &id, "dead_letter", TIMEOUT) => break t,
        };
        assert_eq!(assign["task_id"], id.as_str());
        generations.push(assign["generation"].as_u64().unwrap());
        assert!(generations.len() <= 2, "reassigned again: {generations:?}");
        raw(
            &conn,
            json!({"type": "task_accepted", "task_id": id.as_str()}),
        )
        .await;
    };
    assert_eq!(generations.len(), 2, "one run plus one retry: {t}");
    assert_eq!(t["last_error"], "deadline_exceeded", "{t}");
    assert_eq!(t["retry_count"], 2, "counted as failures: {t}");
    assert_eq!(t["reclaim_count"], 0, "not as reclaims: {t}");
    assert_eq!(events(&t, "assigned"), 2, "{t}");
    assert_eq!(events(&t, "retried"), 1, "{t}");
    assert_eq!(events(&t, "dead_lettered"), 1, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_keeps_dropping_its_connection_uses_up_the_reclaim_budget() {
    let c = Coordinator::start(&["--max-reclaims", "2"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let id = submit(&mut admin, json!({"description": "cursed"})).await;
    let mut runs = 0;
    // Two reclaims put it back in the queue; the third sends it to the dead letter.
    // The first run is an assignment; after each reconnect the task is given back
    // to its last holder (re-attach), which is still a run the drop takes back.
    while runs < 6 {
        let mut conn = identify(&c, "flaky").await;
        let given = next_of_any(&mut conn, &["task_assign", "task_continue"]).await;
        assert_eq!(given["task_id"], id.as_str());
        runs += 1;
        if given["type"] == "task_assign" {
            raw(
                &conn,
                json!({"type": "task_accepted", "task_id": id.as_str()}),
            )
            .await;
        }
        // The task is working on this connection, then the connection drops.
        wait_status(&mut admin, &id, "working", TIMEOUT).await;
        drop(conn);
        let t = wait_reclaims(&mut admin, &id, runs).await;
        if t["status"] == "dead_letter" {
            break;
        }
    }
    let t = task(&mut admin, &id).await;
    assert_eq!(runs, 3, "three runs for a budget of two reclaims: {t}");
    assert_eq!(t["status"], "dead_letter", "{t}");
    assert_eq!(t["last_error"], "too_many_reclaims", "{t}");
    assert_eq!(t["reclaim_count"], 3, "{t}");
    assert_eq!(t["retry_count"], 0, "reclaims are not failures: {t}");
    assert_eq!(
        (events(&t, "assigned"), events(&t, "recovered")),
        (1, 2),
        "assigned once, re-attached after each reconnect: {t}"
    );
    assert_eq!(events(&t, "reclaimed"), 2, "{t}");
    assert_eq!(events(&t, "dead_lettered"), 1, "{t}");
}

/// Waits until the task's `reclaim_count` reaches `n`.
async fn wait_reclaims(admin: &mut Client, id: &str, n: u64) -> Value {
    wait_task(admin, id, &format!("reclaim {n}"), |t| {
        t["reclaim_count"].as_u64() == Some(n)
    })
    .await
}

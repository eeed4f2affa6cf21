//! The counts by status and lane that the PostgreSQL writer keeps in each
//! group's transaction (from the rows it inserts and the statuses its updates
//! replace) equal a count of the rows, after tasks were submitted, completed
//! (often within the group of their submission), failed, retried, requeued
//! from the dead letter, cancelled, scheduled and left waiting, and written
//! again by the writer of a restarted coordinator.

use std::time::Duration;

use serde_json::{json, Value};
use smoke_tests::harness::{wait_for, Backend, Coordinator};
use smoke_tests::http::Client;
use smoke_tests::postgres;

use crate::agents::task_action;
use crate::sim::{Behaviour, SimAgent};

/// How long the tasks of a step may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One row per status and lane whose count differs from the rows (a status
/// and lane missing on one side counts 0 there).
const MISMATCHES: &str = "SELECT 1 FROM task_counts c \
     FULL JOIN (SELECT status, priority, count(*) AS n FROM tasks GROUP BY status, priority) t \
     ON t.status = c.status AND t.priority = c.priority \
     WHERE COALESCE(c.n, 0) <> COALESCE(t.n, 0)";

const LANES: [&str; 4] = ["urgent", "high", "normal", "low"];

/// Submits `n` tasks needing `capability` in one batch, the lanes in turn,
/// with `extra` fields; their ids.
async fn submit_batch(admin: &mut Client, n: usize, capability: &str, extra: Value) -> Vec<String> {
    let tasks: Vec<Value> = (0..n)
        .map(|i| {
            let mut task = json!({
                "description": format!("{capability} {i}"),
                "priority": LANES[i % LANES.len()],
                "needed_capabilities": [capability],
            });
            if let (Some(task), Some(extra)) = (task.as_object_mut(), extra.as_object()) {
                task.extend(extra.clone());
            }
            task
        })
        .collect();
    crate::agents::submit_batch(admin, tasks).await
}

/// How many rows of the store of `c` match `condition`.
fn rows_where(c: &Coordinator, condition: &str) -> u64 {
    let url = c.db.to_str().expect("a URL");
    postgres::execute(url, &format!("SELECT 1 FROM tasks WHERE {condition}"), None)
}

/// Waits until `n` rows match `condition`.
async fn wait_rows(c: &Coordinator, condition: &str, n: u64) {
    wait_for(
        SETTLE_TIMEOUT,
        &format!("{n} rows where {condition}"),
        || {
            let found = rows_where(c, condition);
            async move { (found == n).then_some(()) }
        },
    )
    .await
}

/// Asserts that the counts equal the rows, and that there are `n_tasks`.
fn assert_counts_match(c: &Coordinator, n_tasks: u64) {
    let url = c.db.to_str().expect("a URL");
    assert_eq!(
        postgres::execute(url, MISMATCHES, None),
        0,
        "task_counts differs from the rows counted by status and lane"
    );
    assert_eq!(
        postgres::execute(
            url,
            "SELECT 1 FROM task_counts HAVING sum(n) = (SELECT count(*) FROM tasks)",
            None
        ),
        1,
        "the counts add up to the rows"
    );
    assert_eq!(rows_where(c, "true"), n_tasks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_counts_by_status_and_lane_equal_the_rows_through_every_kind_of_write() {
    let mut c = Coordinator::start_on(Backend::Postgres, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));

    // Completed at once, by batches: many are submitted, assigned and
    // completed within one group, others over several.
    // (Three agents: each new token costs a reload of the token table, of
    // which a burst of four is allowed.)
    let mut fast = Vec::new();
    for i in 0..2 {
        let id = format!("fast-agent-{i}");
        fast.push(SimAgent::start(&c, &id, &["fast"], Behaviour::Complete).await);
    }
    for _ in 0..4 {
        submit_batch(&mut admin, 50, "fast", json!({})).await;
    }
    // Failed: retried once, then dead letters; two are requeued from there
    // and fail again.
    let flaky = SimAgent::start(&c, "flaky-agent", &["flaky"], Behaviour::Fail).await;
    let failing = submit_batch(&mut admin, 8, "flaky", json!({"max_retries": 1})).await;
    // Never assigned: queued, then half cancelled; one scheduled later, and
    // one waiting for a queued one.
    let idle = submit_batch(&mut admin, 10, "nobody", json!({})).await;
    submit_batch(&mut admin, 3, "nobody", json!({"delay_ms": 3_600_000})).await;
    submit_batch(&mut admin, 2, "nobody", json!({"depends_on": [idle[0]]})).await;
    wait_rows(&c, "status = 'completed'", 200).await;
    wait_rows(&c, "status = 'dead_letter'", 8).await;
    for id in &failing[..2] {
        assert_eq!(task_action(&mut admin, id, "retry").await, 200);
    }
    for id in &idle[5..] {
        assert_eq!(task_action(&mut admin, id, "cancel").await, 200);
    }
    // Requeued (answered once committed), they fail again.
    wait_rows(&c, "status = 'dead_letter'", 8).await;
    wait_rows(&c, "status = 'cancelled'", 5).await;
    assert_counts_match(&c, 223);

    // A restarted coordinator's writer updates rows another one wrote.
    drop((fast, flaky));
    c.restart();
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    assert_eq!(task_action(&mut admin, &idle[1], "cancel").await, 200);
    let _agent = SimAgent::start(&c, "any-agent", &["fast", "nobody"], Behaviour::Complete).await;
    submit_batch(&mut admin, 40, "fast", json!({})).await;
    // The other four idle tasks, then the two waiting for one of them,
    // complete; the scheduled ones stay.
    wait_rows(&c, "status = 'completed'", 200 + 40 + 4 + 2).await;
    wait_rows(&c, "status = 'cancelled'", 6).await;
    wait_rows(&c, "status = 'scheduled'", 3).await;
    assert_counts_match(&c, 263);
}

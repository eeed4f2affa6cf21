//! Upgrades from a database an older coordinator left: the current
//! coordinator starts on a PostgreSQL database at schema version 2 (before
//! the task options) holding rows as that version wrote them, migrates it,
//! serves those rows (rewriting a history kept as JSON in the compact form
//! without losing an entry) and takes the options on them.

use std::time::Duration;

use serde_json::{json, Value};
use smoke_tests::harness::Coordinator;
use smoke_tests::http::Client;
use smoke_tests::postgres;

use crate::agents::{task, wait_status};
use crate::sim::{Behaviour, SimAgent};

const FINAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The schema as PostgreSQL schema version 2 left it, frozen here as such a
/// database holds it (versions 1 and 2 of `store/postgres/schema.rs`, with
/// the version table the migration keeps).
const SCHEMA_V2: &str = r#"
CREATE TABLE coordinator_schema (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
INSERT INTO coordinator_schema (version) VALUES (1), (2);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    priority TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    assigned_to TEXT,
    assigned_at BIGINT,
    generation BIGINT NOT NULL,
    retry_count BIGINT NOT NULL,
    max_retries BIGINT NOT NULL,
    complete_by BIGINT,
    needed_capabilities TEXT NOT NULL,
    result TEXT,
    tokens_used BIGINT,
    last_error TEXT,
    submitted_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_alive_at BIGINT,
    queue_seq BIGINT NOT NULL,
    history TEXT NOT NULL,
    reclaim_count BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_status_seq ON tasks (status, queue_seq);
CREATE INDEX tasks_seq ON tasks (queue_seq);
CREATE TABLE tokens (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'admin')),
    name TEXT NOT NULL,
    hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX tokens_name ON tokens (name);
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
-- Counts by status and lane, kept by the writer in the same transaction as
-- the rows (from the status and lane each statement replaced), so that stats
-- and metrics never scan the table. (Row triggers that update these few rows
-- for every task row cost more than half of a commit here.)
CREATE TABLE task_counts (
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (status, priority)
);
INSERT INTO task_counts (status, priority, n)
SELECT s, p, 0
FROM unnest(ARRAY['queued', 'assigned', 'working', 'completed', 'dead_letter', 'cancelled']) AS s,
     unnest(ARRAY['urgent', 'high', 'normal', 'low']) AS p;
-- Whether a stored capability list (JSON text) names `cap`; a list that is
-- not JSON matches nothing rather than failing the page.
CREATE FUNCTION coordinator_caps_contain(caps TEXT, cap TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN caps::jsonb ? cap;
EXCEPTION WHEN others THEN
    RETURN false;
END $$;

-- The leadership lease (SPEC 13): one row, written only by the connection that
-- holds the lease's session advisory lock.
CREATE TABLE coordinator_lease (
    id INT PRIMARY KEY CHECK (id = 1),
    leader_id TEXT NOT NULL,
    advertise_url TEXT NOT NULL,
    backend_pid INT NOT NULL,
    epoch BIGINT NOT NULL,
    renewed_at TIMESTAMPTZ NOT NULL
);
"#;

/// Rows as version 2 wrote them (no option columns), with the counts its
/// writer kept beside them.
const ROWS_V2: &str = r#"
INSERT INTO tasks (id, description, metadata, priority, status, generation, retry_count,
    max_retries, needed_capabilities, created_at, updated_at, queue_seq, history, reclaim_count,
    result)
VALUES
    ('old-queued', 'waiting since before the upgrade', '{"k": 1}', 'high', 'queued', 0, 0, 3,
     '[]', 1000, 1000, 10,
     '[{"event": "submitted", "timestamp": 1000, "details": ""}, {"event": "reclaimed", "timestamp": 1500, "details": "agent gone"}]',
     1, NULL),
    ('old-done', 'finished before the upgrade', '{}', 'normal', 'completed', 1, 0, 3,
     '[]', 1000, 2000, 11, '[]', 0, '{"answer": 42}'),
    ('old-dead', 'failed before the upgrade', '{}', 'normal', 'dead_letter', 1, 4, 3,
     '[]', 1000, 2000, 12, '[]', 0, NULL);
UPDATE task_counts SET n = 1 WHERE (status, priority) IN
    (('queued', 'high'), ('completed', 'normal'), ('dead_letter', 'normal'));
"#;

async fn post(client: &mut Client, body: Value) -> (u16, Value) {
    let r = client.post("/api/tasks", &body).await.unwrap();
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_at_version_2_is_migrated_and_served_with_the_options() {
    let url = postgres::new_database();
    postgres::batch_execute(&url, SCHEMA_V2);
    postgres::batch_execute(&url, ROWS_V2);
    let c = Coordinator::start_on_database(&url, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    // Migrated to the current version.
    let version = postgres::execute(
        &url,
        "SELECT 1 FROM coordinator_schema WHERE version = (SELECT max(version) FROM coordinator_schema) AND version >= 5",
        None,
    );
    assert_eq!(version, 1, "migrated to version 5 or later");
    // The old rows are read as they were.
    let old = task(&mut admin, "old-queued").await;
    assert_eq!(
        (
            old["status"].as_str(),
            old["priority"].as_str(),
            old["reclaim_count"].as_u64()
        ),
        (Some("queued"), Some("high"), Some(1)),
        "{old}"
    );
    assert!(
        old["run_at"].is_null() && old["idempotency_key"].is_null(),
        "{old}"
    );
    let stats = admin.get("/api/tasks/stats").await.unwrap().body;
    assert_eq!(stats["total"], 3, "{stats}");
    // The old queued task runs; the options work beside the old rows.
    let _agent = SimAgent::start(&c, "a1", &[], Behaviour::Complete).await;
    let done = wait_status(&mut admin, "old-queued", "completed", FINAL_TIMEOUT).await;
    // Its history, written anew in the compact form, keeps the old entries.
    let events: Vec<(&str, u64, &str)> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["event"].as_str().unwrap(),
                h["timestamp"].as_u64().unwrap(),
                h["details"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events[..2],
        [("submitted", 1000, ""), ("reclaimed", 1500, "agent gone")],
        "{done}"
    );
    assert_eq!(events.last().map(|e| e.0), Some("completed"), "{done}");
    let compact = postgres::execute(
        &url,
        "SELECT 1 FROM tasks WHERE id = 'old-queued' AND history LIKE '[0,1000,%'",
        None,
    );
    assert_eq!(compact, 1, "the history is stored in the compact form");
    let (status, after) = post(
        &mut admin,
        json!({"description": "after an old task", "depends_on": ["old-done"], "idempotency_key": "k1", "delay_ms": 300}),
    )
    .await;
    assert_eq!(status, 201, "{after}");
    let id = after["task_id"].as_str().unwrap().to_owned();
    let t = wait_status(&mut admin, &id, "completed", FINAL_TIMEOUT).await;
    assert_eq!(t["depends_on"], json!(["old-done"]), "{t}");
    let (status, again) = post(
        &mut admin,
        json!({"description": "again", "idempotency_key": "k1"}),
    )
    .await;
    assert_eq!(
        (status, again["task_id"].as_str()),
        (200, Some(id.as_str()))
    );
    // A dependency that failed before the upgrade is refused.
    let (status, refused) = post(
        &mut admin,
        json!({"description": "after a dead one", "depends_on": ["old-dead"]}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    let dependents = task(&mut admin, "old-done").await;
    assert_eq!(dependents["dependents"], json!([id]), "{dependents}");
}

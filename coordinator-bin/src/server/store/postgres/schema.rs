//! The PostgreSQL schema: the same tables, columns and meaning as SQLite's
//! (`server/db/schema.rs`, version 7; its version 5 adds only an index, the
//! retention sweep's, its version 6 the index of scheduled rows that is
//! version 4 here, and its version 7, the compact history, is version 5
//! here), as versioned forward migrations applied
//! under a transaction-level advisory lock, so that coordinators starting
//! together on one database migrate it once.

use tokio_postgres::Client;

use crate::server::db::DbError;

/// The schema version this binary writes.
const SCHEMA_VERSION: i64 = 5;

/// The key of the advisory lock taken while migrating ("COOR" + 1).
const MIGRATION_LOCK: i64 = 0x434F_4F52_0001;

/// Forward migrations; entry `i` takes the schema from version `i` to `i + 1`.
/// Text columns compared by range (`status`, `priority`) use the "C"
/// collation: byte order, as SQLite compares, so that the ranges that find
/// rows of unknown status use the index.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
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
"#,
    r#"
-- Submit options: run later (run_at), run after (depends_on, a JSON list of
-- task ids), submit once (idempotency_key, unique per submitter, so that a
-- repeat is refused by the store itself, across restarts).
ALTER TABLE tasks ADD COLUMN run_at BIGINT;
ALTER TABLE tasks ADD COLUMN depends_on TEXT;
ALTER TABLE tasks ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (submitted_by, idempotency_key)
WHERE idempotency_key IS NOT NULL;
-- The dependency edges, by dependency: a task's dependents without a scan.
-- Kept by triggers that run only for rows with dependencies: written with
-- the task's first row, deleted with it. A list that is not JSON adds no edge
-- rather than failing the commit.
CREATE TABLE task_dependencies (
    depends_on TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (depends_on, task_id)
);
CREATE FUNCTION coordinator_dependencies_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        INSERT INTO task_dependencies (depends_on, task_id)
        SELECT e, NEW.id FROM jsonb_array_elements_text(NEW.depends_on::jsonb) AS e
        ON CONFLICT DO NOTHING;
    EXCEPTION WHEN invalid_text_representation OR invalid_parameter_value THEN
        NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_dependencies_insert AFTER INSERT ON tasks
FOR EACH ROW WHEN (NEW.depends_on IS NOT NULL)
EXECUTE FUNCTION coordinator_dependencies_insert();
CREATE FUNCTION coordinator_dependencies_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_dependencies WHERE task_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_dependencies_delete AFTER DELETE ON tasks
FOR EACH ROW WHEN (OLD.depends_on IS NOT NULL)
EXECUTE FUNCTION coordinator_dependencies_delete();
INSERT INTO task_counts (status, priority, n)
SELECT s, p, 0
FROM unnest(ARRAY['scheduled', 'waiting']) AS s,
     unnest(ARRAY['urgent', 'high', 'normal', 'low']) AS p;
"#,
    r#"
-- The window of scheduled tasks kept in memory: the scheduled rows in the
-- order they come due, read a page at a time from where memory stops.
CREATE INDEX tasks_scheduled ON tasks (run_at, queue_seq) WHERE status = 'scheduled';
"#,
    r#"
-- From this version on, a row's `history` may be written in the compact form
-- (a flat JSON list of event numbers, times and details, see
-- `server/db/rows.rs`), which a coordinator before it cannot read, so it must
-- refuse the database rather than take those rows for damaged ones. Rows
-- written before keep their form and are read as they are.
-- Task ids compare in the "C" collation (byte order, as SQLite compares):
-- every write looks its rows up by id, and a locale's comparison costs
-- several times more. The table is not rewritten; its primary key is rebuilt.
ALTER TABLE tasks ALTER COLUMN id TYPE TEXT COLLATE "C";
"#,
];

/// Checks that the database is not newer than this binary, then applies the
/// migrations it lacks, each in its own transaction, under an advisory lock.
pub async fn migrate(client: &mut Client, describe: &str) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS coordinator_schema (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let version: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM coordinator_schema",
            &[],
        )
        .await?
        .get(0);
    if version > SCHEMA_VERSION {
        return Err(DbError::Unavailable(format!(
            "{describe} has schema version {version}, newer than this coordinator understands ({SCHEMA_VERSION}); upgrade the coordinator"
        )));
    }
    if version == 0 {
        let foreign: i64 = tx
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN ('tasks', 'tokens', 'meta', 'task_counts')",
                &[],
            )
            .await?
            .get(0);
        if foreign > 0 {
            return Err(DbError::Unavailable(format!(
                "{describe} has tables named like the coordinator's but no coordinator schema version; refusing to touch it"
            )));
        }
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO coordinator_schema (version) VALUES ($1)",
            &[&(from as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

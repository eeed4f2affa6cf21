//! The schema: the application id, the forward migrations and how they are applied.

use std::path::Path;

use rusqlite::Connection;

use super::DbError;

/// `PRAGMA application_id` of a coordinator database ("COOR").
pub(super) const APPLICATION_ID: i64 = 0x434F_4F52;
/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 8;

/// Forward migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    assigned_to TEXT,
    assigned_at INTEGER,
    generation INTEGER NOT NULL,
    retry_count INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    complete_by INTEGER,
    needed_capabilities TEXT NOT NULL,
    result TEXT,
    tokens_used INTEGER,
    last_error TEXT,
    submitted_by TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_alive_at INTEGER,
    queue_seq INTEGER NOT NULL,
    history TEXT NOT NULL
);
CREATE INDEX tasks_status_seq ON tasks (status, queue_seq);
CREATE INDEX tasks_seq ON tasks (queue_seq);
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'admin')),
    name TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX tokens_name ON tokens (name);
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
"#,
    r#"
-- Counts by status and lane, kept by triggers in the same transaction as the
-- rows, so that stats and metrics never scan the table.
CREATE TABLE task_counts (
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (status, priority)
) WITHOUT ROWID;
INSERT INTO task_counts (status, priority, n) VALUES
('queued', 'urgent', 0),
('queued', 'high', 0),
('queued', 'normal', 0),
('queued', 'low', 0),
('assigned', 'urgent', 0),
('assigned', 'high', 0),
('assigned', 'normal', 0),
('assigned', 'low', 0),
('working', 'urgent', 0),
('working', 'high', 0),
('working', 'normal', 0),
('working', 'low', 0),
('completed', 'urgent', 0),
('completed', 'high', 0),
('completed', 'normal', 0),
('completed', 'low', 0),
('dead_letter', 'urgent', 0),
('dead_letter', 'high', 0),
('dead_letter', 'normal', 0),
('dead_letter', 'low', 0),
('cancelled', 'urgent', 0),
('cancelled', 'high', 0),
('cancelled', 'normal', 0),
('cancelled', 'low', 0);
UPDATE task_counts SET n = c.n
FROM (SELECT status, priority, count(*) AS n FROM tasks GROUP BY status, priority) AS c
WHERE c.status = task_counts.status AND c.priority = task_counts.priority;
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    UPDATE task_counts SET n = n + 1 WHERE status = NEW.status AND priority = NEW.priority;
END;
CREATE TRIGGER tasks_count_update AFTER UPDATE OF status, priority ON tasks
WHEN OLD.status IS NOT NEW.status OR OLD.priority IS NOT NEW.priority BEGIN
    UPDATE task_counts SET n = n - 1 WHERE status = OLD.status AND priority = OLD.priority;
    UPDATE task_counts SET n = n + 1 WHERE status = NEW.status AND priority = NEW.priority;
END;
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET n = n - 1 WHERE status = OLD.status AND priority = OLD.priority;
END;
"#,
    r#"
-- Reclaims of each task so far, against its reclaim budget.
ALTER TABLE tasks ADD COLUMN reclaim_count INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Submit options: run later (run_at), run after (depends_on, a JSON list of
-- task ids), submit once (idempotency_key, unique per submitter, so that a
-- repeat is refused by the store itself, across restarts).
ALTER TABLE tasks ADD COLUMN run_at INTEGER;
ALTER TABLE tasks ADD COLUMN depends_on TEXT;
ALTER TABLE tasks ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (submitted_by, idempotency_key)
WHERE idempotency_key IS NOT NULL;
-- The dependency edges, by dependency: a task's dependents without a scan.
-- Kept by triggers: written with the task's first row, deleted with it.
CREATE TABLE task_dependencies (
    depends_on TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (depends_on, task_id)
) WITHOUT ROWID;
CREATE TRIGGER tasks_dependencies_insert AFTER INSERT ON tasks
WHEN NEW.depends_on IS NOT NULL AND json_valid(NEW.depends_on) BEGIN
    INSERT OR IGNORE INTO task_dependencies (depends_on, task_id)
    SELECT value, NEW.id FROM json_each(NEW.depends_on) WHERE type = 'text';
END;
CREATE TRIGGER tasks_dependencies_delete AFTER DELETE ON tasks
WHEN OLD.depends_on IS NOT NULL BEGIN
    DELETE FROM task_dependencies WHERE task_id = OLD.id;
END;
INSERT INTO task_counts (status, priority, n) VALUES
('scheduled', 'urgent', 0),
('scheduled', 'high', 0),
('scheduled', 'normal', 0),
('scheduled', 'low', 0),
('waiting', 'urgent', 0),
('waiting', 'high', 0),
('waiting', 'normal', 0),
('waiting', 'low', 0);
"#,
    r#"
-- Final tasks by the time they last changed, for the retention sweep alone
-- (its DELETE names this index). Without it the sweep read every completed
-- row through the status index on each pass, inside a writer commit: a pause
-- of every answer that grew with the number of tasks kept. A task enters it
-- once, when it completes or is cancelled, at its end (times only grow).
CREATE INDEX tasks_expiry ON tasks (updated_at) WHERE status IN ('completed', 'cancelled');
"#,
    r#"
-- The window of scheduled tasks kept in memory: the scheduled rows in the
-- order they come due, read a page at a time from where memory stops.
CREATE INDEX tasks_scheduled ON tasks (run_at, queue_seq) WHERE status = 'scheduled';
"#,
    r#"
-- No change of structure: from this version on, a row's `history` may be
-- written in a compact form (a flat JSON list of event numbers, times and
-- details, see `rows.rs`), which a coordinator before it cannot read, so it
-- must refuse the file rather than take those rows for damaged ones.
"#,
    r#"
-- The counts by status and lane and the dependency edges of a new row are
-- kept by the writer (`writes.rs`), in the same transaction as the rows and
-- once per group, instead of by these row triggers (which ran two more
-- statements per state change and made each write keep a statement journal).
-- A coordinator before this version would write rows without counting them,
-- so it must refuse the file. The delete triggers stay: rows are deleted in
-- bulk by SQL alone (the retention sweep).
DROP TRIGGER tasks_count_insert;
DROP TRIGGER tasks_count_update;
DROP TRIGGER tasks_dependencies_insert;
"#,
];

/// Checks that the database at `path` is ours and not newer than this binary, then
/// applies the migrations it lacks, each in its own transaction.
pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<(), DbError> {
    let app_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if app_id == 0 {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(DbError::NotOurs(path.to_owned(), app_id));
        }
    } else if app_id != APPLICATION_ID {
        return Err(DbError::NotOurs(path.to_owned(), app_id));
    }
    if version > SCHEMA_VERSION {
        return Err(DbError::TooNew(path.to_owned(), version));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.commit()?;
    }
    Ok(())
}

//! SQLite storage: opening and migrating the database, task rows, reads.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use queue_core::{Completion, HistoryEntry, HistoryEvent, Holder, Priority, Status, Task, TaskId};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde_json::Value;

/// `PRAGMA application_id` of a coordinator database ("COOR").
const APPLICATION_ID: i64 = 0x434F_4F52;
/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 2;

/// Forward migrations; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
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
];

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The file is a SQLite database of some other program.
    #[error(
        "{0} is not a coordinator database (its application id is {1:#x}); refusing to touch it"
    )]
    NotOurs(PathBuf, i64),
    /// The file was written by a newer coordinator.
    #[error("{0} has schema version {1}, newer than this coordinator understands ({SCHEMA_VERSION}); upgrade the coordinator")]
    TooNew(PathBuf, i64),
    /// Another coordinator serves this database.
    #[error("{0} is in use by another coordinator process (it holds the lock); stop it first or use another --db")]
    Locked(PathBuf),
    /// A stored value is not what the schema promises.
    #[error("corrupt row for task {id}: {what}")]
    Corrupt {
        /// The task.
        id: String,
        /// What is wrong.
        what: String,
    },
    /// SQLite said no.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file system said no.
    #[error("cannot open {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Opens (creating if needed) and migrates the database at `path`.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Opens a read-only connection to a database `open` already prepared.
pub fn open_reader(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), DbError> {
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

/// Holds an exclusive advisory lock on the database file for the life of the service.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File, DbError> {
    let file = std::fs::File::open(path).map_err(|e| DbError::Io(path.to_owned(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DbError::Locked(path.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(DbError::Io(path.to_owned(), e)),
    }
}

/// A value of the `meta` table.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Sets a value of the `meta` table.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

/// Insert or update in place (an update, not a delete and insert, so that the
/// counting triggers see it as one).
const UPSERT: &str = "INSERT INTO tasks (id, description, metadata, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21) ON CONFLICT(id) DO UPDATE SET description = excluded.description, metadata = excluded.metadata, priority = excluded.priority, status = excluded.status, assigned_to = excluded.assigned_to, assigned_at = excluded.assigned_at, generation = excluded.generation, retry_count = excluded.retry_count, max_retries = excluded.max_retries, complete_by = excluded.complete_by, needed_capabilities = excluded.needed_capabilities, result = excluded.result, tokens_used = excluded.tokens_used, last_error = excluded.last_error, submitted_by = excluded.submitted_by, created_at = excluded.created_at, updated_at = excluded.updated_at, last_alive_at = excluded.last_alive_at, queue_seq = excluded.queue_seq, history = excluded.history";

/// Writes one task record (insert or replace).
pub fn upsert_task(conn: &Connection, task: &Task) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare_cached(UPSERT)?;
    let capabilities =
        serde_json::to_string(&*task.needed_capabilities).unwrap_or_else(|_| "[]".into());
    stmt.execute(params![
        task.id.as_str(),
        &*task.description,
        &*task.metadata,
        task.priority.as_str(),
        task.status.as_str(),
        task.assigned_to().map(|a| a.as_str()),
        task.assigned_at_ms().map(|v| v as i64),
        task.generation as i64,
        task.retry_count,
        task.max_retries,
        task.complete_by_ms.map(|v| v as i64),
        capabilities,
        task.result(),
        task.tokens_used().map(|v| v as i64),
        task.last_error.as_deref(),
        task.submitted_by.as_deref(),
        task.created_at_ms as i64,
        task.updated_at_ms as i64,
        task.last_alive_at_ms().map(|v| v as i64),
        task.queue_seq as i64,
        history_json(&task.history),
    ])?;
    Ok(())
}

fn history_json(history: &[HistoryEntry]) -> String {
    let entries: Vec<Value> = history
        .iter()
        .map(|h| {
            serde_json::json!({
                "event": h.event.as_str(),
                "timestamp": h.timestamp_ms,
                "details": &*h.details,
            })
        })
        .collect();
    Value::Array(entries).to_string()
}

const COLUMNS: &str = "id, description, metadata, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history";

fn corrupt(id: &str, what: impl Into<String>) -> DbError {
    DbError::Corrupt {
        id: id.to_owned(),
        what: what.into(),
    }
}

fn task_from_row(row: &Row<'_>) -> Result<Result<Task, DbError>, rusqlite::Error> {
    let id: String = row.get(0)?;
    let priority: String = row.get(3)?;
    let status: String = row.get(4)?;
    let capabilities: String = row.get(11)?;
    let history: String = row.get(20)?;
    let opt_u64 = |i: usize| -> Result<Option<u64>, rusqlite::Error> {
        Ok(row.get::<_, Option<i64>>(i)?.map(|v| v as u64))
    };
    let build = || -> Result<Task, DbError> {
        let priority = Priority::from_str(&priority).map_err(|e| corrupt(&id, e.to_string()))?;
        let status = Status::from_str(&status).map_err(|e| corrupt(&id, e.to_string()))?;
        let capabilities: Vec<String> =
            serde_json::from_str(&capabilities).map_err(|e| corrupt(&id, e.to_string()))?;
        let history = parse_history(&history).ok_or_else(|| corrupt(&id, "bad history"))?;
        let assigned_at_ms = opt_u64(6)?.unwrap_or(0);
        let holder = row.get::<_, Option<String>>(5)?.map(|agent| {
            Box::new(Holder {
                agent_id: agent.into(),
                assigned_at_ms,
                last_alive_at_ms: opt_u64(18).ok().flatten().unwrap_or(assigned_at_ms),
            })
        });
        let outcome = row.get::<_, Option<String>>(12)?.map(|result| {
            Box::new(Completion {
                result,
                tokens_used: opt_u64(13).ok().flatten(),
            })
        });
        Ok(Task {
            id: TaskId::from(id.as_str()),
            description: row.get::<_, String>(1)?.into(),
            metadata: row.get::<_, String>(2)?.into(),
            priority,
            status,
            holder,
            generation: row.get::<_, i64>(7)? as u64,
            retry_count: row.get(8)?,
            max_retries: row.get(9)?,
            complete_by_ms: opt_u64(10)?,
            needed_capabilities: capabilities.into(),
            outcome,
            last_error: row.get::<_, Option<String>>(14)?.map(Into::into),
            submitted_by: row.get::<_, Option<String>>(15)?.map(Into::into),
            created_at_ms: row.get::<_, i64>(16)? as u64,
            updated_at_ms: row.get::<_, i64>(17)? as u64,
            queue_seq: row.get::<_, i64>(19)? as u64,
            history,
        })
    };
    match build() {
        Ok(task) => Ok(Ok(task)),
        Err(DbError::Sqlite(e)) => Err(e),
        Err(e) => Ok(Err(e)),
    }
}

fn parse_history(text: &str) -> Option<Vec<HistoryEntry>> {
    let entries: Vec<Value> = serde_json::from_str(text).ok()?;
    entries
        .into_iter()
        .map(|e| {
            Some(HistoryEntry {
                event: HistoryEvent::parse(e.get("event")?.as_str()?)?,
                timestamp_ms: e.get("timestamp")?.as_u64()?,
                details: e.get("details")?.as_str()?.into(),
            })
        })
        .collect()
}

fn collect_tasks(
    rows: impl Iterator<Item = Result<Result<Task, DbError>, rusqlite::Error>>,
) -> Result<Vec<Task>, DbError> {
    let mut tasks = Vec::new();
    for row in rows {
        tasks.push(row??);
    }
    Ok(tasks)
}

/// Every non-final task, to rebuild the scheduler at start.
pub fn load_live_tasks(conn: &Connection) -> Result<Vec<Task>, DbError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE status IN ('queued', 'assigned', 'working') ORDER BY queue_seq"
    ))?;
    let rows = stmt.query_map([], task_from_row)?;
    collect_tasks(rows)
}

/// One task.
pub fn get_task(conn: &Connection, id: &str) -> Result<Option<Task>, DbError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))?;
    let row = stmt.query_row([id], task_from_row).optional()?;
    row.transpose()
}

/// Filters of [`list_tasks`].
#[derive(Debug, Default, Clone)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this lane.
    pub priority: Option<Priority>,
    /// Only this agent's.
    pub assigned_to: Option<String>,
    /// Only tasks after this one (its `queue_seq`), for paging.
    pub after_seq: Option<u64>,
    /// At most this many.
    pub limit: u32,
}

/// Tasks in submission order, filtered and paged.
pub fn list_tasks(conn: &Connection, filter: &TaskFilter) -> Result<Vec<Task>, DbError> {
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE 1 = 1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(status) = filter.status {
        args.push(Box::new(status.as_str()));
        sql += &format!(" AND status = ?{}", args.len());
    }
    if let Some(priority) = filter.priority {
        args.push(Box::new(priority.as_str()));
        sql += &format!(" AND priority = ?{}", args.len());
    }
    if let Some(agent) = &filter.assigned_to {
        args.push(Box::new(agent.clone()));
        sql += &format!(" AND assigned_to = ?{}", args.len());
    }
    if let Some(after) = filter.after_seq {
        args.push(Box::new(after as i64));
        sql += &format!(" AND queue_seq > ?{}", args.len());
    }
    args.push(Box::new(filter.limit));
    sql += &format!(" ORDER BY queue_seq LIMIT ?{}", args.len());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), task_from_row)?;
    collect_tasks(rows)
}

/// `queue_seq` of a task, for the `after` cursor.
pub fn task_seq(conn: &Connection, id: &str) -> Result<Option<u64>, DbError> {
    Ok(conn
        .query_row("SELECT queue_seq FROM tasks WHERE id = ?1", [id], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(|v| v as u64))
}

/// Counts by status and priority.
pub fn count_by_status_priority(conn: &Connection) -> Result<Vec<(String, String, u64)>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT status, priority, n FROM task_counts WHERE n > 0")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes final tasks (except dead letters) last updated before `before_ms`.
pub fn delete_expired(conn: &Connection, before_ms: u64) -> Result<usize, rusqlite::Error> {
    conn.execute(
        "DELETE FROM tasks WHERE status IN ('completed', 'cancelled') AND updated_at < ?1",
        [before_ms as i64],
    )
}

/// A few read-only connections shared by the HTTP handlers.
#[derive(Clone)]
pub struct ReadPool {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl ReadPool {
    /// A pool over the database at `path`.
    pub fn new(path: &Path) -> ReadPool {
        ReadPool {
            path: Arc::new(path.to_owned()),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs `f` on a pooled connection in a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match conn {
                Some(conn) => conn,
                None => open_reader(&pool.path)?,
            };
            let result = f(&conn);
            if let Ok(mut idle) = pool.idle.lock() {
                if idle.len() < 8 {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| DbError::Io(PathBuf::new(), std::io::Error::other(e.to_string())))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("coordinator-db-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("c.db")
    }

    fn record(id: &str, status: Status) -> Task {
        let mut queue = queue_core::Queue::new(queue_core::QueueConfig::default());
        queue.submit(1, queue_core::NewTask::new(id, "x")).unwrap();
        let mut task = queue.drain_changes().pop().unwrap().into_task();
        task.status = status;
        task
    }

    fn counts(conn: &Connection) -> Vec<(String, String, u64)> {
        let mut counts = count_by_status_priority(conn).unwrap();
        counts.sort();
        counts
    }

    #[test]
    fn counts_follow_inserts_updates_and_deletes() {
        let path = temp_db("counts");
        let conn = open(&path).unwrap();
        upsert_task(&conn, &record("a", Status::Queued)).unwrap();
        upsert_task(&conn, &record("b", Status::Queued)).unwrap();
        upsert_task(&conn, &record("a", Status::Completed)).unwrap();
        upsert_task(&conn, &record("b", Status::Queued)).unwrap();
        assert_eq!(
            counts(&conn),
            [
                ("completed".into(), "normal".into(), 1),
                ("queued".into(), "normal".into(), 1)
            ]
        );
        assert_eq!(delete_expired(&conn, 1 << 60).unwrap(), 1);
        assert_eq!(counts(&conn), [("queued".into(), "normal".into(), 1)]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_version_1_database_is_migrated_with_its_counts() {
        let path = temp_db("migrate");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            upsert_task(&conn, &record("old", Status::DeadLetter)).unwrap();
        }
        let conn = open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(counts(&conn), [("dead_letter".into(), "normal".into(), 1)]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

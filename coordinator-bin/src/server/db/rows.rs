//! The task row codec: a [`Task`] to a `tasks` row and back, with the history as
//! JSON text; and the writes of task rows.

use std::str::FromStr;

use queue_core::{Completion, HistoryEntry, HistoryEvent, Holder, Priority, Status, Task, TaskId};
use rusqlite::{params, Connection, Row};
use serde_json::Value;

use super::DbError;

/// Insert or update in place (an update, not a delete and insert, so that the
/// counting triggers see it as one).
const UPSERT: &str = "INSERT INTO tasks (id, description, metadata, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history, reclaim_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) ON CONFLICT(id) DO UPDATE SET description = excluded.description, metadata = excluded.metadata, priority = excluded.priority, status = excluded.status, assigned_to = excluded.assigned_to, assigned_at = excluded.assigned_at, generation = excluded.generation, retry_count = excluded.retry_count, max_retries = excluded.max_retries, complete_by = excluded.complete_by, needed_capabilities = excluded.needed_capabilities, result = excluded.result, tokens_used = excluded.tokens_used, last_error = excluded.last_error, submitted_by = excluded.submitted_by, created_at = excluded.created_at, updated_at = excluded.updated_at, last_alive_at = excluded.last_alive_at, queue_seq = excluded.queue_seq, history = excluded.history, reclaim_count = excluded.reclaim_count";

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
        task.reclaim_count,
    ])?;
    Ok(())
}

/// The history as a JSON array of `{event, timestamp, details}`.
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

/// The columns of a `tasks` row, in the order [`task_from_row`] reads them.
pub(super) const COLUMNS: &str = "id, description, metadata, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history, reclaim_count";

fn corrupt(id: &str, what: impl Into<String>) -> DbError {
    DbError::Corrupt {
        id: id.to_owned(),
        what: what.into(),
    }
}

/// Decodes a row selected with [`COLUMNS`]: the outer error is SQLite's, the inner
/// one a stored value the schema does not allow.
pub(super) fn task_from_row(row: &Row<'_>) -> Result<Result<Task, DbError>, rusqlite::Error> {
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
            reclaim_count: row.get(21)?,
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

/// Parses what [`history_json`] wrote; `None` if anything is missing or unknown.
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

/// Collects decoded rows, stopping at the first error of either kind.
pub(super) fn collect_tasks(
    rows: impl Iterator<Item = Result<Result<Task, DbError>, rusqlite::Error>>,
) -> Result<Vec<Task>, DbError> {
    let mut tasks = Vec::new();
    for row in rows {
        tasks.push(row??);
    }
    Ok(tasks)
}

/// Deletes final tasks (except dead letters) last updated before `before_ms`.
pub fn delete_expired(conn: &Connection, before_ms: u64) -> Result<usize, rusqlite::Error> {
    conn.execute(
        "DELETE FROM tasks WHERE status IN ('completed', 'cancelled') AND updated_at < ?1",
        [before_ms as i64],
    )
}

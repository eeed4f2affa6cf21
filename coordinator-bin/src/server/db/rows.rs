//! The task row codec: a [`Task`] to a `tasks` row and back, with the history as
//! JSON text (a row that cannot be decoded is a [`DamagedRow`], never a failed
//! read); and the writes of task rows.

use std::str::FromStr;

use coordinator_queue::{
    Completion, HistoryEntry, HistoryEvent, Holder, Priority, Status, Task, TaskId,
};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, Row};
use serde_json::Value;

use super::damaged::{self, DamagedRow, Table};

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

/// The columns of a `tasks` row, in the order [`task_from_row`] reads them
/// (the rowid last, to name a row whose id cannot be read).
pub(super) const COLUMNS: &str = "id, description, metadata, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history, reclaim_count, rowid";

/// How many columns [`COLUMNS`] names.
const N_COLUMNS: usize = 23;

/// Decodes a row selected with [`COLUMNS`]: the outer error is SQLite's (the
/// read itself failed), the inner one a row whose stored values the schema does
/// not allow.
pub(super) fn task_from_row(row: &Row<'_>) -> Result<Result<Task, DamagedRow>, rusqlite::Error> {
    let mut values = [ValueRef::Null; N_COLUMNS];
    for (i, value) in values.iter_mut().enumerate() {
        *value = row.get_ref(i)?;
    }
    Ok(decode_task(&values))
}

/// A task from the values of a row selected with [`COLUMNS`], or what is wrong
/// with them: a value of the wrong type, text that is not valid UTF-8, an
/// unknown status or lane, metadata that is not a JSON object, a result that
/// is not JSON, capabilities or a history that do not parse, or a live task
/// whose holder does not match its status.
pub(super) fn decode_task(values: &[ValueRef<'_>; N_COLUMNS]) -> Result<Task, DamagedRow> {
    let id = damaged::text("id", values[0]);
    decode_task_fields(values).map_err(|reason| DamagedRow {
        table: Table::Tasks,
        id: id.ok().map(str::to_owned),
        rowid: damaged::int("rowid", values[22]).ok(),
        reason,
    })
}

fn decode_task_fields(v: &[ValueRef<'_>; N_COLUMNS]) -> Result<Task, String> {
    let id = damaged::text("id", v[0])?;
    let description = damaged::text("description", v[1])?;
    let metadata = damaged::text("metadata", v[2])?;
    damaged::json_object("metadata", metadata)?;
    let priority = damaged::text("priority", v[3])?;
    let priority = Priority::from_str(priority).map_err(|e| format!("column `priority`: {e}"))?;
    let status = damaged::text("status", v[4])?;
    let status = Status::from_str(status).map_err(|e| format!("column `status`: {e}"))?;
    let assigned_to = damaged::opt_text("assigned_to", v[5])?;
    let assigned_at_ms = damaged::opt_u64("assigned_at", v[6])?.unwrap_or(0);
    let last_alive_at_ms = damaged::opt_u64("last_alive_at", v[18])?;
    if !status.is_final() && status.is_held() != assigned_to.is_some() {
        return Err(match assigned_to {
            Some(_) => format!("a {status} task with an `assigned_to`"),
            None => format!("a {status} task without an `assigned_to`"),
        });
    }
    let holder = assigned_to.map(|agent| {
        Box::new(Holder {
            agent_id: agent.into(),
            assigned_at_ms,
            last_alive_at_ms: last_alive_at_ms.unwrap_or(assigned_at_ms),
        })
    });
    let capabilities = damaged::text("needed_capabilities", v[11])?;
    let capabilities: Vec<String> = serde_json::from_str(capabilities)
        .map_err(|e| format!("column `needed_capabilities`: not a JSON list of strings ({e})"))?;
    let result = damaged::opt_text("result", v[12])?;
    let tokens_used = damaged::opt_u64("tokens_used", v[13])?;
    let outcome = match result {
        Some(result) => {
            damaged::json("result", result)?;
            Some(Box::new(Completion {
                result: result.to_owned(),
                tokens_used,
            }))
        }
        None => None,
    };
    let history = damaged::text("history", v[20])?;
    let history = parse_history(history)
        .ok_or("column `history`: not a JSON list of {event, timestamp, details}")?;
    Ok(Task {
        id: TaskId::from(id),
        description: description.into(),
        metadata: metadata.into(),
        priority,
        status,
        holder,
        generation: damaged::u64_col("generation", v[7])?,
        retry_count: damaged::u32_col("retry_count", v[8])?,
        reclaim_count: damaged::u32_col("reclaim_count", v[21])?,
        max_retries: damaged::u32_col("max_retries", v[9])?,
        complete_by_ms: damaged::opt_u64("complete_by", v[10])?,
        needed_capabilities: capabilities.into(),
        outcome,
        last_error: damaged::opt_text("last_error", v[14])?.map(Into::into),
        submitted_by: damaged::opt_text("submitted_by", v[15])?.map(Into::into),
        created_at_ms: damaged::u64_col("created_at", v[16])?,
        updated_at_ms: damaged::u64_col("updated_at", v[17])?,
        queue_seq: damaged::u64_col("queue_seq", v[19])?,
        history,
    })
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

/// Deletes final tasks (except dead letters) last updated before `before_ms`.
pub fn delete_expired(conn: &Connection, before_ms: u64) -> Result<usize, rusqlite::Error> {
    conn.execute(
        "DELETE FROM tasks WHERE status IN ('completed', 'cancelled') AND updated_at < ?1",
        [before_ms as i64],
    )
}

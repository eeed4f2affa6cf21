//! The task row codec: a [`Task`] to a `tasks` row and back, with the history as
//! compact JSON text (a row that cannot be decoded is a [`DamagedRow`], never a
//! failed read). The writes of task rows are in `writes.rs`.

use std::str::FromStr;

use coordinator_queue::{
    Capabilities, Completion, HistoryEntry, HistoryEvent, Holder, Payload, Priority, Status, Task,
    TaskId, TaskParts,
};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};
use serde_json::Value;

use super::damaged::{self, DamagedRow, Table};

/// The description and metadata to write with a record: its own texts, or
/// `None` for a text it leaves out ([`Payload::Stored`]: keep the stored one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Texts<'a> {
    /// The description, if written.
    pub description: Option<&'a str>,
    /// The metadata, if written.
    pub metadata: Option<&'a str>,
}

impl<'a> Texts<'a> {
    /// The texts `task` carries.
    pub fn of(task: &'a Task) -> Texts<'a> {
        Texts {
            description: task.description().as_inline(),
            metadata: task.metadata().as_inline(),
        }
    }
}

/// The dependencies as a JSON array of ids; NULL when there are none.
pub(crate) fn depends_on_json(ids: &[TaskId]) -> Option<String> {
    if ids.is_empty() {
        return None;
    }
    let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
    serde_json::to_string(&ids).ok()
}

/// The needed capabilities as a JSON list of strings.
pub(crate) fn capabilities_json(task: &Task) -> String {
    serde_json::to_string(task.needed_capabilities().names()).unwrap_or_else(|_| "[]".into())
}

/// The history as SQLite rows keep it since schema version 7 (PostgreSQL rows
/// since its version 5): one flat JSON
/// list holding, for each entry, its event's number ([`event_code`]), a time
/// and, unless they are those of the entry before (the first entry's "before"
/// being empty), its details as a string. The time of the first entry is its
/// timestamp; of each later one, the difference from the timestamp before.
/// A typical task's history is about a third of [`history_json`]'s, so the
/// row each state change rewrites stays small. A difference beyond the range
/// of `i64` (only absurd timestamps) or an event without a number falls back to [`history_json`];
/// [`parse_history`] reads both.
pub(crate) fn history_text(history: &[HistoryEntry]) -> String {
    let mut out = Vec::with_capacity(8 + history.len() * 32);
    out.push(b'[');
    let mut previous: Option<&HistoryEntry> = None;
    for entry in history {
        let ms = match previous {
            None => i128::from(entry.timestamp_ms),
            Some(p) => i128::from(entry.timestamp_ms) - i128::from(p.timestamp_ms),
        };
        if previous.is_some() {
            if i64::try_from(ms).is_err() {
                return history_json(history);
            }
            out.push(b',');
        }
        let Some(code) = event_code(entry.event) else {
            return history_json(history);
        };
        // serde_json writes numbers without the formatting machinery (a
        // third of this function's work per entry with `write!`); writing
        // into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &code);
        out.push(b',');
        let _ = serde_json::to_writer(&mut out, &ms);
        let before = previous.map_or("", |p| &*p.details);
        if *entry.details != *before {
            out.push(b',');
            if serde_json::to_writer(&mut out, &*entry.details).is_err() {
                return history_json(history);
            }
        }
        previous = Some(entry);
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_else(|_| history_json(history))
}

/// The number that stands for `event` in [`history_text`]; stored, so fixed
/// for good (a new event takes the next number; until it has one, a history
/// holding it is written as [`history_json`]).
fn event_code(event: HistoryEvent) -> Option<u64> {
    Some(match event {
        HistoryEvent::Submitted => 0,
        HistoryEvent::Assigned => 1,
        HistoryEvent::Accepted => 2,
        HistoryEvent::Completed => 3,
        HistoryEvent::Retried => 4,
        HistoryEvent::DeadLettered => 5,
        HistoryEvent::Rejected => 6,
        HistoryEvent::Reclaimed => 7,
        HistoryEvent::Recovered => 8,
        HistoryEvent::Cancelled => 9,
        HistoryEvent::Requeued => 10,
        HistoryEvent::Released => 11,
        _ => return None,
    })
}

/// The event [`event_code`] gives `code`, if any.
fn event_of_code(code: u64) -> Option<HistoryEvent> {
    HistoryEvent::ALL
        .into_iter()
        .find(|event| event_code(*event) == Some(code))
}

/// The history as a JSON array of `{event, timestamp, details}`: the form
/// SQLite rows before schema version 7 and PostgreSQL rows before its schema
/// version 5 keep.
pub(crate) fn history_json(history: &[HistoryEntry]) -> String {
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
pub(crate) const COLUMNS: &str = "id, description, metadata, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history, reclaim_count, run_at, depends_on, idempotency_key, rowid";

/// [`COLUMNS`] with the description and metadata longer than `?1` bytes
/// replaced by their lengths (integers, read as [`Payload::Stored`]) so that
/// those texts are not copied out of storage, and any stored value that is not
/// text replaced by NULL (so an integer there is always a length).
pub(super) const COLUMNS_SHORT_TEXTS: &str = "id, CASE WHEN typeof(description) <> 'text' THEN NULL WHEN octet_length(description) > ?1 THEN octet_length(description) ELSE description END, CASE WHEN typeof(metadata) <> 'text' THEN NULL WHEN octet_length(metadata) > ?1 THEN octet_length(metadata) ELSE metadata END, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history, reclaim_count, run_at, depends_on, idempotency_key, rowid";

/// How many columns [`COLUMNS`] names.
pub(crate) const N_COLUMNS: usize = 26;

/// What the description and metadata columns of a selected row hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextColumns {
    /// The texts ([`COLUMNS`]).
    Whole,
    /// The short texts and the lengths of the long ones
    /// ([`COLUMNS_SHORT_TEXTS`]); a long metadata is not checked here.
    ShortOrLength,
}

/// Decodes a row selected with [`COLUMNS`]: the outer error is SQLite's (the
/// read itself failed), the inner one a row whose stored values the schema does
/// not allow.
pub(super) fn task_from_row(row: &Row<'_>) -> Result<Result<Task, DamagedRow>, rusqlite::Error> {
    decode_row(row, TextColumns::Whole)
}

/// Decodes a row selected with [`COLUMNS_SHORT_TEXTS`], like [`task_from_row`].
pub(super) fn task_from_row_short_texts(
    row: &Row<'_>,
) -> Result<Result<Task, DamagedRow>, rusqlite::Error> {
    decode_row(row, TextColumns::ShortOrLength)
}

fn decode_row(
    row: &Row<'_>,
    texts: TextColumns,
) -> Result<Result<Task, DamagedRow>, rusqlite::Error> {
    let mut values = [ValueRef::Null; N_COLUMNS];
    for (i, value) in values.iter_mut().enumerate() {
        *value = row.get_ref(i)?;
    }
    Ok(decode_task(&values, texts))
}

/// A task from the values of a row selected with [`COLUMNS`] (or
/// [`COLUMNS_SHORT_TEXTS`]), or what is wrong with them: a value of the wrong
/// type, text that is not valid UTF-8, an unknown status or lane, metadata that
/// is not a JSON object, a result that is not JSON, capabilities or a history
/// that do not parse, or a live task whose holder does not match its status.
pub(crate) fn decode_task(
    values: &[ValueRef<'_>; N_COLUMNS],
    texts: TextColumns,
) -> Result<Task, DamagedRow> {
    let id = damaged::text("id", values[0]);
    decode_task_fields(values, texts).map_err(|reason| DamagedRow {
        table: Table::Tasks,
        id: id.ok().map(str::to_owned),
        rowid: damaged::int("rowid", values[25]).ok(),
        reason,
    })
}

/// The stored description and metadata, as given back to an assignment: the
/// description text and the metadata text, which must be a JSON object.
pub(crate) fn decode_texts(
    description: ValueRef<'_>,
    metadata: ValueRef<'_>,
) -> Result<(String, String), String> {
    let description = damaged::text("description", description)?;
    let metadata = damaged::text("metadata", metadata)?;
    damaged::json_object("metadata", metadata)?;
    Ok((description.to_owned(), metadata.to_owned()))
}

/// A description or metadata column: its text, or with
/// [`TextColumns::ShortOrLength`] the length of a text left in storage.
fn payload(name: &str, value: ValueRef<'_>, texts: TextColumns) -> Result<Payload, String> {
    match (value, texts) {
        (ValueRef::Integer(len), TextColumns::ShortOrLength) => usize::try_from(len)
            .map(|len| Payload::Stored { len })
            .map_err(|_| format!("column `{name}`: a length of {len}")),
        // The short-texts select turns a stored value that is not text into NULL.
        (ValueRef::Null, TextColumns::ShortOrLength) => Err(format!(
            "column `{name}`: expected text, found NULL or a value of another type"
        )),
        (value, _) => damaged::text(name, value).map(Payload::from),
    }
}

fn decode_task_fields(v: &[ValueRef<'_>; N_COLUMNS], texts: TextColumns) -> Result<Task, String> {
    let id = damaged::text("id", v[0])?;
    let description = payload("description", v[1], texts)?;
    let metadata = payload("metadata", v[2], texts)?;
    if let Some(metadata) = metadata.as_inline() {
        damaged::json_object("metadata", metadata)?;
    }
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
    let holder = assigned_to.map(|agent| Holder {
        agent_id: agent.into(),
        assigned_at_ms,
        last_alive_at_ms: last_alive_at_ms.unwrap_or(assigned_at_ms),
    });
    let capabilities = damaged::text("needed_capabilities", v[11])?;
    let capabilities: Vec<String> = serde_json::from_str(capabilities)
        .map_err(|e| format!("column `needed_capabilities`: not a JSON list of strings ({e})"))?;
    if !is_capability_set(&capabilities) {
        return Err(
            "column `needed_capabilities`: not sorted, distinct, non-empty names".to_owned(),
        );
    }
    let result = damaged::opt_text("result", v[12])?;
    let tokens_used = damaged::opt_u64("tokens_used", v[13])?;
    let outcome = match result {
        Some(result) => {
            damaged::json("result", result)?;
            Some(Completion {
                result: result.to_owned(),
                tokens_used,
            })
        }
        None => None,
    };
    let history = damaged::text("history", v[20])?;
    let history = parse_history(history)
        .ok_or("column `history`: not a JSON list of {event, timestamp, details}")?;
    let parts = TaskParts {
        id: TaskId::from(id),
        description,
        metadata,
        priority,
        status,
        holder,
        generation: damaged::u64_col("generation", v[7])?,
        retry_count: damaged::u32_col("retry_count", v[8])?,
        reclaim_count: damaged::u32_col("reclaim_count", v[21])?,
        max_retries: damaged::u32_col("max_retries", v[9])?,
        complete_by_ms: damaged::opt_u64("complete_by", v[10])?,
        needed_capabilities: Capabilities::new(capabilities),
        outcome,
        last_error: damaged::opt_text("last_error", v[14])?.map(str::to_owned),
        submitted_by: damaged::opt_text("submitted_by", v[15])?.map(str::to_owned),
        created_at_ms: damaged::u64_col("created_at", v[16])?,
        updated_at_ms: damaged::u64_col("updated_at", v[17])?,
        queue_seq: damaged::u64_col("queue_seq", v[19])?,
        history,
        run_at_ms: damaged::opt_u64("run_at", v[22])?,
        depends_on: match damaged::opt_text("depends_on", v[23])? {
            None => Vec::new(),
            Some(text) => serde_json::from_str::<Vec<String>>(text)
                .map_err(|_| "column `depends_on`: not a JSON list of task ids")?
                .into_iter()
                .map(TaskId::from)
                .collect(),
        },
        idempotency_key: damaged::opt_text("idempotency_key", v[24])?.map(str::to_owned),
    };
    Task::from_parts(parts).map_err(|e| e.to_string())
}

/// True if `names` are as a task keeps them: sorted, without duplicates, none
/// empty. Matching compares sorted sets, so a task with any other list could
/// never be assigned.
fn is_capability_set(names: &[String]) -> bool {
    names.windows(2).all(|w| w[0] < w[1]) && names.iter().all(|n| !n.is_empty())
}

/// Parses what [`history_text`] or [`history_json`] wrote (one form for the
/// whole list); `None` if anything is missing or unknown.
pub(crate) fn parse_history(text: &str) -> Option<Vec<HistoryEntry>> {
    let entries: Vec<Value> = serde_json::from_str(text).ok()?;
    if entries.first().is_some_and(Value::is_object) {
        return entries
            .into_iter()
            .map(|e| {
                Some(HistoryEntry {
                    event: HistoryEvent::parse(e.get("event")?.as_str()?)?,
                    timestamp_ms: e.get("timestamp")?.as_u64()?,
                    details: e.get("details")?.as_str()?.into(),
                })
            })
            .collect();
    }
    let mut history: Vec<HistoryEntry> = Vec::with_capacity(entries.len() / 2);
    let mut values = entries.iter().peekable();
    while let Some(code) = values.next() {
        let event = event_of_code(code.as_u64()?)?;
        let ms = values.next()?;
        let details = match values.peek() {
            Some(Value::String(details)) => {
                values.next();
                Some(details.as_str())
            }
            _ => None,
        };
        let (timestamp_ms, details) = match history.last() {
            None => (ms.as_u64()?, details.unwrap_or("")),
            Some(before) => (
                before.timestamp_ms.checked_add_signed(ms.as_i64()?)?,
                details.unwrap_or(&before.details),
            ),
        };
        let details = details.into();
        history.push(HistoryEntry {
            event,
            timestamp_ms,
            details,
        });
    }
    Some(history)
}

/// The retention sweep's statement. It names its index: left to choose, SQLite
/// takes the status index (equality beats a range) and reads every final row.
pub(super) const DELETE_EXPIRED: &str = "DELETE FROM tasks INDEXED BY tasks_expiry \
     WHERE status IN ('completed', 'cancelled') AND updated_at < ?1";

/// Deletes final tasks (except dead letters) last updated before `before_ms`,
/// reading only those (through the `tasks_expiry` index).
pub fn delete_expired(conn: &Connection, before_ms: u64) -> Result<usize, rusqlite::Error> {
    conn.execute(DELETE_EXPIRED, [before_ms as i64])
}

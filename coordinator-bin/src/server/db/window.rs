//! The reads behind the window of scheduled tasks kept in memory: what a
//! start restores (every live task but the scheduled ones, which are read
//! back in `run_at` order as their time nears), and those reads.

use std::collections::HashSet;

use coordinator_queue::{ScheduleKey, ScheduledLoad, ScheduledPage, Status, Task};
use rusqlite::types::Value;
use rusqlite::Connection;

use super::damaged::DamagedRow;
use super::reads::push_rows_of_unknown_status;
use super::rows::{task_from_row_short_texts, COLUMNS_SHORT_TEXTS};
use super::{DbError, N_COLUMNS};

/// What a start restores: the live tasks it keeps in memory, and the place
/// after every stored one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTasks {
    /// Every live task but the scheduled ones; a scheduled task comes only
    /// if a waiting task depends on it.
    pub tasks: Vec<Task>,
    /// Above every `queue_seq` stored (final tasks and scheduled ones left
    /// in storage included), so that new places never repeat one.
    pub next_queue_seq: u64,
}

/// The live tasks a start keeps in memory (see [`LiveTasks`]); texts longer
/// than `max_inline_bytes` come as their lengths.
///
/// Scheduled rows are still decoded, one at a time, and forgotten: as with
/// `load_live_tasks`, a row that may be live and cannot be decoded refuses
/// the start ([`DbError::DamagedLive`]).
pub fn load_restore_set(conn: &Connection, max_inline_bytes: usize) -> Result<LiveTasks, DbError> {
    let kept: Vec<&str> = Status::ALL
        .iter()
        .filter(|s| !s.is_final() && **s != Status::Scheduled)
        .map(|s| s.as_str())
        .collect();
    let max = i64::try_from(max_inline_bytes).unwrap_or(i64::MAX);
    let mut tasks = Vec::new();
    let mut damaged = Vec::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS_SHORT_TEXTS} FROM tasks WHERE status IN ('{}') ORDER BY queue_seq",
        kept.join("', '")
    ))?;
    for row in stmt.query_map([max], task_from_row_short_texts)? {
        match row? {
            Ok(task) => tasks.push(task),
            Err(row) => damaged.push(row),
        }
    }
    let awaited: HashSet<String> = tasks
        .iter()
        .filter(|t| t.status() == Status::Waiting)
        .flat_map(|t| t.depends_on().iter().map(|d| d.to_string()))
        .collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS_SHORT_TEXTS} FROM tasks WHERE status = 'scheduled' ORDER BY queue_seq"
    ))?;
    for row in stmt.query_map([max], task_from_row_short_texts)? {
        match row? {
            Ok(task) if awaited.contains(task.id().as_str()) => tasks.push(task),
            Ok(_) => {}
            Err(row) => damaged.push(row),
        }
    }
    push_rows_of_unknown_status(conn, &mut damaged)?;
    if !damaged.is_empty() {
        return Err(DbError::DamagedLive(damaged));
    }
    Ok(LiveTasks {
        tasks,
        next_queue_seq: next_queue_seq(conn)?,
    })
}

/// One more than the largest integer `queue_seq` stored (0 for none).
fn next_queue_seq(conn: &Connection) -> Result<u64, DbError> {
    // Answered by the index on queue_seq; a value that is not an integer
    // (a damaged row sorts after the numbers) sends it to a scan.
    let max: Value = conn.query_row("SELECT MAX(queue_seq) FROM tasks", [], |r| r.get(0))?;
    let max = match max {
        Value::Integer(n) => Some(n),
        Value::Null => None,
        _ => conn.query_row(
            "SELECT MAX(queue_seq) FROM tasks WHERE typeof(queue_seq) = 'integer'",
            [],
            |r| r.get(0),
        )?,
    };
    Ok(max.map_or(0, |n| u64::try_from(n).unwrap_or(0).saturating_add(1)))
}

/// A key as stored, if both of its columns are integers that fit.
fn key_of(run_at: &Value, queue_seq: &Value) -> Option<ScheduleKey> {
    match (run_at, queue_seq) {
        (Value::Integer(at), Value::Integer(seq)) => {
            Some((u64::try_from(*at).ok()?, u64::try_from(*seq).ok()?))
        }
        _ => None,
    }
}

fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The read a [`ScheduledLoad`] asks for, answered by the partial index on
/// `(run_at, queue_seq)` of the scheduled rows (named: the planner would
/// otherwise take the status index and sort every scheduled row); texts longer than
/// `max_inline_bytes` come as their lengths. A row that cannot be decoded is
/// left out of the page and returned beside it (the page still moves past
/// it).
pub fn load_scheduled(
    conn: &Connection,
    load: &ScheduledLoad,
    max_inline_bytes: usize,
) -> Result<(ScheduledPage, Vec<DamagedRow>), DbError> {
    let max = i64::try_from(max_inline_bytes).unwrap_or(i64::MAX);
    let limit = i64::try_from(load.limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS_SHORT_TEXTS}, run_at, queue_seq FROM tasks INDEXED BY tasks_scheduled \
         WHERE status = 'scheduled' AND (run_at, queue_seq) >= (?2, ?3) AND run_at <= ?4 \
         ORDER BY run_at, queue_seq LIMIT ?5"
    ))?;
    let rows = stmt.query_map(
        rusqlite::params![
            max,
            sql_int(load.from.0),
            sql_int(load.from.1),
            sql_int(load.until_ms),
            limit
        ],
        |row| {
            let task = task_from_row_short_texts(row)?;
            let run_at: Value = row.get(N_COLUMNS)?;
            let queue_seq: Value = row.get(N_COLUMNS + 1)?;
            Ok((task, key_of(&run_at, &queue_seq)))
        },
    )?;
    let mut tasks = Vec::new();
    let mut damaged = Vec::new();
    let mut last: Option<ScheduleKey> = None;
    for row in rows {
        let (task, key) = row?;
        last = key.or(last);
        match task {
            Ok(task) => tasks.push(task),
            Err(row) => damaged.push(row),
        }
    }
    let (after, op) = match last {
        Some(key) => (key, ">"),
        None => (load.from, ">="),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT run_at, queue_seq FROM tasks INDEXED BY tasks_scheduled \
         WHERE status = 'scheduled' AND (run_at, queue_seq) {op} (?1, ?2) ORDER BY run_at, queue_seq LIMIT 1"
    ))?;
    let mut next = None;
    let mut rows = stmt.query([sql_int(after.0), sql_int(after.1)])?;
    if let Some(row) = rows.next()? {
        let run_at: Value = row.get(0)?;
        let queue_seq: Value = row.get(1)?;
        next = key_of(&run_at, &queue_seq);
    }
    Ok((ScheduledPage { tasks, next }, damaged))
}

//! Reads of task rows: the live tasks at start, one task, filtered lists, counts.
//! A row that cannot be decoded never fails a list: it comes back as a
//! [`DamagedRow`] beside the rows that could be read.

use std::str::FromStr;

use coordinator_queue::{Priority, Status, Task};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension};

use super::damaged::{self, DamagedRow, Table};
use super::rows::{decode_texts, task_from_row, COLUMNS};
#[cfg(any(test, feature = "fuzzing"))]
use super::rows::{task_from_row_short_texts, COLUMNS_SHORT_TEXTS};
use super::DbError;

/// Every non-final task, to rebuild the scheduler at start.
///
/// Refuses ([`DbError::DamagedLive`]) if a row that is, or may be, a live task
/// cannot be decoded: a live row that does not decode, and any row whose status
/// is none of the known ones (it may have been live). Starting without such a
/// task would drop work that was acknowledged; rows of final tasks are not read.
///
/// A description or metadata longer than `max_inline_bytes` comes as its length
/// only ([`coordinator_queue::Payload::Stored`]): the queue would not keep it,
/// so it is not read (and a long metadata is checked when it is read back, see
/// [`get_payload`]).
#[cfg(any(test, feature = "fuzzing"))]
pub fn load_live_tasks(conn: &Connection, max_inline_bytes: usize) -> Result<Vec<Task>, DbError> {
    let live: Vec<&str> = Status::ALL
        .iter()
        .filter(|s| !s.is_final())
        .map(|s| s.as_str())
        .collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS_SHORT_TEXTS} FROM tasks WHERE status IN ('{}') ORDER BY queue_seq",
        live.join("', '")
    ))?;
    let max = i64::try_from(max_inline_bytes).unwrap_or(i64::MAX);
    let mut tasks = Vec::new();
    let mut damaged = Vec::new();
    for row in stmt.query_map([max], task_from_row_short_texts)? {
        match row? {
            Ok(task) => tasks.push(task),
            Err(row) => damaged.push(row),
        }
    }
    push_rows_of_unknown_status(conn, &mut damaged)?;
    if damaged.is_empty() {
        Ok(tasks)
    } else {
        Err(DbError::DamagedLive(damaged))
    }
}

/// Adds every row whose status this binary does not know to `damaged` (such
/// a row never decodes), read through [`unknown_status_ranges`].
pub(crate) fn push_rows_of_unknown_status(
    conn: &Connection,
    damaged: &mut Vec<DamagedRow>,
) -> Result<(), rusqlite::Error> {
    for range in unknown_status_ranges() {
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM tasks WHERE {range}"))?;
        for row in stmt.query_map([], task_from_row)? {
            if let Err(row) = row? {
                damaged.push(row);
            }
        }
    }
    Ok(())
}

/// Conditions that, together, are true for rows whose status is none of the
/// known ones: the ranges between the known names, each answered by the
/// `(status, queue_seq)` index without visiting the rows of known statuses
/// (SQLite orders numbers before text and blobs after it, so those land in
/// the outer ranges; the column is `NOT NULL`).
pub(crate) fn unknown_status_ranges() -> Vec<String> {
    let mut names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    let mut ranges = Vec::with_capacity(names.len() + 1);
    let mut low: Option<&str> = None;
    for name in names {
        ranges.push(match low {
            None => format!("status < '{name}'"),
            Some(low) => format!("status > '{low}' AND status < '{name}'"),
        });
        low = Some(name);
    }
    if let Some(low) = low {
        ranges.push(format!("status > '{low}'"));
    }
    ranges
}

/// The stored description and metadata of a task, if it exists;
/// [`DbError::Damaged`] if they are not text, or the metadata not a JSON object.
pub fn get_payload(conn: &Connection, id: &str) -> Result<Option<(String, String)>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT description, metadata, rowid FROM tasks WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    decode_texts(row.get_ref(0)?, row.get_ref(1)?)
        .map(Some)
        .map_err(|reason| {
            DbError::Damaged(DamagedRow {
                table: Table::Tasks,
                id: Some(id.to_owned()),
                rowid: row.get(2).ok(),
                reason,
            })
        })
}

/// The first `chars` characters of the descriptions of `ids`, by id (those
/// found and stored as text).
pub fn description_heads(
    conn: &Connection,
    ids: &[String],
    chars: u32,
) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT substr(description, 1, ?2) FROM tasks WHERE id = ?1 AND typeof(description) = 'text'",
    )?;
    let mut heads = Vec::with_capacity(ids.len());
    for id in ids {
        let head = stmt
            .query_row(rusqlite::params![id, chars], |r| r.get::<_, String>(0))
            .optional()?;
        heads.extend(head.map(|head| (id.clone(), head)));
    }
    Ok(heads)
}

/// One task; [`DbError::Damaged`] if its row cannot be decoded.
pub fn get_task(conn: &Connection, id: &str) -> Result<Option<Task>, DbError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))?;
    match stmt.query_row([id], task_from_row).optional()? {
        None => Ok(None),
        Some(Ok(task)) => Ok(Some(task)),
        Some(Err(row)) => Err(DbError::Damaged(row)),
    }
}

/// Filters of [`list_tasks`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this lane.
    pub priority: Option<Priority>,
    /// Only this agent's.
    pub assigned_to: Option<String>,
    /// Only tasks that need this capability.
    pub capability: Option<String>,
    /// Only tasks whose id or description starts with this (ASCII case ignored).
    pub search: Option<String>,
    /// Only tasks after this position (a task's stored `queue_seq`, whatever
    /// its type, see [`task_seq`]), for paging.
    pub after_seq: Option<Value>,
    /// At most this many.
    pub limit: u32,
}

/// One page of [`list_tasks`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPage {
    /// The rows that decoded, in order.
    pub tasks: Vec<Task>,
    /// The rows of the page that did not.
    pub damaged: Vec<DamagedRow>,
    /// The id of the last row of the page whose id could be read, damaged or
    /// not: where the next page starts.
    pub next_after: Option<String>,
}

impl TaskPage {
    /// Adds the next row of the page, decoded or damaged; the next page starts
    /// after it whenever its id could be read.
    pub fn push(&mut self, row: Result<Task, DamagedRow>) {
        match row {
            Ok(task) => {
                self.next_after = Some(task.id().to_string());
                self.tasks.push(task);
            }
            Err(row) => {
                if let Some(id) = &row.id {
                    self.next_after = Some(id.clone());
                }
                self.damaged.push(row);
            }
        }
    }
}

/// Rows in submission order, filtered and paged; a row that cannot be decoded
/// takes its place in the page as a [`DamagedRow`].
pub fn list_tasks(conn: &Connection, filter: &TaskFilter) -> Result<TaskPage, DbError> {
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
    if let Some(capability) = &filter.capability {
        args.push(Box::new(capability.clone()));
        sql += &format!(
            // A damaged (not JSON) column matches nothing rather than failing the page.
            " AND CASE WHEN json_valid(needed_capabilities) THEN EXISTS (SELECT 1 FROM json_each(needed_capabilities) WHERE value = ?{}) ELSE 0 END",
            args.len()
        );
    }
    if let Some(search) = &filter.search {
        args.push(Box::new(like_prefix(search)));
        let n = args.len();
        sql += &format!(" AND (id LIKE ?{n} ESCAPE '\\' OR description LIKE ?{n} ESCAPE '\\')");
    }
    match &filter.after_seq {
        None => {}
        // NULL sorts first; everything else comes after it.
        Some(Value::Null) => sql += " AND queue_seq IS NOT NULL",
        Some(after) => {
            args.push(Box::new(after.clone()));
            sql += &format!(" AND queue_seq > ?{}", args.len());
        }
    }
    args.push(Box::new(filter.limit));
    sql += &format!(" ORDER BY queue_seq LIMIT ?{}", args.len());
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut page = TaskPage::default();
    for row in stmt.query_map(rusqlite::params_from_iter(args.iter()), task_from_row)? {
        page.push(row?);
    }
    Ok(page)
}

/// A `LIKE` pattern matching what starts with `prefix` (its `%`, `_` and `\`
/// escaped with `\`).
pub(crate) fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The stored `queue_seq` of a task, as stored (an integer unless the row is
/// damaged), for the `after` cursor.
pub fn task_seq(conn: &Connection, id: &str) -> Result<Option<Value>, DbError> {
    Ok(conn
        .query_row("SELECT queue_seq FROM tasks WHERE id = ?1", [id], |r| {
            r.get::<_, Value>(0)
        })
        .optional()?)
}

/// Task counts by status and lane, and the count rows that cannot be decoded
/// (left out of the counts).
pub type Counts = (Vec<(String, String, u64)>, Vec<DamagedRow>);

/// Counts by status and priority (rows of zero left out).
pub fn count_by_status_priority(conn: &Connection) -> Result<Counts, DbError> {
    let mut stmt = conn.prepare_cached("SELECT status, priority, n FROM task_counts")?;
    let mut counts = Vec::new();
    let mut damaged = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        match decode_count([row.get_ref(0)?, row.get_ref(1)?, row.get_ref(2)?]) {
            Ok(Some(count)) => counts.push(count),
            Ok(None) => {}
            Err(row) => damaged.push(row),
        }
    }
    Ok((counts, damaged))
}

/// One `task_counts` row: a known status and lane and a count that is not
/// negative; `None` for a count of zero.
pub(crate) fn decode_count(
    v: [ValueRef<'_>; 3],
) -> Result<Option<(String, String, u64)>, DamagedRow> {
    let fields = || -> Result<Option<(String, String, u64)>, String> {
        let status = damaged::text("status", v[0])?;
        Status::from_str(status).map_err(|e| format!("column `status`: {e}"))?;
        let priority = damaged::text("priority", v[1])?;
        Priority::from_str(priority).map_err(|e| format!("column `priority`: {e}"))?;
        let n = damaged::int("n", v[2])?;
        let n = u64::try_from(n).map_err(|_| format!("column `n`: {n} is negative"))?;
        Ok((n > 0).then(|| (status.to_owned(), priority.to_owned(), n)))
    };
    fields().map_err(|reason| DamagedRow {
        table: Table::TaskCounts,
        id: match (
            damaged::text("status", v[0]),
            damaged::text("priority", v[1]),
        ) {
            (Ok(status), Ok(priority)) => Some(format!("{status}/{priority}")),
            _ => None,
        },
        rowid: None,
        reason,
    })
}

#[cfg(test)]
mod tests;

/// The stored status of each of `ids` (`None`: no such task), for the
/// dependencies of a submission.
pub fn task_statuses(
    conn: &Connection,
    ids: &[String],
) -> Result<Vec<(String, Option<Status>)>, DbError> {
    let mut stmt = conn.prepare_cached("SELECT status FROM tasks WHERE id = ?1")?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let status: Option<String> = stmt.query_row([id], |r| r.get(0)).optional()?;
        // A status this binary does not know is no dependency it can wait for.
        out.push((id.clone(), status.and_then(|s| Status::from_str(&s).ok())));
    }
    Ok(out)
}

/// The task a submitter stored with an idempotency key: its id, lane, status
/// and submission time.
pub fn task_by_key(
    conn: &Connection,
    submitter: &str,
    key: &str,
) -> Result<Option<(String, Priority, Status, u64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, priority, status, created_at FROM tasks WHERE submitted_by = ?1 AND idempotency_key = ?2",
    )?;
    let row = stmt
        .query_row([submitter, key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    Ok(row.and_then(|(id, priority, status, created)| {
        Some((
            id,
            Priority::from_str(&priority).ok()?,
            Status::from_str(&status).ok()?,
            u64::try_from(created).ok()?,
        ))
    }))
}

/// The results of the dependencies of task `id`, in its order (`None` for a
/// dependency without a stored result: deleted by retention).
pub fn dependency_results(
    conn: &Connection,
    id: &str,
) -> Result<Vec<(String, Option<String>)>, DbError> {
    let depends_on: Option<String> = conn
        .prepare_cached("SELECT depends_on FROM tasks WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(depends_on) = depends_on else {
        return Ok(Vec::new());
    };
    let ids: Vec<String> = serde_json::from_str(&depends_on).unwrap_or_default();
    let mut stmt = conn.prepare_cached("SELECT result FROM tasks WHERE id = ?1")?;
    let mut out = Vec::with_capacity(ids.len());
    for dep in ids {
        let result: Option<String> = stmt.query_row([&dep], |r| r.get(0)).optional()?.flatten();
        out.push((dep, result));
    }
    Ok(out)
}

/// The ids of the tasks that depend on `id`, oldest first.
pub fn dependents(conn: &Connection, id: &str) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.task_id FROM task_dependencies d LEFT JOIN tasks t ON t.id = d.task_id WHERE d.depends_on = ?1 ORDER BY t.created_at, d.task_id",
    )?;
    let ids = stmt
        .query_map([id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

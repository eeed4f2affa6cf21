//! Reads of task rows: the live tasks at start, one task, filtered lists, counts.

use queue_core::{Priority, Status, Task};
use rusqlite::{Connection, OptionalExtension};

use super::rows::{collect_tasks, task_from_row, COLUMNS};
use super::DbError;

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

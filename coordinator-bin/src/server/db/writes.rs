//! The writes of task rows: a new task's row inserted whole once, then only
//! its changing columns updated in place; with them, in the same transaction,
//! the counts by status and lane and the dependency edges of new rows. The
//! service is the only writer of task rows, so these are kept here, once per
//! group, rather than by row triggers (which ran two more statements per state
//! change and made every insert and update keep a statement journal).

use std::str::FromStr;

use coordinator_queue::{HistoryEvent, IdMap, Priority, Status, Task, TaskId, HISTORY_CAP};
use rusqlite::types::ValueRef;
use rusqlite::{params, CachedStatement, Connection, ErrorCode, OptionalExtension};

use super::counts::CountChanges;
use super::rows::{capabilities_json, depends_on_json, history_text, Texts};

/// A stored row's rowid, status and lane (the lane never changes after the
/// insert, so the status alone tells how an update moves the counts).
const STORED: &str = "SELECT rowid, status, priority FROM tasks WHERE id = ?1";

/// A new task's row, whole.
const INSERT: &str = "INSERT INTO tasks (id, description, metadata, priority, status, assigned_to, assigned_at, generation, retry_count, max_retries, complete_by, needed_capabilities, result, tokens_used, last_error, submitted_by, created_at, updated_at, last_alive_at, queue_seq, history, reclaim_count, run_at, depends_on, idempotency_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)";

/// The columns that change after a submission, by rowid. The columns fixed
/// at submission (texts, lane, capabilities, submitter, options) are left
/// alone, so no index over them is touched again; the queue position has its
/// own statement ([`MOVE_SEQ`]).
/// The row is named by its rowid and its id both: a rowid remembered by
/// [`KnownRows`] that no longer holds this task changes nothing, and the
/// writer then looks the row up by id.
const UPDATE: &str = "UPDATE tasks SET status = ?2, assigned_to = ?3, assigned_at = ?4, generation = ?5, retry_count = ?6, result = ?7, tokens_used = ?8, last_error = ?9, updated_at = ?10, last_alive_at = ?11, history = ?12, reclaim_count = ?13 WHERE rowid = ?1 AND id = ?14";

/// Moves a stored row to another queue position, only if it changed (an
/// update that sets `queue_seq` rewrites its index entry even when the value
/// is the same).
const MOVE_SEQ: &str = "UPDATE tasks SET queue_seq = ?2 WHERE rowid = ?1 AND queue_seq IS NOT ?2";

/// One dependency edge of a new row (the same edges the trigger of schema
/// versions 4 to 7 wrote: one per dependency named, each once).
const ADD_DEPENDENCY: &str =
    "INSERT OR IGNORE INTO task_dependencies (depends_on, task_id) VALUES (?1, ?2)";

/// Adds a group's change to one count.
const ADD_COUNT: &str = "UPDATE task_counts SET n = n + ?3 WHERE status = ?1 AND priority = ?2";

/// Writes one task record with `texts` (see [`write_tasks`]).
#[cfg(any(test, feature = "fuzzing"))]
pub fn write_task(conn: &Connection, task: &Task, texts: Texts<'_>) -> Result<(), rusqlite::Error> {
    write_tasks(conn, &[(task, texts)], &mut KnownRows::default())
}

/// Writes one whole task record, with the texts it carries.
#[cfg(test)]
pub fn upsert_task(conn: &Connection, task: &Task) -> Result<(), rusqlite::Error> {
    write_task(conn, task, Texts::of(task))
}

/// Held tasks' rows remembered at most (about 40 bytes each; there is one
/// held task per busy agent); beyond, a task's row is looked up by id when it
/// changes, as on a cold start.
const KNOWN_ROWS_MAX: usize = 1 << 16;

/// A stored row as the writer last wrote it: where it is, and what it counts
/// under (the lane never changes after the insert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredRow {
    rowid: i64,
    status: Option<Status>,
    lane: Option<Priority>,
}

/// What the writer remembers of the rows of the tasks agents hold (assigned
/// or working), so that the holder's reports go straight to their row by
/// rowid instead of first looking it up by id (an index descent on a text key
/// per record). Only held tasks are kept, so this memory follows the agents
/// at work, not the backlog: a queued, scheduled or waiting task is
/// forgotten, and so is a final one (the retention sweep deletes only final
/// rows). A submission's record needs no look-up either
/// ([`Task::is_submission_record`]), so of a task's usual three writes only
/// its assignment reads its row first. A group's lessons are undone unless it
/// commits ([`KnownRows::settle`]): a rolled-back insert gives its rowid back.
#[derive(Debug)]
pub struct KnownRows {
    rows: IdMap<TaskId, StoredRow>,
    /// What each lesson of the current group replaced, oldest first.
    undo: Vec<(TaskId, Option<StoredRow>)>,
    max: usize,
}

impl Default for KnownRows {
    fn default() -> KnownRows {
        KnownRows::with_max(KNOWN_ROWS_MAX)
    }
}

impl KnownRows {
    /// Remembers at most `max` rows.
    fn with_max(max: usize) -> KnownRows {
        KnownRows {
            rows: IdMap::default(),
            undo: Vec::new(),
            max,
        }
    }

    /// Keeps the current group's lessons if it committed, else undoes them.
    pub fn settle(&mut self, committed: bool) {
        if committed {
            self.undo.clear();
            return;
        }
        while let Some((id, before)) = self.undo.pop() {
            match before {
                Some(row) => self.rows.insert(id, row),
                None => self.rows.remove(&id),
            };
        }
    }

    /// Held tasks whose rows are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The row of `task` as last written, if remembered.
    fn get(&self, task: &Task) -> Option<StoredRow> {
        self.rows.get(task.id()).copied()
    }

    /// Notes that `task`'s row is now `row`: remembered while the task is
    /// held (a new one not once `max` rows are), forgotten otherwise.
    fn learn(&mut self, task: &Task, row: StoredRow) {
        let id = task.id();
        let held = matches!(task.status(), Status::Assigned | Status::Working);
        let before = if !held {
            self.rows.remove(id)
        } else if self.rows.len() < self.max || self.rows.contains_key(id) {
            self.rows.insert(id.clone(), row)
        } else {
            return;
        };
        self.undo.push((id.clone(), before));
    }
}

/// Writes `records`, each with its texts: a task without a stored row is
/// inserted (both texts must then be given: a record that leaves one out is
/// an error, and the commit fails), with its dependency edges; a stored row
/// has its changing columns updated in place, keeping what was fixed at
/// submission. The counts by status and lane take the group's changes at the
/// end, one statement per count that moved. A stored row whose status or lane
/// is not one this binary knows is not counted (nor was it by the triggers).
///
/// A record's row is found in `known`, or taken to be new for a submission's
/// record ([`Task::is_submission_record`]), or else read by id before it is
/// written; the transaction should therefore hold the write lock from its
/// start (`BEGIN IMMEDIATE`): a deferred one fails with "database is locked",
/// without waiting, when another connection wrote between its first read and
/// its first write. What the records teach `known` stands only once the
/// caller settles it ([`KnownRows::settle`]).
pub fn write_tasks(
    conn: &Connection,
    records: &[(&Task, Texts<'_>)],
    known: &mut KnownRows,
) -> Result<(), rusqlite::Error> {
    let mut statements = Statements {
        conn,
        stored: None,
        insert: conn.prepare_cached(INSERT)?,
        update: conn.prepare_cached(UPDATE)?,
    };
    let mut counts = CountChanges::default();
    for &(task, texts) in records {
        let history = history_text(task.history());
        let row = match known.get(task) {
            Some(row) => Some(row),
            None if task.is_submission_record() => None,
            None => statements.look_up(task)?,
        };
        let written = match row {
            Some(row) => statements.update_or_look_up(task, row, &history, texts)?,
            None => statements.insert_or_look_up(task, &history, texts)?,
        };
        match written {
            Written::Inserted(rowid) => {
                counts.add(task.status(), task.priority(), 1);
                known.learn(task, StoredRow::of(task, rowid));
            }
            Written::Updated(row) => {
                if let Some(lane) = row.lane {
                    if let Some(status) = row.status {
                        counts.add(status, lane, -1);
                    }
                    counts.add(task.status(), lane, 1);
                }
                known.learn(
                    task,
                    StoredRow {
                        status: Some(task.status()),
                        ..row
                    },
                );
            }
        }
    }
    write_counts(conn, &counts)
}

impl StoredRow {
    /// The row just inserted for `task` at `rowid`.
    fn of(task: &Task, rowid: i64) -> StoredRow {
        StoredRow {
            rowid,
            status: Some(task.status()),
            lane: Some(task.priority()),
        }
    }
}

/// How a record was written: a new row at this rowid, or this stored row
/// (as it was before) updated.
enum Written {
    Inserted(i64),
    Updated(StoredRow),
}

/// The statements of one group's task writes.
struct Statements<'c> {
    conn: &'c Connection,
    stored: Option<CachedStatement<'c>>,
    insert: CachedStatement<'c>,
    update: CachedStatement<'c>,
}

impl Statements<'_> {
    /// The stored row of `task`, read by id.
    fn look_up(&mut self, task: &Task) -> Result<Option<StoredRow>, rusqlite::Error> {
        let stored = match &mut self.stored {
            Some(stored) => stored,
            None => self.stored.insert(self.conn.prepare_cached(STORED)?),
        };
        stored
            .query_row([task.id().as_str()], |r| {
                Ok(StoredRow {
                    rowid: r.get(0)?,
                    status: known(r.get_ref(1)?),
                    lane: known(r.get_ref(2)?),
                })
            })
            .optional()
    }

    /// Updates `row` (remembered or read) to `task`; if a remembered rowid
    /// no longer holds the task, its row is read by id and updated there, or
    /// inserted if it has none.
    fn update_or_look_up(
        &mut self,
        task: &Task,
        row: StoredRow,
        history: &str,
        texts: Texts<'_>,
    ) -> Result<Written, rusqlite::Error> {
        if self.update(task, row.rowid, history)? {
            return Ok(Written::Updated(row));
        }
        match self.update_found(task, history)? {
            Some(found) => Ok(Written::Updated(found)),
            None => self.insert(task, history, texts).map(Written::Inserted),
        }
    }

    /// Inserts `task`'s row; if a row of that id is stored after all (the
    /// insert breaks its uniqueness), that row is updated instead.
    fn insert_or_look_up(
        &mut self,
        task: &Task,
        history: &str,
        texts: Texts<'_>,
    ) -> Result<Written, rusqlite::Error> {
        match self.insert(task, history, texts) {
            Ok(rowid) => Ok(Written::Inserted(rowid)),
            Err(err) if err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                match self.update_found(task, history)? {
                    Some(found) => Ok(Written::Updated(found)),
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Reads `task`'s row by id and updates it there; the row as it was, or
    /// `None` if the task has none.
    fn update_found(
        &mut self,
        task: &Task,
        history: &str,
    ) -> Result<Option<StoredRow>, rusqlite::Error> {
        match self.look_up(task)? {
            Some(found) if self.update(task, found.rowid, history)? => Ok(Some(found)),
            // Read by its id a moment ago in this transaction.
            Some(_) => Err(rusqlite::Error::StatementChangedRows(0)),
            None => Ok(None),
        }
    }

    /// Writes the changing columns of `task` into the row at `rowid`; false
    /// if that row is not the task's.
    fn update(&mut self, task: &Task, rowid: i64, history: &str) -> Result<bool, rusqlite::Error> {
        let changed = self.update.execute(params![
            rowid,
            task.status().as_str(),
            task.assigned_to().map(|a| a.as_str()),
            task.assigned_at_ms().map(|v| v as i64),
            task.generation() as i64,
            task.retry_count(),
            task.result(),
            task.tokens_used().map(|v| v as i64),
            task.last_error(),
            task.updated_at_ms() as i64,
            task.last_alive_at_ms().map(|v| v as i64),
            history,
            task.reclaim_count(),
            task.id().as_str(),
        ])?;
        if changed == 0 {
            return Ok(false);
        }
        if may_have_moved(task) {
            self.conn
                .prepare_cached(MOVE_SEQ)?
                .execute(params![rowid, task.queue_seq() as i64])?;
        }
        Ok(true)
    }

    /// Inserts `task`'s whole row and its dependency edges; its rowid.
    fn insert(
        &mut self,
        task: &Task,
        history: &str,
        texts: Texts<'_>,
    ) -> Result<i64, rusqlite::Error> {
        let (Some(description), Some(metadata)) = (texts.description, texts.metadata) else {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                Some(format!(
                    "task {}: a record without its description or metadata, and no stored row to keep them from",
                    task.id()
                )),
            ));
        };
        self.insert.execute(params![
            task.id().as_str(),
            description,
            metadata,
            task.priority().as_str(),
            task.status().as_str(),
            task.assigned_to().map(|a| a.as_str()),
            task.assigned_at_ms().map(|v| v as i64),
            task.generation() as i64,
            task.retry_count(),
            task.max_retries(),
            task.complete_by_ms().map(|v| v as i64),
            capabilities_json(task),
            task.result(),
            task.tokens_used().map(|v| v as i64),
            task.last_error(),
            task.submitted_by(),
            task.created_at_ms() as i64,
            task.updated_at_ms() as i64,
            task.last_alive_at_ms().map(|v| v as i64),
            task.queue_seq() as i64,
            history,
            task.reclaim_count(),
            task.run_at_ms().map(|v| v as i64),
            depends_on_json(task.depends_on()),
            task.idempotency_key(),
        ])?;
        let rowid = self.conn.last_insert_rowid();
        if !task.depends_on().is_empty() {
            let mut add = self.conn.prepare_cached(ADD_DEPENDENCY)?;
            for dependency in task.depends_on() {
                add.execute([dependency.as_str(), task.id().as_str()])?;
            }
        }
        Ok(rowid)
    }
}

/// The status or lane a stored value names, if it is one (stored as text).
fn known<T: FromStr>(value: ValueRef<'_>) -> Option<T> {
    let ValueRef::Text(text) = value else {
        return None;
    };
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// True unless the record shows that its queue position was fixed at
/// submission: a task is given a new one only when it is released (its
/// `run_at` or dependencies) or requeued from the dead letter, which its
/// history then names, unless the history is full and dropped the entry.
fn may_have_moved(task: &Task) -> bool {
    let history = task.history();
    history.len() >= HISTORY_CAP
        || history
            .iter()
            .any(|h| matches!(h.event, HistoryEvent::Released | HistoryEvent::Requeued))
}

/// Adds `counts` to the stored counts: one statement per count that moved.
fn write_counts(conn: &Connection, counts: &CountChanges) -> Result<(), rusqlite::Error> {
    let mut add = None;
    for (status, lane, n) in counts.moved() {
        let add = match &mut add {
            Some(add) => add,
            None => add.insert(conn.prepare_cached(ADD_COUNT)?),
        };
        add.execute(params![status.as_str(), lane.as_str(), n])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

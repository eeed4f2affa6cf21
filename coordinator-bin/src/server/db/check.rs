//! The checks of `coordinator check`: SQLite's own integrity and foreign key
//! checks, then every row of every table decoded as the service decodes it,
//! all on a read-only connection inside one read transaction (one snapshot,
//! safe beside a running service: no lock taken, nothing migrated or written).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::damaged::{self, DamagedRow, Table};
use super::reads::decode_count;
use super::rows::{task_from_row, COLUMNS};
use super::schema::{APPLICATION_ID, SCHEMA_VERSION};
use super::tokens::{token_from_row, TOKEN_COLUMNS};

/// Why a file could not be checked at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// Missing, not readable, or not a SQLite database.
    #[error("cannot read {0} as a SQLite database: {1}")]
    Unreadable(PathBuf, String),
    /// A SQLite database of some other program (or an empty one).
    #[error("{0} is not a coordinator database (its application id is {1:#x})")]
    NotOurs(PathBuf, i64),
    /// Written by another schema version than this binary's.
    #[error("{path} has schema version {found}; this coordinator checks version {SCHEMA_VERSION} (an older file is migrated by the first `coordinator serve` of this version; a newer one needs a newer coordinator)")]
    OtherVersion {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
}

/// What was found in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub table: Table,
    /// Rows read (damaged ones included).
    pub n_rows: u64,
    /// The rows that cannot be decoded.
    pub damaged: Vec<DamagedRow>,
    /// Why reading the table stopped early, if it did (SQLite found the file
    /// damaged while reading).
    pub stopped: Option<String>,
}

/// Everything `coordinator check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `PRAGMA integrity_check`'s messages; empty when it said `ok`.
    pub integrity: Vec<String>,
    /// `PRAGMA foreign_key_check`'s findings.
    pub foreign_keys: Vec<String>,
    /// Per table, in [`Table::ALL`] order.
    pub tables: Vec<TableReport>,
    /// Tables the coordinator does not know (left unchecked).
    pub unknown_tables: Vec<String>,
}

impl CheckReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.integrity.is_empty()
            && self.foreign_keys.is_empty()
            && self
                .tables
                .iter()
                .all(|t| t.damaged.is_empty() && t.stopped.is_none())
    }

    /// Damaged rows in all tables.
    pub fn n_damaged(&self) -> usize {
        self.tables.iter().map(|t| t.damaged.len()).sum()
    }
}

/// Checks the coordinator database at `path` without changing it.
pub fn check(path: &Path) -> Result<CheckReport, CheckError> {
    let unreadable =
        |e: &dyn std::fmt::Display| CheckError::Unreadable(path.to_owned(), e.to_string());
    let meta = std::fs::metadata(path).map_err(|e| unreadable(&e))?;
    if !meta.is_file() {
        return Err(unreadable(&"not a regular file"));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unreadable(&e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| unreadable(&e))?;
    let header = |name: &str| -> Result<i64, CheckError> {
        conn.pragma_query_value(None, name, |r| r.get(0))
            .map_err(|e| unreadable(&e))
    };
    let app_id = header("application_id")?;
    let version = header("user_version")?;
    if app_id != APPLICATION_ID {
        return Err(CheckError::NotOurs(path.to_owned(), app_id));
    }
    if version != SCHEMA_VERSION {
        return Err(CheckError::OtherVersion {
            path: path.to_owned(),
            found: version,
        });
    }
    // One snapshot for every read below, whatever a running service commits.
    conn.execute_batch("BEGIN").map_err(|e| unreadable(&e))?;
    let mut report = CheckReport {
        integrity: pragma_lines(&conn, "PRAGMA integrity_check", path)?,
        foreign_keys: pragma_lines(&conn, "PRAGMA foreign_key_check", path)?,
        tables: Vec::new(),
        unknown_tables: Vec::new(),
    };
    report.integrity.retain(|line| line != "ok");
    report.tables.push(scan(
        &conn,
        path,
        Table::Tasks,
        &format!("SELECT {COLUMNS} FROM tasks"),
        |row| Ok(task_from_row(row)?.err()),
    )?);
    report.tables.push(scan(
        &conn,
        path,
        Table::Tokens,
        &format!("SELECT {TOKEN_COLUMNS} FROM tokens"),
        |row| Ok(token_from_row(row)?.err()),
    )?);
    report.tables.push(scan(
        &conn,
        path,
        Table::Meta,
        "SELECT rowid, key, value FROM meta",
        |row| Ok(decode_meta([row.get_ref(0)?, row.get_ref(1)?, row.get_ref(2)?]).err()),
    )?);
    let mut counts = scan(
        &conn,
        path,
        Table::TaskCounts,
        "SELECT status, priority, n FROM task_counts",
        |row| Ok(decode_count([row.get_ref(0)?, row.get_ref(1)?, row.get_ref(2)?]).err()),
    )?;
    counts.damaged.extend(count_mismatches(&conn, path)?);
    report.tables.push(counts);
    report.unknown_tables = unknown_tables(&conn, path)?;
    Ok(report)
}

/// Whether SQLite's error says the file itself is damaged (rather than, say,
/// unreadable or busy).
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// The first column of every row of a pragma as text; a pragma stopped by
/// damage gives a line that says so.
fn pragma_lines(conn: &Connection, sql: &str, path: &Path) -> Result<Vec<String>, CheckError> {
    let run = || -> Result<Vec<String>, rusqlite::Error> {
        let mut stmt = conn.prepare(sql)?;
        let n_columns = stmt.column_count();
        let mut rows = stmt.query([])?;
        let mut lines = Vec::new();
        while let Some(row) = rows.next()? {
            let cells: Vec<String> = (0..n_columns)
                .map(|i| match row.get_ref(i) {
                    Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                    Ok(ValueRef::Integer(v)) => v.to_string(),
                    Ok(ValueRef::Null) => "NULL".into(),
                    Ok(other) => format!("{other:?}"),
                    Err(e) => e.to_string(),
                })
                .collect();
            lines.push(cells.join(" "));
        }
        Ok(lines)
    };
    match run() {
        Ok(lines) => Ok(lines),
        Err(e) if is_damage(&e) => Ok(vec![format!("`{sql}` could not finish: {e}")]),
        Err(e) => Err(CheckError::Unreadable(path.to_owned(), e.to_string())),
    }
}

/// Reads every row of `sql` with `decode`, which gives the damage of a row.
fn scan(
    conn: &Connection,
    path: &Path,
    table: Table,
    sql: &str,
    mut decode: impl FnMut(&rusqlite::Row<'_>) -> Result<Option<DamagedRow>, rusqlite::Error>,
) -> Result<TableReport, CheckError> {
    let mut report = TableReport {
        table,
        n_rows: 0,
        damaged: Vec::new(),
        stopped: None,
    };
    let mut run = || -> Result<(), rusqlite::Error> {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            report.n_rows += 1;
            if let Some(damaged) = decode(row)? {
                report.damaged.push(damaged);
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => {}
        Err(e) if is_damage(&e) => {
            report.stopped = Some(format!("reading stopped after {} rows: {e}", report.n_rows))
        }
        Err(e) => return Err(CheckError::Unreadable(path.to_owned(), e.to_string())),
    }
    Ok(report)
}

/// One `meta` row: a text key and a text value.
fn decode_meta(v: [ValueRef<'_>; 3]) -> Result<(), DamagedRow> {
    let fields = || -> Result<(), String> {
        damaged::text("key", v[1])?;
        damaged::text("value", v[2])?;
        Ok(())
    };
    fields().map_err(|reason| DamagedRow {
        table: Table::Meta,
        id: damaged::text("key", v[1]).ok().map(str::to_owned),
        rowid: damaged::int("rowid", v[0]).ok(),
        reason,
    })
}

/// `task_counts` rows that disagree with the rows of `tasks` they count.
fn count_mismatches(conn: &Connection, path: &Path) -> Result<Vec<DamagedRow>, CheckError> {
    let read = |sql: &str| -> Result<BTreeMap<(String, String), i64>, rusqlite::Error> {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        let mut counts = BTreeMap::new();
        while let Some(row) = rows.next()? {
            if let (Ok(status), Ok(priority), Ok(n)) = (
                damaged::text("status", row.get_ref(0)?),
                damaged::text("priority", row.get_ref(1)?),
                damaged::int("n", row.get_ref(2)?),
            ) {
                counts.insert((status.to_owned(), priority.to_owned()), n);
            }
        }
        Ok(counts)
    };
    let both = || -> Result<_, rusqlite::Error> {
        Ok((
            read("SELECT status, priority, n FROM task_counts")?,
            read("SELECT status, priority, count(*) FROM tasks GROUP BY status, priority")?,
        ))
    };
    let (kept, actual) = match both() {
        Ok(both) => both,
        // The scans of the tables themselves report damage of this kind.
        Err(e) if is_damage(&e) => return Ok(Vec::new()),
        Err(e) => return Err(CheckError::Unreadable(path.to_owned(), e.to_string())),
    };
    Ok(kept
        .iter()
        .filter_map(|((status, priority), n)| {
            let held = actual
                .get(&(status.clone(), priority.clone()))
                .copied()
                .unwrap_or(0);
            (held != *n).then(|| DamagedRow {
                table: Table::TaskCounts,
                id: Some(format!("{status}/{priority}")),
                rowid: None,
                reason: format!("counts {n} tasks where the tasks table holds {held}"),
            })
        })
        .collect())
}

/// The dependency edges' table (see the schema).
const DEPENDENCY_TABLE: &str = "task_dependencies";

/// Tables other than the coordinator's own and SQLite's.
fn unknown_tables(conn: &Connection, path: &Path) -> Result<Vec<String>, CheckError> {
    let run = || -> Result<Vec<String>, rusqlite::Error> {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        names.collect()
    };
    match run() {
        Ok(names) => Ok(names
            .into_iter()
            .filter(|n| Table::ALL.iter().all(|t| t.name() != n))
            // Derived from the tasks' `depends_on` by the writer; nothing decodes it.
            .filter(|n| n != DEPENDENCY_TABLE)
            .collect()),
        Err(e) if is_damage(&e) => Ok(Vec::new()),
        Err(e) => Err(CheckError::Unreadable(path.to_owned(), e.to_string())),
    }
}

#[cfg(test)]
mod tests;

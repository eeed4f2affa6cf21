//! Stored rows that cannot be decoded: what is said about them, and the column
//! readers that tell why a stored value is not what the schema promises.

use std::fmt;

use rusqlite::types::ValueRef;

/// A table whose rows are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `tasks`: one row per task.
    Tasks,
    /// `tokens`: one row per token (its digest, never its secret).
    Tokens,
    /// `meta`: settings of the database itself.
    Meta,
    /// `task_counts`: counts by status and lane, kept by the writer.
    TaskCounts,
}

impl Table {
    /// Every table, in the order `coordinator check` reports them.
    pub const ALL: [Table; 4] = [Table::Tasks, Table::Tokens, Table::Meta, Table::TaskCounts];

    /// The SQL name (also the `table` label of the metric).
    pub fn name(self) -> &'static str {
        match self {
            Table::Tasks => "tasks",
            Table::Tokens => "tokens",
            Table::Meta => "meta",
            Table::TaskCounts => "task_counts",
        }
    }

    /// What one row holds, for messages ("task", "token", ...).
    fn item(self) -> &'static str {
        match self {
            Table::Tasks => "task",
            Table::Tokens => "token",
            Table::Meta => "meta key",
            Table::TaskCounts => "count",
        }
    }
}

/// A stored row that cannot be decoded into what it should hold. Nothing
/// rewrites or deletes it because of that: reads skip it (lists) or refuse it
/// (one task) and say so, and `coordinator check` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DamagedRow {
    /// Where it is.
    pub table: Table,
    /// Its key as stored (task id, token name, meta key, `status/lane`), when
    /// that much can be read.
    pub id: Option<String>,
    /// SQLite's rowid, for tables that have one.
    pub rowid: Option<i64>,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for DamagedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.id, self.rowid) {
            (Some(id), Some(rowid)) => write!(f, "{} {id:?} (row {rowid})", self.table.item())?,
            (Some(id), None) => write!(f, "{} {id:?}", self.table.item())?,
            (None, Some(rowid)) => write!(f, "{} row {rowid}", self.table.name())?,
            (None, None) => write!(f, "a {} row", self.table.name())?,
        }
        write!(f, ": {}", self.reason)
    }
}

/// What kind of value SQLite holds, for messages.
fn kind(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// `column `name`: expected X, found Y`.
fn wrong_type(name: &str, expected: &str, value: ValueRef<'_>) -> String {
    format!(
        "column `{name}`: expected {expected}, found {}",
        kind(value)
    )
}

/// The text of a column that must hold (UTF-8) text.
pub(crate) fn text<'a>(name: &str, value: ValueRef<'a>) -> Result<&'a str, String> {
    match value {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| format!("column `{name}`: text that is not valid UTF-8")),
        other => Err(wrong_type(name, "text", other)),
    }
}

/// The text of a column that holds text or NULL.
pub(crate) fn opt_text<'a>(name: &str, value: ValueRef<'a>) -> Result<Option<&'a str>, String> {
    match value {
        ValueRef::Null => Ok(None),
        other => text(name, other).map(Some),
    }
}

/// The integer of a column that must hold one.
pub(crate) fn int(name: &str, value: ValueRef<'_>) -> Result<i64, String> {
    match value {
        ValueRef::Integer(v) => Ok(v),
        other => Err(wrong_type(name, "an integer", other)),
    }
}

/// The integer of a column that holds an integer or NULL.
pub(crate) fn opt_int(name: &str, value: ValueRef<'_>) -> Result<Option<i64>, String> {
    match value {
        ValueRef::Null => Ok(None),
        other => int(name, other).map(Some),
    }
}

/// A `u64` stored as SQLite's signed integer (values past `i64::MAX` are stored
/// negative and read back as they were written).
pub(crate) fn u64_col(name: &str, value: ValueRef<'_>) -> Result<u64, String> {
    int(name, value).map(|v| v as u64)
}

/// Like [`u64_col`], or NULL.
pub(crate) fn opt_u64(name: &str, value: ValueRef<'_>) -> Result<Option<u64>, String> {
    opt_int(name, value).map(|v| v.map(|v| v as u64))
}

/// A `u32` counter.
pub(crate) fn u32_col(name: &str, value: ValueRef<'_>) -> Result<u32, String> {
    let v = int(name, value)?;
    u32::try_from(v).map_err(|_| format!("column `{name}`: {v} is out of range"))
}

/// The bytes of a column that must hold a blob.
pub(crate) fn blob<'a>(name: &str, value: ValueRef<'a>) -> Result<&'a [u8], String> {
    match value {
        ValueRef::Blob(bytes) => Ok(bytes),
        other => Err(wrong_type(name, "a blob", other)),
    }
}

/// Checks that `text` is one JSON value, without building it.
pub(crate) fn json(name: &str, text: &str) -> Result<(), String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| format!("column `{name}`: not valid JSON ({e})"))
}

/// Checks that `text` is one JSON object.
pub(crate) fn json_object(name: &str, text: &str) -> Result<(), String> {
    json(name, text)?;
    if text.trim_start().starts_with('{') {
        Ok(())
    } else {
        Err(format!("column `{name}`: JSON that is not an object"))
    }
}

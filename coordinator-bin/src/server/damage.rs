//! Damaged rows met while serving: each is logged once and counted once in
//! `/metrics` (`coordinator_damaged_rows_total`), however often reads meet it.
//! The rows themselves are left as they are; `coordinator check` lists them.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use super::db::{DamagedRow, Table};
use super::metrics;

/// How many distinct damaged rows are told apart; past it, further ones are
/// neither logged nor counted (one line says so).
pub const MAX_TRACKED: usize = 10_000;

/// What [`Tracker::handle_damaged`] makes of a damaged row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not met before: log and count it.
    First,
    /// Met before: already told.
    Again,
    /// Too many rows are remembered to tell whether this one was met; `true`
    /// the first time this happens.
    Untracked(bool),
}

/// The damaged rows met so far, at most [`MAX_TRACKED`] of them.
#[derive(Debug)]
pub struct Tracker {
    seen: HashSet<(Table, Option<i64>, Option<String>)>,
    cap: usize,
    overflowed: bool,
}

impl Tracker {
    /// A tracker that tells at most `cap` rows apart.
    pub fn new(cap: usize) -> Tracker {
        Tracker {
            seen: HashSet::new(),
            cap,
            overflowed: false,
        }
    }

    /// Whether `row` is met for the first time.
    pub fn handle_damaged(&mut self, row: &DamagedRow) -> Seen {
        let key = (row.table, row.rowid, row.id.clone());
        if self.seen.contains(&key) {
            return Seen::Again;
        }
        if self.seen.len() >= self.cap {
            let first = !self.overflowed;
            self.overflowed = true;
            return Seen::Untracked(first);
        }
        self.seen.insert(key);
        Seen::First
    }
}

/// Logs (once) and counts (once) a damaged row a read met.
pub fn report(row: &DamagedRow) {
    static TRACKER: OnceLock<Mutex<Tracker>> = OnceLock::new();
    let seen = TRACKER
        .get_or_init(|| Mutex::new(Tracker::new(MAX_TRACKED)))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .handle_damaged(row);
    match seen {
        Seen::First => {
            tracing::warn!(
                table = row.table.name(),
                id = row.id.as_deref().unwrap_or("-"),
                rowid = row.rowid,
                reason = row.reason.as_str(),
                "damaged row: it cannot be decoded and is left as it is (reads skip it; `coordinator check` lists every damaged row)"
            );
            metrics::record_damaged_row(row.table.name());
        }
        Seen::Again | Seen::Untracked(false) => {}
        Seen::Untracked(true) => tracing::warn!(
            max = MAX_TRACKED,
            "more damaged rows than can be told apart; further ones are neither logged nor counted (run `coordinator check`)"
        ),
    }
}

/// [`report`]s the damaged row a failed read carries, if that is why it failed.
pub fn report_if_damaged(err: &crate::server::db::DbError) {
    if let crate::server::db::DbError::Damaged(row) = err {
        report(row);
    }
}

#[cfg(test)]
mod tests;

//! What the shell must persist after a mutation.

use crate::{HistoryEntry, Task};

/// A record the shell must write durably before it acknowledges the operation
/// that produced it.
///
/// Exhaustive on purpose: a shell that persists changes must handle every kind,
/// or records would be lost; a new kind must be a breaking change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Change {
    /// The task's record changed and its newest history entry says how; write it
    /// (insert or replace).
    Updated(Task),
    /// Only the holder's sign of life changed (a progress report); write it. No
    /// history entry was added.
    Touched(Task),
    /// The task reached a final state (completed, dead letter, cancelled) and left
    /// the core; write this final record. Reads of it now come from storage.
    Finalized(Task),
}

impl Change {
    /// The record to write.
    pub fn task(&self) -> &Task {
        match self {
            Change::Updated(task) | Change::Touched(task) | Change::Finalized(task) => task,
        }
    }

    /// The history entry this change added (for logs and metrics); `None` for a
    /// [`Change::Touched`].
    pub fn recorded_event(&self) -> Option<&HistoryEntry> {
        match self {
            Change::Updated(task) | Change::Finalized(task) => task.history.last(),
            Change::Touched(_) => None,
        }
    }

    /// The record to write, by value.
    pub fn into_task(self) -> Task {
        match self {
            Change::Updated(task) | Change::Touched(task) | Change::Finalized(task) => task,
        }
    }
}

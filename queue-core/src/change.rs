//! What the shell must persist after a mutation.

use crate::Task;

/// A record the shell must write durably before it acknowledges the operation
/// that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The task's record changed; write it (insert or replace).
    Updated(Task),
    /// The task reached a final state (completed, dead letter, cancelled) and left
    /// the core; write this final record. Reads of it now come from storage.
    Finalized(Task),
}

impl Change {
    /// The record to write.
    pub fn task(&self) -> &Task {
        match self {
            Change::Updated(task) | Change::Finalized(task) => task,
        }
    }

    /// The record to write, by value.
    pub fn into_task(self) -> Task {
        match self {
            Change::Updated(task) | Change::Finalized(task) => task,
        }
    }
}

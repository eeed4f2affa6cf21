//! How a group's rows move the counts by status and lane. Both stores keep
//! their `task_counts` this way: the writer adds up a group's changes and
//! writes each count that moved once, in the group's transaction.

use coordinator_queue::{Priority, Status};

/// How one group's rows change the counts, by status and lane.
#[derive(Debug, Default)]
pub struct CountChanges([[i64; Priority::ALL.len()]; Status::ALL.len()]);

impl CountChanges {
    /// Adds `n` to the count of `status` in `lane`.
    pub fn add(&mut self, status: Status, lane: Priority, n: i64) {
        let s = Status::ALL.iter().position(|x| *x == status);
        let p = Priority::ALL.iter().position(|x| *x == lane);
        if let (Some(s), Some(p)) = (s, p) {
            self.0[s][p] += n;
        }
    }

    /// The counts that moved, and by how much.
    pub fn moved(&self) -> impl Iterator<Item = (Status, Priority, i64)> + '_ {
        Status::ALL.iter().zip(&self.0).flat_map(|(status, lanes)| {
            Priority::ALL
                .iter()
                .zip(lanes)
                .filter(|(_, n)| **n != 0)
                .map(|(lane, n)| (*status, *lane, *n))
        })
    }
}

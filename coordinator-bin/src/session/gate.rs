//! The commit gate: persist before acknowledge, by construction.
//!
//! Changes are staged into the open batch; every output is held behind the batch
//! number that holds the changes made before it, and leaves only once the store
//! reports that number committed. Outputs leave in the order they were held.

use std::collections::VecDeque;

use coordinator_queue::Change;

use super::output::TokenWrite;

/// One batch of records to commit in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Increasing batch number; the store reports the highest one committed.
    pub seq: u64,
    /// Task records, oldest first (only the newest per task needs writing).
    pub changes: Vec<Change>,
    /// Token rows to write in the same transaction.
    pub tokens: Vec<TokenWrite>,
}

impl Batch {
    /// True when the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.tokens.is_empty()
    }
}

/// Holds outputs of type `T` until the batch holding their changes is committed.
#[derive(Debug)]
pub(crate) struct Gate<T> {
    /// The newest batch number handed out.
    sent_seq: u64,
    /// The newest batch number the store reported committed.
    committed_seq: u64,
    /// The batch being filled.
    open: Batch,
    /// Outputs waiting for their batch, in order; their batch numbers never decrease.
    held: VecDeque<(u64, T)>,
}

/// What [`Gate::handle_committed`] found wrong with a commit report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FromTheFuture {
    /// The batch number reported.
    pub reported: u64,
    /// The newest batch number handed out.
    pub sent: u64,
}

impl<T> Gate<T> {
    pub(crate) fn new() -> Gate<T> {
        Gate {
            sent_seq: 0,
            committed_seq: 0,
            open: Batch {
                seq: 1,
                changes: Vec::new(),
                tokens: Vec::new(),
            },
            held: VecDeque::new(),
        }
    }

    /// Adds a task record to the open batch.
    pub(crate) fn stage(&mut self, change: Change) {
        self.open.changes.push(change);
    }

    /// Adds a token row to the open batch.
    pub(crate) fn stage_token(&mut self, write: TokenWrite) {
        self.open.tokens.push(write);
    }

    /// The batch number an output queued now must wait for: the open batch if it
    /// holds anything, else the newest one handed out.
    fn required_seq(&self) -> u64 {
        if self.open.is_empty() {
            self.sent_seq
        } else {
            self.sent_seq + 1
        }
    }

    /// Holds `output` until everything staged so far is committed.
    pub(crate) fn hold(&mut self, output: T) {
        let seq = self.required_seq();
        self.held.push_back((seq, output));
    }

    /// The next output whose changes are committed.
    pub(crate) fn poll_released(&mut self) -> Option<T> {
        if self
            .held
            .front()
            .is_some_and(|(seq, _)| *seq <= self.committed_seq)
        {
            self.held.pop_front().map(|(_, output)| output)
        } else {
            None
        }
    }

    /// Closes the open batch and hands it out, if it holds anything.
    pub(crate) fn take_batch(&mut self) -> Option<Batch> {
        if self.open.is_empty() {
            return None;
        }
        self.sent_seq += 1;
        let next = Batch {
            seq: self.sent_seq + 1,
            changes: Vec::new(),
            tokens: Vec::new(),
        };
        Some(std::mem::replace(&mut self.open, next))
    }

    /// The store committed every batch up to `seq`.
    pub(crate) fn handle_committed(&mut self, seq: u64) -> Result<(), FromTheFuture> {
        if seq > self.sent_seq {
            return Err(FromTheFuture {
                reported: seq,
                sent: self.sent_seq,
            });
        }
        self.committed_seq = self.committed_seq.max(seq);
        Ok(())
    }

    /// True when nothing is staged, in flight or held.
    pub(crate) fn is_settled(&self) -> bool {
        self.open.is_empty() && self.committed_seq == self.sent_seq && self.held.is_empty()
    }

    /// True while a batch handed out is not committed yet.
    pub(crate) fn awaits_commit(&self) -> bool {
        self.committed_seq < self.sent_seq
    }

    /// Takes out every held output whose batch is not reported committed, in
    /// order, and empties the open batch (its changes are never handed out).
    /// Batches already handed out stay in flight: their reports still count.
    pub(crate) fn take_uncommitted(&mut self) -> Vec<T> {
        self.open.changes.clear();
        self.open.tokens.clear();
        let first = self
            .held
            .iter()
            .position(|(seq, _)| *seq > self.committed_seq)
            .unwrap_or(self.held.len());
        self.held.drain(first..).map(|(_, output)| output).collect()
    }

    /// Forgets everything held (after a failed commit nothing may leave).
    pub(crate) fn abandon(&mut self) {
        self.held.clear();
        self.open.changes.clear();
        self.open.tokens.clear();
    }

    /// The newest batch number the store reported committed.
    pub(crate) fn committed_seq(&self) -> u64 {
        self.committed_seq
    }
}

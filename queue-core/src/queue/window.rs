//! The window of scheduled tasks kept in memory: those due soon, at most so
//! many; the rest stay in storage and are read back in `run_at` order as
//! their time nears.
//!
//! The rule that keeps it right: every scheduled task in memory comes before
//! [`Queue::stored_from`] in [`ScheduleKey`] order, and every one left in
//! storage at or after it. So the tasks in memory are always the next ones
//! due, a read from that key finds the rest in order, and no stored task can
//! be released before one in memory that is due earlier.

use std::collections::HashSet;

use super::Queue;
use crate::{Status, Task, TaskError, TaskId};

/// Where a scheduled task stands in release order: its `run_at` in
/// milliseconds, then its `queue_seq` (unique among tasks).
pub type ScheduleKey = (u64, u64);

/// Which scheduled tasks a [`Queue`] keeps in memory: those whose `run_at`
/// is at most `ahead_ms` away, and of those at most `max_tasks`, the earliest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduledWindow {
    /// How far ahead of now a scheduled task is kept in memory.
    pub ahead_ms: u64,
    /// The most scheduled tasks kept in memory (at least 1).
    pub max_tasks: usize,
}

impl ScheduledWindow {
    /// A window of `ahead_ms` and at most `max_tasks` tasks (0 counts as 1).
    pub fn new(ahead_ms: u64, max_tasks: usize) -> ScheduledWindow {
        ScheduledWindow {
            ahead_ms,
            max_tasks: max_tasks.max(1),
        }
    }
}

/// A read of scheduled tasks from storage that the queue asks for
/// ([`Queue::poll_load`]): the rows of status `scheduled` whose
/// `(run_at, queue_seq)` is at or after `from` and whose `run_at` is at most
/// `until_ms`, in that order, at most `limit` of them; and the key of the
/// first scheduled row after the last one returned (or at or after `from`
/// when none is), whatever its `run_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduledLoad {
    /// The first key to read.
    pub from: ScheduleKey,
    /// The latest `run_at` to read.
    pub until_ms: u64,
    /// The most rows to read.
    pub limit: usize,
}

impl ScheduledLoad {
    /// A read (for tests and stores that build one).
    pub fn new(from: ScheduleKey, until_ms: u64, limit: usize) -> ScheduledLoad {
        ScheduledLoad {
            from,
            until_ms,
            limit,
        }
    }
}

/// What storage answered to a [`ScheduledLoad`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduledPage {
    /// The rows read, in key order.
    pub tasks: Vec<Task>,
    /// The key of the first scheduled row after them; `None`: there is none.
    pub next: Option<ScheduleKey>,
}

/// A read handed out and not answered yet: what changed meanwhile, which the
/// read may or may not have seen.
#[derive(Debug, Default)]
pub(super) struct Loading {
    /// The smallest key of a task that left memory for storage since.
    evicted_from: Option<ScheduleKey>,
    /// Tasks that reached a final state since (a stale row of one must not
    /// bring it back).
    ended: HashSet<TaskId>,
}

/// A failed read is tried again after this long.
const LOAD_RETRY_MS: u64 = 1_000;

fn key_of(task: &Task) -> ScheduleKey {
    (task.run_at_ms.unwrap_or(0), task.queue_seq)
}

fn min_key(a: Option<ScheduleKey>, b: Option<ScheduleKey>) -> Option<ScheduleKey> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Queue {
    /// Says that storage may hold scheduled tasks that were not given to
    /// [`Queue::restore`] (a start that restores only the others), all of
    /// them with a `queue_seq` below `next_queue_seq`: they are read back
    /// through [`Queue::poll_load`]. Without a [`ScheduledWindow`] in the
    /// settings this only reserves the places.
    pub fn handle_stored_scheduled(&mut self, next_queue_seq: u64) {
        self.next_seq = self.next_seq.max(next_queue_seq);
        if self.config.scheduled_window.is_some() {
            self.stored_from = Some((0, 0));
            self.trim_due = true;
        }
    }

    /// Whether storage may hold scheduled tasks that memory lacks.
    pub fn has_stored_scheduled(&self) -> bool {
        self.stored_from.is_some()
    }

    /// Number of scheduled tasks in memory.
    pub fn scheduled_in_memory(&self) -> usize {
        self.n_scheduled
    }

    /// The time at which a read of stored scheduled tasks becomes due, if
    /// one can be handed out (none is running, and memory has room).
    pub(super) fn load_wake_ms(&self) -> Option<u64> {
        let window = self.config.scheduled_window?;
        let (run_at_ms, _) = self.stored_from?;
        if self.loading.is_some() || self.n_scheduled >= window.max_tasks {
            return None;
        }
        Some(
            run_at_ms
                .saturating_sub(window.ahead_ms)
                .max(self.load_retry_at_ms),
        )
    }

    /// The read of stored scheduled tasks to carry out now, if one is due:
    /// the earliest ones left in storage whose `run_at` is within the window
    /// of `now_ms`. Answer it with [`Queue::handle_scheduled_loaded`] (or
    /// [`Queue::handle_scheduled_load_failed`]); no other is handed out
    /// meanwhile.
    ///
    /// The read must see every record drained from [`Queue::poll_change`]
    /// before this call (read after their commit); what changes after it is
    /// the queue's business.
    #[must_use]
    pub fn poll_load(&mut self, now_ms: u64) -> Option<ScheduledLoad> {
        let window = self.config.scheduled_window?;
        let wake_ms = self.load_wake_ms()?;
        if wake_ms > now_ms {
            return None;
        }
        let from = self.stored_from?;
        self.loading = Some(Loading::default());
        Some(ScheduledLoad {
            from,
            until_ms: now_ms.saturating_add(window.ahead_ms),
            limit: window.max_tasks - self.n_scheduled,
        })
    }

    /// The answer to the read from [`Queue::poll_load`]: the rows enter
    /// memory as scheduled tasks (their release waits for
    /// [`Queue::handle_timeout`]), except those memory has already or that
    /// ended since the read was handed out.
    pub fn handle_scheduled_loaded(&mut self, now_ms: u64, page: ScheduledPage) {
        let Some(loading) = self.loading.take() else {
            return;
        };
        let stored_from = min_key(page.next, loading.evicted_from);
        for task in page.tasks {
            if task.status != Status::Scheduled
                || self.tasks.contains_key(&task.id)
                || loading.ended.contains(&task.id)
                || stored_from.is_some_and(|from| key_of(&task) >= from)
            {
                continue;
            }
            self.next_seq = self.next_seq.max(task.queue_seq + 1);
            let mut task = self.adopt(task);
            self.elide_payloads(&mut task);
            self.timers
                .insert((key_of(&task).0, task.queue_seq, task.id.clone()));
            self.n_scheduled += 1;
            self.index_key(&task);
            self.tasks.insert(task.id.clone(), task);
        }
        self.stored_from = stored_from;
        self.trim(now_ms);
    }

    /// The read from [`Queue::poll_load`] failed: another is handed out a
    /// second later.
    pub fn handle_scheduled_load_failed(&mut self, now_ms: u64) {
        if let Some(loading) = self.loading.take() {
            self.stored_from = min_key(self.stored_from, loading.evicted_from);
        }
        self.load_retry_at_ms = now_ms.saturating_add(LOAD_RETRY_MS);
    }

    /// Cancels a scheduled task that only storage holds, from its stored
    /// `record`: as [`Queue::cancel`], its dependents are cancelled with it.
    /// A task in memory is cancelled as by [`Queue::cancel`]. A record that
    /// is not scheduled, or of a task memory has had since (it is not beyond
    /// [`Queue::stored_from`]), is refused as not found.
    ///
    /// The record must be read after the commit of every record drained
    /// before the cancel was asked for, and the caller must not pass it if
    /// the task reached a final state since (a record read before that is
    /// stale): a task left in storage changes only here.
    pub fn cancel_stored(&mut self, now_ms: u64, record: Task) -> Result<(), TaskError> {
        if self.tasks.contains_key(&record.id) {
            return self.cancel(now_ms, &record.id).map(|_| ());
        }
        let stored_only = record.status == Status::Scheduled
            && self.stored_from.is_some_and(|from| key_of(&record) >= from)
            && !self
                .loading
                .as_ref()
                .is_some_and(|l| l.ended.contains(&record.id));
        if !stored_only {
            return Err(TaskError::NotFound(record.id));
        }
        let id = record.id.clone();
        let mut task = self.adopt(record);
        self.elide_payloads(&mut task);
        // Neither in the timers nor counted: cancel finds nothing to take out.
        self.tasks.insert(id.clone(), task);
        self.cancel(now_ms, &id).map(|_| ())
    }

    /// The key before which memory holds every scheduled task (`None`: it
    /// holds them all).
    pub fn stored_from(&self) -> Option<ScheduleKey> {
        self.stored_from
    }

    /// Notes a task that reached a final state while a read runs.
    pub(super) fn note_ended(&mut self, id: &TaskId) {
        if let Some(loading) = self.loading.as_mut() {
            loading.ended.insert(id.clone());
        }
    }

    /// Sends the scheduled tasks beyond the window back to storage (their
    /// records were emitted already): those due later than `ahead_ms` from
    /// `now_ms`, those past `max_tasks`, and those at or after
    /// [`Queue::stored_from`]; latest first.
    pub(super) fn trim(&mut self, now_ms: u64) {
        self.trim_due = false;
        let Some(window) = self.config.scheduled_window else {
            return;
        };
        let horizon_ms = now_ms.saturating_add(window.ahead_ms);
        let mut skipped = Vec::new();
        while let Some((run_at_ms, seq, id)) = self.timers.pop_last() {
            let scheduled = self
                .tasks
                .get(&id)
                .is_some_and(|t| t.status == Status::Scheduled);
            let key = (run_at_ms, seq);
            let beyond = run_at_ms > horizon_ms
                || self.n_scheduled > window.max_tasks
                || self.stored_from.is_some_and(|from| key >= from);
            if !scheduled {
                // A waiting task's release at restore: not ours to move.
                skipped.push((run_at_ms, seq, id));
                continue;
            }
            if !beyond {
                self.timers.insert((run_at_ms, seq, id));
                break;
            }
            let Some(task) = self.tasks.remove(&id) else {
                continue;
            };
            self.n_scheduled -= 1;
            self.forget_key(&task);
            self.stored_from = min_key(self.stored_from, Some(key));
            if let Some(loading) = self.loading.as_mut() {
                loading.evicted_from = min_key(loading.evicted_from, Some(key));
            }
        }
        self.timers.extend(skipped);
    }
}

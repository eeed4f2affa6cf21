//! An in-memory store of task records: what a shell's database does with the
//! [`Change`]s of a core, and the restore from it.

use std::collections::BTreeMap;

use crate::{
    Change, Queue, QueueConfig, RestoreError, ScheduleKey, ScheduledLoad, ScheduledPage, Status,
    Task, TaskId,
};

/// Why a [`Change`] could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The first record of a task left its description or metadata out
    /// ([`Payload::Stored`](crate::Payload)), so no store could ever send it.
    #[error("the first record of task `{0}` leaves out its text")]
    MissingText(TaskId),
}

/// Every task record written so far, newest version per task, final ones
/// included: what a shell's database holds.
///
/// [`MemoryStore::apply`] writes one [`Change`] as a shell does: insert or
/// replace, except that a description or metadata the record leaves out
/// ([`Payload::Stored`](crate::Payload)) keeps the text already stored. So
/// the store always holds every text, and [`MemoryStore::restore_queue`]
/// rebuilds a [`Queue`] the way a restart does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    records: BTreeMap<TaskId, Task>,
    n_writes: usize,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Writes one record. A refused change writes nothing.
    pub fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        let mut record = change.task().clone();
        if let Some(old) = self.records.get(&record.id) {
            if record.description.is_stored() {
                record.description = old.description.clone();
            }
            if record.metadata.is_stored() {
                record.metadata = old.metadata.clone();
            }
        }
        if record.description.is_stored() || record.metadata.is_stored() {
            return Err(StoreError::MissingText(record.id));
        }
        self.n_writes += 1;
        self.records.insert(record.id.clone(), record);
        Ok(())
    }

    /// Writes the records in order; stops at the first refused one.
    pub fn apply_all<'a>(
        &mut self,
        changes: impl IntoIterator<Item = &'a Change>,
    ) -> Result<(), StoreError> {
        changes.into_iter().try_for_each(|c| self.apply(c))
    }

    /// Drains the queue's pending changes, writes them and returns them.
    pub fn persist(&mut self, queue: &mut Queue) -> Result<Vec<Change>, StoreError> {
        let changes = queue.drain_changes();
        self.apply_all(&changes)?;
        Ok(changes)
    }

    /// The newest record of a task, final or live.
    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        self.records.get(id)
    }

    /// All records, by task id.
    pub fn records(&self) -> impl Iterator<Item = &Task> + '_ {
        self.records.values()
    }

    /// How many tasks have a record.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many records were written in all (one per applied change).
    pub fn n_writes(&self) -> usize {
        self.n_writes
    }

    /// A queue rebuilt from the records, as a restart after a crash builds it.
    pub fn restore_queue(&self, config: QueueConfig) -> Result<Queue, RestoreError> {
        Queue::restore(config, self.records.values().cloned())
    }

    /// Rebuilds a [`Queue`] the way a coordinator with a
    /// [`ScheduledWindow`](crate::ScheduledWindow) does: from every live
    /// record but the scheduled ones (except those a waiting task depends
    /// on), leaving the rest to [`Queue::poll_load`] (answer it with
    /// [`MemoryStore::load_scheduled`]).
    pub fn restore_queue_windowed(&self, config: QueueConfig) -> Result<Queue, RestoreError> {
        let awaited: std::collections::HashSet<&TaskId> = self
            .records
            .values()
            .filter(|t| t.status == Status::Waiting)
            .flat_map(|t| t.depends_on.iter())
            .collect();
        let records = self
            .records
            .values()
            .filter(|t| t.status != Status::Scheduled || awaited.contains(&t.id))
            .cloned();
        let mut queue = Queue::restore(config, records)?;
        let next_seq = self.records.values().map(|t| t.queue_seq + 1).max();
        queue.handle_stored_scheduled(next_seq.unwrap_or(0));
        Ok(queue)
    }

    /// Answers a read of scheduled tasks as a database does (see
    /// [`ScheduledLoad`]).
    pub fn load_scheduled(&self, load: &ScheduledLoad) -> ScheduledPage {
        let mut scheduled: Vec<(ScheduleKey, &Task)> = self
            .records
            .values()
            .filter(|t| t.status == Status::Scheduled)
            .map(|t| ((t.run_at_ms.unwrap_or(0), t.queue_seq), t))
            .filter(|(key, _)| *key >= load.from)
            .collect();
        scheduled.sort_by_key(|(key, _)| *key);
        let tasks: Vec<Task> = scheduled
            .iter()
            .take_while(|(key, _)| key.0 <= load.until_ms)
            .take(load.limit)
            .map(|(_, t)| (*t).clone())
            .collect();
        let next = scheduled.get(tasks.len()).map(|(key, _)| *key);
        ScheduledPage { tasks, next }
    }
}

//! The queue state machine: live tasks, lanes, fencing, retries and sweeps.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::Holder;
use std::sync::Arc;

use crate::index::GroupedIndex;
use crate::task::agent_generation;

mod window;
use crate::{
    AgentId, Capabilities, Change, HistoryEvent, IdMap, IdSet, NewTask, Payload, Priority,
    ReclaimReason, RestoreError, Status, SubmitError, Task, TaskError, TaskId, MAX_DEPENDENCIES,
    MAX_IDEMPOTENCY_KEY_BYTES,
};
use window::Loading;
pub use window::{ScheduleKey, ScheduledLoad, ScheduledPage, ScheduledWindow};

/// Settings of a [`Queue`].
///
/// Start from [`QueueConfig::default`] and change what you need, field by field
/// or with the `with_*` methods (the struct may grow, so it cannot be built
/// from a literal outside this crate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueConfig {
    /// `max_retries` of a task submitted without one.
    pub default_max_retries: u32,
    /// A held task with no sign of life for this long is reclaimed by [`Queue::sweep`].
    pub stuck_after_ms: u64,
    /// Reclaims a task may go through; the one past this sends it to the dead letter
    /// with `last_error` [`TOO_MANY_RECLAIMS`].
    pub max_reclaims: u32,
    /// A description or metadata longer than this is not kept in memory once the
    /// record that carries it has been emitted: the task keeps only its length
    /// ([`Payload::Stored`]), so memory per live task stays bounded whatever
    /// tasks carry.
    pub max_inline_payload_bytes: usize,
    /// Which scheduled tasks stay in memory; `None`: all of them. With a
    /// window, the others stay in storage and are read back
    /// ([`Queue::poll_load`]) as their time nears.
    pub scheduled_window: Option<ScheduledWindow>,
}

/// `last_error` of a task that went to the dead letter through its reclaim budget.
pub const TOO_MANY_RECLAIMS: &str = "too_many_reclaims";
/// `last_error` of a task failed by the sweep because its `complete_by` passed.
pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
/// Start of the `last_error` of a task cancelled because a dependency ended in
/// the dead letter or was cancelled; the dependency's id follows the colon.
pub const DEPENDENCY_FAILED: &str = "dependency_failed";

impl QueueConfig {
    /// Sets [`QueueConfig::default_max_retries`].
    pub fn with_default_max_retries(mut self, default_max_retries: u32) -> Self {
        self.default_max_retries = default_max_retries;
        self
    }

    /// Sets [`QueueConfig::stuck_after_ms`].
    pub fn with_stuck_after_ms(mut self, stuck_after_ms: u64) -> Self {
        self.stuck_after_ms = stuck_after_ms;
        self
    }

    /// Sets [`QueueConfig::max_reclaims`].
    pub fn with_max_reclaims(mut self, max_reclaims: u32) -> Self {
        self.max_reclaims = max_reclaims;
        self
    }

    /// Sets [`QueueConfig::scheduled_window`].
    pub fn with_scheduled_window(mut self, scheduled_window: Option<ScheduledWindow>) -> Self {
        self.scheduled_window = scheduled_window;
        self
    }

    /// Sets [`QueueConfig::max_inline_payload_bytes`].
    pub fn with_max_inline_payload_bytes(mut self, max_inline_payload_bytes: usize) -> Self {
        self.max_inline_payload_bytes = max_inline_payload_bytes;
        self
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            default_max_retries: 3,
            stuck_after_ms: 300_000,
            max_reclaims: 5,
            max_inline_payload_bytes: 256,
            scheduled_window: None,
        }
    }
}

/// A task's place among the queued tasks: lane first, then arrival order.
///
/// Ordering keys compare the way tasks are served: the smallest key runs first.
/// The lane's rank sits in the top byte and the arrival order in the low 56 bits,
/// so a key is one word in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct QueueKey(u64);

impl QueueKey {
    const SEQ_BITS: u32 = 56;

    /// The key of a lane rank (0 = urgent) and an arrival number (below 2^56).
    pub(crate) fn new(rank: u8, seq: u64) -> QueueKey {
        debug_assert!(seq < 1 << Self::SEQ_BITS);
        QueueKey((u64::from(rank) << Self::SEQ_BITS) | (seq & ((1 << Self::SEQ_BITS) - 1)))
    }

    /// The key of a task.
    pub(crate) fn of(task: &Task) -> QueueKey {
        QueueKey::new(task.priority.rank(), task.queue_seq)
    }

    /// The lane's rank (0 = urgent).
    pub(crate) fn rank(self) -> u8 {
        (self.0 >> Self::SEQ_BITS) as u8
    }

    /// The arrival order inside the lane.
    #[cfg(test)]
    pub(crate) fn seq(self) -> u64 {
        self.0 & ((1 << Self::SEQ_BITS) - 1)
    }
}

/// What a completion reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Completion {
    /// The result as JSON text.
    pub result: String,
    /// Tokens used, if the agent said.
    pub tokens_used: Option<u64>,
}

/// Where a failed task went.
///
/// Exhaustive on purpose: the caller decides from it whether the task is still
/// live, so it must handle every case; a new case would be a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum FailOutcome {
    /// Back to its place in the queue (`retry_count <= max_retries`).
    Retried,
    /// To the dead letter; the task left the core.
    DeadLettered,
}

/// Where a reclaimed task went.
///
/// Exhaustive on purpose, as [`FailOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum ReclaimOutcome {
    /// Back to its place in the queue (`reclaim_count <= max_reclaims`).
    Requeued,
    /// To the dead letter with `last_error` [`TOO_MANY_RECLAIMS`]; the task left
    /// the core.
    DeadLettered,
}

/// A reclaim carried out: who held the task and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Reclaimed {
    /// The agent that held the task.
    pub agent_id: AgentId,
    /// Queued again, or dead-lettered because its reclaim budget ran out.
    pub outcome: ReclaimOutcome,
}

/// What [`Queue::sweep`] did to one held task.
///
/// Exhaustive on purpose: whoever sweeps must free the agent of every swept
/// task (and requeue or report it), so it must handle every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    /// No sign of life for `stuck_after_ms`: reclaimed.
    Stuck {
        /// The task.
        task_id: TaskId,
        /// The agent that held it.
        agent_id: AgentId,
        /// Queued again or dead-lettered.
        outcome: ReclaimOutcome,
    },
    /// Past its `complete_by`: a counted failure with `last_error`
    /// [`DEADLINE_EXCEEDED`].
    Overdue {
        /// The task.
        task_id: TaskId,
        /// The agent that held it.
        agent_id: AgentId,
        /// Retried or dead-lettered.
        outcome: FailOutcome,
    },
}

impl Swept {
    /// The task swept.
    pub fn task_id(&self) -> &TaskId {
        match self {
            Swept::Stuck { task_id, .. } | Swept::Overdue { task_id, .. } => task_id,
        }
    }
}

/// The answer to an agent that restarted holding a task.
///
/// Exhaustive on purpose: it is the answer sent to the agent (`task_continue`
/// or `task_reassign`), and every case must be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Recovery {
    /// The task is still this agent's: go on with this generation.
    Continue {
        /// The task's current generation.
        generation: u64,
    },
    /// The task is no longer this agent's: drop it.
    Reassign,
}

/// Counts of the live tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Live tasks by status, indexed like [`Status::ALL`] (final statuses are always 0).
    pub by_status: [usize; 8],
    /// Live tasks by lane, indexed by [`Priority::rank`].
    pub by_priority: [usize; 4],
}

impl Stats {
    /// Live tasks in `status`.
    pub fn status(&self, status: Status) -> usize {
        self.by_status[status as usize]
    }

    /// Live tasks in `priority`'s lane.
    pub fn priority(&self, priority: Priority) -> usize {
        self.by_priority[priority.rank() as usize]
    }
}

/// The fenced task queue, as a state machine without I/O.
///
/// # Driving it
///
/// 1. Build it empty with [`Queue::new`] or from persisted records with [`Queue::restore`].
/// 2. Feed it inputs (`submit`, `assign`, `accept`, `progress`, `complete`, `fail`,
///    `fail_holder`, `reject`, `reclaim`, `recover`, `cancel`, `retry_dead_letter`,
///    `sweep`), each
///    with the current time in milliseconds since the Unix epoch.
/// 3. After every input, drain [`Queue::poll_change`] until it returns `None`, persist
///    those records, and only then acknowledge the input to whoever asked.
/// 4. Call [`Queue::handle_timeout`] at the time [`Queue::poll_timeout`] gives
///    (scheduled tasks whose `run_at` came are released into their lanes), and
///    drain [`Queue::poll_released`] after every input: the tasks that entered
///    a lane by a release (also when their last dependency completed), to be
///    offered to agents.
///
/// An operation that returns an error changed nothing and emitted nothing.
/// A task that reaches a final state leaves the queue: its last record comes out as
/// [`Change::Finalized`] and later reads must go to storage.
#[derive(Debug, Default)]
pub struct Queue {
    config: QueueConfig,
    /// Boxed, so that the table's spare slots cost a pointer, not a record.
    tasks: IdMap<TaskId, Box<Task>>,
    /// Queued tasks grouped by needed capabilities, in serving order inside a group.
    queued: GroupedIndex<Capabilities, QueueKey, TaskId>,
    queued_by_lane: [usize; 4],
    held: IdSet<TaskId>,
    /// One shared copy of each capability set and submitter name.
    capability_sets: HashSet<Capabilities>,
    submitters: HashSet<Arc<str>>,
    empty_metadata: Option<Arc<str>>,
    next_seq: u64,
    changes: VecDeque<Change>,
    /// Scheduled tasks by `run_at` (then place), and waiting tasks found with
    /// no live dependency at restore (time 0): what [`Queue::handle_timeout`]
    /// releases.
    timers: BTreeSet<(u64, u64, TaskId)>,
    /// Per live dependency, the waiting tasks that depend on it (entries of
    /// tasks no longer waiting are skipped on use).
    dependents: IdMap<TaskId, Vec<TaskId>>,
    /// Per waiting task, how many of its dependencies are not completed yet.
    pending: IdMap<TaskId, usize>,
    /// The live task of each (submitter, idempotency key).
    keys: HashMap<(Box<str>, Box<str>), TaskId>,
    /// Tasks that entered the queue through a release (their time came, their
    /// last dependency completed) since the last [`Queue::poll_released`].
    released: VecDeque<TaskId>,
    /// With a [`ScheduledWindow`]: every scheduled task left in storage has a
    /// key at or after this one, and every one in memory a key before it
    /// (`None`: storage holds no scheduled task that memory lacks).
    stored_from: Option<ScheduleKey>,
    /// A read of scheduled tasks handed out and not answered yet.
    loading: Option<Loading>,
    /// After a failed read, no new one before this time.
    load_retry_at_ms: u64,
    /// Scheduled tasks in memory.
    n_scheduled: usize,
    /// A scheduled task may lie beyond the window: [`Queue::handle_timeout`]
    /// is due at once to send it back to storage.
    trim_due: bool,
}

impl Queue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Queue {
        Queue {
            config,
            ..Queue::default()
        }
    }

    /// Rebuilds the queue from the records persisted from its [`Change`]s.
    ///
    /// Final records are skipped (they live in storage only). The result is in
    /// exactly the state the queue was in when those records were emitted.
    /// Records may carry their description and metadata as text or as
    /// [`Payload::Stored`]; texts over `max_inline_payload_bytes` are not kept.
    ///
    /// Each record is consistent in itself (a [`Task`] can only be built
    /// through [`Task::from_parts`], which checks it); the set is refused if two
    /// live records share an id ([`RestoreError::DuplicateId`]) or a place in
    /// the queue ([`RestoreError::DuplicateQueueSeq`]).
    pub fn restore(
        config: QueueConfig,
        records: impl IntoIterator<Item = Task>,
    ) -> Result<Queue, RestoreError> {
        let mut queue = Queue::new(config);
        let mut seqs: HashMap<u64, TaskId> = HashMap::new();
        for task in records {
            if task.status.is_final() {
                continue;
            }
            if queue.tasks.contains_key(&task.id) {
                return Err(RestoreError::DuplicateId(task.id));
            }
            if let Some(first) = seqs.insert(task.queue_seq, task.id.clone()) {
                return Err(RestoreError::DuplicateQueueSeq {
                    first,
                    second: task.id,
                    queue_seq: task.queue_seq,
                });
            }
            queue.next_seq = queue.next_seq.max(task.queue_seq + 1);
            let mut task = queue.adopt(task);
            queue.elide_payloads(&mut task);
            match task.status {
                Status::Queued => queue.index_queued(&task),
                Status::Scheduled => {
                    let run_at_ms = task.run_at_ms.unwrap_or(0);
                    queue
                        .timers
                        .insert((run_at_ms, task.queue_seq, task.id.clone()));
                    queue.n_scheduled += 1;
                    queue.trim_due = true;
                }
                Status::Waiting => {}
                _ => {
                    queue.held.insert(task.id.clone());
                }
            }
            queue.index_key(&task);
            queue.tasks.insert(task.id.clone(), task);
        }
        // Dependencies are counted once every live record is in: one that is
        // not live any more was completed (a failed one cancels its dependents
        // in the same records).
        let mut waiting: Vec<(TaskId, u64, Vec<TaskId>)> = queue
            .tasks
            .values()
            .filter(|t| t.status == Status::Waiting)
            .map(|t| (t.id.clone(), t.queue_seq, t.depends_on.to_vec()))
            .collect();
        // In submission order, as they were watched before: the dependents
        // of one task are released in that order when it completes.
        waiting.sort_by_key(|(_, queue_seq, _)| *queue_seq);
        for (id, queue_seq, depends_on) in waiting {
            let n = queue.watch_dependencies(&id, &depends_on, &[]);
            if n == 0 {
                queue.timers.insert((0, queue_seq, id));
            }
        }
        Ok(queue)
    }

    /// The settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Whether [`Queue::submit`] would accept `new` at `now_ms`, without changing
    /// anything (lets a caller check a whole batch before queuing any of it).
    /// A `complete_by` at or before `now_ms` is refused: the task could only fail.
    pub fn check_submission(&self, now_ms: u64, new: &NewTask) -> Result<(), SubmitError> {
        if new.id.as_str().is_empty() {
            return Err(SubmitError::EmptyId);
        }
        if new.description.trim().is_empty() {
            return Err(SubmitError::EmptyDescription);
        }
        if new.needed_capabilities.iter().any(|c| c.is_empty()) {
            return Err(SubmitError::EmptyCapability);
        }
        if let Some(complete_by_ms) = new.complete_by_ms.filter(|by| *by <= now_ms) {
            return Err(SubmitError::DeadlinePassed {
                complete_by_ms,
                now_ms,
            });
        }
        if new.run_at_ms.is_some() && new.delay_ms.is_some() {
            return Err(SubmitError::RunAtAndDelay);
        }
        if let Some(key) = &new.idempotency_key {
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(SubmitError::BadIdempotencyKey(key.len()));
            }
            if let Some(first) = self.find_by_key(new.submitted_by.as_deref(), key) {
                return Err(SubmitError::DuplicateKey(first.clone()));
            }
        }
        if self.tasks.contains_key(&new.id) {
            return Err(SubmitError::DuplicateId(new.id.clone()));
        }
        if new.depends_on.len() > MAX_DEPENDENCIES {
            return Err(SubmitError::TooManyDependencies(new.depends_on.len()));
        }
        for dep in &new.depends_on {
            if self.tasks.contains_key(dep) {
                continue;
            }
            let settled = new
                .settled_dependencies
                .iter()
                .find(|(id, _)| id == dep)
                .map(|(_, status)| *status);
            match settled {
                // Completed, or scheduled and left in storage (beyond the
                // window of scheduled tasks kept in memory): live.
                Some(Status::Completed | Status::Scheduled) => {}
                Some(status) if status.is_final() => {
                    return Err(SubmitError::DependencyFailed {
                        id: dep.clone(),
                        status,
                    })
                }
                _ => return Err(SubmitError::UnknownDependency(dep.clone())),
            }
        }
        Ok(())
    }

    /// The live task that `submitter` submitted with idempotency `key`, if any.
    /// (Final tasks are out of the core: storage answers for them.)
    pub fn find_by_key(&self, submitter: Option<&str>, key: &str) -> Option<&TaskId> {
        let lookup: (Box<str>, Box<str>) = (submitter.unwrap_or("").into(), key.into());
        self.keys.get(&lookup)
    }

    /// Adds a task at the back of its lane; or, with dependencies not yet
    /// completed, as `waiting`; or, with a `run_at` after `now_ms`, as
    /// `scheduled` (see [`Queue::handle_timeout`]). The record emitted carries
    /// the description and metadata; the queue keeps them only if they are
    /// short (see [`QueueConfig::max_inline_payload_bytes`]).
    ///
    /// A task that is scheduled or waiting takes its place in its lane when it
    /// is released (at its `run_at`, or when its last dependency completes),
    /// behind the tasks queued before that moment.
    pub fn submit(&mut self, now_ms: u64, new: NewTask) -> Result<&Task, SubmitError> {
        self.check_submission(now_ms, &new)?;
        let mut depends_on: Vec<TaskId> = Vec::with_capacity(new.depends_on.len());
        for dep in new.depends_on {
            if !depends_on.contains(&dep) {
                depends_on.push(dep);
            }
        }
        let needed_capabilities =
            self.intern_capabilities(Capabilities::new(new.needed_capabilities));
        let submitted_by = new
            .submitted_by
            .as_deref()
            .map(|s| self.intern_submitter(s));
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut task = Box::new(Task {
            id: new.id.clone(),
            description: Payload::from(new.description),
            metadata: Payload::Inline(self.intern_metadata(new.metadata)),
            priority: new.priority,
            status: Status::Queued,
            holder: None,
            generation: 0,
            retry_count: 0,
            reclaim_count: 0,
            max_retries: new.max_retries.unwrap_or(self.config.default_max_retries),
            complete_by_ms: new.complete_by_ms,
            needed_capabilities,
            outcome: None,
            last_error: None,
            submitted_by,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            queue_seq: seq,
            history: Vec::with_capacity(1),
            run_at_ms: new
                .run_at_ms
                .or_else(|| new.delay_ms.map(|d| now_ms.saturating_add(d))),
            depends_on: depends_on.into_boxed_slice(),
            idempotency_key: new.idempotency_key.map(String::into_boxed_str),
        });
        task.record(now_ms, HistoryEvent::Submitted, String::new());
        let stored: Vec<&TaskId> = new
            .settled_dependencies
            .iter()
            .filter(|(_, status)| *status == Status::Scheduled)
            .map(|(id, _)| id)
            .collect();
        let n_pending = self.watch_dependencies(&task.id, &task.depends_on, &stored);
        if n_pending > 0 {
            task.status = Status::Waiting;
        } else if task.run_at_ms.is_some_and(|at| at > now_ms) {
            task.status = Status::Scheduled;
            let run_at_ms = task.run_at_ms.unwrap_or(now_ms);
            self.timers.insert((run_at_ms, seq, task.id.clone()));
            self.n_scheduled += 1;
            self.trim_due = true;
        } else {
            self.index_queued(&task);
        }
        self.index_key(&task);
        self.changes.push_back(Change::Updated(Task::clone(&task)));
        self.elide_payloads(&mut task);
        Ok(self.tasks.entry(new.id).or_insert(task))
    }

    /// Counts the live dependencies of the waiting task `id` and registers it
    /// as their dependent; returns the count.
    /// (`stored`: dependencies that are scheduled tasks left in storage.)
    fn watch_dependencies(
        &mut self,
        id: &TaskId,
        depends_on: &[TaskId],
        stored: &[&TaskId],
    ) -> usize {
        let live: Vec<&TaskId> = depends_on
            .iter()
            .filter(|dep| self.tasks.contains_key(*dep) || stored.contains(dep))
            .collect();
        for dep in &live {
            self.dependents
                .entry((*dep).clone())
                .or_default()
                .push(id.clone());
        }
        let n = live.len();
        if n > 0 {
            self.pending.insert(id.clone(), n);
        }
        n
    }

    fn index_key(&mut self, task: &Task) {
        if let Some(key) = &task.idempotency_key {
            let submitter: Box<str> = task.submitted_by.as_deref().unwrap_or("").into();
            self.keys
                .entry((submitter, key.clone()))
                .or_insert_with(|| task.id.clone());
        }
    }

    /// When [`Queue::handle_timeout`] must be called next: the earliest
    /// `run_at` of a scheduled task, or (with a [`ScheduledWindow`]) when the
    /// earliest one left in storage comes within the window and must be read
    /// ([`Queue::poll_load`]), or 0 when a task beyond the window waits to
    /// leave memory.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.trim_due && self.config.scheduled_window.is_some() {
            return Some(0);
        }
        let first = self.timers.first().map(|(at, _, _)| *at);
        match (first, self.load_wake_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Releases every scheduled task whose `run_at` is at or before `now_ms`
    /// into its lane, in `run_at` order (each takes the next place there). The
    /// released tasks come out of [`Queue::poll_released`].
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while self.timers.first().is_some_and(|(at, _, _)| *at <= now_ms) {
            let Some((_, _, id)) = self.timers.pop_first() else {
                break;
            };
            let status = self.tasks.get(&id).map(|t| t.status);
            match status {
                Some(Status::Scheduled) => {
                    self.n_scheduled -= 1;
                    self.release(now_ms, &id);
                }
                Some(Status::Waiting) => {
                    self.pending.remove(&id);
                    self.dependencies_done(now_ms, &id);
                }
                _ => {}
            }
        }
        if self.trim_due {
            self.trim(now_ms);
        }
    }

    /// The next task that entered the queue through a release (its `run_at`
    /// came, or its last dependency completed) and must be offered to agents.
    #[must_use]
    pub fn poll_released(&mut self) -> Option<TaskId> {
        self.released.pop_front()
    }

    /// Live tasks that are scheduled or waiting, in no particular order.
    pub fn pending(&self) -> impl Iterator<Item = &Task> + '_ {
        self.tasks
            .values()
            .map(|t| &**t)
            .filter(|t| t.status.is_pending())
    }

    /// The waiting task `id` has every dependency completed: scheduled if its
    /// `run_at` is still ahead, queued otherwise.
    fn dependencies_done(&mut self, now_ms: u64, id: &TaskId) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        match task.run_at_ms.filter(|at| *at > now_ms) {
            Some(run_at_ms) => {
                task.status = Status::Scheduled;
                task.record(
                    now_ms,
                    HistoryEvent::Released,
                    format!("dependencies completed; scheduled for {run_at_ms}"),
                );
                self.timers.insert((run_at_ms, task.queue_seq, id.clone()));
                self.n_scheduled += 1;
                self.trim_due = true;
                self.emit(id);
            }
            None => self.release(now_ms, id),
        }
    }

    /// A scheduled or waiting task enters its lane, at the back.
    fn release(&mut self, now_ms: u64, id: &TaskId) {
        let seq = self.next_seq;
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        let details = if task.status == Status::Scheduled {
            format!("run_at={}", task.run_at_ms.unwrap_or(now_ms))
        } else {
            "dependencies completed".to_owned()
        };
        self.next_seq += 1;
        task.queue_seq = seq;
        task.status = Status::Queued;
        task.record(now_ms, HistoryEvent::Released, details);
        let task = &self.tasks[id];
        let key = QueueKey::of(task);
        self.queued
            .insert(&task.needed_capabilities, key, task.id.clone());
        self.queued_by_lane[key.rank() as usize] += 1;
        self.emit(id);
        self.released.push_back(id.clone());
    }

    /// A live task.
    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id).map(|t| &**t)
    }

    /// Number of live (non-final) tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when no task is live.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Number of queued tasks.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// Number of queued tasks in each lane, indexed by [`Priority::rank`](crate::Priority::rank).
    pub fn queued_by_lane(&self) -> [usize; 4] {
        self.queued_by_lane
    }

    /// The task that would be served next if capabilities did not matter.
    pub fn next_queued(&self) -> Option<&Task> {
        self.queued
            .best(|_| true)
            .map(|(_, _, id)| &*self.tasks[id])
    }

    /// The next queued task an agent offering `capabilities` can take:
    /// highest lane first, oldest first, skipping tasks it cannot take.
    /// Costs O(distinct capability sets queued + log n).
    pub fn best_queued(&self, capabilities: &Capabilities) -> Option<&Task> {
        self.queued
            .best(|needed| needed.is_subset_of(capabilities))
            .map(|(_, _, id)| &*self.tasks[id])
    }

    /// The capability sets of the queued tasks with how many tasks need each
    /// (unordered; O(distinct sets)).
    pub fn queued_by_capabilities(&self) -> impl Iterator<Item = (&Capabilities, usize)> + '_ {
        self.queued.groups()
    }

    /// Queued tasks in serving order (sorts them: O(n log n)).
    pub fn queued_in_order(&self) -> impl Iterator<Item = &Task> + '_ {
        let mut keys: Vec<(&QueueKey, &TaskId)> =
            self.queued.iter().map(|(_, k, v)| (k, v)).collect();
        keys.sort_unstable_by_key(|(k, _)| **k);
        keys.into_iter().map(|(_, id)| &*self.tasks[id])
    }

    /// Held (assigned or working) tasks, in no particular order.
    pub fn held(&self) -> impl Iterator<Item = &Task> + '_ {
        self.held.iter().map(|id| &*self.tasks[id])
    }

    /// Counts of the live tasks.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for task in self.tasks.values() {
            stats.by_status[task.status as usize] += 1;
            stats.by_priority[task.priority.rank() as usize] += 1;
        }
        stats
    }

    /// The next record to persist, oldest first.
    #[must_use]
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// All records to persist, oldest first.
    #[must_use]
    pub fn drain_changes(&mut self) -> Vec<Change> {
        self.changes.drain(..).collect()
    }

    /// Hands a queued task to `agent`; returns the new generation.
    pub fn assign(&mut self, now_ms: u64, id: &TaskId, agent: &AgentId) -> Result<u64, TaskError> {
        let task = self.live_mut(id)?;
        if task.status != Status::Queued {
            return Err(wrong_status(task));
        }
        Ok(self.hand_out(now_ms, id, agent, Status::Assigned))
    }

    /// Moves the queued task `id` to `agent` in `status` (assigned, or working when
    /// re-attached) with a new generation, which is returned.
    fn hand_out(&mut self, now_ms: u64, id: &TaskId, agent: &AgentId, status: Status) -> u64 {
        let task = self.tasks.get_mut(id).expect("a live queued task");
        task.status = status;
        task.generation += 1;
        task.holder = Some(Box::new(Holder {
            agent_id: agent.clone(),
            assigned_at_ms: now_ms,
            last_alive_at_ms: now_ms,
        }));
        let generation = task.generation;
        let (event, details) = if status == Status::Assigned {
            let details = agent_generation(agent, generation, "");
            (HistoryEvent::Assigned, details)
        } else {
            let details = agent_generation(agent, generation, " reattached");
            (HistoryEvent::Recovered, details)
        };
        task.record(now_ms, event, details);
        let task_id = task.id.clone();
        self.unindex_queued(&task_id);
        self.held.insert(task_id.clone());
        self.emit(&task_id);
        generation
    }

    /// The holder accepted its assigned task.
    pub fn accept(&mut self, now_ms: u64, id: &TaskId, agent: &AgentId) -> Result<(), TaskError> {
        let task = self.held_by_mut(id, agent)?;
        if task.status != Status::Assigned {
            return Err(wrong_status(task));
        }
        task.status = Status::Working;
        touch(task, now_ms);
        let details = agent_generation(agent, task.generation, "");
        task.record(now_ms, HistoryEvent::Accepted, details);
        let task_id = task.id.clone();
        self.emit(&task_id);
        Ok(())
    }

    /// The holder showed a sign of life (progress report).
    pub fn progress(&mut self, now_ms: u64, id: &TaskId, agent: &AgentId) -> Result<(), TaskError> {
        let task = self.held_by_mut(id, agent)?;
        touch(task, now_ms);
        task.updated_at_ms = now_ms;
        let touched = Change::Touched(Task::clone(task));
        self.changes.push_back(touched);
        Ok(())
    }

    /// Gives a queued task back to the agent it was taken from when its
    /// connection dropped (see [`Task::reattachable_to`]): held by that agent
    /// again, working, with a new generation, which is returned.
    pub fn reattach(
        &mut self,
        now_ms: u64,
        id: &TaskId,
        agent: &AgentId,
    ) -> Result<u64, TaskError> {
        let task = self.live_mut(id)?;
        if task.reattachable_to().map(|(holder, _)| holder) != Some(agent.as_str()) {
            return Err(TaskError::NotAssigned(task.id.clone()));
        }
        Ok(self.hand_out(now_ms, id, agent, Status::Working))
    }

    /// The generation under which a report of `agent` about task `id`, carrying
    /// `generation`, is fenced: the task's own while the agent holds it at that
    /// generation; and, for the holder's report carrying the generation of its own
    /// last assignment while nobody else was assigned the task since, the current
    /// one (after re-attaching a task queued when the holder's connection
    /// dropped). Anything else is left to the fence to refuse.
    fn adopt_report(
        &mut self,
        now_ms: u64,
        id: &TaskId,
        agent: &AgentId,
        generation: u64,
    ) -> Result<u64, TaskError> {
        let task = self.live_mut(id)?;
        if task.generation == generation
            || task.last_assignment() != Some((agent.as_str(), generation))
        {
            return Ok(generation);
        }
        if task.is_held_by(agent) {
            return Ok(task.generation);
        }
        if task.reattachable_to().is_some() {
            return self.reattach(now_ms, id, agent);
        }
        Ok(generation)
    }

    /// The holder finished the task, fenced by `generation`.
    pub fn complete(
        &mut self,
        now_ms: u64,
        id: &TaskId,
        agent: &AgentId,
        generation: u64,
        completion: Completion,
    ) -> Result<(), TaskError> {
        let generation = self.adopt_report(now_ms, id, agent, generation)?;
        let task = self.fenced_mut(id, agent, generation)?;
        task.status = Status::Completed;
        task.outcome = Some(Box::new(completion));
        task.record(
            now_ms,
            HistoryEvent::Completed,
            agent_generation(agent, generation, ""),
        );
        self.finalize(id);
        Ok(())
    }

    /// The holder failed the task, fenced by `generation`: retried or dead-lettered.
    pub fn fail(
        &mut self,
        now_ms: u64,
        id: &TaskId,
        agent: &AgentId,
        generation: u64,
        error: &str,
    ) -> Result<FailOutcome, TaskError> {
        let generation = self.adopt_report(now_ms, id, agent, generation)?;
        self.fenced_mut(id, agent, generation)?;
        Ok(self.count_failure(now_ms, id, error, false))
    }

    /// A counted failure of whoever holds the task, decided by the coordinator
    /// rather than reported with a generation by the agent (its deadline passed, or
    /// its connection was closed for an oversize frame): retried or dead-lettered
    /// exactly as by [`Queue::fail`]. The generation is bumped, as for a reclaim, so
    /// that the holder's later reports about this run are stale. Returns the holder.
    pub fn fail_holder(
        &mut self,
        now_ms: u64,
        id: &TaskId,
        error: &str,
    ) -> Result<(AgentId, FailOutcome), TaskError> {
        let task = self.live_mut(id)?;
        let Some(agent) = task
            .assigned_to()
            .cloned()
            .filter(|_| task.status.is_held())
        else {
            return Err(wrong_status(task));
        };
        let outcome = self.count_failure(now_ms, id, error, true);
        Ok((agent, outcome))
    }

    /// Counts a failure of the held task `id`: retried or dead-lettered; with
    /// `bump`, the generation of the run that failed is fenced off.
    fn count_failure(&mut self, now_ms: u64, id: &TaskId, error: &str, bump: bool) -> FailOutcome {
        let task = self.tasks.get_mut(id).expect("a held task is live");
        let (agent, generation) = (task.assigned_to().cloned(), task.generation);
        let agent = agent.expect("a held task has a holder");
        if bump {
            task.generation += 1;
        }
        task.retry_count += 1;
        task.last_error = Some(error.into());
        let details = format!(
            "agent={agent} generation={generation} retry_count={} error={error}",
            task.retry_count
        );
        if task.retry_count <= task.max_retries {
            task.record(now_ms, HistoryEvent::Retried, details);
            let task_id = task.id.clone();
            self.requeue(&task_id);
            FailOutcome::Retried
        } else {
            task.status = Status::DeadLetter;
            task.record(now_ms, HistoryEvent::DeadLettered, details);
            self.finalize(id);
            FailOutcome::DeadLettered
        }
    }

    /// The holder declined the task: back to its place, generation bumped, no retry counted.
    pub fn reject(
        &mut self,
        now_ms: u64,
        id: &TaskId,
        agent: &AgentId,
        reason: &str,
    ) -> Result<(), TaskError> {
        let task = self.held_by_mut(id, agent)?;
        task.generation += 1;
        let details = format!("agent={agent} reason={reason}");
        task.record(now_ms, HistoryEvent::Rejected, details);
        let task_id = task.id.clone();
        self.requeue(&task_id);
        Ok(())
    }

    /// Takes a held task back from its agent, generation bumped, no retry counted
    /// but one reclaim: back to its place in the queue, or, when that reclaim takes
    /// `reclaim_count` past `max_reclaims`, to the dead letter with `last_error`
    /// [`TOO_MANY_RECLAIMS`]. Returns the agent that held it and which happened.
    pub fn reclaim(
        &mut self,
        now_ms: u64,
        id: &TaskId,
        reason: ReclaimReason,
    ) -> Result<Reclaimed, TaskError> {
        let max_reclaims = self.config.max_reclaims;
        let task = self.live_mut(id)?;
        let Some(agent) = task
            .assigned_to()
            .cloned()
            .filter(|_| task.status.is_held())
        else {
            return Err(wrong_status(task));
        };
        task.generation += 1;
        task.reclaim_count = task.reclaim_count.saturating_add(1);
        // The reason last: re-attach reads it from the end of the entry.
        let details = format!(
            "agent={agent} reclaim_count={} reason={}",
            task.reclaim_count,
            reason.as_str()
        );
        let outcome = if task.reclaim_count <= max_reclaims {
            task.record(now_ms, HistoryEvent::Reclaimed, details);
            let task_id = task.id.clone();
            self.requeue(&task_id);
            ReclaimOutcome::Requeued
        } else {
            task.status = Status::DeadLetter;
            task.last_error = Some(TOO_MANY_RECLAIMS.into());
            let details = format!("{details} error={TOO_MANY_RECLAIMS}");
            task.record(now_ms, HistoryEvent::DeadLettered, details);
            self.finalize(id);
            ReclaimOutcome::DeadLettered
        };
        Ok(Reclaimed {
            agent_id: agent,
            outcome,
        })
    }

    /// An agent restarted holding task `id`: continue if it is still the holder.
    pub fn recover(&mut self, now_ms: u64, id: &TaskId, agent: &AgentId) -> Recovery {
        let Ok(task) = self.held_by_mut(id, agent) else {
            return Recovery::Reassign;
        };
        touch(task, now_ms);
        let generation = task.generation;
        task.record(
            now_ms,
            HistoryEvent::Recovered,
            agent_generation(agent, generation, ""),
        );
        let task_id = task.id.clone();
        self.emit(&task_id);
        Recovery::Continue { generation }
    }

    /// Cancels a live task. Returns the agent that held it, which must be told.
    /// Final records keep their last assignee, for the record.
    pub fn cancel(&mut self, now_ms: u64, id: &TaskId) -> Result<Option<AgentId>, TaskError> {
        let task = self.live_mut(id)?;
        let holder = task
            .assigned_to()
            .cloned()
            .filter(|_| task.status.is_held());
        let status = task.status;
        let task_id = task.id.clone();
        let run_at_ms = task.run_at_ms.unwrap_or(0);
        let queue_seq = task.queue_seq;
        match status {
            Status::Queued => self.unindex_queued(&task_id),
            // (A scheduled task cancelled from storage has no timer.)
            Status::Scheduled if self.timers.remove(&(run_at_ms, queue_seq, task_id.clone())) => {
                self.n_scheduled -= 1;
            }
            Status::Waiting => {
                self.pending.remove(&task_id);
                self.timers.remove(&(0, queue_seq, task_id.clone()));
            }
            _ => {}
        }
        let task = self.tasks.get_mut(id).expect("live");
        task.status = Status::Cancelled;
        let details = holder
            .as_ref()
            .map(|a| format!("agent={a}"))
            .unwrap_or_default();
        task.record(now_ms, HistoryEvent::Cancelled, details);
        self.finalize(id);
        Ok(holder)
    }

    /// Puts a dead-letter record (read back from storage) into the queue again,
    /// at the back of its lane, with its retry and reclaim counts reset. The
    /// record emitted carries the texts the given record has; the queue keeps
    /// only the short ones.
    pub fn retry_dead_letter(&mut self, now_ms: u64, task: Task) -> Result<(), TaskError> {
        if let Some(live) = self.tasks.get(&task.id) {
            return Err(wrong_status(live));
        }
        if task.status != Status::DeadLetter {
            return Err(wrong_status(&task));
        }
        let mut task = self.adopt(task);
        task.status = Status::Queued;
        task.retry_count = 0;
        task.reclaim_count = 0;
        task.holder = None;
        task.queue_seq = self.next_seq;
        self.next_seq += 1;
        task.record(now_ms, HistoryEvent::Requeued, String::new());
        self.index_queued(&task);
        self.index_key(&task);
        self.changes.push_back(Change::Updated(Task::clone(&task)));
        self.elide_payloads(&mut task);
        self.tasks.insert(task.id.clone(), task);
        Ok(())
    }

    /// Takes back every held task that is past its `complete_by` (overdue: a counted
    /// failure with `last_error` [`DEADLINE_EXCEEDED`], see [`Queue::fail_holder`])
    /// or has shown no sign of life for `stuck_after_ms` (stuck: a reclaim). Returns
    /// what it did, in queue order.
    ///
    /// Call it periodically, on a period short against `stuck_after_ms`: due
    /// tasks are acted on up to one period late. A late call loses nothing (it
    /// acts on everything due by `now_ms`). It costs O(held tasks).
    pub fn sweep(&mut self, now_ms: u64) -> Vec<Swept> {
        let stuck_after_ms = self.config.stuck_after_ms;
        let mut due: Vec<(TaskId, bool)> = self
            .held
            .iter()
            .filter_map(|id| {
                let task = &self.tasks[id];
                if task.complete_by_ms.is_some_and(|by| now_ms > by) {
                    Some((id.clone(), true))
                } else if task
                    .last_alive_at_ms()
                    .is_some_and(|alive| now_ms.saturating_sub(alive) >= stuck_after_ms)
                {
                    Some((id.clone(), false))
                } else {
                    None
                }
            })
            .collect();
        due.sort_unstable_by_key(|(id, _)| self.tasks[id].queue_seq);
        due.into_iter()
            .filter_map(|(task_id, overdue)| {
                if overdue {
                    let (agent_id, outcome) =
                        self.fail_holder(now_ms, &task_id, DEADLINE_EXCEEDED).ok()?;
                    Some(Swept::Overdue {
                        task_id,
                        agent_id,
                        outcome,
                    })
                } else {
                    let reclaimed = self.reclaim(now_ms, &task_id, ReclaimReason::Stuck).ok()?;
                    Some(Swept::Stuck {
                        task_id,
                        agent_id: reclaimed.agent_id,
                        outcome: reclaimed.outcome,
                    })
                }
            })
            .collect()
    }

    fn live_mut(&mut self, id: &TaskId) -> Result<&mut Task, TaskError> {
        self.tasks
            .get_mut(id)
            .map(|t| &mut **t)
            .ok_or_else(|| TaskError::NotFound(id.clone()))
    }

    fn held_by_mut(&mut self, id: &TaskId, agent: &AgentId) -> Result<&mut Task, TaskError> {
        let task = self.live_mut(id)?;
        if !task.is_held_by(agent) {
            return Err(TaskError::NotAssigned(task.id.clone()));
        }
        Ok(task)
    }

    /// The task, if `generation` is current and `agent` holds it.
    fn fenced_mut(
        &mut self,
        id: &TaskId,
        agent: &AgentId,
        generation: u64,
    ) -> Result<&mut Task, TaskError> {
        let task = self.live_mut(id)?;
        if task.generation != generation {
            return Err(TaskError::StaleGeneration {
                task_id: task.id.clone(),
                given: generation,
                current: task.generation,
            });
        }
        if !task.is_held_by(agent) {
            return Err(TaskError::NotAssigned(task.id.clone()));
        }
        Ok(task)
    }

    /// Puts a held task back at its original place in its lane.
    fn requeue(&mut self, id: &TaskId) {
        let task = self.tasks.get_mut(id).expect("requeue of a live task");
        task.status = Status::Queued;
        task.holder = None;
        let (caps, key) = (task.needed_capabilities.clone(), QueueKey::of(task));
        self.held.remove(id);
        self.queued.insert(&caps, key, id.clone());
        self.queued_by_lane[key.rank() as usize] += 1;
        self.emit(id);
    }

    fn emit(&mut self, id: &TaskId) {
        let task = &self.tasks[id];
        self.changes.push_back(Change::Updated(Task::clone(task)));
    }

    fn index_queued(&mut self, task: &Task) {
        let key = QueueKey::of(task);
        self.queued
            .insert(&task.needed_capabilities, key, task.id.clone());
        self.queued_by_lane[key.rank() as usize] += 1;
    }

    fn unindex_queued(&mut self, id: &TaskId) {
        let task = &self.tasks[id];
        let key = QueueKey::of(task);
        if self
            .queued
            .remove(&task.needed_capabilities, &key)
            .is_some()
        {
            self.queued_by_lane[key.rank() as usize] -= 1;
        }
    }

    /// Drops the texts longer than `max_inline_payload_bytes` from a record the
    /// queue keeps, leaving their lengths.
    fn elide_payloads(&self, task: &mut Task) {
        let max = self.config.max_inline_payload_bytes;
        task.description.elide(max);
        task.metadata.elide(max);
    }

    /// Most tasks carry no metadata: they all share one `{}`.
    fn intern_metadata(&mut self, metadata: String) -> Arc<str> {
        if metadata == "{}" {
            self.empty_metadata
                .get_or_insert_with(|| Arc::from("{}"))
                .clone()
        } else {
            Arc::from(metadata)
        }
    }

    /// Takes in a record that comes from outside (storage): boxed, with its shared
    /// parts interned.
    fn adopt(&mut self, task: Task) -> Box<Task> {
        let mut task = Box::new(task);
        task.needed_capabilities = self.intern_capabilities(task.needed_capabilities.clone());
        task.submitted_by = task
            .submitted_by
            .as_deref()
            .map(|s| self.intern_submitter(s));
        task
    }

    fn intern_capabilities(&mut self, capabilities: Capabilities) -> Capabilities {
        if let Some(shared) = self.capability_sets.get(capabilities.names()) {
            return shared.clone();
        }
        self.capability_sets.insert(capabilities.clone());
        capabilities
    }

    fn intern_submitter(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.submitters.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.submitters.insert(shared.clone());
        shared
    }

    /// Moves a task that just reached a final state out of the core; its
    /// waiting dependents are released when it completed, and cancelled (and
    /// theirs after them) when it did not.
    fn finalize(&mut self, id: &TaskId) {
        let now_ms;
        let mut ended = vec![{
            let task = self.tasks.remove(id).expect("finalize of a live task");
            debug_assert!(task.status.is_final());
            now_ms = task.updated_at_ms;
            self.held.remove(id);
            self.forget_key(&task);
            let status = task.status;
            self.note_ended(id);
            self.changes.push_back(Change::Finalized(*task));
            (id.clone(), status)
        }];
        while let Some((dep, status)) = ended.pop() {
            let Some(dependents) = self.dependents.remove(&dep) else {
                continue;
            };
            for waiting in dependents {
                let is_waiting = self
                    .tasks
                    .get(&waiting)
                    .is_some_and(|t| t.status == Status::Waiting);
                if !is_waiting {
                    continue;
                }
                if status == Status::Completed {
                    let left = self.pending.get_mut(&waiting).map(|n| {
                        *n = n.saturating_sub(1);
                        *n
                    });
                    if left == Some(0) {
                        self.pending.remove(&waiting);
                        self.dependencies_done(now_ms, &waiting);
                    }
                    continue;
                }
                self.pending.remove(&waiting);
                let Some(mut task) = self.tasks.remove(&waiting) else {
                    continue;
                };
                let error = format!("{DEPENDENCY_FAILED}:{dep}");
                task.status = Status::Cancelled;
                task.last_error = Some(error.as_str().into());
                task.record(now_ms, HistoryEvent::Cancelled, format!("error={error}"));
                self.timers.remove(&(0, task.queue_seq, waiting.clone()));
                self.forget_key(&task);
                self.note_ended(&waiting);
                self.changes.push_back(Change::Finalized(*task));
                ended.push((waiting, Status::Cancelled));
            }
        }
    }

    fn forget_key(&mut self, task: &Task) {
        if let Some(key) = &task.idempotency_key {
            let submitter: Box<str> = task.submitted_by.as_deref().unwrap_or("").into();
            let lookup = (submitter, key.clone());
            if self.keys.get(&lookup) == Some(&task.id) {
                self.keys.remove(&lookup);
            }
        }
    }
}

/// A sign of life from the holder.
fn touch(task: &mut Task, now_ms: u64) {
    if let Some(holder) = task.holder.as_mut() {
        holder.last_alive_at_ms = now_ms;
    }
}

fn wrong_status(task: &Task) -> TaskError {
    TaskError::WrongStatus {
        task_id: task.id.clone(),
        status: task.status,
    }
}

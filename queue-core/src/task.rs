//! The task record and its parts: priority lanes, statuses and history.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::{AgentId, Capabilities, Completion, InvalidTask, Payload, TaskId};

/// How many history entries a task keeps; older ones are dropped first.
pub const HISTORY_CAP: usize = 50;

/// A priority lane. Higher lanes are served first; FIFO inside a lane.
///
/// Exhaustive on purpose: the four lanes are part of the wire protocol and of
/// the per-lane counts (`[usize; 4]`); a fifth would be a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Priority {
    /// Served before everything else.
    Urgent,
    /// Served after `Urgent`.
    High,
    /// The default lane.
    #[default]
    Normal,
    /// Served when no higher lane has a task some agent can take.
    Low,
}

impl Priority {
    /// Every lane, highest first.
    pub const ALL: [Priority; 4] = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The wire name (`urgent`, `high`, `normal`, `low`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The lane's rank: 0 for the highest lane.
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not the name of a priority lane.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority `{0}` (expected urgent, high, normal or low)")]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

/// Where a task is in its life.
///
/// Exhaustive on purpose: whoever shows or stores a task must handle every
/// status (is it final? held?), so a new one must be a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Status {
    /// Submitted with a `run_at` in the future: queued at that time.
    Scheduled,
    /// Submitted with dependencies: queued once every one of them is completed.
    Waiting,
    /// Waiting in its lane for an agent.
    Queued,
    /// Pushed to an agent that has not accepted it yet.
    Assigned,
    /// Accepted by its agent.
    Working,
    /// Final: completed by its agent.
    Completed,
    /// Final (until an explicit retry): failed more often than `max_retries` allows.
    DeadLetter,
    /// Final: cancelled by an operator.
    Cancelled,
}

impl Status {
    /// Every status, in life order.
    pub const ALL: [Status; 8] = [
        Status::Scheduled,
        Status::Waiting,
        Status::Queued,
        Status::Assigned,
        Status::Working,
        Status::Completed,
        Status::DeadLetter,
        Status::Cancelled,
    ];

    /// The wire name (`scheduled`, `waiting`, `queued`, `assigned`, `working`,
    /// `completed`, `dead_letter`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Waiting => "waiting",
            Status::Queued => "queued",
            Status::Assigned => "assigned",
            Status::Working => "working",
            Status::Completed => "completed",
            Status::DeadLetter => "dead_letter",
            Status::Cancelled => "cancelled",
        }
    }

    /// True for `completed`, `dead_letter` and `cancelled`: the task has left the core.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::DeadLetter | Status::Cancelled
        )
    }

    /// True while an agent holds the task (`assigned` or `working`).
    pub fn is_held(self) -> bool {
        matches!(self, Status::Assigned | Status::Working)
    }

    /// True while the task is not yet in its lane (`scheduled` or `waiting`).
    pub fn is_pending(self) -> bool {
        matches!(self, Status::Scheduled | Status::Waiting)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not the name of a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a held task was taken back from its agent without counting as a failure
/// (it counts against the task's reclaim budget instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum ReclaimReason {
    /// The agent's connection closed or stopped answering pings.
    Disconnected,
    /// The agent did not accept within the acceptance deadline.
    AcceptTimeout,
    /// No sign of life (accept, progress) for too long.
    Stuck,
    /// The coordinator restarted and the agent did not come back to recover it in time.
    RecoveryExpired,
    /// The agent's outbound queue overflowed and its connection was dropped.
    SlowConsumer,
}

impl ReclaimReason {
    /// A stable snake_case name for logs, history and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReclaimReason::Disconnected => "disconnected",
            ReclaimReason::AcceptTimeout => "accept_timeout",
            ReclaimReason::Stuck => "stuck",
            ReclaimReason::RecoveryExpired => "recovery_expired",
            ReclaimReason::SlowConsumer => "slow_consumer",
        }
    }
}

/// What happened to a task, as recorded in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum HistoryEvent {
    /// Entered the queue.
    Submitted,
    /// Pushed to an agent.
    Assigned,
    /// The agent accepted it.
    Accepted,
    /// The agent reported it done.
    Completed,
    /// The agent reported a failure; it went back to the queue.
    Retried,
    /// The agent reported a failure past `max_retries`.
    DeadLettered,
    /// The agent declined it; it went back to the queue.
    Rejected,
    /// Taken back from its agent (see the details for the reason).
    Reclaimed,
    /// The agent restarted holding it and was told to continue.
    Recovered,
    /// Cancelled by an operator.
    Cancelled,
    /// Put back to the queue from the dead letter by an operator.
    Requeued,
    /// Became queued: its `run_at` came, or its last dependency completed.
    Released,
}

impl HistoryEvent {
    /// Every event.
    pub const ALL: [HistoryEvent; 12] = [
        HistoryEvent::Submitted,
        HistoryEvent::Assigned,
        HistoryEvent::Accepted,
        HistoryEvent::Completed,
        HistoryEvent::Retried,
        HistoryEvent::DeadLettered,
        HistoryEvent::Rejected,
        HistoryEvent::Reclaimed,
        HistoryEvent::Recovered,
        HistoryEvent::Cancelled,
        HistoryEvent::Requeued,
        HistoryEvent::Released,
    ];

    /// The stable snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryEvent::Submitted => "submitted",
            HistoryEvent::Assigned => "assigned",
            HistoryEvent::Accepted => "accepted",
            HistoryEvent::Completed => "completed",
            HistoryEvent::Retried => "retried",
            HistoryEvent::DeadLettered => "dead_lettered",
            HistoryEvent::Rejected => "rejected",
            HistoryEvent::Reclaimed => "reclaimed",
            HistoryEvent::Recovered => "recovered",
            HistoryEvent::Cancelled => "cancelled",
            HistoryEvent::Requeued => "requeued",
            HistoryEvent::Released => "released",
        }
    }

    /// Parses a name given by [`HistoryEvent::as_str`].
    pub fn parse(s: &str) -> Option<HistoryEvent> {
        HistoryEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// One line of a task's history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HistoryEntry {
    /// What happened.
    pub event: HistoryEvent,
    /// When, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Free text: the agent, the generation, the reason.
    pub details: Box<str>,
}

/// The agent holding a task (for a final task: the last one that held it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Holder {
    /// The agent.
    pub agent_id: AgentId,
    /// When it was assigned the task.
    pub assigned_at_ms: u64,
    /// Its last sign of life about the task (assign, accept, progress, recover).
    pub last_alive_at_ms: u64,
}

/// A task as submitted: what the caller decides.
///
/// Built with [`NewTask::new`] and the `with_*` methods (it may grow, so it
/// cannot be built from a literal outside this crate); its fields can be set
/// directly too.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct NewTask {
    /// The caller-chosen unique id.
    pub id: TaskId,
    /// What to do; must not be empty.
    pub description: String,
    /// Opaque JSON object text, carried as-is (`{}` when empty).
    pub metadata: String,
    /// The lane.
    pub priority: Priority,
    /// How many failures are retried; `None` takes the queue's default.
    pub max_retries: Option<u32>,
    /// Deadline in milliseconds since the Unix epoch, if any.
    pub complete_by_ms: Option<u64>,
    /// Capabilities an agent must have to take the task, as the submitter gave
    /// them: submit checks them (an empty name is refused with
    /// [`SubmitError::EmptyCapability`](crate::SubmitError::EmptyCapability))
    /// and the task keeps them as one [`Capabilities`](crate::Capabilities) set.
    pub needed_capabilities: Vec<String>,
    /// Who submitted it (the token's name), for the record.
    pub submitted_by: Option<String>,
    /// Not before this time (ms since the Unix epoch): `scheduled` until then.
    /// A time not after the submission queues the task at once.
    pub run_at_ms: Option<u64>,
    /// Not before this long after the submission: `run_at_ms` is then the
    /// submission time plus this (giving both is refused).
    pub delay_ms: Option<u64>,
    /// Tasks that must be completed first (at most [`MAX_DEPENDENCIES`]):
    /// `waiting` until then. Each must be live in the queue or named in
    /// `settled_dependencies`.
    pub depends_on: Vec<TaskId>,
    /// Dependencies that the queue does not hold, with the status storage
    /// holds for them: the caller reads them (the queue keeps only live tasks,
    /// and with a [`ScheduledWindow`](crate::ScheduledWindow) not the
    /// scheduled ones beyond it: a `scheduled` status here counts as live).
    pub settled_dependencies: Vec<(TaskId, Status)>,
    /// Submit once: a second task of the same submitter with the same key is
    /// the first one (at most [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes).
    pub idempotency_key: Option<String>,
}

/// The most dependencies a task may have.
pub const MAX_DEPENDENCIES: usize = 100;
/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

impl NewTask {
    /// A normal-priority task with no metadata, capabilities or deadline.
    pub fn new(id: impl Into<TaskId>, description: impl Into<String>) -> Self {
        NewTask {
            id: id.into(),
            description: description.into(),
            metadata: "{}".to_owned(),
            priority: Priority::Normal,
            max_retries: None,
            complete_by_ms: None,
            needed_capabilities: Vec::new(),
            submitted_by: None,
            run_at_ms: None,
            delay_ms: None,
            depends_on: Vec::new(),
            settled_dependencies: Vec::new(),
            idempotency_key: None,
        }
    }

    /// Sets the time before which the task does not run.
    pub fn with_run_at(mut self, run_at_ms: u64) -> Self {
        self.run_at_ms = Some(run_at_ms);
        self
    }

    /// Sets the tasks that must be completed first.
    pub fn with_depends_on<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<TaskId>,
    {
        self.depends_on = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the lane.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the needed capabilities.
    pub fn with_capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.needed_capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `max_retries`.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Sets the `complete_by` deadline.
    pub fn with_complete_by(mut self, complete_by_ms: u64) -> Self {
        self.complete_by_ms = Some(complete_by_ms);
        self
    }

    /// Sets the metadata (JSON object text).
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Sets who submitted it.
    pub fn with_submitted_by(mut self, submitted_by: impl Into<String>) -> Self {
        self.submitted_by = Some(submitted_by.into());
        self
    }
}

/// The whole record of a task: what is persisted and what the API shows.
///
/// The core hands these out in [`Change`](crate::Change)s and takes them back in
/// [`Queue::restore`](crate::Queue::restore). Its fields are read through the
/// accessors of the same names; a record read back from storage is built with
/// [`Task::from_parts`], which refuses an inconsistent record, so that every
/// `Task` in existence is one the queue could have emitted. With the `serde`
/// feature, deserializing a `Task` goes through the same check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "TaskParts")
)]
pub struct Task {
    pub(crate) id: TaskId,
    pub(crate) description: Payload,
    pub(crate) metadata: Payload,
    pub(crate) priority: Priority,
    pub(crate) status: Status,
    /// Boxed, like `outcome`: queued tasks, the many, pay one pointer.
    pub(crate) holder: Option<Box<Holder>>,
    pub(crate) generation: u64,
    pub(crate) retry_count: u32,
    pub(crate) reclaim_count: u32,
    pub(crate) max_retries: u32,
    pub(crate) complete_by_ms: Option<u64>,
    pub(crate) needed_capabilities: Capabilities,
    pub(crate) outcome: Option<Box<Completion>>,
    pub(crate) last_error: Option<Box<str>>,
    /// Shared between the tasks of one submitter.
    pub(crate) submitted_by: Option<Arc<str>>,
    pub(crate) created_at_ms: u64,
    pub(crate) updated_at_ms: u64,
    pub(crate) queue_seq: u64,
    pub(crate) history: Vec<HistoryEntry>,
    pub(crate) run_at_ms: Option<u64>,
    pub(crate) depends_on: Box<[TaskId]>,
    pub(crate) idempotency_key: Option<Box<str>>,
}

/// Every part of a [`Task`], in the open: what storage gives back, to be checked
/// and turned into a task by [`Task::from_parts`] (and what
/// [`Task::into_parts`] gives for a record to be rewritten).
///
/// Exhaustive on purpose: it mirrors every part of a task, and whoever builds
/// one must set every part; a new part is a breaking change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TaskParts {
    /// Unique id; must not be empty.
    pub id: TaskId,
    /// What to do (out of memory when large, see [`Payload`]).
    pub description: Payload,
    /// Opaque JSON object text (out of memory when large, see [`Payload`]).
    pub metadata: Payload,
    /// The lane.
    pub priority: Priority,
    /// Where it is in its life.
    pub status: Status,
    /// Who holds it: required while `assigned` or `working`, absent while
    /// `queued`; for a final task, who held it last, if anyone.
    pub holder: Option<Holder>,
    /// The fencing token: bumped by every assignment and every reclaim (at
    /// least 1 for a held task).
    pub generation: u64,
    /// Failures counted so far; at most `max_retries` for a live task.
    pub retry_count: u32,
    /// Reclaims (of any reason) counted so far.
    pub reclaim_count: u32,
    /// Failures retried before the dead letter.
    pub max_retries: u32,
    /// Deadline, if any.
    pub complete_by_ms: Option<u64>,
    /// Capabilities an agent must have.
    pub needed_capabilities: Capabilities,
    /// What the agent reported, once completed.
    pub outcome: Option<Completion>,
    /// The most recent failure reason.
    pub last_error: Option<String>,
    /// Who submitted it.
    pub submitted_by: Option<String>,
    /// Submission time.
    pub created_at_ms: u64,
    /// Time of the last change.
    pub updated_at_ms: u64,
    /// The task's place in its lane: smaller runs first; below 2^56.
    pub queue_seq: u64,
    /// What happened, oldest first, at most [`HISTORY_CAP`] entries.
    pub history: Vec<HistoryEntry>,
    /// Not before this time; required while `scheduled`.
    pub run_at_ms: Option<u64>,
    /// Tasks that had to be completed first (at most [`MAX_DEPENDENCIES`]);
    /// not empty while `waiting`.
    pub depends_on: Vec<TaskId>,
    /// The submitter's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

/// The largest `queue_seq` a task may have (the arrival order takes 56 bits of a
/// lane's ordering key).
pub(crate) const MAX_QUEUE_SEQ: u64 = (1 << 56) - 1;

impl Task {
    /// Checks `parts` and makes a task of them: refused, with what is wrong, if
    /// the record is one the queue could never have emitted (an empty id, a held
    /// task without a holder or at generation 0, a queued task with a holder, a
    /// live task with more failures counted than `max_retries`, a history longer
    /// than [`HISTORY_CAP`], a `queue_seq` of 2^56 or more).
    ///
    /// What depends on the queue's settings (the reclaim budget) is not checked:
    /// a task past a lowered `max_reclaims` goes to the dead letter on its next
    /// reclaim.
    pub fn from_parts(parts: TaskParts) -> Result<Task, InvalidTask> {
        let id = parts.id;
        if id.is_empty() {
            return Err(InvalidTask::EmptyId);
        }
        let status = parts.status;
        match (status, &parts.holder) {
            (Status::Assigned | Status::Working, None) => {
                return Err(InvalidTask::HeldWithoutHolder {
                    task_id: id,
                    status,
                })
            }
            (Status::Queued, Some(_)) => return Err(InvalidTask::QueuedWithHolder(id)),
            (Status::Scheduled | Status::Waiting, Some(_)) => {
                return Err(InvalidTask::PendingWithHolder {
                    task_id: id,
                    status,
                })
            }
            _ => {}
        }
        match status {
            Status::Scheduled if parts.run_at_ms.is_none() => {
                return Err(InvalidTask::ScheduledWithoutRunAt(id))
            }
            Status::Waiting if parts.depends_on.is_empty() => {
                return Err(InvalidTask::WaitingWithoutDependencies(id))
            }
            _ => {}
        }
        if status.is_held() && parts.generation == 0 {
            return Err(InvalidTask::HeldAtGenerationZero(id));
        }
        if !status.is_final() && parts.retry_count > parts.max_retries {
            return Err(InvalidTask::RetriesBeyondMax {
                task_id: id,
                retry_count: parts.retry_count,
                max_retries: parts.max_retries,
            });
        }
        if parts.history.len() > HISTORY_CAP {
            return Err(InvalidTask::HistoryTooLong {
                task_id: id,
                len: parts.history.len(),
            });
        }
        if parts.depends_on.len() > MAX_DEPENDENCIES {
            return Err(InvalidTask::TooManyDependencies {
                task_id: id,
                n: parts.depends_on.len(),
            });
        }
        if parts
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY_BYTES)
        {
            return Err(InvalidTask::IdempotencyKeyTooLong(id));
        }
        if parts.queue_seq > MAX_QUEUE_SEQ {
            return Err(InvalidTask::QueueSeqOutOfRange {
                task_id: id,
                queue_seq: parts.queue_seq,
            });
        }
        Ok(Task {
            id,
            description: parts.description,
            metadata: parts.metadata,
            priority: parts.priority,
            status,
            holder: parts.holder.map(Box::new),
            generation: parts.generation,
            retry_count: parts.retry_count,
            reclaim_count: parts.reclaim_count,
            max_retries: parts.max_retries,
            complete_by_ms: parts.complete_by_ms,
            needed_capabilities: parts.needed_capabilities,
            outcome: parts.outcome.map(Box::new),
            last_error: parts.last_error.map(String::into_boxed_str),
            submitted_by: parts.submitted_by.map(Arc::from),
            created_at_ms: parts.created_at_ms,
            updated_at_ms: parts.updated_at_ms,
            queue_seq: parts.queue_seq,
            history: parts.history,
            run_at_ms: parts.run_at_ms,
            depends_on: parts.depends_on.into_boxed_slice(),
            idempotency_key: parts.idempotency_key.map(String::into_boxed_str),
        })
    }

    /// Every part of the record, in the open ([`Task::from_parts`] takes them back).
    pub fn into_parts(self) -> TaskParts {
        TaskParts {
            id: self.id,
            description: self.description,
            metadata: self.metadata,
            priority: self.priority,
            status: self.status,
            holder: self.holder.map(|h| *h),
            generation: self.generation,
            retry_count: self.retry_count,
            reclaim_count: self.reclaim_count,
            max_retries: self.max_retries,
            complete_by_ms: self.complete_by_ms,
            needed_capabilities: self.needed_capabilities,
            outcome: self.outcome.map(|o| *o),
            last_error: self.last_error.map(String::from),
            submitted_by: self.submitted_by.map(|s| String::from(&*s)),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            queue_seq: self.queue_seq,
            history: self.history,
            run_at_ms: self.run_at_ms,
            depends_on: self.depends_on.into_vec(),
            idempotency_key: self.idempotency_key.map(String::from),
        }
    }

    /// Unique id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// What to do (out of memory when large, see [`Payload`]).
    pub fn description(&self) -> &Payload {
        &self.description
    }

    /// Opaque JSON object text (out of memory when large, see [`Payload`]).
    pub fn metadata(&self) -> &Payload {
        &self.metadata
    }

    /// The lane.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Where it is in its life.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Who holds it, while `assigned` or `working`; for a final task, who held
    /// it last.
    pub fn holder(&self) -> Option<&Holder> {
        self.holder.as_deref()
    }

    /// The fencing token: bumped by every assignment and every reclaim.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Failures counted so far.
    pub fn retry_count(&self) -> u32 {
        self.retry_count
    }

    /// Reclaims (of any reason) counted so far; past the queue's `max_reclaims`
    /// the task goes to the dead letter.
    pub fn reclaim_count(&self) -> u32 {
        self.reclaim_count
    }

    /// Failures retried before the dead letter.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Deadline, if any.
    pub fn complete_by_ms(&self) -> Option<u64> {
        self.complete_by_ms
    }

    /// Capabilities an agent must have to take it.
    pub fn needed_capabilities(&self) -> &Capabilities {
        &self.needed_capabilities
    }

    /// What the agent reported, once completed.
    pub fn outcome(&self) -> Option<&Completion> {
        self.outcome.as_deref()
    }

    /// The most recent failure reason.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Who submitted it (the token's name), for the record.
    pub fn submitted_by(&self) -> Option<&str> {
        self.submitted_by.as_deref()
    }

    /// Submission time.
    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    /// Time of the last change.
    pub fn updated_at_ms(&self) -> u64 {
        self.updated_at_ms
    }

    /// The task's place in its lane: smaller runs first. Kept across requeues.
    pub fn queue_seq(&self) -> u64 {
        self.queue_seq
    }

    /// What happened, oldest first, at most [`HISTORY_CAP`] entries.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    /// True for the record a submission makes ([`Queue::submit`]): its history
    /// is the one `submitted` entry. Every later record of a task adds an
    /// entry (a progress report adds none, but only a held task reports), and
    /// a full history drops its oldest, so no later record looks like this.
    /// A store can take such a record for a row it has not written yet.
    ///
    /// [`Queue::submit`]: crate::Queue::submit
    pub fn is_submission_record(&self) -> bool {
        matches!(self.history.as_slice(), [entry] if entry.event == HistoryEvent::Submitted)
    }

    /// Not before this time (ms since the Unix epoch), if it was submitted
    /// with one.
    pub fn run_at_ms(&self) -> Option<u64> {
        self.run_at_ms
    }

    /// The tasks that had to be completed before this one could be queued.
    pub fn depends_on(&self) -> &[TaskId] {
        &self.depends_on
    }

    /// The submitter's idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The same record with another description: what a store that keeps the
    /// texts does with a record carrying [`Payload::Stored`] (the text is
    /// unchanged and the store has it).
    pub fn with_description(mut self, description: Payload) -> Task {
        self.description = description;
        self
    }

    /// The same record with other metadata (see [`Task::with_description`]).
    pub fn with_metadata(mut self, metadata: Payload) -> Task {
        self.metadata = metadata;
        self
    }

    /// The same record with its description and metadata replaced by their
    /// lengths ([`Payload::Stored`]) where they are longer than
    /// `max_inline_bytes`, as the queue keeps it.
    pub fn with_payloads_elided(mut self, max_inline_bytes: usize) -> Task {
        self.description.elide(max_inline_bytes);
        self.metadata.elide(max_inline_bytes);
        self
    }
}

#[cfg(feature = "serde")]
impl TryFrom<TaskParts> for Task {
    type Error = InvalidTask;

    fn try_from(parts: TaskParts) -> Result<Task, InvalidTask> {
        Task::from_parts(parts)
    }
}

impl Task {
    pub(crate) fn record(&mut self, now_ms: u64, event: HistoryEvent, details: String) {
        if self.history.len() >= HISTORY_CAP {
            self.history.remove(0);
        }
        self.history.push(HistoryEntry {
            event,
            timestamp_ms: now_ms,
            details: details.into_boxed_str(),
        });
        self.updated_at_ms = now_ms;
    }

    /// True if `agent` holds this task now.
    pub fn is_held_by(&self, agent: &AgentId) -> bool {
        self.status.is_held() && self.assigned_to() == Some(agent)
    }

    /// The agent holding it (for a final task: the last one).
    pub fn assigned_to(&self) -> Option<&AgentId> {
        self.holder.as_ref().map(|h| &h.agent_id)
    }

    /// When it was last assigned, while it has a holder.
    pub fn assigned_at_ms(&self) -> Option<u64> {
        self.holder.as_ref().map(|h| h.assigned_at_ms)
    }

    /// The holder's last sign of life about it.
    pub fn last_alive_at_ms(&self) -> Option<u64> {
        self.holder.as_ref().map(|h| h.last_alive_at_ms)
    }

    /// The agent and generation of the newest assignment in the history.
    pub fn last_assignment(&self) -> Option<(&str, u64)> {
        let entry = self
            .history
            .iter()
            .rev()
            .find(|e| e.event == HistoryEvent::Assigned)?;
        let rest = entry.details.strip_prefix("agent=")?;
        let (agent, generation) = rest.rsplit_once(" generation=")?;
        Some((agent, generation.parse().ok()?))
    }

    /// For a queued task taken back from its holder because the holder's
    /// connection dropped, and assigned to nobody since: that holder and the
    /// generation of its assignment. The holder may have it back (re-attach)
    /// instead of the task running a second time.
    pub fn reattachable_to(&self) -> Option<(&str, u64)> {
        if self.status != Status::Queued {
            return None;
        }
        let newest = self.history.last()?;
        if newest.event != HistoryEvent::Reclaimed {
            return None;
        }
        let (_, reason) = newest.details.rsplit_once(" reason=")?;
        let connection_lost = reason == ReclaimReason::Disconnected.as_str()
            || reason == ReclaimReason::SlowConsumer.as_str();
        if !connection_lost {
            return None;
        }
        self.last_assignment()
    }

    /// The result (JSON text), once completed.
    pub fn result(&self) -> Option<&str> {
        self.outcome.as_ref().map(|o| o.result.as_str())
    }

    /// The tokens the agent reported, once completed.
    pub fn tokens_used(&self) -> Option<u64> {
        self.outcome.as_ref().and_then(|o| o.tokens_used)
    }
}

/// `agent=NAME generation=N` and `suffix`: the details of an assignment, an
/// acceptance, a completion or a re-attachment, written into a string of the
/// exact length without the formatting machinery (three of them per task).
pub(crate) fn agent_generation(agent: &str, generation: u64, suffix: &str) -> String {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = generation;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[start..];
    let mut text = String::with_capacity(
        "agent=".len() + agent.len() + " generation=".len() + digits.len() + suffix.len(),
    );
    text.push_str("agent=");
    text.push_str(agent);
    text.push_str(" generation=");
    text.extend(digits.iter().map(|&d| char::from(d)));
    text.push_str(suffix);
    text
}

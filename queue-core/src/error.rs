//! The errors of the queue's operations. Each leaves the queue unchanged.

use crate::{Status, TaskId};

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// A live task already has this id.
    #[error("a task with id `{0}` already exists")]
    DuplicateId(TaskId),
    /// The id is empty.
    #[error("the task id must not be empty")]
    EmptyId,
    /// The description is empty or only white space.
    #[error("the description must not be empty")]
    EmptyDescription,
    /// A needed capability is empty.
    #[error("a needed capability must not be empty")]
    EmptyCapability,
    /// The `complete_by` deadline is not in the future.
    #[error("complete_by {complete_by_ms} is not in the future (now is {now_ms})")]
    DeadlinePassed {
        /// The deadline given.
        complete_by_ms: u64,
        /// The time of the submission.
        now_ms: u64,
    },
    /// Both `run_at` and `delay_ms` were given.
    #[error("give run_at or delay_ms, not both")]
    RunAtAndDelay,
    /// More dependencies than [`MAX_DEPENDENCIES`](crate::MAX_DEPENDENCIES).
    #[error("{0} dependencies given, at most 100 are allowed")]
    TooManyDependencies(usize),
    /// A dependency is neither live nor settled in storage (unknown, or
    /// deleted by retention).
    #[error("unknown dependency `{0}`")]
    UnknownDependency(TaskId),
    /// A dependency already ended in the dead letter or was cancelled.
    #[error("dependency `{id}` is {status}: this task could never run")]
    DependencyFailed {
        /// The dependency.
        id: TaskId,
        /// Its final status.
        status: Status,
    },
    /// The idempotency key is empty or longer than
    /// [`MAX_IDEMPOTENCY_KEY_BYTES`](crate::MAX_IDEMPOTENCY_KEY_BYTES).
    #[error("the idempotency key must be 1 to 256 bytes, not {0}")]
    BadIdempotencyKey(usize),
    /// A live task of the same submitter has this idempotency key: the caller
    /// answers with that task (a duplicate), not an error.
    #[error("task `{0}` was already submitted with this idempotency key")]
    DuplicateKey(TaskId),
}

/// Why an operation on an existing task was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// No live task has this id (it may be final and out of the core).
    #[error("no live task with id `{0}`")]
    NotFound(TaskId),
    /// The generation given is not the task's current one; nothing changed.
    #[error("stale generation {given} for task `{task_id}` (current is {current})")]
    StaleGeneration {
        /// The task.
        task_id: TaskId,
        /// The generation the caller sent.
        given: u64,
        /// The task's current generation.
        current: u64,
    },
    /// The task is not held by the agent that spoke about it.
    #[error("task `{0}` is not assigned to this agent")]
    NotAssigned(TaskId),
    /// The task is not in a status that allows the operation.
    #[error("task `{task_id}` is {status}, which does not allow this")]
    WrongStatus {
        /// The task.
        task_id: TaskId,
        /// Its current status.
        status: Status,
    },
}

/// Why [`Task::from_parts`](crate::Task::from_parts) refused a record: it is not
/// one the queue could have emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTask {
    /// The id is empty.
    #[error("a task record has an empty id")]
    EmptyId,
    /// An `assigned` or `working` task names no holder.
    #[error("task `{task_id}` is {status} but has no holder")]
    HeldWithoutHolder {
        /// The task.
        task_id: TaskId,
        /// Its status.
        status: Status,
    },
    /// A queued task names a holder.
    #[error("task `{0}` is queued but has a holder")]
    QueuedWithHolder(TaskId),
    /// A scheduled or waiting task names a holder.
    #[error("task `{task_id}` is {status} but has a holder")]
    PendingWithHolder {
        /// The task.
        task_id: TaskId,
        /// Its status.
        status: Status,
    },
    /// A scheduled task has no `run_at`.
    #[error("task `{0}` is scheduled but has no run_at")]
    ScheduledWithoutRunAt(TaskId),
    /// A waiting task has no dependencies.
    #[error("task `{0}` is waiting but depends on nothing")]
    WaitingWithoutDependencies(TaskId),
    /// More dependencies than [`MAX_DEPENDENCIES`](crate::MAX_DEPENDENCIES).
    #[error("task `{task_id}` has {n} dependencies (at most 100)")]
    TooManyDependencies {
        /// The task.
        task_id: TaskId,
        /// How many it has.
        n: usize,
    },
    /// An idempotency key longer than
    /// [`MAX_IDEMPOTENCY_KEY_BYTES`](crate::MAX_IDEMPOTENCY_KEY_BYTES).
    #[error("task `{0}` has an idempotency key over 256 bytes")]
    IdempotencyKeyTooLong(TaskId),
    /// A held task at generation 0 (every assignment bumps the generation).
    #[error("task `{0}` is held at generation 0")]
    HeldAtGenerationZero(TaskId),
    /// A live task counts more failures than it may retry (it would be in the
    /// dead letter).
    #[error(
        "live task `{task_id}` has retry_count {retry_count} beyond max_retries {max_retries}"
    )]
    RetriesBeyondMax {
        /// The task.
        task_id: TaskId,
        /// Its failures counted.
        retry_count: u32,
        /// Its retry limit.
        max_retries: u32,
    },
    /// The history holds more than [`HISTORY_CAP`](crate::HISTORY_CAP) entries.
    #[error("task `{task_id}` has {len} history entries (at most 50 are kept)")]
    HistoryTooLong {
        /// The task.
        task_id: TaskId,
        /// How many entries it has.
        len: usize,
    },
    /// The place in the lane is 2^56 or more.
    #[error("task `{task_id}` has queue_seq {queue_seq}, beyond 2^56 - 1")]
    QueueSeqOutOfRange {
        /// The task.
        task_id: TaskId,
        /// The place given.
        queue_seq: u64,
    },
}

/// Why [`Queue::restore`](crate::Queue::restore) refused the records. Nothing
/// was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// Two live records share one id.
    #[error("two records have the id `{0}`")]
    DuplicateId(TaskId),
    /// Two live records share one place in the queue (`queue_seq`): one of them
    /// would be lost from its lane.
    #[error("tasks `{first}` and `{second}` have the same queue_seq {queue_seq}")]
    DuplicateQueueSeq {
        /// The task seen first.
        first: TaskId,
        /// The task seen second.
        second: TaskId,
        /// The place both claim.
        queue_seq: u64,
    },
}

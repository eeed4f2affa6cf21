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

/// Why [`Queue::restore`](crate::Queue::restore) refused the records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// Two records share one id.
    #[error("two records have the id `{0}`")]
    DuplicateId(TaskId),
    /// A held task has no agent, or a queued task has one.
    #[error("task `{0}` is inconsistent: its status and assignee disagree")]
    Inconsistent(TaskId),
}

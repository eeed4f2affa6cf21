//! The durable-queue state machine of Coordinator: tasks, priority lanes,
//! generation fencing, retries, reclaim budgets, the dead letter and deadlines.
//!
//! This crate performs no I/O: no sockets, files, threads, clocks or randomness.
//! Time comes in as `now_ms` (milliseconds since the Unix epoch), ids come from the
//! caller, and every change that must be made durable comes out as a [`Change`]
//! value. Persist those, then acknowledge: that is the whole contract.
//!
//! Only live work stays in memory: a task that reaches a final state (completed,
//! dead letter, cancelled) comes out as [`Change::Finalized`] and leaves the queue.
//! And a live task costs the same whatever it carries: a long description or
//! metadata comes out in the task's first record and is then kept only by its
//! length ([`Payload::Stored`]); whoever must send it reads it back from storage.
//!
//! # Ids
//!
//! One convention in every call: an operation on a task or agent borrows its
//! id (`&TaskId`, `&AgentId`); what the queue keeps takes it by value
//! ([`NewTask::new`]). Ids clone cheaply (a reference count).
//!
//! # Features
//!
//! - `serde` (off by default): `Serialize` and `Deserialize` for [`Task`],
//!   [`TaskParts`], [`NewTask`], [`Change`], [`Capabilities`] and what they
//!   hold. Ids are plain strings, lanes, statuses, history events and reclaim
//!   reasons their `as_str` names; capabilities a list (any list reads as the
//!   sorted, de-duplicated set). A deserialized [`Task`] is checked by
//!   [`Task::from_parts`] on the way in: deserialization is no way around its
//!   checks. The core never serializes anything itself.
//! - `testing` (off by default): the test kit in the `testing` module: proptest
//!   strategies for tasks, capabilities and operation sequences, an in-memory
//!   store that applies [`Change`]s and restores a queue from them, and the
//!   reference model this crate's own property test runs against. Pulls in
//!   proptest.
//!
//! # Example
//!
//! ```
//! use coordinator_queue::{AgentId, Change, Completion, NewTask, Priority, Queue, QueueConfig, TaskId};
//!
//! let mut queue = Queue::new(QueueConfig::default());
//! let now_ms = 1_700_000_000_000;
//! let t1 = TaskId::from("t1");
//! queue.submit(now_ms, NewTask::new(t1.clone(), "build the docs").with_priority(Priority::High))?;
//!
//! let agent = AgentId::from("agent-1");
//! let generation = queue.assign(now_ms + 1, &t1, &agent)?;
//! queue.accept(now_ms + 2, &t1, &agent)?;
//! queue.complete(now_ms + 3, &t1, &agent, generation, Completion {
//!     result: r#"{"ok":true}"#.into(),
//!     tokens_used: Some(42),
//! })?;
//!
//! // Everything to persist, in order; the last record is final.
//! let changes = queue.drain_changes();
//! assert_eq!(changes.len(), 4);
//! assert!(matches!(changes.last(), Some(Change::Finalized(t)) if t.id() == &t1));
//! assert!(queue.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod capabilities;
mod change;
mod error;
mod hashing;
mod ids;
mod index;
mod payload;
mod queue;
mod task;

pub use capabilities::Capabilities;
pub use change::Change;
pub use error::{InvalidTask, RestoreError, SubmitError, TaskError};
pub use hashing::{IdHashState, IdMap, IdSet};
pub use ids::{AgentId, TaskId};
pub use payload::Payload;
pub use queue::{
    Completion, FailOutcome, Queue, QueueConfig, ReclaimOutcome, Reclaimed, Recovery, ScheduleKey,
    ScheduledLoad, ScheduledPage, ScheduledWindow, Stats, Swept, DEADLINE_EXCEEDED,
    DEPENDENCY_FAILED, TOO_MANY_RECLAIMS,
};
pub use task::{
    HistoryEntry, HistoryEvent, Holder, NewTask, Priority, ReclaimReason, Status, Task, TaskParts,
    UnknownPriority, UnknownStatus, HISTORY_CAP, MAX_DEPENDENCIES, MAX_IDEMPOTENCY_KEY_BYTES,
};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

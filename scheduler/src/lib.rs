//! Matching of queued tasks to idle, capable agents, and the one pure core the
//! coordinator drives: it owns the [`coordinator_queue::Queue`] and one
//! [`coordinator_agent_fsm::Agent`] per known agent, and turns every input into records to
//! persist and messages to send.
//!
//! This crate performs no I/O: no sockets, files, clocks, timers or threads.
//! Time comes in as `now_ms`.
//!
//! # The contract
//!
//! After every `handle_*` call the shell must:
//! 1. drain [`Scheduler::poll_change`] and persist those records;
//! 2. drain [`Scheduler::poll_action`] and send those messages **only after** the
//!    records of step 1 are committed (persist before acknowledge);
//! 3. arm one timer for [`Scheduler::poll_timeout`] and call
//!    [`Scheduler::handle_timeout`] when it fires, and call
//!    [`Scheduler::handle_sweep`] periodically (every few seconds to tens of
//!    seconds, short against `stuck_after_ms`; see its doc for what a late
//!    call does).
//!
//! [`Action::Reclaimed`] is for logs and metrics only: nothing is sent to the
//! agent the task was taken from; what to tell it, if anything, is the
//! shell's choice.
//!
//! # Matching rules
//!
//! - A task goes only to an agent whose capabilities include all of the task's.
//! - Queued tasks are indexed by their capability set, so a task no idle agent can
//!   take never blocks later tasks that some idle agent can take, and one match
//!   costs about O(distinct capability sets + log n).
//! - Among capable idle agents the one idle longest wins; agents flagged
//!   `unresponsive` come last.
//! - Matching is event-driven: on submit, requeue, retry, connect and whenever an
//!   agent becomes idle.
//! - An agent drained by an operator ([`Scheduler::handle_drain`]) is offered no
//!   new work until it is undrained; the drain is kept in memory only.
//!
//! # Ids
//!
//! As in `coordinator-queue`: inputs about a task or an agent borrow its id
//! (`&TaskId`, `&AgentId`); what the scheduler keeps is taken by value
//! ([`Scheduler::handle_connect`]'s agent id, [`NewTask`]). Connections are
//! named by [`ConnId`].
//!
//! # Features
//!
//! - `serde` (off by default): `Serialize` and `Deserialize` for [`Action`],
//!   [`Assignment`] and [`Unroutable`], and the `serde` features of `coordinator-queue` and
//!   `coordinator-agent-fsm`.
//! - `testing` (off by default): the test kit in the `testing` module: an invariant
//!   checker, a virtual-clock driver with an in-memory store, operation
//!   sequences, and the kits of `coordinator-queue` and
//!   `coordinator-agent-fsm`. Pulls in proptest.
//!
//! # Example
//!
//! ```
//! // Everything comes from this crate: it re-exports the types of its API.
//! use coordinator_scheduler::{
//!     Action, AgentId, Capabilities, Completion, ConnId, NewTask, Scheduler, SchedulerConfig, TaskId,
//! };
//!
//! let mut scheduler = Scheduler::new(SchedulerConfig::default());
//! let now_ms = 1_700_000_000_000;
//! let agent = AgentId::from("builder-1");
//! let t1 = TaskId::from("t1");
//! scheduler.handle_connect(now_ms, agent.clone(), Capabilities::new(["linux"]), ConnId::new(1));
//! scheduler.handle_submit(now_ms, NewTask::new(t1.clone(), "cargo build").with_capabilities(["linux"]))?;
//!
//! // Persist first ...
//! let changes: Vec<_> = std::iter::from_fn(|| scheduler.poll_change()).collect();
//! assert_eq!(changes.len(), 2); // submitted, assigned
//! // ... then send.
//! let Some(Action::Assign(assignment)) = scheduler.poll_action() else { panic!() };
//! assert_eq!(assignment.agent_id, agent);
//!
//! scheduler.handle_accepted(now_ms + 1, &agent, &t1)?;
//! scheduler.handle_complete(now_ms + 2, &agent, &t1, assignment.generation, Completion::default())?;
//! assert!(scheduler.queue().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod conn_id;
mod error;
mod idle;
mod scheduler;

pub use action::{Action, Assignment};
pub use conn_id::ConnId;
pub use error::SchedulerError;
pub use scheduler::{
    AgentView, Scheduler, SchedulerConfig, Unroutable, PAYLOAD_UNREADABLE, RESULT_TOO_LARGE,
};

// What the scheduler's own API takes and gives, so that a user can depend on
// this crate alone; and the two crates, for what the flat re-exports leave out.
pub use coordinator_agent_fsm::{Agent, AgentState, HeldTask, IllegalMove, Move};
pub use coordinator_queue::{
    AgentId, Capabilities, Change, Completion, FailOutcome, HistoryEntry, HistoryEvent, Holder,
    InvalidTask, NewTask, Payload, Priority, Queue, QueueConfig, ReclaimOutcome, ReclaimReason,
    Recovery, RestoreError, ScheduleKey, ScheduledLoad, ScheduledPage, ScheduledWindow, Stats,
    Status, SubmitError, Task, TaskError, TaskId, TaskParts, UnknownPriority, UnknownStatus,
    DEADLINE_EXCEEDED, HISTORY_CAP, TOO_MANY_RECLAIMS,
};
#[doc(no_inline)]
pub use {coordinator_agent_fsm as agent_fsm, coordinator_queue as queue};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

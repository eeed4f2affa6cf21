//! The state machine of one connected agent: its legal moves, its acceptance
//! deadline and its `unresponsive` flag.
//!
//! This crate performs no I/O: no sockets, clocks or timers. Time comes in as
//! `now_ms`; the deadline comes out of [`Agent::poll_timeout`] for the shell to arm a
//! timer, and [`Agent::handle_timeout`] tells what expired.
//!
//! States and legal moves (SPEC §4): `idle → assigned` (a task was pushed),
//! `assigned → working` (accepted), `assigned → idle` (reclaimed or rejected),
//! `working → idle` (completed or failed), `working ↔ blocked`, `blocked → idle`,
//! `offline → idle` (identified), and any state `→ offline` (disconnected).
//! Any other move is an [`IllegalMove`] error and changes nothing.
//!
//! # Features
//!
//! - `serde` (off by default): `Serialize` and `Deserialize` for [`AgentState`]
//!   (its `as_str` name), and the `serde` feature of `coordinator-queue` (which
//!   covers [`Capabilities`], defined there and re-exported here).
//! - `testing` (off by default): the test kit in the `testing` module: strategies for
//!   capabilities and move sequences and a checker of the legal moves, with
//!   the kit of `coordinator-queue`. Pulls in proptest.
//!
//! # Example
//!
//! ```
//! use coordinator_agent_fsm::{Agent, AgentState, Capabilities};
//! use coordinator_queue::{AgentId, TaskId};
//!
//! let mut agent = Agent::new(AgentId::from("a1"), Capabilities::new(["gpu"]));
//! let now_ms = 1_700_000_000_000;
//! agent.connect(now_ms)?;
//! agent.assign(now_ms, TaskId::from("t1"), 1, 60_000)?;
//! assert_eq!(agent.poll_timeout(), Some(now_ms + 60_000));
//!
//! // The agent never accepts: the deadline hands the task back and flags the agent.
//! let expired = agent.handle_timeout(now_ms + 60_000);
//! assert_eq!(expired.map(|held| held.task_id), Some(TaskId::from("t1")));
//! assert_eq!(agent.state(), AgentState::Idle);
//! assert!(agent.is_unresponsive());
//! # Ok::<(), coordinator_agent_fsm::IllegalMove>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod capabilities;

pub use agent::{Agent, AgentState, HeldTask, IllegalMove, Move};
pub use capabilities::Capabilities;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

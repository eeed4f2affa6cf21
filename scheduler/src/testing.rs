//! The test kit of the scheduler (feature `testing`): an invariant checker, a
//! virtual-clock driver with an in-memory store, and operation sequences, with
//! the kits of `coordinator-queue` and `coordinator-agent-fsm` re-exported as
//! [`queue`] and [`agent`].
//!
//! - [`check_invariants`], [`check_action`] and [`InvariantChecker`]: what must
//!   hold between any two inputs: each held task held by exactly the agent the
//!   queue names, at the task's generation (the fencing token), generations
//!   that never go down, agents busy exactly while holding a task, acceptance
//!   deadlines armed, assignments only to capable agents, and no queued task
//!   left that an available agent could take.
//! - [`Driver`]: the scheduler on a virtual clock, as a shell drives it:
//!   persist into a [`MemoryStore`](queue::MemoryStore), then release the
//!   actions, fire `handle_timeout` at `poll_timeout` and `handle_sweep` every
//!   period ([`Driver::advance`], [`Driver::run_until_idle`]), crash and
//!   restore ([`Driver::restart`]), checking the invariants after every input.
//! - [`scheduler_ops`] and [`Driver::apply`]: random lives of a coordinator.
//!
//! Errors are [`Violation`]s, whose message says what broke; `?` turns one
//! into a failing proptest case.
//!
//! # Example: a property test of one's own
//!
//! Whatever agents, operators, clock and crashes do, no task is ever lost: a
//! submitted task is stored, and it is live in the scheduler exactly while its
//! stored record is not final:
//!
//! ```
//! use coordinator_scheduler::testing::{scheduler_ops, Driver};
//! use coordinator_scheduler::{SchedulerConfig, TaskId};
//! use proptest::prelude::*;
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(64))]
//!     // In a test file, this function carries #[test].
//!     fn no_task_is_ever_lost(ops in scheduler_ops(1..80, true)) {
//!         let mut driver = Driver::new(SchedulerConfig::default(), 1_700_000_000_000);
//!         for op in &ops {
//!             driver.apply(op)?; // also checks the scheduler's invariants
//!             for n in 0..driver.n_submitted() {
//!                 let id = TaskId::from(format!("t{n}"));
//!                 let Some(stored) = driver.store().get(&id) else {
//!                     return Err(TestCaseError::fail(format!("{id} was never stored")));
//!                 };
//!                 let live = driver.scheduler().queue().get(&id).is_some();
//!                 prop_assert_eq!(live, !stored.status().is_final(), "{}", id);
//!             }
//!         }
//!     }
//! }
//! # fn main() { no_task_is_ever_lost(); }
//! ```

mod clock;
mod invariants;
mod ops;

pub use clock::{Driver, DEFAULT_SWEEP_EVERY_MS};
pub use coordinator_agent_fsm::testing as agent;
pub use coordinator_queue::testing as queue;
pub use invariants::{check_action, check_invariants, InvariantChecker, Violation};
pub use ops::{op_capabilities, scheduler_op, scheduler_ops, SchedulerOp, OP_AGENTS};

//! The test kit of the queue (feature `testing`): proptest strategies, an
//! in-memory store and the reference model this crate checks itself against.
//!
//! - [`strategies`]: [`NewTask`](crate::NewTask)s, capability names, lanes, and
//!   sequences of [`QueueOp`]s.
//! - [`MemoryStore`]: applies [`Change`](crate::Change)s as a shell's database
//!   would (a [`Payload::Stored`](crate::Payload) keeps the text already
//!   stored) and restores a [`Queue`](crate::Queue) from what it holds, so a
//!   crash and restart can be tested without a database.
//! - [`QueueModel`]: the real queue, a store and a tiny reference model side by
//!   side; [`QueueModel::apply`] runs one [`QueueOp`] on all three and panics
//!   where they disagree (proptest turns the panic into a failing, shrunk case).
//!
//! The kit panics or returns errors with messages meant for a failing test; it
//! is not meant for production code.
//!
//! # Example: a property test of one's own
//!
//! Whatever tasks are submitted, a queue restored from the stored records
//! serves the same tasks in the same order:
//!
//! ```
//! use coordinator_queue::testing::{strategies, MemoryStore};
//! use coordinator_queue::{Queue, QueueConfig, TaskId};
//! use proptest::prelude::*;
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(64))]
//!     // In a test file, this function carries #[test].
//!     fn a_restored_queue_serves_in_the_same_order(
//!         tasks in strategies::new_tasks(1..20),
//!     ) {
//!         let now_ms = 1_700_000_000_000;
//!         let mut queue = Queue::new(QueueConfig::default());
//!         let mut store = MemoryStore::new();
//!         for task in tasks {
//!             queue.submit(now_ms, task)?;
//!         }
//!         store.persist(&mut queue)?;
//!         let restored = store.restore_queue(QueueConfig::default())?;
//!         let order = |q: &Queue| q.queued_in_order().map(|t| t.id().clone()).collect::<Vec<TaskId>>();
//!         prop_assert_eq!(order(&restored), order(&queue));
//!     }
//! }
//! # fn main() { a_restored_queue_serves_in_the_same_order(); }
//! ```

mod model;
mod store;
pub mod strategies;

pub use model::{QueueModel, QueueOp, MODEL_AGENTS};
pub use store::{MemoryStore, StoreError};

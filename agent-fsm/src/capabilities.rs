//! The capability set, shared with the queue.
//!
//! [`Capabilities`] is defined in `coordinator-queue` (a task's needed
//! capabilities are the same type) and re-exported here, so that agents and
//! tasks are matched with one type and one subset rule.

pub use coordinator_queue::Capabilities;

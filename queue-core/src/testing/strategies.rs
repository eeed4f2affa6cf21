//! proptest strategies for the queue's inputs: tasks as submitted,
//! capabilities, lanes, and operation sequences for [`QueueModel`](super::QueueModel).

use proptest::collection::vec;
use proptest::prelude::*;

use super::QueueOp;
use crate::{Capabilities, NewTask, Priority, TaskId};

/// The names [`capability_names`] draws from.
pub const CAPABILITY_NAMES: [&str; 4] = ["arm", "gpu", "linux", "x86"];

/// Any of the four lanes.
pub fn priority() -> impl Strategy<Value = Priority> {
    prop::sample::select(Priority::ALL.to_vec())
}

/// A set of needed (or offered) capabilities: up to three names of
/// [`CAPABILITY_NAMES`], sorted, without duplicates; often empty.
pub fn capability_names() -> impl Strategy<Value = Vec<String>> {
    prop::sample::subsequence(CAPABILITY_NAMES.to_vec(), 0..=3)
        .prop_map(|names| names.into_iter().map(str::to_owned).collect())
}

/// A [`Capabilities`] set of [`capability_names`]: what a task needs or an
/// agent offers.
pub fn capabilities() -> impl Strategy<Value = Capabilities> {
    capability_names().prop_map(Capabilities::new)
}

/// A valid submission with the given id: any lane, capabilities of
/// [`capability_names`], sometimes a `max_retries`, a description that is
/// sometimes longer than the default in-memory limit, and sometimes metadata.
/// No deadline (a deadline depends on the time of the submission; set one with
/// [`NewTask::with_complete_by`]).
pub fn new_task(id: impl Into<TaskId>) -> impl Strategy<Value = NewTask> {
    let id = id.into();
    (
        priority(),
        capability_names(),
        prop::option::of(0u32..5),
        0usize..400,
        any::<bool>(),
    )
        .prop_map(
            move |(priority, capabilities, max_retries, len, metadata)| {
                let mut task = NewTask::new(id.clone(), format!("work {}", "x".repeat(len)))
                    .with_priority(priority)
                    .with_capabilities(capabilities);
                task.max_retries = max_retries;
                if metadata {
                    task.metadata = format!(r#"{{"len":{len}}}"#);
                }
                task
            },
        )
}

/// Between `n.start` and `n.end - 1` submissions of [`new_task`] with the
/// distinct ids `t0`, `t1`, ...
pub fn new_tasks(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<NewTask>> {
    n.prop_flat_map(|n| {
        (0..n)
            .map(|i| new_task(format!("t{i}")))
            .collect::<Vec<_>>()
    })
}

/// One operation on a queue, as [`QueueModel::apply`](super::QueueModel::apply)
/// takes it: submissions, the moves of the three agents of
/// [`MODEL_AGENTS`](super::MODEL_AGENTS) (right and stale generations),
/// reclaims, cancels, retries, sweeps after a pause and restores; submissions
/// with a `run_at`, dependencies and idempotency keys, and time passing for
/// the scheduled ones.
pub fn queue_op() -> impl Strategy<Value = QueueOp> {
    let t = 0usize..12;
    let a = 0usize..super::MODEL_AGENTS.len();
    prop_oneof![
        4 => (
            (0u8..4, 0u8..3, 0u8..10, any::<bool>()),
            (0u8..6, vec(0usize..14, 0..3), prop::option::weighted(0.3, 0u8..4)),
        )
            .prop_map(|((priority, max_retries, deadline, long), (run_at, deps, key))| QueueOp::Submit {
                priority, max_retries, deadline, long,
                run_at, deps: if run_at % 2 == 0 { deps } else { Vec::new() }, key
            }),
        1 => (0u64..120).prop_map(|advance_ms| QueueOp::Tick { advance_ms }),
        3 => t.clone().prop_map(|task| QueueOp::CompleteByHolder { task }),
        3 => a.clone().prop_map(|agent| QueueOp::AssignNext { agent }),
        2 => (t.clone(), a.clone()).prop_map(|(task, agent)| QueueOp::Accept { task, agent }),
        1 => (t.clone(), a.clone()).prop_map(|(task, agent)| QueueOp::Progress { task, agent }),
        2 => (t.clone(), a.clone(), any::<bool>()).prop_map(|(task, agent, stale)| QueueOp::Complete { task, agent, stale }),
        2 => (t.clone(), a.clone(), any::<bool>()).prop_map(|(task, agent, stale)| QueueOp::Fail { task, agent, stale }),
        1 => (t.clone(), a.clone()).prop_map(|(task, agent)| QueueOp::Reject { task, agent }),
        2 => t.clone().prop_map(|task| QueueOp::Reclaim { task }),
        1 => t.clone().prop_map(|task| QueueOp::FailHolder { task }),
        1 => (t.clone(), a.clone()).prop_map(|(task, agent)| QueueOp::Recover { task, agent }),
        1 => (t.clone(), a.clone()).prop_map(|(task, agent)| QueueOp::Reattach { task, agent }),
        1 => t.clone().prop_map(|task| QueueOp::Cancel { task }),
        1 => t.prop_map(|task| QueueOp::RetryDeadLetter { task }),
        1 => (0u64..400).prop_map(|advance_ms| QueueOp::Sweep { advance_ms }),
        1 => Just(QueueOp::Restore),
    ]
}

/// Sequences of [`queue_op`] with a length in `len`.
pub fn queue_ops(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<QueueOp>> {
    vec(queue_op(), len)
}

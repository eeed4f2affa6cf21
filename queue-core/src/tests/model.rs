//! Model-based property test: random operation sequences against the reference
//! model of the test kit.

use std::collections::HashMap;

use proptest::prelude::*;

use crate::testing::{strategies, QueueModel};
use crate::TaskId;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
    ))]

    #[test]
    fn queue_matches_the_reference_model(ops in strategies::queue_ops(1..120)) {
        let mut model = QueueModel::new();
        let mut generations: HashMap<TaskId, u64> = HashMap::new();
        for op in &ops {
            model.apply(op);
            for task in model.store().records() {
                let last = generations.entry(task.id.clone()).or_insert(0);
                prop_assert!(task.generation >= *last, "generation of {} went down", task.id);
                *last = task.generation;
            }
        }
    }

    /// With a window of two scheduled tasks 120 ms ahead, the tasks left in
    /// storage behave as if they were in memory: same releases in the same
    /// order, same records, dependencies and cancels, across restores.
    #[test]
    fn windowed_queue_matches_the_reference_model(ops in strategies::queue_ops(1..120)) {
        let mut model = QueueModel::windowed();
        for op in &ops {
            model.apply(op);
        }
    }
}

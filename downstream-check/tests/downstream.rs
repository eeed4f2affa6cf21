//! The cores as a downstream project uses them: an embedded dispatcher on the
//! test kit's virtual clock, records through serde_json and back, and property
//! tests of one's own on the kit's strategies, model and invariant checker.

use std::collections::HashMap;

use coordinator_agent_fsm::testing::{agent_ops, AgentModel};
use coordinator_queue::testing::{strategies, MemoryStore, QueueModel};
use coordinator_queue::{Capabilities, Change, Completion, NewTask, Queue, Status, Task, TaskId};
use coordinator_scheduler::testing::{check_invariants, scheduler_ops, Driver};
use coordinator_scheduler::{Action, SchedulerConfig};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

/// Each record through JSON and back, as a store that keeps JSON would.
fn through_json<'a>(records: impl Iterator<Item = &'a Task>) -> Vec<Task> {
    records
        .map(|task| {
            let text = serde_json::to_string(task).expect("a record serializes");
            serde_json::from_str(&text).expect("a record deserializes")
        })
        .collect()
}

#[test]
fn an_embedded_dispatcher_completes_a_thousand_tasks_once_each() -> Result<(), TestCaseError> {
    let config = SchedulerConfig::default()
        .with_accept_timeout_ms(1_000)
        .with_identify_settle_ms(0);
    let mut driver = Driver::new(config, T0);
    for agent in 0..4 {
        driver.connect(format!("a{agent}"), Capabilities::new(["linux"]))?;
    }
    for i in 0..1_000 {
        let task = NewTask::new(format!("t{i}"), "build").with_capabilities(["linux"]);
        driver.call(|s, now| s.handle_submit(now, task))??;
    }
    let mut completions: HashMap<TaskId, usize> = HashMap::new();
    let mut n_reports = 0;
    while completions.len() < 1_000 {
        let assignments: Vec<_> = driver
            .take_actions()
            .into_iter()
            .filter_map(|action| match action {
                Action::Assign(a) => Some(a),
                _ => None,
            })
            .collect();
        prop_assert!(
            !assignments.is_empty(),
            "work stopped at {} completions",
            completions.len()
        );
        for a in assignments {
            n_reports += 1;
            if n_reports % 97 == 0 {
                // The agent's connection drops before it reports: the task is
                // reclaimed and the late report of the old generation refused.
                driver.disconnect(a.agent_id.as_str())?;
                driver.connect(a.agent_id.clone(), Capabilities::new(["linux"]))?;
                driver.advance(100)?;
                let late = driver.call(|s, now| {
                    s.handle_complete(
                        now,
                        &a.agent_id,
                        &a.task_id,
                        a.generation,
                        Completion::default(),
                    )
                })?;
                prop_assert!(late.is_err() || driver.scheduler().queue().get(&a.task_id).is_none());
                continue;
            }
            driver.advance(5)?;
            driver.call(|s, now| s.handle_accepted(now, &a.agent_id, &a.task_id))??;
            driver.advance(20)?;
            driver.call(|s, now| {
                s.handle_complete(
                    now,
                    &a.agent_id,
                    &a.task_id,
                    a.generation,
                    Completion::default(),
                )
            })??;
        }
        for change in driver.take_persisted() {
            if let Change::Finalized(task) = change {
                prop_assert_eq!(task.status(), Status::Completed);
                *completions.entry(task.id().clone()).or_default() += 1;
            }
        }
    }
    prop_assert!(completions.values().all(|n| *n == 1));
    prop_assert!(driver.scheduler().queue().is_empty());
    prop_assert_eq!(driver.store().len(), 1_000);
    Ok(())
}

#[test]
fn changes_round_trip_through_json() {
    let mut queue = Queue::new(Default::default());
    let mut store = MemoryStore::new();
    queue
        .submit(
            T0,
            NewTask::new("t1", "work").with_capabilities(["gpu", "arm", "gpu"]),
        )
        .expect("a valid task");
    for change in store.persist(&mut queue).expect("stored") {
        let text = serde_json::to_string(&change).expect("a change serializes");
        let back: Change = serde_json::from_str(&text).expect("a change deserializes");
        assert_eq!(back, change);
    }
    let task = store.get(&TaskId::from("t1")).expect("stored");
    assert_eq!(task.needed_capabilities().names(), ["arm", "gpu"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    /// The queue keeps agreeing with the kit's reference model, and a queue
    /// restored from the records after a JSON round trip serves the same
    /// tasks in the same order.
    #[test]
    fn a_queue_restored_from_json_records_is_the_same(ops in strategies::queue_ops(1..80)) {
        let mut model = QueueModel::new();
        for op in &ops {
            model.apply(op);
        }
        let records = through_json(model.store().records());
        let restored = Queue::restore(QueueModel::config(), records)?;
        let order = |q: &Queue| q.queued_in_order().map(|t| t.id().clone()).collect::<Vec<_>>();
        prop_assert_eq!(order(&restored), order(model.queue()));
        prop_assert_eq!(restored.len(), model.queue().len());
    }

    /// Whatever happens to a coordinator, a scheduler rebuilt from its records
    /// after a JSON round trip keeps the invariants, and the kit's driver
    /// restarted from them reaches a state with no deadline left.
    #[test]
    fn a_scheduler_restored_from_json_records_keeps_its_invariants(ops in scheduler_ops(1..60, true)) {
        let mut driver = Driver::new(SchedulerConfig::default(), T0);
        for op in &ops {
            driver.apply(op)?;
        }
        let records = through_json(driver.store().records());
        let restored = coordinator_scheduler::Scheduler::restore(
            SchedulerConfig::default(), driver.now_ms(), records)?;
        check_invariants(&restored)?;
        driver.restart()?;
        driver.run_until_idle(10_000)?;
    }

    /// Submissions of the kit's strategy are always accepted by a fresh queue.
    #[test]
    fn generated_submissions_are_valid(tasks in strategies::new_tasks(1..30)) {
        let mut queue = Queue::new(Default::default());
        for task in tasks {
            queue.submit(T0, task)?;
        }
    }

    /// An agent's life follows the table of legal moves.
    #[test]
    fn an_agent_follows_the_legal_moves(ops in agent_ops(1..50)) {
        let mut model = AgentModel::new(T0);
        for op in &ops {
            model.apply(op)?;
        }
    }
}

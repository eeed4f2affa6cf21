//! A small use of the queue on its own: lanes, a fenced-off stale report, a
//! failure that is retried, a task that runs out of retries into the dead
//! letter and is retried from there, and a restart from the persisted records.
//!
//! Run with `cargo run -p coordinator-queue --example queue_basics`.

use std::collections::HashMap;

use coordinator_queue::{
    AgentId, Change, Completion, FailOutcome, NewTask, Priority, Queue, QueueConfig, Status, Task,
    TaskError, TaskId,
};

/// Writes the queue's changes as a database would: the newest record per task.
fn persist(queue: &mut Queue, store: &mut HashMap<String, Task>) {
    for change in queue.drain_changes() {
        let kind = match &change {
            Change::Updated(_) => "updated",
            Change::Touched(_) => "touched",
            Change::Finalized(_) => "finalized",
        };
        let task = change.into_task();
        println!("  persist {kind:9} {} -> {}", task.id(), task.status());
        store.insert(task.id().to_string(), task);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = QueueConfig::default().with_default_max_retries(1);
    let mut queue = Queue::new(config.clone());
    let mut store = HashMap::new();
    let mut now_ms = 1_700_000_000_000;
    let worker = AgentId::from("worker");
    let (hotfix, report) = (TaskId::from("hotfix"), TaskId::from("report"));

    println!("submit: a normal task, then an urgent one");
    queue.submit(now_ms, NewTask::new("report", "write the weekly report"))?;
    queue.submit(
        now_ms,
        NewTask::new("hotfix", "patch prod").with_priority(Priority::Urgent),
    )?;
    persist(&mut queue, &mut store);
    let head = queue.next_queued().map(|t| t.id().to_string());
    assert_eq!(
        head.as_deref(),
        Some("hotfix"),
        "the urgent lane goes first"
    );

    println!("assign the hotfix twice over: the first run's report is fenced off");
    now_ms += 10;
    let first = queue.assign(now_ms, &hotfix, &worker)?;
    queue.reject(now_ms, &hotfix, &worker, "busy")?; // back to the queue
    let second = queue.assign(now_ms, &hotfix, &worker)?;
    let stale = queue.complete(now_ms, &hotfix, &worker, first, Completion::default());
    assert!(matches!(stale, Err(TaskError::StaleGeneration { .. })));
    println!("  generation {first} refused: {}", stale.unwrap_err());
    queue.accept(now_ms, &hotfix, &worker)?;
    queue.complete(now_ms, &hotfix, &worker, second, Completion::default())?;
    persist(&mut queue, &mut store);

    println!("the report fails twice: retried once, then the dead letter");
    for expected in [FailOutcome::Retried, FailOutcome::DeadLettered] {
        now_ms += 10;
        let generation = queue.assign(now_ms, &report, &worker)?;
        let outcome = queue.fail(now_ms, &report, &worker, generation, "printer on fire")?;
        assert_eq!(outcome, expected);
    }
    persist(&mut queue, &mut store);
    assert_eq!(store["report"].status(), Status::DeadLetter);

    println!("an operator retries it from the dead letter (from its stored record)");
    now_ms += 10;
    queue.retry_dead_letter(now_ms, store["report"].clone())?;
    persist(&mut queue, &mut store);

    println!("restart: the queue is rebuilt from the stored records");
    let restored = Queue::restore(config, store.values().cloned())?;
    let queued: Vec<&str> = restored
        .queued_in_order()
        .map(|t| t.id().as_str())
        .collect();
    assert_eq!(queued, ["report"]);
    println!("  queued after the restart: {queued:?}");
    Ok(())
}

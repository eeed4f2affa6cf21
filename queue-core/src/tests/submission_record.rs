//! Which records are taken for a submission's: only the one `Queue::submit`
//! makes (the stores insert a row for it without looking for one first).

use super::*;

/// Whether each change `queue` emitted since the last call is a submission.
fn submissions(queue: &mut Queue) -> Vec<bool> {
    queue
        .drain_changes()
        .iter()
        .map(|change| change.task().is_submission_record())
        .collect()
}

#[test]
fn only_the_record_of_a_submission_is_taken_for_one() {
    let mut queue = Queue::new(QueueConfig::default().with_default_max_retries(0));
    let (t1, agent) = (TaskId::from("t1"), AgentId::from("a1"));
    let mut now_ms = 1_700_000_000_000;
    queue
        .submit(now_ms, NewTask::new(t1.clone(), "work"))
        .unwrap();
    assert_eq!(submissions(&mut queue), [true]);
    // Assigned, accepted, a progress report (no history entry), failed into
    // the dead letter, requeued from there, then many more rounds until the
    // history is full and drops its oldest entries.
    let generation = queue.assign(now_ms + 1, &t1, &agent).unwrap();
    queue.accept(now_ms + 2, &t1, &agent).unwrap();
    queue.progress(now_ms + 3, &t1, &agent).unwrap();
    let outcome = queue
        .fail(now_ms + 4, &t1, &agent, generation, "broken")
        .unwrap();
    assert_eq!(outcome, FailOutcome::DeadLettered);
    let changes = queue.drain_changes();
    assert!(matches!(changes.last(), Some(Change::Finalized(_))));
    assert!(changes.iter().all(|c| !c.task().is_submission_record()));
    let dead = changes.last().map(Change::task).cloned().unwrap();
    queue.retry_dead_letter(now_ms + 5, dead).unwrap();
    assert_eq!(submissions(&mut queue), [false]);
    for _ in 0..HISTORY_CAP {
        now_ms += 10;
        queue.assign(now_ms, &t1, &agent).unwrap();
        queue.accept(now_ms + 1, &t1, &agent).unwrap();
        queue.progress(now_ms + 2, &t1, &agent).unwrap();
        // Put back without a counted failure: rejected by the holder.
        queue.reject(now_ms + 3, &t1, &agent, "busy").unwrap();
        assert!(submissions(&mut queue).iter().all(|s| !s));
    }
    let generation = queue.assign(now_ms + 20, &t1, &agent).unwrap();
    queue
        .complete(
            now_ms + 21,
            &t1,
            &agent,
            generation,
            Completion {
                result: "{}".into(),
                tokens_used: None,
            },
        )
        .unwrap();
    assert!(submissions(&mut queue).iter().all(|s| !s));
}

//! Unit tests of the submit options: run later, run after, submit once.

use super::*;

fn records(q: &mut Queue) -> Vec<Task> {
    q.drain_changes()
        .into_iter()
        .map(Change::into_task)
        .collect()
}

fn complete(q: &mut Queue, id: &str, now_ms: u64, result: &str) {
    let a = agent("a1");
    let id = TaskId::from(id);
    let g = q.assign(now_ms, &id, &a).unwrap();
    q.complete(now_ms, &id, &a, g, done(result)).unwrap();
}

#[test]
fn a_task_with_a_future_run_at_is_scheduled_until_then() {
    let mut q = queue();
    let task = q
        .submit(T0, NewTask::new("later", "x").with_run_at(T0 + 2_000))
        .unwrap();
    assert_eq!(task.status(), Status::Scheduled);
    assert_eq!(task.run_at_ms(), Some(T0 + 2_000));
    assert_eq!(q.queued_len(), 0);
    assert_eq!(q.poll_timeout(), Some(T0 + 2_000));
    // Not before its time.
    q.handle_timeout(T0 + 1_999);
    assert_eq!(
        q.get(&TaskId::from("later")).unwrap().status(),
        Status::Scheduled
    );
    assert_eq!(q.poll_released(), None);
    let _ = q.drain_changes();
    q.handle_timeout(T0 + 2_000);
    assert_eq!(
        q.get(&TaskId::from("later")).unwrap().status(),
        Status::Queued
    );
    assert_eq!(q.poll_released(), Some(TaskId::from("later")));
    assert_eq!(q.poll_timeout(), None);
    let changes = q.drain_changes();
    assert_eq!(statuses(&changes), vec![("later".into(), Status::Queued)]);
    assert_eq!(
        changes[0]
            .recorded_event()
            .map(|e| (e.event, e.timestamp_ms)),
        Some((HistoryEvent::Released, T0 + 2_000))
    );
}

#[test]
fn a_run_at_not_in_the_future_queues_at_once() {
    let mut q = queue();
    let task = q
        .submit(T0, NewTask::new("now", "x").with_run_at(T0))
        .unwrap();
    assert_eq!(task.status(), Status::Queued);
    assert_eq!(q.poll_timeout(), None);
}

#[test]
fn a_released_task_takes_its_place_behind_the_tasks_queued_before_its_time() {
    let mut q = queue();
    q.submit(T0, NewTask::new("b-later", "x").with_run_at(T0 + 20))
        .unwrap();
    q.submit(T0, NewTask::new("a-later", "x").with_run_at(T0 + 10))
        .unwrap();
    q.submit(T0 + 5, NewTask::new("early", "x")).unwrap();
    q.handle_timeout(T0 + 30);
    q.submit(T0 + 31, NewTask::new("after", "x")).unwrap();
    let order: Vec<&str> = q.queued_in_order().map(|t| t.id().as_str()).collect();
    // By the time each entered the lane: run_at for the scheduled ones.
    assert_eq!(order, vec!["early", "a-later", "b-later", "after"]);
}

#[test]
fn scheduled_and_waiting_tasks_can_be_cancelled() {
    let mut q = queue();
    q.submit(T0, NewTask::new("later", "x").with_run_at(T0 + 10))
        .unwrap();
    q.submit(T0, NewTask::new("dep", "x")).unwrap();
    q.submit(T0, NewTask::new("after", "x").with_depends_on(["dep"]))
        .unwrap();
    assert_eq!(
        q.get(&TaskId::from("after")).unwrap().status(),
        Status::Waiting
    );
    assert_eq!(q.cancel(T0 + 1, &TaskId::from("later")), Ok(None));
    assert_eq!(q.cancel(T0 + 1, &TaskId::from("after")), Ok(None));
    assert_eq!(q.poll_timeout(), None);
    // The dependency completes later: nothing is released.
    complete(&mut q, "dep", T0 + 2, "{}");
    assert_eq!(q.poll_released(), None);
    assert!(q.is_empty());
}

#[test]
fn dependencies_are_checked_at_submit_and_a_refusal_changes_nothing() {
    let mut q = queue();
    let unknown = NewTask::new("t", "x").with_depends_on(["nope"]);
    assert_eq!(
        q.submit(T0, unknown).unwrap_err(),
        SubmitError::UnknownDependency("nope".into())
    );
    // A task cannot name itself: it does not exist yet, so no cycle can form.
    let itself = NewTask::new("t", "x").with_depends_on(["t"]);
    assert_eq!(
        q.submit(T0, itself).unwrap_err(),
        SubmitError::UnknownDependency("t".into())
    );
    let many: Vec<String> = (0..=MAX_DEPENDENCIES).map(|i| format!("d{i}")).collect();
    assert_eq!(
        q.submit(T0, NewTask::new("t", "x").with_depends_on(many))
            .unwrap_err(),
        SubmitError::TooManyDependencies(MAX_DEPENDENCIES + 1)
    );
    let mut failed = NewTask::new("t", "x").with_depends_on(["gone"]);
    failed.settled_dependencies = vec![("gone".into(), Status::DeadLetter)];
    assert_eq!(
        q.submit(T0, failed).unwrap_err(),
        SubmitError::DependencyFailed {
            id: "gone".into(),
            status: Status::DeadLetter
        }
    );
    assert!(q.is_empty());
    assert!(q.drain_changes().is_empty());
    // A dependency storage says is completed counts as done.
    let mut settled = NewTask::new("t", "x").with_depends_on(["done"]);
    settled.settled_dependencies = vec![("done".into(), Status::Completed)];
    assert_eq!(q.submit(T0, settled).unwrap().status(), Status::Queued);
}

#[test]
fn a_waiting_task_is_queued_when_its_last_dependency_completes() {
    let mut q = queue();
    q.submit(T0, NewTask::new("d1", "x")).unwrap();
    q.submit(T0, NewTask::new("d2", "x")).unwrap();
    let t = q
        .submit(
            T0,
            NewTask::new("t", "x").with_depends_on(["d1", "d2", "d1"]),
        )
        .unwrap();
    assert_eq!(t.status(), Status::Waiting);
    assert_eq!(t.depends_on(), &[TaskId::from("d1"), TaskId::from("d2")]);
    complete(&mut q, "d1", T0 + 1, "1");
    assert_eq!(q.get(&TaskId::from("t")).unwrap().status(), Status::Waiting);
    let _ = q.drain_changes();
    complete(&mut q, "d2", T0 + 2, "2");
    assert_eq!(q.get(&TaskId::from("t")).unwrap().status(), Status::Queued);
    assert_eq!(q.poll_released(), Some(TaskId::from("t")));
    // The completion is persisted before the release it causes.
    assert_eq!(
        statuses(&q.drain_changes()),
        vec![
            ("d2".into(), Status::Assigned),
            ("d2".into(), Status::Completed),
            ("t".into(), Status::Queued),
        ]
    );
}

#[test]
fn a_waiting_task_with_a_future_run_at_is_scheduled_when_its_dependencies_complete() {
    let mut q = queue();
    q.submit(T0, NewTask::new("d", "x")).unwrap();
    q.submit(
        T0,
        NewTask::new("t", "x")
            .with_depends_on(["d"])
            .with_run_at(T0 + 100),
    )
    .unwrap();
    complete(&mut q, "d", T0 + 1, "{}");
    assert_eq!(
        q.get(&TaskId::from("t")).unwrap().status(),
        Status::Scheduled
    );
    assert_eq!(q.poll_timeout(), Some(T0 + 100));
    q.handle_timeout(T0 + 100);
    assert_eq!(q.get(&TaskId::from("t")).unwrap().status(), Status::Queued);
}

#[test]
fn a_failed_dependency_cancels_its_dependents_transitively() {
    let mut q = queue();
    q.submit(T0, NewTask::new("a", "x").with_max_retries(0))
        .unwrap();
    q.submit(T0, NewTask::new("b", "x").with_depends_on(["a"]))
        .unwrap();
    q.submit(T0, NewTask::new("c", "x").with_depends_on(["b"]))
        .unwrap();
    q.submit(T0, NewTask::new("other", "x")).unwrap();
    let _ = q.drain_changes();
    let a1 = agent("a1");
    let g = q.assign(T0 + 1, &TaskId::from("a"), &a1).unwrap();
    assert_eq!(
        q.fail(T0 + 2, &TaskId::from("a"), &a1, g, "boom"),
        Ok(FailOutcome::DeadLettered)
    );
    let changes = q.drain_changes();
    assert_eq!(
        statuses(&changes),
        vec![
            ("a".into(), Status::Assigned),
            ("a".into(), Status::DeadLetter),
            ("b".into(), Status::Cancelled),
            ("c".into(), Status::Cancelled),
        ]
    );
    assert_eq!(changes[2].task().last_error(), Some("dependency_failed:a"));
    assert_eq!(changes[3].task().last_error(), Some("dependency_failed:b"));
    assert!(changes[2..]
        .iter()
        .all(|c| matches!(c, Change::Finalized(_))));
    assert_eq!(q.len(), 1);
}

#[test]
fn a_cancelled_dependency_cancels_its_dependents() {
    let mut q = queue();
    q.submit(T0, NewTask::new("a", "x").with_run_at(T0 + 50))
        .unwrap();
    q.submit(T0, NewTask::new("b", "x").with_depends_on(["a"]))
        .unwrap();
    q.cancel(T0 + 1, &TaskId::from("a")).unwrap();
    let changes = q.drain_changes();
    assert_eq!(
        changes
            .last()
            .map(|c| (c.task().id().as_str(), c.task().last_error())),
        Some(("b", Some("dependency_failed:a")))
    );
    assert!(q.is_empty());
}

#[test]
fn an_idempotency_key_names_the_first_live_task_of_its_submitter() {
    let mut q = queue();
    let first = NewTask::new("t1", "x")
        .with_submitted_by("alice")
        .with_idempotency_key("k");
    q.submit(T0, first).unwrap();
    let again = NewTask::new("t2", "other body")
        .with_submitted_by("alice")
        .with_idempotency_key("k");
    assert_eq!(
        q.check_submission(T0, &again),
        Err(SubmitError::DuplicateKey("t1".into()))
    );
    assert_eq!(q.find_by_key(Some("alice"), "k"), Some(&TaskId::from("t1")));
    // Another submitter has keys of its own.
    let bob = NewTask::new("t3", "x")
        .with_submitted_by("bob")
        .with_idempotency_key("k");
    assert!(q.submit(T0, bob).is_ok());
    let too_long = NewTask::new("t4", "x").with_idempotency_key("k".repeat(257));
    assert_eq!(
        q.check_submission(T0, &too_long),
        Err(SubmitError::BadIdempotencyKey(257))
    );
    // Once final, the task is out of the core: storage answers for its key.
    complete(&mut q, "t1", T0 + 1, "{}");
    assert_eq!(q.find_by_key(Some("alice"), "k"), None);
}

#[test]
fn restore_brings_back_scheduled_and_waiting_tasks_and_their_edges() {
    let mut q = queue();
    q.submit(T0, NewTask::new("d", "x")).unwrap();
    q.submit(T0, NewTask::new("w", "x").with_depends_on(["d"]))
        .unwrap();
    q.submit(
        T0,
        NewTask::new("s", "x")
            .with_run_at(T0 + 10)
            .with_submitted_by("alice")
            .with_idempotency_key("k"),
    )
    .unwrap();
    let stored = records(&mut q);
    let mut r = Queue::restore(QueueConfig::default(), stored).unwrap();
    assert_eq!(r.get(&TaskId::from("w")), q.get(&TaskId::from("w")));
    assert_eq!(r.get(&TaskId::from("s")), q.get(&TaskId::from("s")));
    assert_eq!(r.poll_timeout(), Some(T0 + 10));
    assert_eq!(r.find_by_key(Some("alice"), "k"), Some(&TaskId::from("s")));
    complete(&mut r, "d", T0 + 1, "{}");
    assert_eq!(r.get(&TaskId::from("w")).unwrap().status(), Status::Queued);
    r.handle_timeout(T0 + 10);
    assert_eq!(r.get(&TaskId::from("s")).unwrap().status(), Status::Queued);
}

#[test]
fn a_restored_waiting_task_whose_dependencies_are_gone_is_released_at_once() {
    let mut q = queue();
    q.submit(T0, NewTask::new("d", "x")).unwrap();
    q.submit(T0, NewTask::new("w", "x").with_depends_on(["d"]))
        .unwrap();
    // Storage lost the dependency's live record: the dependent does not wait forever.
    let stored: Vec<Task> = records(&mut q)
        .into_iter()
        .filter(|t| t.id().as_str() == "w")
        .collect();
    let mut r = Queue::restore(QueueConfig::default(), stored).unwrap();
    assert_eq!(r.poll_timeout(), Some(0));
    r.handle_timeout(T0);
    assert_eq!(r.get(&TaskId::from("w")).unwrap().status(), Status::Queued);
    assert_eq!(r.poll_released(), Some(TaskId::from("w")));
}

#[test]
fn from_parts_refuses_pending_records_that_cannot_be() {
    let mut parts = working_parts();
    parts.holder = None;
    parts.generation = 0;
    parts.status = Status::Scheduled;
    assert!(matches!(
        Task::from_parts(parts.clone()),
        Err(InvalidTask::ScheduledWithoutRunAt(_))
    ));
    parts.status = Status::Waiting;
    assert!(matches!(
        Task::from_parts(parts.clone()),
        Err(InvalidTask::WaitingWithoutDependencies(_))
    ));
    parts.depends_on = vec!["d".into()];
    assert!(Task::from_parts(parts).is_ok());
}

#[test]
fn a_delay_counts_from_the_submission() {
    let mut q = queue();
    let mut new = NewTask::new("t", "x");
    new.delay_ms = Some(2_000);
    let task = q.submit(T0, new.clone()).unwrap();
    assert_eq!(
        (task.status(), task.run_at_ms()),
        (Status::Scheduled, Some(T0 + 2_000))
    );
    new.id = "u".into();
    new.run_at_ms = Some(T0 + 5);
    assert_eq!(q.submit(T0, new).unwrap_err(), SubmitError::RunAtAndDelay);
}

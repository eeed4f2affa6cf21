//! Unit tests of every queue rule, and a model-based property test.

use super::*;
use crate::queue::QueueKey;

const T0: u64 = 1_000_000;

fn agent(name: &str) -> AgentId {
    AgentId::from(name)
}

fn queue() -> Queue {
    Queue::new(QueueConfig::default())
}

fn done(result: &str) -> Completion {
    Completion {
        result: result.to_owned(),
        tokens_used: None,
    }
}

fn statuses(changes: &[Change]) -> Vec<(String, Status)> {
    changes
        .iter()
        .map(|c| (c.task().id.to_string(), c.task().status))
        .collect()
}

#[test]
fn submit_emits_a_queued_record_with_defaults() {
    let mut q = queue();
    let task = q.submit(T0, NewTask::new("t1", "do it")).unwrap().clone();
    assert_eq!(task.status, Status::Queued);
    assert_eq!(task.generation, 0);
    assert_eq!(task.max_retries, 3);
    assert_eq!(task.created_at_ms, T0);
    assert_eq!(task.metadata.as_inline(), Some("{}"));
    assert_eq!(task.history.len(), 1);
    assert_eq!(task.history[0].event, HistoryEvent::Submitted);
    assert_eq!(q.drain_changes(), vec![Change::Updated(task)]);
}

#[test]
fn submit_refuses_bad_input_and_changes_nothing() {
    let mut q = queue();
    assert_eq!(
        q.submit(T0, NewTask::new("t1", "  ")).unwrap_err(),
        SubmitError::EmptyDescription
    );
    assert_eq!(
        q.submit(T0, NewTask::new("", "x")).unwrap_err(),
        SubmitError::EmptyId
    );
    assert_eq!(
        q.submit(T0, NewTask::new("t1", "x").with_capabilities([""]))
            .unwrap_err(),
        SubmitError::EmptyCapability
    );
    assert!(q.is_empty());
    assert!(q.drain_changes().is_empty());
    q.submit(T0, NewTask::new("t1", "x")).unwrap();
    let _ = q.drain_changes();
    assert_eq!(
        q.submit(T0, NewTask::new("t1", "y")).unwrap_err(),
        SubmitError::DuplicateId(TaskId::from("t1"))
    );
    assert!(q.drain_changes().is_empty());
    assert_eq!(
        q.get(&TaskId::from("t1")).unwrap().description.as_inline(),
        Some("x")
    );
}

#[test]
fn capabilities_are_sorted_and_deduplicated() {
    let mut q = queue();
    let t = q
        .submit(
            T0,
            NewTask::new("t", "x").with_capabilities(["gpu", "arm", "gpu"]),
        )
        .unwrap();
    assert_eq!(
        t.needed_capabilities().names(),
        &["arm".to_owned(), "gpu".to_owned()]
    );
}

#[test]
fn lanes_are_served_highest_first_and_fifo_inside() {
    let mut q = queue();
    let order = [
        ("l1", Priority::Low),
        ("n1", Priority::Normal),
        ("u1", Priority::Urgent),
        ("h1", Priority::High),
        ("n2", Priority::Normal),
        ("u2", Priority::Urgent),
    ];
    for (id, p) in order {
        q.submit(T0, NewTask::new(id, "x").with_priority(p))
            .unwrap();
    }
    let ids: Vec<&str> = q.queued_in_order().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["u1", "u2", "h1", "n1", "n2", "l1"]);
    assert_eq!(q.next_queued().unwrap().id.as_str(), "u1");
}

#[test]
fn requeued_task_keeps_its_original_place() {
    let mut q = queue();
    for id in ["a", "b", "c"] {
        q.submit(T0, NewTask::new(id, "x")).unwrap();
    }
    let a1 = agent("a1");
    q.assign(T0, &TaskId::from("a"), &a1).unwrap();
    let _ = q
        .reclaim(T0 + 1, &TaskId::from("a"), ReclaimReason::Disconnected)
        .unwrap();
    let ids: Vec<&str> = q.queued_in_order().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

#[test]
fn assignment_and_reclaim_bump_the_generation() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    assert_eq!(q.assign(T0 + 1, &TaskId::from("t"), &a1).unwrap(), 1);
    let t = q.get(&TaskId::from("t")).unwrap();
    assert_eq!(t.status, Status::Assigned);
    assert_eq!(t.assigned_to(), Some(&a1));
    assert_eq!(t.assigned_at_ms(), Some(T0 + 1));
    assert_eq!(
        q.reclaim(T0 + 2, &TaskId::from("t"), ReclaimReason::AcceptTimeout)
            .unwrap(),
        Reclaimed {
            agent_id: a1.clone(),
            outcome: ReclaimOutcome::Requeued
        }
    );
    let t = q.get(&TaskId::from("t")).unwrap();
    assert_eq!(
        (t.status, t.generation, t.retry_count, t.reclaim_count),
        (Status::Queued, 2, 0, 1)
    );
    assert_eq!(t.assigned_to(), None);
    assert_eq!(q.assign(T0 + 3, &TaskId::from("t"), &a1).unwrap(), 3);
}

#[test]
fn assign_of_a_task_that_is_not_queued_is_refused() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    q.assign(T0, &TaskId::from("t"), &agent("a1")).unwrap();
    let _ = q.drain_changes();
    assert_eq!(
        q.assign(T0, &TaskId::from("t"), &agent("a2")).unwrap_err(),
        TaskError::WrongStatus {
            task_id: "t".into(),
            status: Status::Assigned
        }
    );
    assert_eq!(
        q.assign(T0, &TaskId::from("nope"), &agent("a2"))
            .unwrap_err(),
        TaskError::NotFound("nope".into())
    );
    assert!(q.drain_changes().is_empty());
}

#[test]
fn full_lifecycle_finalizes_and_leaves_the_core() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    let g = q.assign(T0 + 1, &TaskId::from("t"), &a1).unwrap();
    q.accept(T0 + 2, &TaskId::from("t"), &a1).unwrap();
    q.progress(T0 + 3, &TaskId::from("t"), &a1).unwrap();
    q.complete(
        T0 + 4,
        &TaskId::from("t"),
        &a1,
        g,
        Completion {
            result: "{\"x\":1}".into(),
            tokens_used: Some(7),
        },
    )
    .unwrap();
    let changes = q.drain_changes();
    assert_eq!(
        statuses(&changes),
        [
            ("t".into(), Status::Queued),
            ("t".into(), Status::Assigned),
            ("t".into(), Status::Working),
            ("t".into(), Status::Working),
            ("t".into(), Status::Completed),
        ]
    );
    let Some(Change::Finalized(last)) = changes.last() else {
        panic!("the last change must be final");
    };
    assert_eq!(last.result(), Some("{\"x\":1}"));
    assert_eq!(last.tokens_used(), Some(7));
    assert_eq!(last.last_alive_at_ms(), Some(T0 + 3));
    let events: Vec<HistoryEvent> = last.history.iter().map(|h| h.event).collect();
    assert_eq!(
        events,
        [
            HistoryEvent::Submitted,
            HistoryEvent::Assigned,
            HistoryEvent::Accepted,
            HistoryEvent::Completed
        ]
    );
    assert!(q.is_empty());
    assert!(q.get(&TaskId::from("t")).is_none());
}

#[test]
fn stale_generation_changes_nothing() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let (a1, a2) = (agent("a1"), agent("a2"));
    let old = q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    let _ = q
        .reclaim(T0 + 1, &TaskId::from("t"), ReclaimReason::Disconnected)
        .unwrap();
    let new = q.assign(T0 + 2, &TaskId::from("t"), &a2).unwrap();
    let _ = q.drain_changes();
    let before = q.get(&TaskId::from("t")).unwrap().clone();
    let stale = TaskError::StaleGeneration {
        task_id: "t".into(),
        given: old,
        current: new,
    };
    assert_eq!(
        q.complete(T0 + 3, &TaskId::from("t"), &a1, old, done("{}"))
            .unwrap_err(),
        stale
    );
    assert_eq!(
        q.fail(T0 + 3, &TaskId::from("t"), &a1, old, "boom")
            .unwrap_err(),
        stale
    );
    assert_eq!(q.get(&TaskId::from("t")).unwrap(), &before);
    assert!(q.drain_changes().is_empty());
    q.complete(
        T0 + 4,
        &TaskId::from("t"),
        &a2,
        new,
        done("{\"by\":\"a2\"}"),
    )
    .unwrap();
}

#[test]
fn right_generation_from_the_wrong_agent_is_not_assigned() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let g = q.assign(T0, &TaskId::from("t"), &agent("a1")).unwrap();
    assert_eq!(
        q.complete(T0, &TaskId::from("t"), &agent("a2"), g, done("{}"))
            .unwrap_err(),
        TaskError::NotAssigned("t".into())
    );
    assert_eq!(
        q.accept(T0, &TaskId::from("t"), &agent("a2")).unwrap_err(),
        TaskError::NotAssigned("t".into())
    );
    assert_eq!(
        q.progress(T0, &TaskId::from("t"), &agent("a2"))
            .unwrap_err(),
        TaskError::NotAssigned("t".into())
    );
}

#[test]
fn accept_twice_is_an_error() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    q.accept(T0, &TaskId::from("t"), &a1).unwrap();
    assert_eq!(
        q.accept(T0, &TaskId::from("t"), &a1).unwrap_err(),
        TaskError::WrongStatus {
            task_id: "t".into(),
            status: Status::Working
        }
    );
}

#[test]
fn failures_retry_then_dead_letter_exactly_as_max_retries_says() {
    for max_retries in [0u32, 1, 3] {
        let mut q = queue();
        q.submit(T0, NewTask::new("t", "x").with_max_retries(max_retries))
            .unwrap();
        let a1 = agent("a1");
        let mut attempts = 0;
        loop {
            let g = q.assign(T0, &TaskId::from("t"), &a1).unwrap();
            attempts += 1;
            match q
                .fail(T0, &TaskId::from("t"), &a1, g, &format!("err{attempts}"))
                .unwrap()
            {
                FailOutcome::Retried => {
                    let t = q.get(&TaskId::from("t")).unwrap();
                    assert_eq!(t.status, Status::Queued);
                    assert_eq!(t.retry_count, attempts);
                }
                FailOutcome::DeadLettered => break,
            }
        }
        assert_eq!(attempts, max_retries + 1, "max_retries={max_retries}");
        let last = q.drain_changes().pop().unwrap();
        let Change::Finalized(dead) = last else {
            panic!("dead letter must be final")
        };
        assert_eq!(dead.status, Status::DeadLetter);
        assert_eq!(dead.retry_count, max_retries + 1);
        assert_eq!(dead.last_error.as_deref(), Some(&*format!("err{attempts}")));
        assert!(q.is_empty());
    }
}

#[test]
fn reject_requeues_without_counting_a_retry() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    q.reject(T0 + 1, &TaskId::from("t"), &a1, "busy").unwrap();
    let t = q.get(&TaskId::from("t")).unwrap();
    assert_eq!(
        (t.status, t.retry_count, t.generation),
        (Status::Queued, 0, 2)
    );
    assert_eq!(t.history.last().unwrap().event, HistoryEvent::Rejected);
    assert!(t.history.last().unwrap().details.contains("busy"));
}

#[test]
fn retry_from_the_dead_letter_requeues_with_history() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x").with_max_retries(0))
        .unwrap();
    let a1 = agent("a1");
    let g = q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    assert_eq!(
        q.fail(T0, &TaskId::from("t"), &a1, g, "boom").unwrap(),
        FailOutcome::DeadLettered
    );
    let dead = q.drain_changes().pop().unwrap().into_task();
    q.retry_dead_letter(T0 + 5, dead.clone()).unwrap();
    let t = q.get(&TaskId::from("t")).unwrap();
    assert_eq!((t.status, t.retry_count), (Status::Queued, 0));
    assert_eq!(t.last_error.as_deref(), Some("boom"));
    assert_eq!(t.history.last().unwrap().event, HistoryEvent::Requeued);
    assert!(matches!(
        q.retry_dead_letter(T0 + 6, dead).unwrap_err(),
        TaskError::WrongStatus { .. }
    ));
}

#[test]
fn retry_of_a_record_that_is_not_dead_letter_is_refused() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    let g = q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    q.complete(T0, &TaskId::from("t"), &a1, g, done("{}"))
        .unwrap();
    let completed = q.drain_changes().pop().unwrap().into_task();
    assert_eq!(
        q.retry_dead_letter(T0, completed).unwrap_err(),
        TaskError::WrongStatus {
            task_id: "t".into(),
            status: Status::Completed
        }
    );
    assert!(q.is_empty());
}

#[test]
fn cancel_reports_the_holder_and_removes_the_task() {
    let mut q = queue();
    q.submit(T0, NewTask::new("q", "x")).unwrap();
    q.submit(T0, NewTask::new("h", "x")).unwrap();
    let a1 = agent("a1");
    q.assign(T0, &TaskId::from("h"), &a1).unwrap();
    assert_eq!(q.cancel(T0, &TaskId::from("q")).unwrap(), None);
    assert_eq!(q.cancel(T0, &TaskId::from("h")).unwrap(), Some(a1));
    assert!(q.is_empty());
    assert_eq!(q.queued_len(), 0);
    assert_eq!(
        q.cancel(T0, &TaskId::from("h")).unwrap_err(),
        TaskError::NotFound("h".into())
    );
}

#[test]
fn recover_continues_only_for_the_holder() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    let g = q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    assert_eq!(
        q.recover(T0 + 1, &TaskId::from("t"), &a1),
        Recovery::Continue { generation: g }
    );
    assert_eq!(
        q.recover(T0 + 1, &TaskId::from("t"), &agent("a2")),
        Recovery::Reassign
    );
    assert_eq!(
        q.recover(T0 + 1, &TaskId::from("gone"), &a1),
        Recovery::Reassign
    );
    let _ = q.reclaim(T0 + 2, &TaskId::from("t"), ReclaimReason::RecoveryExpired);
    assert_eq!(
        q.recover(T0 + 3, &TaskId::from("t"), &a1),
        Recovery::Reassign
    );
}

#[test]
fn sweep_fails_overdue_and_reclaims_stuck_tasks_only() {
    let mut q = Queue::new(QueueConfig {
        stuck_after_ms: 1_000,
        ..QueueConfig::default()
    });
    q.submit(T0, NewTask::new("overdue", "x").with_complete_by(T0 + 500))
        .unwrap();
    q.submit(T0, NewTask::new("stuck", "x")).unwrap();
    q.submit(T0, NewTask::new("alive", "x")).unwrap();
    q.submit(T0, NewTask::new("queued", "x").with_complete_by(T0 + 1))
        .unwrap();
    let (a1, a2, a3) = (agent("a1"), agent("a2"), agent("a3"));
    q.assign(T0, &TaskId::from("overdue"), &a1).unwrap();
    q.assign(T0, &TaskId::from("stuck"), &a2).unwrap();
    q.assign(T0, &TaskId::from("alive"), &a3).unwrap();
    assert!(q.sweep(T0 + 400).is_empty());
    q.progress(T0 + 900, &TaskId::from("alive"), &a3).unwrap();
    let _ = q.drain_changes();
    assert_eq!(
        q.sweep(T0 + 1_000),
        vec![
            Swept::Overdue {
                task_id: "overdue".into(),
                agent_id: a1,
                outcome: FailOutcome::Retried,
            },
            Swept::Stuck {
                task_id: "stuck".into(),
                agent_id: a2,
                outcome: ReclaimOutcome::Requeued,
            },
        ]
    );
    let overdue = q.get(&TaskId::from("overdue")).unwrap();
    assert_eq!(
        (
            overdue.status,
            overdue.generation,
            overdue.retry_count,
            overdue.reclaim_count,
            overdue.last_error.as_deref()
        ),
        (Status::Queued, 2, 1, 0, Some(DEADLINE_EXCEEDED))
    );
    assert_eq!(overdue.history.last().unwrap().event, HistoryEvent::Retried);
    assert_eq!(
        &*overdue.history.last().unwrap().details,
        "agent=a1 generation=1 retry_count=1 error=deadline_exceeded"
    );
    let stuck = q.get(&TaskId::from("stuck")).unwrap();
    assert_eq!(
        (stuck.status, stuck.retry_count, stuck.reclaim_count),
        (Status::Queued, 0, 1)
    );
    assert_eq!(
        q.get(&TaskId::from("alive")).unwrap().status,
        Status::Assigned
    );
    assert_eq!(
        q.get(&TaskId::from("queued")).unwrap().status,
        Status::Queued
    );
    assert_eq!(
        statuses(&q.drain_changes()),
        vec![
            ("overdue".into(), Status::Queued),
            ("stuck".into(), Status::Queued)
        ]
    );
}

#[test]
fn an_overdue_task_is_retried_then_dead_lettered_never_reassigned_forever() {
    let mut q = queue();
    q.submit(
        T0,
        NewTask::new("t", "x")
            .with_complete_by(T0 + 100)
            .with_max_retries(1),
    )
    .unwrap();
    let a1 = agent("a1");
    q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    q.accept(T0 + 1, &TaskId::from("t"), &a1).unwrap();
    assert_eq!(q.sweep(T0 + 100), vec![], "not overdue at its deadline");
    let swept = q.sweep(T0 + 101);
    assert_eq!(
        swept,
        vec![Swept::Overdue {
            task_id: "t".into(),
            agent_id: a1.clone(),
            outcome: FailOutcome::Retried
        }]
    );
    let g = q.assign(T0 + 102, &TaskId::from("t"), &a1).unwrap();
    assert_eq!(g, 3, "assign 1, fail 2, assign 3");
    let _ = q.drain_changes();
    assert_eq!(
        q.sweep(T0 + 103),
        vec![Swept::Overdue {
            task_id: "t".into(),
            agent_id: a1.clone(),
            outcome: FailOutcome::DeadLettered
        }]
    );
    assert!(q.get(&TaskId::from("t")).is_none());
    let changes = q.drain_changes();
    let [Change::Finalized(last)] = &changes[..] else {
        panic!("{changes:?}")
    };
    assert_eq!(
        (
            last.status,
            last.retry_count,
            last.generation,
            last.last_error.as_deref()
        ),
        (Status::DeadLetter, 2, 4, Some(DEADLINE_EXCEEDED))
    );
    assert_eq!(
        last.history.last().unwrap().event,
        HistoryEvent::DeadLettered
    );
    // Final: nothing is left for the sweep to take back.
    assert!(q.sweep(T0 + 200).is_empty());
}

#[test]
fn fail_holder_counts_a_failure_and_fences_the_holder_off() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x").with_max_retries(0))
        .unwrap();
    q.submit(T0, NewTask::new("q", "x")).unwrap();
    let a1 = agent("a1");
    let g = q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    q.accept(T0, &TaskId::from("t"), &a1).unwrap();
    assert_eq!(
        q.fail_holder(T0, &TaskId::from("q"), "result_too_large")
            .unwrap_err(),
        TaskError::WrongStatus {
            task_id: "q".into(),
            status: Status::Queued
        }
    );
    assert_eq!(
        q.fail_holder(T0, &TaskId::from("nope"), "result_too_large")
            .unwrap_err(),
        TaskError::NotFound("nope".into())
    );
    let _ = q.drain_changes();
    assert_eq!(
        q.fail_holder(T0 + 1, &TaskId::from("t"), "result_too_large")
            .unwrap(),
        (a1.clone(), FailOutcome::DeadLettered)
    );
    let changes = q.drain_changes();
    let [Change::Finalized(last)] = &changes[..] else {
        panic!("{changes:?}")
    };
    assert_eq!(
        (
            last.status,
            last.retry_count,
            last.generation,
            last.last_error.as_deref()
        ),
        (Status::DeadLetter, 1, g + 1, Some("result_too_large"))
    );
    assert_eq!(
        &*last.history.last().unwrap().details,
        "agent=a1 generation=1 retry_count=1 error=result_too_large"
    );
}

#[test]
fn the_reclaim_past_the_budget_dead_letters_the_task() {
    let mut q = Queue::new(QueueConfig {
        max_reclaims: 2,
        ..QueueConfig::default()
    });
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    let reasons = [ReclaimReason::Disconnected, ReclaimReason::AcceptTimeout];
    for (i, reason) in reasons.into_iter().enumerate() {
        q.assign(T0, &TaskId::from("t"), &a1).unwrap();
        assert_eq!(
            q.reclaim(T0 + 1, &TaskId::from("t"), reason).unwrap(),
            Reclaimed {
                agent_id: a1.clone(),
                outcome: ReclaimOutcome::Requeued
            }
        );
        assert_eq!(
            q.get(&TaskId::from("t")).unwrap().reclaim_count,
            i as u32 + 1
        );
    }
    q.assign(T0 + 2, &TaskId::from("t"), &a1).unwrap();
    let _ = q.drain_changes();
    assert_eq!(
        q.reclaim(T0 + 3, &TaskId::from("t"), ReclaimReason::Stuck)
            .unwrap(),
        Reclaimed {
            agent_id: a1.clone(),
            outcome: ReclaimOutcome::DeadLettered
        }
    );
    assert!(q.get(&TaskId::from("t")).is_none());
    assert_eq!(q.queued_len(), 0);
    let changes = q.drain_changes();
    let [Change::Finalized(last)] = &changes[..] else {
        panic!("{changes:?}")
    };
    assert_eq!(
        (
            last.status,
            last.reclaim_count,
            last.retry_count,
            last.generation,
            last.last_error.as_deref()
        ),
        (Status::DeadLetter, 3, 0, 6, Some(TOO_MANY_RECLAIMS))
    );
    let entry = last.history.last().unwrap();
    assert_eq!(entry.event, HistoryEvent::DeadLettered);
    assert_eq!(
        &*entry.details,
        "agent=a1 reclaim_count=3 reason=stuck error=too_many_reclaims"
    );
    // An operator's retry starts a fresh budget.
    q.retry_dead_letter(T0 + 4, last.clone()).unwrap();
    let t = q.get(&TaskId::from("t")).unwrap();
    assert_eq!(
        (t.status, t.reclaim_count, t.retry_count),
        (Status::Queued, 0, 0)
    );
}

#[test]
fn rejects_do_not_count_against_the_reclaim_budget() {
    let mut q = Queue::new(QueueConfig {
        max_reclaims: 0,
        ..QueueConfig::default()
    });
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    for _ in 0..3 {
        q.assign(T0, &TaskId::from("t"), &a1).unwrap();
        q.reject(T0, &TaskId::from("t"), &a1, "busy").unwrap();
    }
    assert_eq!(q.get(&TaskId::from("t")).unwrap().reclaim_count, 0);
    q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    assert_eq!(
        q.reclaim(T0, &TaskId::from("t"), ReclaimReason::Disconnected)
            .unwrap()
            .outcome,
        ReclaimOutcome::DeadLettered
    );
}

#[test]
fn a_deadline_at_or_before_now_is_refused_at_submit() {
    let mut q = queue();
    for by in [T0 - 1, T0] {
        let new = NewTask::new("t", "x").with_complete_by(by);
        assert_eq!(
            q.check_submission(T0, &new).unwrap_err(),
            SubmitError::DeadlinePassed {
                complete_by_ms: by,
                now_ms: T0
            }
        );
        assert_eq!(
            q.submit(T0, new).unwrap_err(),
            SubmitError::DeadlinePassed {
                complete_by_ms: by,
                now_ms: T0
            }
        );
    }
    assert!(q.is_empty());
    assert!(q.drain_changes().is_empty());
    q.submit(T0, NewTask::new("t", "x").with_complete_by(T0 + 1))
        .unwrap();
}

#[test]
fn history_keeps_the_newest_fifty_entries() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    for i in 0..40 {
        q.assign(T0 + i, &TaskId::from("t"), &a1).unwrap();
        q.reject(T0 + i, &TaskId::from("t"), &a1, "busy").unwrap();
    }
    let t = q.get(&TaskId::from("t")).unwrap();
    assert_eq!(t.history.len(), HISTORY_CAP);
    assert_eq!(t.history.last().unwrap().event, HistoryEvent::Rejected);
    assert_eq!(t.history.first().unwrap().event, HistoryEvent::Assigned);
}

#[test]
fn stats_count_live_tasks_by_status_and_lane() {
    let mut q = queue();
    for i in 0..6 {
        let p = if i % 2 == 0 {
            Priority::High
        } else {
            Priority::Low
        };
        q.submit(T0, NewTask::new(format!("t{i}"), "x").with_priority(p))
            .unwrap();
    }
    q.assign(T0, &TaskId::from("t0"), &agent("a1")).unwrap();
    let stats = q.stats();
    assert_eq!(stats.status(Status::Queued), 5);
    assert_eq!(stats.status(Status::Assigned), 1);
    assert_eq!(stats.priority(Priority::Low), 3);
}

#[test]
fn restore_from_the_changes_gives_the_same_queue() {
    let mut q = queue();
    for i in 0..5 {
        q.submit(T0, NewTask::new(format!("t{i}"), "x")).unwrap();
    }
    let a1 = agent("a1");
    let g = q.assign(T0, &TaskId::from("t0"), &a1).unwrap();
    q.accept(T0, &TaskId::from("t0"), &a1).unwrap();
    q.complete(T0, &TaskId::from("t0"), &a1, g, done("{}"))
        .unwrap();
    q.assign(T0, &TaskId::from("t3"), &a1).unwrap();
    q.assign(T0, &TaskId::from("t1"), &a1).unwrap();
    let _ = q
        .reclaim(T0, &TaskId::from("t1"), ReclaimReason::Disconnected)
        .unwrap();
    // Storage keeps the newest record of each task.
    let store: std::collections::HashMap<TaskId, Task> = q
        .drain_changes()
        .into_iter()
        .map(|c| (c.task().id.clone(), c.into_task()))
        .collect();
    let mut restored = Queue::restore(QueueConfig::default(), store.into_values()).unwrap();
    assert_eq!(restored.len(), 4);
    let order =
        |q: &Queue| -> Vec<String> { q.queued_in_order().map(|t| t.id.to_string()).collect() };
    assert_eq!(order(&restored), order(&q));
    assert_eq!(
        restored.get(&TaskId::from("t3")),
        q.get(&TaskId::from("t3"))
    );
    assert_eq!(
        restored.get(&TaskId::from("t1")).unwrap().reclaim_count(),
        1
    );
    assert_eq!(
        restored.get(&TaskId::from("t1")),
        q.get(&TaskId::from("t1"))
    );
    // New submissions go behind the restored ones.
    restored.submit(T0, NewTask::new("t9", "x")).unwrap();
    assert_eq!(order(&restored).last().map(String::as_str), Some("t9"));
}

#[test]
fn restore_refuses_a_set_with_a_duplicate_id_or_place() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    q.submit(T0, NewTask::new("u", "y")).unwrap();
    let mut changes = q.drain_changes();
    let u = changes.pop().unwrap().into_task();
    let t = changes.pop().unwrap().into_task();
    assert_eq!(
        Queue::restore(QueueConfig::default(), [t.clone(), t.clone()]).unwrap_err(),
        RestoreError::DuplicateId("t".into())
    );
    let mut parts = u.into_parts();
    parts.queue_seq = t.queue_seq();
    let u = Task::from_parts(parts).unwrap();
    assert_eq!(
        Queue::restore(QueueConfig::default(), [t, u]).unwrap_err(),
        RestoreError::DuplicateQueueSeq {
            first: "t".into(),
            second: "u".into(),
            queue_seq: 0,
        }
    );
}

/// The parts of a task `t` held by `a1` at generation 1, as the queue emits them.
fn working_parts() -> TaskParts {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x").with_max_retries(1))
        .unwrap();
    q.assign(T0 + 1, &TaskId::from("t"), &agent("a1")).unwrap();
    q.accept(T0 + 2, &TaskId::from("t"), &agent("a1")).unwrap();
    q.drain_changes().pop().unwrap().into_task().into_parts()
}

#[test]
fn from_parts_takes_back_what_into_parts_gave() {
    let parts = working_parts();
    let task = Task::from_parts(parts.clone()).unwrap();
    assert_eq!(task.status(), Status::Working);
    assert_eq!(task.assigned_to(), Some(&agent("a1")));
    assert_eq!(task.into_parts(), parts);
}

#[test]
fn from_parts_refuses_a_record_the_queue_could_not_have_emitted() {
    let refused = |change: fn(&mut TaskParts)| {
        let mut parts = working_parts();
        change(&mut parts);
        Task::from_parts(parts).unwrap_err()
    };
    assert_eq!(refused(|p| p.id = "".into()), InvalidTask::EmptyId);
    assert_eq!(
        refused(|p| p.holder = None),
        InvalidTask::HeldWithoutHolder {
            task_id: "t".into(),
            status: Status::Working
        }
    );
    assert_eq!(
        refused(|p| p.status = Status::Queued),
        InvalidTask::QueuedWithHolder("t".into())
    );
    assert_eq!(
        refused(|p| p.generation = 0),
        InvalidTask::HeldAtGenerationZero("t".into())
    );
    assert_eq!(
        refused(|p| p.retry_count = 2),
        InvalidTask::RetriesBeyondMax {
            task_id: "t".into(),
            retry_count: 2,
            max_retries: 1
        }
    );
    assert_eq!(
        refused(|p| p.history = vec![p.history[0].clone(); HISTORY_CAP + 1]),
        InvalidTask::HistoryTooLong {
            task_id: "t".into(),
            len: HISTORY_CAP + 1
        }
    );
    assert_eq!(
        refused(|p| p.queue_seq = 1 << 56),
        InvalidTask::QueueSeqOutOfRange {
            task_id: "t".into(),
            queue_seq: 1 << 56
        }
    );
}

#[test]
fn from_parts_accepts_what_final_records_hold() {
    // A dead letter counts one failure more than it may retry, and a final
    // record keeps its last holder, or has none.
    let mut parts = working_parts();
    parts.status = Status::DeadLetter;
    parts.retry_count = 2;
    assert!(Task::from_parts(parts.clone()).is_ok());
    parts.holder = None;
    assert!(Task::from_parts(parts).is_ok());
}

mod model;
mod options;
#[cfg(feature = "serde")]
mod round_trip;
mod submission_record;
mod window;

fn with_metadata(id: &str, description: &str, metadata: &str) -> NewTask {
    let mut new = NewTask::new(id, description);
    new.metadata = metadata.to_owned();
    new
}

#[test]
fn long_texts_are_emitted_once_and_then_kept_out_of_memory() {
    let mut q = Queue::new(QueueConfig {
        max_inline_payload_bytes: 8,
        ..QueueConfig::default()
    });
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100));
    q.submit(T0, with_metadata("big", "a long description", &big))
        .unwrap();
    q.submit(T0, with_metadata("small", "short", r#"{"k":1}"#))
        .unwrap();
    // The records to persist carry every text ...
    let submitted = q.drain_changes();
    assert_eq!(submitted[0].task().metadata.as_inline(), Some(big.as_str()));
    assert_eq!(
        submitted[0].task().description.as_inline(),
        Some("a long description")
    );
    // ... the queue keeps only the short ones, and the lengths of the others.
    let kept = q.get(&TaskId::from("big")).unwrap();
    assert_eq!(kept.metadata, Payload::Stored { len: big.len() });
    assert_eq!(kept.description, Payload::Stored { len: 18 });
    assert_eq!(
        q.get(&TaskId::from("small")).unwrap().metadata.as_inline(),
        Some(r#"{"k":1}"#)
    );
    assert_eq!(
        q.get(&TaskId::from("small"))
            .unwrap()
            .description
            .as_inline(),
        Some("short")
    );
    // Later records of the task leave the stored texts out (storage keeps them).
    let g = q
        .assign(T0 + 1, &TaskId::from("big"), &agent("a1"))
        .unwrap();
    let assigned = q.drain_changes().pop().unwrap().into_task();
    assert!(assigned.metadata.is_stored() && assigned.description.is_stored());
    q.complete(T0 + 2, &TaskId::from("big"), &agent("a1"), g, done("{}"))
        .unwrap();
    let finalized = q.drain_changes().pop().unwrap();
    assert!(matches!(&finalized, Change::Finalized(t) if t.metadata.is_stored()));
}

#[test]
fn a_payload_costs_one_shared_pointer_in_the_record() {
    assert_eq!(
        std::mem::size_of::<Payload>(),
        std::mem::size_of::<std::sync::Arc<str>>()
    );
}

#[test]
fn restore_keeps_long_texts_out_of_memory_whether_or_not_storage_sent_them() {
    let config = QueueConfig {
        max_inline_payload_bytes: 4,
        ..QueueConfig::default()
    };
    let mut q = Queue::new(config.clone());
    q.submit(T0, with_metadata("a", "describe a", r#"{"n":1}"#))
        .unwrap();
    q.submit(T0, NewTask::new("b", "b")).unwrap();
    let mut records: Vec<Task> = q
        .drain_changes()
        .into_iter()
        .map(Change::into_task)
        .collect();
    let full = Queue::restore(config.clone(), records.clone()).unwrap();
    assert_eq!(full.get(&TaskId::from("a")), q.get(&TaskId::from("a")));
    assert_eq!(
        full.get(&TaskId::from("b"))
            .unwrap()
            .description
            .as_inline(),
        Some("b")
    );
    // Storage may send only the lengths of long texts.
    records[0].description = Payload::Stored { len: 10 };
    records[0].metadata = Payload::Stored { len: 7 };
    let lengths_only = Queue::restore(config, records).unwrap();
    assert_eq!(
        lengths_only.get(&TaskId::from("a")),
        q.get(&TaskId::from("a"))
    );
}

#[test]
fn a_retry_from_the_dead_letter_emits_its_texts_and_keeps_only_short_ones() {
    let mut q = Queue::new(QueueConfig {
        max_inline_payload_bytes: 4,
        ..QueueConfig::default()
    });
    q.submit(T0, NewTask::new("t", "long enough").with_max_retries(0))
        .unwrap();
    let a1 = agent("a1");
    let g = q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    let _ = q.fail(T0, &TaskId::from("t"), &a1, g, "boom").unwrap();
    let mut dead = q.drain_changes().pop().unwrap().into_task();
    // As read back from storage: with its text.
    dead.description = Payload::from("long enough");
    q.retry_dead_letter(T0 + 1, dead).unwrap();
    let requeued = q.drain_changes().pop().unwrap().into_task();
    assert_eq!(requeued.description.as_inline(), Some("long enough"));
    assert_eq!(
        q.get(&TaskId::from("t")).unwrap().description,
        Payload::Stored { len: 11 }
    );
}

#[test]
fn queue_keys_order_by_lane_then_arrival() {
    let urgent_late = QueueKey::new(Priority::Urgent.rank(), 1_000_000);
    let high_early = QueueKey::new(Priority::High.rank(), 1);
    assert!(urgent_late < high_early);
    assert!(QueueKey::new(2, 5) < QueueKey::new(2, 6));
    assert_eq!((high_early.rank(), high_early.seq()), (1, 1));
}

#[test]
fn a_progress_report_is_a_touch_without_a_history_entry() {
    let mut q = queue();
    q.submit(T0, NewTask::new("t", "x")).unwrap();
    let a1 = agent("a1");
    q.assign(T0, &TaskId::from("t"), &a1).unwrap();
    let _ = q.drain_changes();
    q.progress(T0, &TaskId::from("t"), &a1).unwrap();
    let changes = q.drain_changes();
    assert!(matches!(&changes[..], [Change::Touched(t)] if t.history.len() == 2));
    assert_eq!(changes[0].recorded_event(), None);
    q.accept(T0, &TaskId::from("t"), &a1).unwrap();
    let accepted = q.drain_changes().pop().unwrap();
    assert_eq!(
        accepted.recorded_event().map(|e| e.event),
        Some(HistoryEvent::Accepted)
    );
}

#[test]
fn assignment_details_read_as_formatted_text() {
    for generation in [0, 7, 10, 99, 1_000_000_007, u64::MAX] {
        assert_eq!(
            crate::task::agent_generation("a-1", generation, ""),
            format!("agent=a-1 generation={generation}")
        );
        assert_eq!(
            crate::task::agent_generation("é", generation, " reattached"),
            format!("agent=é generation={generation} reattached")
        );
    }
}

//! Unit tests of the matching rules and the drive contract, and property tests.

use proptest::prelude::*;

use crate::*;

const T0: u64 = 1_000_000;

fn config() -> SchedulerConfig {
    SchedulerConfig {
        accept_timeout_ms: 100,
        recovery_grace_ms: 500,
        reject_backoff_ms: 50,
        cancel_grace_ms: 500,
        ..SchedulerConfig::default()
    }
}

fn id(s: &str) -> AgentId {
    AgentId::from(s)
}

fn caps(names: &[&str]) -> Capabilities {
    Capabilities::new(names.iter().copied())
}

/// Drains everything and returns the assignments as (task, agent, generation).
fn assignments(s: &mut Scheduler) -> Vec<(String, String, u64)> {
    while s.poll_change().is_some() {}
    std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            Action::Assign(a) => {
                Some((a.task_id.to_string(), a.agent_id.to_string(), a.generation))
            }
            _ => None,
        })
        .collect()
}

fn submit(s: &mut Scheduler, now: u64, task: &str, needs: &[&str]) {
    s.handle_submit(
        now,
        NewTask::new(task, "x").with_capabilities(needs.iter().copied()),
    )
    .unwrap();
}

#[test]
fn a_submitted_task_goes_to_an_idle_capable_agent_at_once() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("cpu"), caps(&["linux"]), ConnId::new(1));
    s.handle_connect(T0, id("gpu"), caps(&["linux", "gpu"]), ConnId::new(2));
    submit(&mut s, T0 + 1, "t", &["gpu"]);
    assert_eq!(assignments(&mut s), [("t".into(), "gpu".into(), 1)]);
    assert_eq!(
        s.agent(&AgentId::from("gpu")).unwrap().agent.state(),
        AgentState::Assigned
    );
}

#[test]
fn changes_come_out_in_order_with_the_assignment() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    let statuses: Vec<Status> = std::iter::from_fn(|| s.poll_change())
        .map(|c| c.task().status())
        .collect();
    assert_eq!(statuses, [Status::Queued, Status::Assigned]);
}

#[test]
fn an_unmatchable_task_does_not_block_later_ones() {
    let mut s = Scheduler::new(config());
    submit(&mut s, T0, "needs-gpu", &["gpu"]);
    submit(&mut s, T0, "any", &[]);
    s.handle_connect(T0 + 1, id("cpu"), caps(&["linux"]), ConnId::new(1));
    assert_eq!(assignments(&mut s), [("any".into(), "cpu".into(), 1)]);
    assert_eq!(
        s.queue().get(&TaskId::from("needs-gpu")).unwrap().status(),
        Status::Queued
    );
}

#[test]
fn higher_lanes_go_first_when_an_agent_becomes_idle() {
    let mut s = Scheduler::new(config());
    s.handle_submit(T0, NewTask::new("low", "x").with_priority(Priority::Low))
        .unwrap();
    s.handle_submit(
        T0,
        NewTask::new("urgent", "x").with_priority(Priority::Urgent),
    )
    .unwrap();
    s.handle_submit(T0, NewTask::new("normal", "x")).unwrap();
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    let got = assignments(&mut s);
    assert_eq!(got[0].0, "urgent");
    let a = id("a");
    s.handle_complete(
        T0 + 1,
        &a,
        &TaskId::from("urgent"),
        1,
        Completion::default(),
    )
    .unwrap();
    assert_eq!(assignments(&mut s)[0].0, "normal");
}

#[test]
fn the_longest_idle_agent_wins_and_unresponsive_ones_come_last() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("slow"), caps(&[]), ConnId::new(1));
    s.handle_connect(T0 + 1, id("b"), caps(&[]), ConnId::new(2));
    s.handle_connect(T0 + 2, id("c"), caps(&[]), ConnId::new(3));
    submit(&mut s, T0 + 3, "t1", &[]);
    assert_eq!(assignments(&mut s)[0].1, "slow");
    // `slow` never accepts: reclaimed, flagged, and the task goes to `b` at once.
    s.handle_timeout(T0 + 103);
    assert!(s
        .agent(&AgentId::from("slow"))
        .unwrap()
        .agent
        .is_unresponsive());
    let got = assignments(&mut s);
    assert_eq!(got, [("t1".into(), "b".into(), 3)]);
    // `slow` has been idle since before `c`'s connect? No: it went idle at T0+103,
    // but flagged agents come last anyway; `c` gets the next task.
    submit(&mut s, T0 + 104, "t2", &[]);
    assert_eq!(assignments(&mut s)[0].1, "c");
    submit(&mut s, T0 + 105, "t3", &[]);
    assert_eq!(assignments(&mut s)[0].1, "slow");
}

#[test]
fn disconnect_reclaims_and_rematches_at_once() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    assert_eq!(assignments(&mut s)[0].1, "a");
    s.handle_connect(T0 + 1, id("b"), caps(&[]), ConnId::new(2));
    s.handle_disconnect(T0 + 2, &id("a"), ConnId::new(1))
        .unwrap();
    let actions: Vec<Action> = {
        while s.poll_change().is_some() {}
        std::iter::from_fn(|| s.poll_action()).collect()
    };
    assert!(matches!(
        &actions[0],
        Action::Reclaimed {
            reason: ReclaimReason::Disconnected,
            ..
        }
    ));
    assert!(
        matches!(&actions[1], Action::Assign(a) if a.agent_id.as_str() == "b" && a.generation == 3)
    );
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Offline
    );
    let stale = s.handle_complete(
        T0 + 3,
        &id("b"),
        &TaskId::from("t"),
        1,
        Completion::default(),
    );
    assert!(matches!(
        stale,
        Err(SchedulerError::Task(
            coordinator_queue::TaskError::StaleGeneration { .. }
        ))
    ));
}

#[test]
fn a_replaced_connection_closing_late_is_refused_and_changes_nothing() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_connect(T0 + 1, id("a"), caps(&[]), ConnId::new(2));
    let stale = SchedulerError::StaleConnection {
        agent_id: id("a"),
        given: ConnId::new(1),
        current: Some(ConnId::new(2)),
    };
    assert_eq!(
        s.handle_disconnect(T0 + 2, &id("a"), ConnId::new(1)),
        Err(stale.clone())
    );
    assert_eq!(
        s.handle_slow_consumer(T0 + 2, &id("a"), ConnId::new(1)),
        Err(stale.clone())
    );
    assert_eq!(
        s.handle_oversize(T0 + 2, &id("a"), ConnId::new(1)),
        Err(stale)
    );
    assert!(s.agent(&AgentId::from("a")).unwrap().connected);
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().connection,
        Some(ConnId::new(2))
    );
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Idle
    );
    // Gone once: a second report of it is refused too.
    s.handle_disconnect(T0 + 3, &id("a"), ConnId::new(2))
        .unwrap();
    assert_eq!(
        s.handle_disconnect(T0 + 4, &id("a"), ConnId::new(2)),
        Err(SchedulerError::StaleConnection {
            agent_id: id("a"),
            given: ConnId::new(2),
            current: None,
        })
    );
    assert_eq!(
        s.handle_disconnect(T0 + 4, &id("nobody"), ConnId::new(2)),
        Err(SchedulerError::UnknownAgent(id("nobody")))
    );
}

#[test]
fn a_reconnecting_agent_recovers_its_task() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    submit(&mut s, T0, "u", &[]);
    assignments(&mut s);
    s.handle_accepted(T0 + 1, &id("a"), &TaskId::from("t"))
        .unwrap();
    // A new connection replaces the old one before it closed: the task is taken
    // back at once, kept for its holder, which settles before it gets work.
    s.handle_connect(T0 + 2, id("a"), caps(&[]), ConnId::new(2));
    assert_eq!(
        s.queue().get(&TaskId::from("t")).unwrap().status(),
        Status::Queued
    );
    assert!(s
        .agent(&AgentId::from("a"))
        .unwrap()
        .settling_until_ms
        .is_some());
    assert!(
        assignments(&mut s).is_empty(),
        "no new work while it settles"
    );
    let r = s
        .handle_recovering(T0 + 3, &id("a"), &TaskId::from("t"))
        .unwrap();
    assert_eq!(r, Recovery::Continue { generation: 3 });
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Working
    );
    s.handle_agent_message(T0 + 3, &id("a"));
    assert!(
        assignments(&mut s).is_empty(),
        "busy with its own task again"
    );
    // Its report with its original generation is accepted.
    s.handle_complete(
        T0 + 4,
        &id("a"),
        &TaskId::from("t"),
        1,
        Completion::default(),
    )
    .unwrap();
    assert_eq!(assignments(&mut s)[0].0, "u");
}

#[test]
fn restore_waits_for_recovery_then_reclaims() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_connect(T0, id("b"), caps(&[]), ConnId::new(2));
    submit(&mut s, T0, "t1", &[]);
    submit(&mut s, T0, "t2", &[]);
    submit(&mut s, T0, "t3", &[]);
    let mut store = std::collections::HashMap::<String, Task>::new();
    while let Some(c) = s.poll_change() {
        store.insert(c.task().id().to_string(), c.into_task());
    }
    let mut s = Scheduler::restore(config(), T0 + 10, store.into_values()).unwrap();
    assert_eq!(s.poll_timeout(), Some(T0 + 510));
    s.handle_connect(T0 + 20, id("a"), caps(&[]), ConnId::new(7));
    assert_eq!(
        s.handle_recovering(T0 + 21, &id("a"), &TaskId::from("t1"))
            .unwrap(),
        Recovery::Continue { generation: 1 }
    );
    assert_eq!(
        s.handle_recovering(T0 + 21, &id("a"), &TaskId::from("t2"))
            .unwrap(),
        Recovery::Reassign
    );
    s.handle_connect(T0 + 20, id("c"), caps(&[]), ConnId::new(8));
    assert_eq!(assignments(&mut s), [("t3".into(), "c".into(), 1)]);
    s.handle_accepted(T0 + 21, &id("c"), &TaskId::from("t3"))
        .unwrap();
    // b never comes back: after the grace its task is reclaimed and goes to c when free.
    s.handle_timeout(T0 + 510);
    assert_eq!(
        s.queue().get(&TaskId::from("t2")).unwrap().status(),
        Status::Queued
    );
    assert_eq!(s.queue().get(&TaskId::from("t2")).unwrap().generation(), 2);
    s.handle_complete(
        T0 + 600,
        &id("c"),
        &TaskId::from("t3"),
        1,
        Completion::default(),
    )
    .unwrap();
    assert_eq!(assignments(&mut s), [("t2".into(), "c".into(), 3)]);
}

#[test]
fn a_rejecting_agent_cools_down() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    assignments(&mut s);
    s.handle_rejected(T0 + 1, &id("a"), &TaskId::from("t"), "busy")
        .unwrap();
    assert!(assignments(&mut s).is_empty());
    assert_eq!(s.queue().get(&TaskId::from("t")).unwrap().retry_count(), 0);
    assert_eq!(s.poll_timeout(), Some(T0 + 51));
    s.handle_timeout(T0 + 51);
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 3)]);
}

#[test]
fn failures_retry_and_rematch() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_submit(T0, NewTask::new("t", "x").with_max_retries(1))
        .unwrap();
    assignments(&mut s);
    assert_eq!(
        s.handle_failed(T0, &id("a"), &TaskId::from("t"), 1, "e1")
            .unwrap(),
        FailOutcome::Retried
    );
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 2)]);
    assert_eq!(
        s.handle_failed(T0, &id("a"), &TaskId::from("t"), 2, "e2")
            .unwrap(),
        FailOutcome::DeadLettered
    );
    assert!(s.queue().is_empty());
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Idle
    );
}

#[test]
fn cancel_of_a_held_task_tells_the_agent() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    submit(&mut s, T0, "q", &["gpu"]);
    assignments(&mut s);
    s.handle_cancel(T0 + 1, &TaskId::from("t")).unwrap();
    s.handle_cancel(T0 + 1, &TaskId::from("q")).unwrap();
    while s.poll_change().is_some() {}
    let actions: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    assert_eq!(
        actions,
        [Action::Cancel {
            agent_id: id("a"),
            task_id: "t".into()
        }]
    );
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Idle
    );
    assert!(s.queue().is_empty());
    assert!(s.handle_cancel(T0, &TaskId::from("t")).is_err());
}

#[test]
fn messages_from_unknown_agents_are_refused() {
    let mut s = Scheduler::new(config());
    assert_eq!(
        s.handle_accepted(T0, &id("ghost"), &TaskId::from("t"))
            .unwrap_err(),
        SchedulerError::UnknownAgent(id("ghost"))
    );
}

#[test]
fn sweep_reclaims_stuck_tasks_and_rematches() {
    let mut cfg = config();
    cfg.queue.stuck_after_ms = 1_000;
    cfg.accept_timeout_ms = 10_000;
    let mut s = Scheduler::new(cfg);
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    assignments(&mut s);
    s.handle_accepted(T0, &id("a"), &TaskId::from("t")).unwrap();
    s.handle_sweep(T0 + 1_000);
    // The agent is idle again and takes the task back with a new generation.
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 3)]);
}

#[test]
fn equal_work_spreads_evenly_over_four_agents() {
    let mut s = Scheduler::new(config());
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        s.handle_connect(T0 + i as u64, id(name), caps(&[]), ConnId::new(i as u64));
    }
    let mut now = T0 + 10;
    for i in 0..20 {
        submit(&mut s, now, &format!("t{i}"), &[]);
    }
    let mut counts = std::collections::HashMap::<String, usize>::new();
    let mut in_flight: std::collections::VecDeque<(String, String, u64)> =
        assignments(&mut s).into();
    while let Some((task, agent, gen)) = in_flight.pop_front() {
        now += 1;
        *counts.entry(agent.clone()).or_default() += 1;
        s.handle_complete(
            now,
            &id(&agent),
            &TaskId::from(task.as_str()),
            gen,
            Completion::default(),
        )
        .unwrap();
        in_flight.extend(assignments(&mut s));
    }
    assert_eq!(counts.values().sum::<usize>(), 20);
    for (agent, n) in counts {
        assert!((3..=7).contains(&n), "{agent} did {n}");
    }
}

/// Drains everything; returns the final records and the actions.
fn drain(s: &mut Scheduler) -> (Vec<Task>, Vec<Action>) {
    let finals = std::iter::from_fn(|| s.poll_change())
        .filter_map(|c| match c {
            Change::Finalized(t) => Some(t),
            _ => None,
        })
        .collect();
    (finals, std::iter::from_fn(|| s.poll_action()).collect())
}

fn budget(max_reclaims: u32) -> SchedulerConfig {
    let mut cfg = config();
    cfg.queue.max_reclaims = max_reclaims;
    cfg
}

/// (status, retry_count, reclaim_count, last_error) of a final record.
fn ending(t: &Task) -> (Status, u32, u32, Option<&str>) {
    (
        t.status(),
        t.retry_count(),
        t.reclaim_count(),
        t.last_error(),
    )
}

#[test]
fn a_task_reclaimed_past_its_budget_by_disconnects_is_dead_lettered_not_requeued() {
    let mut s = Scheduler::new(budget(1));
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 1)]);
    s.handle_connect(T0 + 1, id("b"), caps(&[]), ConnId::new(2));
    s.handle_disconnect(T0 + 1, &id("a"), ConnId::new(1))
        .unwrap();
    assert_eq!(assignments(&mut s), [("t".into(), "b".into(), 3)]);
    s.handle_slow_consumer(T0 + 3, &id("b"), ConnId::new(2))
        .unwrap();
    let (finals, actions) = drain(&mut s);
    assert_eq!(
        actions,
        [Action::Reclaimed {
            task_id: "t".into(),
            agent_id: id("b"),
            reason: ReclaimReason::SlowConsumer
        }]
    );
    assert_eq!(finals.len(), 1);
    assert_eq!(
        ending(&finals[0]),
        (Status::DeadLetter, 0, 2, Some(TOO_MANY_RECLAIMS))
    );
    assert!(s.queue().is_empty());
    s.handle_connect(T0 + 4, id("b"), caps(&[]), ConnId::new(3));
    assert!(assignments(&mut s).is_empty(), "nothing left to run");
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Offline
    );
    assert_eq!(
        s.agent(&AgentId::from("b")).unwrap().agent.state(),
        AgentState::Idle
    );
}

#[test]
fn an_accept_timeout_past_the_budget_frees_the_agent_for_other_work() {
    let mut s = Scheduler::new(budget(0));
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    submit(&mut s, T0, "u", &[]);
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 1)]);
    s.handle_timeout(T0 + 100);
    let (finals, actions) = drain(&mut s);
    assert_eq!(
        finals.iter().map(ending).collect::<Vec<_>>(),
        [(Status::DeadLetter, 0, 1, Some(TOO_MANY_RECLAIMS))]
    );
    let assigned: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign(a) => Some((a.task_id.to_string(), a.generation)),
            _ => None,
        })
        .collect();
    assert_eq!(assigned, [("u".to_owned(), 1)]);
    assert!(s.queue().get(&TaskId::from("t")).is_none());
}

#[test]
fn a_recovery_that_expires_past_the_budget_dead_letters_the_task() {
    let mut s = Scheduler::new(budget(0));
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    let mut store = std::collections::HashMap::<String, Task>::new();
    while let Some(c) = s.poll_change() {
        store.insert(c.task().id().to_string(), c.into_task());
    }
    let mut s = Scheduler::restore(budget(0), T0 + 10, store.into_values()).unwrap();
    s.handle_connect(T0 + 20, id("b"), caps(&[]), ConnId::new(2));
    s.handle_timeout(T0 + 510);
    let (finals, actions) = drain(&mut s);
    assert_eq!(
        finals.iter().map(ending).collect::<Vec<_>>(),
        [(Status::DeadLetter, 0, 1, Some(TOO_MANY_RECLAIMS))]
    );
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Assign(_))),
        "{actions:?}"
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_stuck_task_past_the_budget_is_dead_lettered_by_the_sweep() {
    let mut cfg = budget(0);
    cfg.queue.stuck_after_ms = 1_000;
    cfg.accept_timeout_ms = 10_000;
    let mut s = Scheduler::new(cfg);
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    submit(&mut s, T0, "u", &[]);
    assignments(&mut s);
    s.handle_accepted(T0, &id("a"), &TaskId::from("t")).unwrap();
    s.handle_sweep(T0 + 1_000);
    let (finals, actions) = drain(&mut s);
    assert_eq!(
        finals.iter().map(ending).collect::<Vec<_>>(),
        [(Status::DeadLetter, 0, 1, Some(TOO_MANY_RECLAIMS))]
    );
    assert!(matches!(
        &actions[..],
        [
            Action::Reclaimed {
                reason: ReclaimReason::Stuck,
                ..
            },
            Action::Assign(a)
        ] if a.task_id.as_str() == "u"
    ));
}

#[test]
fn an_overdue_task_is_a_counted_failure_retried_elsewhere_then_dead_lettered() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_submit(
        T0,
        NewTask::new("t", "x")
            .with_complete_by(T0 + 100)
            .with_max_retries(1),
    )
    .unwrap();
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 1)]);
    s.handle_accepted(T0 + 1, &id("a"), &TaskId::from("t"))
        .unwrap();
    s.handle_connect(T0 + 2, id("b"), caps(&[]), ConnId::new(2));
    s.handle_sweep(T0 + 100);
    assert!(
        assignments(&mut s).is_empty(),
        "not overdue at its deadline"
    );
    s.handle_sweep(T0 + 101);
    // Other idle agents get the retry before the agent that failed it.
    assert_eq!(assignments(&mut s), [("t".into(), "b".into(), 3)]);
    let t = s.queue().get(&TaskId::from("t")).unwrap();
    assert_eq!(
        (t.retry_count(), t.reclaim_count(), t.last_error()),
        (1, 0, Some(DEADLINE_EXCEEDED))
    );
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Idle
    );
    // The late report of the failed run is fenced off.
    assert!(matches!(
        s.handle_complete(
            T0 + 102,
            &id("a"),
            &TaskId::from("t"),
            1,
            Completion::default()
        ),
        Err(SchedulerError::Task(_))
    ));
    s.handle_sweep(T0 + 103);
    let (finals, actions) = drain(&mut s);
    assert_eq!(
        finals.iter().map(ending).collect::<Vec<_>>(),
        [(Status::DeadLetter, 2, 0, Some(DEADLINE_EXCEEDED))]
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert!(s.queue().is_empty());
    assert_eq!(
        s.agent(&AgentId::from("b")).unwrap().agent.state(),
        AgentState::Idle
    );
}

#[test]
fn an_oversize_close_is_a_counted_failure_of_the_held_task() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_submit(T0, NewTask::new("t", "x").with_max_retries(1))
        .unwrap();
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 1)]);
    s.handle_accepted(T0 + 1, &id("a"), &TaskId::from("t"))
        .unwrap();
    s.handle_connect(T0 + 2, id("b"), caps(&[]), ConnId::new(2));
    s.handle_oversize(T0 + 3, &id("a"), ConnId::new(1)).unwrap();
    let view = s.agent(&AgentId::from("a")).unwrap();
    assert!(!view.connected);
    assert_eq!(view.agent.state(), AgentState::Offline);
    assert_eq!(assignments(&mut s), [("t".into(), "b".into(), 3)]);
    let t = s.queue().get(&TaskId::from("t")).unwrap();
    assert_eq!(
        (t.retry_count(), t.reclaim_count(), t.last_error()),
        (1, 0, Some(RESULT_TOO_LARGE))
    );
    // A connection that was replaced is refused and changes nothing.
    s.handle_connect(T0 + 4, id("c"), caps(&[]), ConnId::new(4));
    s.handle_connect(T0 + 4, id("c"), caps(&[]), ConnId::new(5));
    let stale = s.handle_oversize(T0 + 5, &id("c"), ConnId::new(4));
    assert!(matches!(stale, Err(SchedulerError::StaleConnection { .. })));
    assert!(s.agent(&AgentId::from("c")).unwrap().connected);
    s.handle_oversize(T0 + 7, &id("b"), ConnId::new(2)).unwrap();
    let (finals, actions) = drain(&mut s);
    assert_eq!(
        finals.iter().map(ending).collect::<Vec<_>>(),
        [(Status::DeadLetter, 2, 0, Some(RESULT_TOO_LARGE))]
    );
    assert!(actions.is_empty(), "{actions:?}");
    // An agent holding nothing just goes offline.
    s.handle_oversize(T0 + 9, &id("c"), ConnId::new(5)).unwrap();
    assert!(!s.agent(&AgentId::from("c")).unwrap().connected);
    assert!(drain(&mut s).0.is_empty());
}

#[test]
fn an_undeliverable_assignment_is_a_counted_failure_and_frees_the_agent() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_submit(T0, NewTask::new("t", "x").with_max_retries(0))
        .unwrap();
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 1)]);
    let _ = drain(&mut s);
    // Only for the current holder at the current generation.
    let stale = s.handle_undeliverable(T0 + 1, &id("a"), &TaskId::from("t"), 7);
    assert!(matches!(
        stale,
        Err(SchedulerError::Task(
            coordinator_queue::TaskError::StaleGeneration { .. }
        ))
    ));
    let other = s.handle_undeliverable(T0 + 1, &id("b"), &TaskId::from("t"), 1);
    assert!(matches!(
        other,
        Err(SchedulerError::Task(
            coordinator_queue::TaskError::NotAssigned(_)
        ))
    ));
    assert!(drain(&mut s).0.is_empty(), "a refusal changes nothing");
    s.handle_undeliverable(T0 + 1, &id("a"), &TaskId::from("t"), 1)
        .unwrap();
    let (finals, _) = drain(&mut s);
    assert_eq!(
        finals.iter().map(ending).collect::<Vec<_>>(),
        [(Status::DeadLetter, 1, 0, Some(PAYLOAD_UNREADABLE))]
    );
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Idle
    );
}

// ---- property tests (with the test kit) ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
    ))]

    #[test]
    fn scheduler_keeps_its_matching_invariants(ops in testing::scheduler_ops(1..80, true)) {
        let mut cfg = budget(2);
        cfg.queue.stuck_after_ms = 150;
        let mut driver = testing::Driver::new(cfg, T0).with_sweep_every(None);
        for op in &ops {
            driver.apply(op)?;
            for change in driver.take_persisted() {
                if let Change::Finalized(t) = change {
                    prop_assert!(t.status().is_final());
                }
            }
        }
        driver.run_until_idle(10_000)?;
    }

    #[test]
    fn equal_work_spreads_evenly(n_agents in 2usize..6, per_agent in 2usize..8) {
        let mut s = Scheduler::new(config());
        for i in 0..n_agents {
            s.handle_connect(T0 + i as u64, id(&format!("a{i}")), caps(&[]), ConnId::new(i as u64));
        }
        let n_tasks = n_agents * per_agent;
        let mut now = T0 + 100;
        for i in 0..n_tasks {
            submit(&mut s, now, &format!("t{i}"), &[]);
        }
        let mut counts = std::collections::HashMap::<String, usize>::new();
        let mut in_flight: std::collections::VecDeque<_> = assignments(&mut s).into();
        while let Some((task, agent, gen)) = in_flight.pop_front() {
            now += 1;
            *counts.entry(agent.clone()).or_default() += 1;
            s.handle_complete(now, &id(&agent), &TaskId::from(task.as_str()), gen, Completion::default()).unwrap();
            in_flight.extend(assignments(&mut s));
        }
        prop_assert_eq!(counts.len(), n_agents);
        for n in counts.values() {
            prop_assert!(n.abs_diff(per_agent) <= 1, "{:?}", counts);
        }
    }
}

#[test]
fn a_cancelled_agent_gets_no_work_until_it_reports_on_the_cancelled_task() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t1", &[]);
    assert_eq!(assignments(&mut s).len(), 1);
    s.handle_cancel(T0 + 1, &TaskId::from("t1")).unwrap();
    submit(&mut s, T0 + 2, "t2", &[]);
    assert_eq!(
        assignments(&mut s),
        [],
        "no work while its report is awaited"
    );
    assert_eq!(
        s.agent(&AgentId::from("a"))
            .unwrap()
            .cancelling
            .map(|t| t.as_str()),
        Some("t1")
    );
    // A report on another task is not the awaited one.
    assert!(!s.handle_report_after_cancel(T0 + 3, &id("a"), &TaskId::from("t2")));
    assert!(s.handle_report_after_cancel(T0 + 3, &id("a"), &TaskId::from("t1")));
    assert_eq!(assignments(&mut s), [("t2".into(), "a".into(), 1)]);
    assert!(
        !s.handle_report_after_cancel(T0 + 4, &id("a"), &TaskId::from("t1")),
        "only once"
    );
}

#[test]
fn the_cancel_grace_ends_the_wait_for_an_agent_that_never_reports() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t1", &[]);
    assert_eq!(assignments(&mut s).len(), 1);
    s.handle_cancel(T0, &TaskId::from("t1")).unwrap();
    submit(&mut s, T0, "t2", &[]);
    assert_eq!(assignments(&mut s), []);
    let grace = config().cancel_grace_ms;
    assert_eq!(s.poll_timeout(), Some(T0 + grace));
    s.handle_timeout(T0 + grace - 1);
    assert_eq!(assignments(&mut s), []);
    assert_eq!(s.poll_timer_touched(), None, "nothing was due");
    s.handle_timeout(T0 + grace);
    assert_eq!(assignments(&mut s), [("t2".into(), "a".into(), 1)]);
    assert!(s.agent(&AgentId::from("a")).unwrap().cancelling.is_none());
    // The end of the grace changed the agent without an input naming it.
    assert_eq!(s.poll_timer_touched(), Some(id("a")));
    assert_eq!(s.poll_timer_touched(), None, "each agent once");
}

#[test]
fn a_silent_holder_that_reconnects_gets_its_task_back_after_the_settle_window() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    assert_eq!(assignments(&mut s), [("t".into(), "a".into(), 1)]);
    s.handle_accepted(T0, &id("a"), &TaskId::from("t")).unwrap();
    // A network blip: the task is taken back; nobody else can take it.
    s.handle_disconnect(T0 + 1, &id("a"), ConnId::new(1))
        .unwrap();
    assert_eq!(s.queue().get(&TaskId::from("t")).unwrap().generation(), 2);
    s.handle_connect(T0 + 2, id("a"), caps(&[]), ConnId::new(2));
    assert!(assignments(&mut s).is_empty(), "settling");
    // It says nothing (pings only); after the settle window its task is re-attached
    // (task_continue), never assigned anew.
    let settle = config().identify_settle_ms;
    s.handle_timeout(T0 + 2 + settle);
    while s.poll_change().is_some() {}
    let actions: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    assert_eq!(
        actions,
        [Action::Reattach {
            agent_id: id("a"),
            task_id: "t".into(),
            generation: 3
        }]
    );
    // Its late result with the generation of its own assignment is accepted.
    s.handle_complete(
        T0 + 9,
        &id("a"),
        &TaskId::from("t"),
        1,
        Completion::default(),
    )
    .unwrap();
    assert!(s.queue().is_empty());
}

#[test]
fn a_task_taken_by_another_agent_is_no_longer_the_old_holders() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0, "t", &[]);
    assignments(&mut s);
    s.handle_connect(T0, id("b"), caps(&[]), ConnId::new(2));
    s.handle_disconnect(T0 + 1, &id("a"), ConnId::new(1))
        .unwrap();
    assert_eq!(assignments(&mut s), [("t".into(), "b".into(), 3)]);
    s.handle_connect(T0 + 2, id("a"), caps(&[]), ConnId::new(3));
    let err = s
        .handle_complete(
            T0 + 3,
            &id("a"),
            &TaskId::from("t"),
            1,
            Completion::default(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SchedulerError::Task(coordinator_queue::TaskError::StaleGeneration { .. })
            | SchedulerError::Task(coordinator_queue::TaskError::NotAssigned(_))
    ));
    assert_eq!(
        s.handle_recovering(T0 + 3, &id("a"), &TaskId::from("t"))
            .unwrap(),
        Recovery::Reassign
    );
}

#[test]
fn a_drained_agent_gets_no_new_work_until_undrained() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_connect(T0 + 1, id("b"), caps(&[]), ConnId::new(2));
    assert_eq!(s.handle_drain(T0 + 2, &id("a"), true), Ok(true));
    assert_eq!(s.handle_drain(T0 + 2, &id("a"), true), Ok(false));
    assert!(s.agent(&AgentId::from("a")).unwrap().drained);
    // `a` has been idle longest, yet the task goes to `b`; the next one waits.
    submit(&mut s, T0 + 3, "t1", &[]);
    submit(&mut s, T0 + 3, "t2", &[]);
    assert_eq!(assignments(&mut s), [("t1".into(), "b".into(), 1)]);
    // A reconnect keeps the drain.
    s.handle_disconnect(T0 + 4, &id("a"), ConnId::new(1))
        .unwrap();
    s.handle_connect(T0 + 5, id("a"), caps(&[]), ConnId::new(3));
    assert_eq!(assignments(&mut s), []);
    assert!(s.agent(&AgentId::from("a")).unwrap().drained);
    // Undrained, it takes the waiting task at once.
    assert_eq!(s.handle_drain(T0 + 6, &id("a"), false), Ok(true));
    assert_eq!(assignments(&mut s), [("t2".into(), "a".into(), 1)]);
    assert_eq!(
        s.handle_drain(T0 + 7, &id("nobody"), true),
        Err(SchedulerError::UnknownAgent(id("nobody")))
    );
}

#[test]
fn draining_a_busy_agent_lets_its_task_finish() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    submit(&mut s, T0 + 1, "t1", &[]);
    submit(&mut s, T0 + 1, "t2", &[]);
    assert_eq!(assignments(&mut s), [("t1".into(), "a".into(), 1)]);
    s.handle_drain(T0 + 2, &id("a"), true).unwrap();
    s.handle_accepted(T0 + 3, &id("a"), &TaskId::from("t1"))
        .unwrap();
    s.handle_complete(
        T0 + 4,
        &id("a"),
        &TaskId::from("t1"),
        1,
        Completion::default(),
    )
    .unwrap();
    assert_eq!(assignments(&mut s), []);
    assert_eq!(
        s.agent(&AgentId::from("a")).unwrap().agent.state(),
        AgentState::Idle
    );
    assert_eq!(
        s.queue().get(&TaskId::from("t2")).unwrap().status(),
        Status::Queued
    );
}

#[test]
fn unroutable_tasks_are_grouped_with_what_is_missing() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("gpu"), caps(&["gpu"]), ConnId::new(1));
    s.handle_connect(T0, id("arm"), caps(&["arm"]), ConnId::new(2));
    // Keep both busy so that nothing is assigned.
    submit(&mut s, T0 + 1, "busy1", &[]);
    submit(&mut s, T0 + 1, "busy2", &[]);
    submit(&mut s, T0 + 2, "both", &["arm", "gpu"]);
    submit(&mut s, T0 + 3, "tpu1", &["tpu"]);
    submit(&mut s, T0 + 4, "tpu2", &["tpu"]);
    submit(&mut s, T0 + 5, "fine", &["gpu"]);
    let _ = assignments(&mut s);
    let unroutable = s.unroutable();
    assert_eq!(
        unroutable,
        vec![
            Unroutable {
                needed: caps(&["tpu"]),
                missing: caps(&["tpu"]),
                n_tasks: 2
            },
            Unroutable {
                needed: caps(&["arm", "gpu"]),
                missing: caps(&[]),
                n_tasks: 1
            },
        ]
    );
    // A drained agent routes nothing: the gpu task is now unroutable too.
    s.handle_drain(T0 + 6, &id("gpu"), true).unwrap();
    assert!(s
        .unroutable()
        .iter()
        .any(|u| u.needed.names() == ["gpu"] && u.missing.names() == ["gpu"]));
}

#[cfg(feature = "serde")]
mod round_trip;

#[test]
fn a_scheduled_task_is_matched_when_its_time_comes_and_not_before() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_submit(T0, NewTask::new("later", "x").with_run_at(T0 + 1_000))
        .unwrap();
    assert_eq!(assignments(&mut s), []);
    assert_eq!(s.poll_timeout(), Some(T0 + 1_000));
    s.handle_timeout(T0 + 999);
    assert_eq!(assignments(&mut s), []);
    s.handle_timeout(T0 + 1_000);
    assert_eq!(assignments(&mut s), [("later".into(), "a".into(), 1)]);
}

#[test]
fn a_dependent_task_is_matched_once_its_dependency_completes() {
    let mut s = Scheduler::new(config());
    s.handle_connect(T0, id("a"), caps(&[]), ConnId::new(1));
    s.handle_connect(T0, id("b"), caps(&[]), ConnId::new(2));
    s.handle_submit(T0, NewTask::new("step1", "x")).unwrap();
    s.handle_submit(T0, NewTask::new("step2", "x").with_depends_on(["step1"]))
        .unwrap();
    assert_eq!(assignments(&mut s), [("step1".into(), "a".into(), 1)]);
    s.handle_complete(
        T0 + 1,
        &id("a"),
        &TaskId::from("step1"),
        1,
        Completion::default(),
    )
    .unwrap();
    // The idle agent that waited longest takes it.
    assert_eq!(assignments(&mut s), [("step2".into(), "b".into(), 1)]);
}

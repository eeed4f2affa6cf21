//! Unit tests of the session core: exact outputs for each rule.

use coordinator_queue::{AgentId, NewTask, Status, Task, TaskError, TaskId};
use coordinator_scheduler::{SchedulerConfig, SchedulerError};
use coordinator_transport::protocol::{
    AgentMessage, CapabilityEntry, CoordinatorMessage, ErrorCode,
};

use super::wire::error_code;
use super::*;

mod admission;
mod leadership;
mod options;
mod window;

const T0: u64 = 1_700_000_000_000;

fn session() -> Session {
    Session::new(SessionConfig::default(), T0, Vec::new()).unwrap()
}

/// Every output until the session has nothing more, but events (their own
/// tests use [`drain_all`]).
fn drain(s: &mut Session) -> Vec<Output> {
    drain_all(s)
        .into_iter()
        .filter(|o| !matches!(o, Output::Event(_)))
        .collect()
}

/// Every output until the session has nothing more.
fn drain_all(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// The next output that is not an event.
fn poll(s: &mut Session) -> Option<Output> {
    std::iter::from_fn(|| s.poll_output()).find(|o| !matches!(o, Output::Event(_)))
}

/// Drains, commits every batch handed out, and drains again, until quiet;
/// returns every output except the batches.
fn settle(s: &mut Session) -> Vec<Output> {
    settle_records(s).1
}

fn identify(agent: &str, token: &str) -> AgentMessage {
    AgentMessage::Identify {
        agent_id: agent.into(),
        token: token.into(),
        name: None,
        capabilities: vec![CapabilityEntry::Name("linux".into())],
        status: None,
        client_type: None,
        current_task: None,
    }
}

fn send(conn: ConnId, message: CoordinatorMessage) -> Output {
    Output::Send {
        conn,
        frame: Frame::Message(message),
    }
}

fn error(conn: ConnId, code: ErrorCode, task_id: Option<&str>) -> Option<Output> {
    Some(send(conn, CoordinatorMessage::error(code, task_id, "")))
}

/// Replaces the detail of error frames, so tests compare codes only.
fn codes(outputs: Vec<Output>) -> Vec<Output> {
    outputs
        .into_iter()
        .filter(|o| !matches!(o, Output::Notice(_)))
        .map(|o| match o {
            Output::Send {
                conn,
                frame: Frame::Message(CoordinatorMessage::Error { error, task_id, .. }),
            } => send(
                conn,
                CoordinatorMessage::error(error, task_id.as_deref(), ""),
            ),
            other => other,
        })
        .collect()
}

/// Opens `conn` and identifies it as `agent` with a valid token.
fn connect(s: &mut Session, conn: ConnId, agent: &str) -> Vec<Output> {
    s.handle_opened(T0, conn);
    s.handle_message(T0, conn, identify(agent, "secret"));
    assert_eq!(
        poll(s),
        Some(Output::Authenticate {
            conn,
            token: "secret".into()
        })
    );
    s.handle_identity(T0, conn, Some(Identity::Agent(agent.into())));
    settle(s)
}

fn submit(s: &mut Session, request: u64, ids: &[&str]) {
    let tasks = ids.iter().map(|id| NewTask::new(*id, "work")).collect();
    s.handle_request(T0, RequestId::new(request), Request::Submit { tasks });
}

fn assigned(outputs: &[Output]) -> Vec<(ConnId, String, u64)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                conn,
                frame: Frame::Assign(a),
            } => Some((*conn, a.task_id.to_string(), a.generation)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reply_leaves_only_after_the_commit_of_its_batch() {
    let mut s = session();
    submit(&mut s, 1, &["t1"]);
    let Some(Output::Persist(batch)) = poll(&mut s) else {
        panic!("the batch comes first")
    };
    assert_eq!(batch.seq, 1);
    assert_eq!(batch.changes.len(), 1);
    assert_eq!(poll(&mut s), None, "nothing before the commit");
    // A second request while the first batch is in flight waits for its own batch.
    submit(&mut s, 2, &["t2"]);
    let Some(Output::Persist(second)) = poll(&mut s) else {
        panic!("a second batch")
    };
    s.handle_committed(1);
    let released = drain(&mut s);
    assert_eq!(released.len(), 1);
    assert!(
        matches!(&released[0], Output::Reply { request, answer: Answer::Submitted(r) }
        if *request == RequestId::new(1) && r[0].task_id == "t1")
    );
    s.handle_committed(second.seq);
    assert!(
        matches!(poll(&mut s), Some(Output::Reply { request, .. }) if request == RequestId::new(2))
    );
    assert!(s.is_settled());
}

#[test]
fn a_batch_is_queued_whole_or_not_at_all() {
    let mut s = session();
    let tasks = vec![
        NewTask::new("a", "fine"),
        NewTask::new("b", " "),
        NewTask::new("c", "fine"),
    ];
    s.handle_request(T0, RequestId::new(1), Request::Submit { tasks });
    let out = drain(&mut s);
    assert_eq!(out.len(), 1, "a refusal, no batch: {out:?}");
    let Output::Reply {
        answer: Answer::Refused(refusal),
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(refusal.kind, RefusalKind::Invalid);
    assert!(refusal.detail.starts_with("task 1:"), "{}", refusal.detail);
    assert!(s.scheduler().queue().is_empty());

    let twice = vec![NewTask::new("x", "one"), NewTask::new("x", "two")];
    s.handle_request(T0, RequestId::new(2), Request::Submit { tasks: twice });
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply { answer: Answer::Refused(r), .. }] if r.detail.contains("twice"))
    );
    assert!(s.scheduler().queue().is_empty());
}

#[test]
fn identify_then_work_then_completion_acknowledged_after_commit() {
    let mut s = session();
    let c = ConnId::new(7);
    let out = connect(&mut s, c, "a1");
    assert_eq!(
        codes(out),
        vec![send(
            c,
            CoordinatorMessage::Identified {
                agent_id: "a1".into()
            }
        )]
    );
    assert_eq!(s.agent_of(c), Some(&AgentId::from("a1")));
    submit(&mut s, 1, &["t1"]);
    let out = settle(&mut s);
    assert_eq!(assigned(&out), vec![(c, "t1".to_owned(), 1)]);
    s.handle_message(
        T0 + 1,
        c,
        AgentMessage::TaskAccepted {
            task_id: "t1".into(),
        },
    );
    let Some(Output::Persist(_)) = poll(&mut s) else {
        panic!("acceptance is persisted before its ack")
    };
    s.handle_message(
        T0 + 2,
        c,
        AgentMessage::TaskComplete {
            task_id: "t1".into(),
            generation: 1,
            result: serde_json::json!({"ok": true}),
            tokens_used: None,
        },
    );
    let out = settle(&mut s);
    let ack = |status: &str| {
        send(
            c,
            CoordinatorMessage::TaskAck {
                task_id: "t1".into(),
                status: status.into(),
            },
        )
    };
    assert_eq!(codes(out), vec![ack("accepted"), ack("complete")]);
    assert!(s.scheduler().queue().is_empty());
    assert_eq!(s.dashboard(T0 + 3).recent_completions.len(), 1);
}

#[test]
fn protocol_rules_before_and_after_identify() {
    let mut s = session();
    let c = ConnId::new(1);
    s.handle_opened(T0, c);
    s.handle_message(
        T0,
        c,
        AgentMessage::TaskAccepted {
            task_id: "t".into(),
        },
    );
    assert_eq!(
        codes(drain(&mut s)),
        vec![error(c, ErrorCode::NotIdentified, None).unwrap()]
    );
    s.handle_message(T0, c, identify("a1", "secret"));
    s.handle_message(T0, c, identify("a1", "secret"));
    assert_eq!(
        codes(drain(&mut s)),
        vec![
            Output::Authenticate {
                conn: c,
                token: "secret".into()
            },
            error(c, ErrorCode::InvalidState, None).unwrap()
        ],
        "a second identify while the first is checked is refused"
    );
    s.handle_identity(T0, c, Some(Identity::Agent("a1".into())));
    settle(&mut s);
    s.handle_message(T0, c, identify("a1", "secret"));
    assert_eq!(
        codes(drain(&mut s)),
        vec![error(c, ErrorCode::InvalidState, None).unwrap()]
    );
    s.handle_message(T0 + 5, c, AgentMessage::Ping {});
    assert_eq!(
        drain(&mut s),
        vec![send(c, CoordinatorMessage::Pong { timestamp: T0 + 5 })]
    );
    s.handle_message(
        T0,
        c,
        AgentMessage::TaskAccepted {
            task_id: "nope".into(),
        },
    );
    assert_eq!(
        codes(drain(&mut s)),
        vec![error(c, ErrorCode::NotAssigned, Some("nope")).unwrap()]
    );
}

#[test]
fn a_bad_token_or_another_agents_token_is_refused_and_closed() {
    let mut s = session();
    for (conn, identity, code) in [
        (ConnId::new(1), None, ErrorCode::InvalidToken),
        (
            ConnId::new(2),
            Some(Identity::Agent("someone-else".into())),
            ErrorCode::TokenAgentMismatch,
        ),
    ] {
        s.handle_opened(T0, conn);
        s.handle_message(T0, conn, identify("a1", "t"));
        let _ = drain(&mut s);
        s.handle_identity(T0, conn, identity);
        assert_eq!(
            codes(drain(&mut s)),
            vec![
                error(conn, code, None).unwrap(),
                Output::Close {
                    conn,
                    code: CLOSE_POLICY,
                    reason: "identify refused".into()
                }
            ]
        );
        assert_eq!(s.agent_of(conn), None);
    }
    // An admin token may identify any agent id.
    let c = ConnId::new(3);
    s.handle_opened(T0, c);
    s.handle_message(T0, c, identify("a1", "t"));
    let _ = drain(&mut s);
    s.handle_identity(T0, c, Some(Identity::Admin("ops".into())));
    assert_eq!(s.agent_of(c), Some(&AgentId::from("a1")));
}

#[test]
fn a_new_connection_replaces_the_old_one_whose_end_changes_nothing() {
    let mut s = session();
    let (old, new) = (ConnId::new(1), ConnId::new(2));
    connect(&mut s, old, "a1");
    submit(&mut s, 1, &["t1"]);
    assert_eq!(assigned(&settle(&mut s)), vec![(old, "t1".to_owned(), 1)]);
    let out = connect(&mut s, new, "a1");
    assert!(out.contains(&Output::Close {
        conn: old,
        code: CLOSE_POLICY,
        reason: "replaced by a new connection".into()
    }));
    assert_eq!(s.agent_of(old), None);
    s.handle_closed(T0 + 1, old);
    assert!(
        settle(&mut s).is_empty(),
        "the old socket's end reclaims nothing"
    );
    // Taken back at once from the replaced connection, kept for its holder.
    let task = s.scheduler().queue().get(&TaskId::from("t1")).unwrap();
    assert_eq!((task.status(), task.generation()), (Status::Queued, 2));
    assert_eq!(task.reattachable_to(), Some(("a1", 1)));
    // The agent recovers its task on the new connection: re-attached, fenced anew.
    s.handle_message(
        T0 + 2,
        new,
        AgentMessage::TaskRecovering {
            task_id: "t1".into(),
        },
    );
    assert_eq!(
        codes(settle(&mut s)),
        vec![send(
            new,
            CoordinatorMessage::TaskContinue {
                task_id: "t1".into(),
                generation: 3
            }
        )]
    );
    let task = s.scheduler().queue().get(&TaskId::from("t1")).unwrap();
    assert_eq!((task.status(), task.generation()), (Status::Working, 3));
}

#[test]
fn a_closed_connection_gives_its_task_to_another_agent() {
    let mut s = session();
    let (c1, c2) = (ConnId::new(1), ConnId::new(2));
    connect(&mut s, c1, "a1");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    connect(&mut s, c2, "a2");
    s.handle_closed(T0 + 1, c1);
    let out = drain(&mut s);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Notice(Notice::Reclaimed { .. }))));
    let Some(Output::Persist(_)) = out.last() else {
        panic!("the reclaim is persisted: {out:?}")
    };
    assert!(assigned(&out).is_empty(), "not before the commit");
    let Some(Output::Persist(batch)) = out.last().cloned() else {
        unreachable!()
    };
    s.handle_committed(batch.seq);
    assert_eq!(assigned(&settle(&mut s)), vec![(c2, "t1".to_owned(), 3)]);
}

#[test]
fn stale_generation_is_refused_and_changes_nothing() {
    let mut s = session();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    s.handle_message(
        T0,
        c,
        AgentMessage::TaskComplete {
            task_id: "t1".into(),
            generation: 9,
            result: serde_json::Value::Null,
            tokens_used: None,
        },
    );
    assert_eq!(
        codes(drain(&mut s)),
        vec![error(c, ErrorCode::StaleGeneration, Some("t1")).unwrap()]
    );
    assert_eq!(
        s.scheduler()
            .queue()
            .get(&TaskId::from("t1"))
            .unwrap()
            .status(),
        Status::Assigned
    );
}

#[test]
fn cancel_answers_404_409_or_cancels_and_tells_the_holder() {
    let mut s = session();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    let cancel = |task_id: &str, stored| Request::Cancel {
        task_id: task_id.into(),
        stored,
    };
    s.handle_request(T0, RequestId::new(2), cancel("t1", Some(Status::Assigned)));
    let out = settle(&mut s);
    assert_eq!(
        out,
        vec![
            send(
                c,
                CoordinatorMessage::TaskCancel {
                    task_id: "t1".into()
                }
            ),
            Output::Reply {
                request: RequestId::new(2),
                answer: Answer::Cancelled
            }
        ]
    );
    for (stored, kind) in [
        (None, RefusalKind::NotFound),
        (Some(Status::Cancelled), RefusalKind::Conflict),
        (Some(Status::Working), RefusalKind::Conflict),
    ] {
        s.handle_request(T0, RequestId::new(3), cancel("t1", stored));
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Reply { answer: Answer::Refused(r), .. }] if r.kind == kind),
            "{stored:?}: {out:?}"
        );
    }
}

fn dead_letter_record() -> Task {
    // A task failed with no retries left, as the store keeps it.
    let mut s = Session::new(
        SessionConfig {
            scheduler: SchedulerConfig::default(),
            ..SessionConfig::default()
        },
        T0,
        Vec::new(),
    )
    .unwrap();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    let task = NewTask::new("d1", "doomed").with_max_retries(0);
    s.handle_request(T0, RequestId::new(1), Request::Submit { tasks: vec![task] });
    settle(&mut s);
    s.handle_message(
        T0,
        c,
        AgentMessage::TaskFailed {
            task_id: "d1".into(),
            generation: 1,
            error: Some("boom".into()),
            reason: None,
        },
    );
    let mut record = None;
    for output in drain(&mut s) {
        if let Output::Persist(batch) = output {
            record = batch.changes.last().map(|c| c.task().clone());
        }
    }
    let record = record.expect("the failure is persisted");
    assert_eq!(record.status(), Status::DeadLetter);
    record
}

/// Asks for a retry of `d1` and answers the session's read with `stored`.
fn retry(s: &mut Session, request: u64, stored: Option<Task>) -> Vec<Output> {
    let request = RequestId::new(request);
    s.handle_request(
        T0,
        request,
        Request::Retry {
            task_id: "d1".into(),
        },
    );
    let mut out = settle(s);
    if out
        == [Output::Load {
            request,
            task_id: "d1".into(),
        }]
    {
        s.handle_loaded(T0, request, Ok(stored));
        out = settle(s);
    }
    out
}

#[test]
fn retry_reads_the_record_after_the_commits_in_flight_and_answers_404_409_or_requeues() {
    let mut s = session();
    let record = dead_letter_record();
    let refused_with = |out: &[Output], kind| matches!(out, [Output::Reply { answer: Answer::Refused(r), .. }] if r.kind == kind);
    assert!(refused_with(&retry(&mut s, 1, None), RefusalKind::NotFound));
    assert_eq!(
        retry(&mut s, 2, Some(record.clone())),
        vec![Output::Reply {
            request: RequestId::new(2),
            answer: Answer::Retried
        }]
    );
    assert_eq!(
        s.scheduler()
            .queue()
            .get(&TaskId::from("d1"))
            .unwrap()
            .status(),
        Status::Queued
    );
    // Live again: a second retry is refused without a read.
    assert!(refused_with(
        &retry(&mut s, 3, Some(record)),
        RefusalKind::Conflict
    ));
}

#[test]
fn a_retry_waits_for_the_commits_before_it_and_excludes_another() {
    let mut s = session();
    submit(&mut s, 1, &["t1"]);
    let Some(Output::Persist(batch)) = poll(&mut s) else {
        panic!()
    };
    let retry = |n| Request::Retry {
        task_id: format!("d{n}"),
    };
    s.handle_request(T0, RequestId::new(2), retry(1));
    assert_eq!(poll(&mut s), None, "the read waits for the batch in flight");
    s.handle_request(T0, RequestId::new(3), retry(1));
    assert_eq!(poll(&mut s), None);
    s.handle_committed(batch.seq);
    let out = drain(&mut s);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(
        out[1],
        Output::Load {
            request: RequestId::new(2),
            task_id: "d1".into()
        }
    );
    assert!(
        matches!(&out[2], Output::Reply { request, answer: Answer::Refused(r) }
            if *request == RequestId::new(3) && r.kind == RefusalKind::Conflict),
        "a second retry of the same task is refused while the first reads: {out:?}"
    );
    s.handle_loaded(T0, RequestId::new(2), Err("disk on fire".into()));
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply { answer: Answer::Refused(r), .. }] if r.kind == RefusalKind::Internal)
    );
}

#[test]
fn an_assignment_reclaimed_before_its_commit_is_not_sent() {
    let mut s = session();
    let (c1, c2) = (ConnId::new(1), ConnId::new(2));
    connect(&mut s, c1, "a1");
    submit(&mut s, 1, &["t1"]);
    let Some(Output::Persist(batch)) = poll(&mut s) else {
        panic!()
    };
    // The agent reconnects before the commit; the task is reclaimed and given
    // to it again at a newer generation.
    s.handle_closed(T0 + 1, c1);
    connect_without_settling(&mut s, c2, "a1");
    s.handle_committed(batch.seq);
    let out = settle(&mut s);
    let sent = assigned(&out);
    assert!(
        sent.iter().all(|(_, _, generation)| *generation != 1),
        "the generation-1 assignment is history: {sent:?}"
    );
}

/// Like [`connect`] but leaves the outputs for the caller.
fn connect_without_settling(s: &mut Session, conn: ConnId, agent: &str) {
    s.handle_opened(T0, conn);
    s.handle_message(T0, conn, identify(agent, "secret"));
    s.handle_identity(T0, conn, Some(Identity::Agent(agent.into())));
}

#[test]
fn token_writes_ride_in_the_batch_and_are_answered_after_it() {
    let mut s = session();
    s.handle_request(
        T0,
        RequestId::new(1),
        Request::RevokeTokens {
            identity: Identity::Agent("a1".into()),
            live_ids: vec![],
            live_admins: 1,
        },
    );
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply { answer: Answer::Refused(r), .. }] if r.kind == RefusalKind::NotFound)
    );
    s.handle_request(
        T0,
        RequestId::new(2),
        Request::RevokeTokens {
            identity: Identity::Agent("a1".into()),
            live_ids: vec![4, 9],
            live_admins: 1,
        },
    );
    let Some(Output::Persist(batch)) = poll(&mut s) else {
        panic!()
    };
    assert_eq!(
        batch.tokens,
        vec![TokenWrite::Revoke {
            ids: vec![4, 9],
            revoked_at_ms: T0
        }]
    );
    assert_eq!(poll(&mut s), None);
    s.handle_committed(batch.seq);
    assert_eq!(
        poll(&mut s),
        Some(Output::Reply {
            request: RequestId::new(2),
            answer: Answer::TokensRevoked(2)
        })
    );
}

#[test]
fn a_failed_commit_is_fatal_and_releases_nothing() {
    let mut s = session();
    submit(&mut s, 1, &["t1"]);
    let Some(Output::Persist(_)) = poll(&mut s) else {
        panic!()
    };
    s.handle_commit_failed("disk full".into());
    assert_eq!(
        drain(&mut s),
        vec![Output::Fatal(Fatal::CommitFailed("disk full".into()))]
    );
    s.handle_committed(1);
    submit(&mut s, 2, &["t2"]);
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_commit_report_from_the_future_is_fatal() {
    let mut s = session();
    s.handle_committed(3);
    assert_eq!(
        drain(&mut s),
        vec![Output::Fatal(Fatal::CommitFromTheFuture {
            reported: 3,
            sent: 0
        })]
    );
}

#[test]
fn the_sweep_timer_purges_and_rearms() {
    let mut s = session();
    let interval = SessionConfig::default().sweep_interval_ms;
    assert_eq!(s.poll_timeout(), Some(T0 + interval));
    s.handle_timeout(T0 + interval);
    let retention = SessionConfig::default().retention_ms;
    assert_eq!(
        drain(&mut s),
        vec![Output::Purge {
            before_ms: T0 + interval - retention
        }]
    );
    assert_eq!(s.poll_timeout(), Some(T0 + 2 * interval));
}

#[test]
fn an_overflowing_socket_is_closed_and_its_task_reclaimed() {
    let mut s = session();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    s.handle_send_overflow(T0 + 1, c);
    let out = drain(&mut s);
    assert_eq!(
        out[0],
        Output::Close {
            conn: c,
            code: CLOSE_POLICY,
            reason: "outbound queue overflow".into()
        }
    );
    assert!(matches!(out.last(), Some(Output::Persist(_))));
    assert_eq!(
        s.scheduler()
            .queue()
            .get(&TaskId::from("t1"))
            .unwrap()
            .status(),
        Status::Queued
    );
}

#[test]
fn shutdown_closes_every_socket_after_the_last_commit() {
    let mut s = session();
    let (c1, c2) = (ConnId::new(1), ConnId::new(2));
    connect(&mut s, c1, "a1");
    connect(&mut s, c2, "a2");
    submit(&mut s, 1, &["t1"]);
    let Some(Output::Persist(batch)) = poll(&mut s) else {
        panic!()
    };
    s.handle_shutdown();
    assert_eq!(poll(&mut s), None);
    assert!(s.awaits_commit());
    s.handle_committed(batch.seq);
    let closes: Vec<ConnId> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::Close {
                conn,
                code: CLOSE_GOING_AWAY,
                ..
            } => Some(conn),
            _ => None,
        })
        .collect();
    assert_eq!(closes, vec![c1, c2]);
    assert!(s.is_settled());
}

#[test]
fn refusals_map_to_stable_wire_codes() {
    let id = || TaskId::from("t");
    let cases = [
        (
            SchedulerError::Task(TaskError::StaleGeneration {
                task_id: id(),
                given: 1,
                current: 2,
            }),
            ErrorCode::StaleGeneration,
        ),
        (
            SchedulerError::Task(TaskError::NotAssigned(id())),
            ErrorCode::NotAssigned,
        ),
        (
            SchedulerError::Task(TaskError::NotFound(id())),
            ErrorCode::NotAssigned,
        ),
        (
            SchedulerError::Task(TaskError::WrongStatus {
                task_id: id(),
                status: Status::Working,
            }),
            ErrorCode::InvalidState,
        ),
        (
            SchedulerError::UnknownAgent(AgentId::from("a")),
            ErrorCode::NotIdentified,
        ),
        (
            SchedulerError::Submit(coordinator_queue::SubmitError::EmptyId),
            ErrorCode::InvalidMessage,
        ),
    ];
    for (err, code) in cases {
        assert_eq!(error_code(&err), code, "{err}");
    }
}

/// The session core stays pure: nothing in its sources reads the clock, touches
/// files, sockets, threads or randomness, uses an async runtime, locks, spawns or
/// exits, or reaches into the I/O rooms of this crate.
#[test]
fn the_session_core_does_no_io() {
    const FORBIDDEN: [&str; 28] = [
        "SystemTime",
        "Instant",
        "std::time",
        "std::env",
        "use std::{",
        "tracing",
        "println!",
        "eprintln!",
        "std::fs",
        "std::net",
        "std::thread",
        "std::process",
        "exit(",
        "tokio",
        "hyper",
        "rusqlite",
        "fastwebsockets",
        "rand::",
        "getrandom",
        "Mutex",
        "RwLock",
        "mpsc",
        "spawn",
        "async ",
        "crate::server",
        "crate::agent",
        "crate::client",
        "coordinator_transport::server",
    ];
    let mut folders = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/session")];
    let mut checked = 0;
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // The tests (`tests.rs` files and the submodules in `tests/`) may do
            // what they like; other folders hold submodules of the core.
            if path
                .file_name()
                .is_some_and(|n| n == "tests.rs" || n == "tests")
            {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for needle in FORBIDDEN {
                    assert!(
                        !code.contains(needle),
                        "{}:{}: uses {needle}",
                        path.display(),
                        n + 1
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "the session's sources were found");
}

#[test]
fn a_late_report_on_a_cancelled_task_is_acknowledged_as_cancelled_and_changes_nothing() {
    let mut s = session();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    s.handle_request(
        T0,
        RequestId::new(2),
        Request::Cancel {
            task_id: "t1".into(),
            stored: Some(Status::Assigned),
        },
    );
    settle(&mut s);
    submit(&mut s, 3, &["t2"]);
    assert!(
        assigned(&settle(&mut s)).is_empty(),
        "no new work during the grace"
    );
    let infos = s.agent_infos();
    assert_eq!(infos[0].flags, vec!["cancelling"]);
    // The agent ignored the cancel and completes anyway.
    s.handle_message(
        T0 + 5,
        c,
        AgentMessage::TaskComplete {
            task_id: "t1".into(),
            generation: 1,
            result: serde_json::Value::Null,
            tokens_used: None,
        },
    );
    let out = settle(&mut s);
    assert_eq!(
        codes(out.clone())[0],
        send(
            c,
            CoordinatorMessage::TaskAck {
                task_id: "t1".into(),
                status: "cancelled".into()
            }
        )
    );
    assert_eq!(
        assigned(&out),
        vec![(c, "t2".to_owned(), 1)],
        "work again after the report"
    );
}

#[test]
fn an_agent_naming_its_current_task_on_identify_has_it_back() {
    let mut s = session();
    let (c1, c2) = (ConnId::new(1), ConnId::new(2));
    connect(&mut s, c1, "a1");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    s.handle_closed(T0 + 1, c1);
    settle(&mut s);
    s.handle_opened(T0, c2);
    let AgentMessage::Identify {
        agent_id,
        token,
        capabilities,
        ..
    } = identify("a1", "secret")
    else {
        unreachable!()
    };
    s.handle_message(
        T0 + 2,
        c2,
        AgentMessage::Identify {
            agent_id,
            token,
            name: None,
            capabilities,
            status: None,
            client_type: None,
            current_task: Some(coordinator_transport::protocol::CurrentTask {
                task_id: "t1".into(),
                generation: 1,
            }),
        },
    );
    let _ = drain(&mut s);
    s.handle_identity(T0 + 2, c2, Some(Identity::Agent("a1".into())));
    let out = codes(settle(&mut s));
    assert_eq!(
        out,
        vec![
            send(
                c2,
                CoordinatorMessage::Identified {
                    agent_id: "a1".into()
                }
            ),
            send(
                c2,
                CoordinatorMessage::TaskContinue {
                    task_id: "t1".into(),
                    generation: 3
                }
            )
        ]
    );
}

/// The committed records of every batch handed out until quiet, and the other outputs.
fn settle_records(s: &mut Session) -> (Vec<Task>, Vec<Output>) {
    let mut records = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut committed = false;
        for output in drain(s) {
            match output {
                Output::Persist(batch) => {
                    records.extend(batch.changes.iter().map(|c| c.task().clone()));
                    s.handle_committed(batch.seq);
                    committed = true;
                }
                other => out.push(other),
            }
        }
        if !committed {
            return (records, out);
        }
    }
}

#[test]
fn an_oversize_close_fails_the_held_task_and_retries_it_on_another_agent() {
    let mut s = session();
    let (c1, c2) = (ConnId::new(1), ConnId::new(2));
    connect(&mut s, c1, "a1");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    connect(&mut s, c2, "a2");
    s.handle_closed_too_large(T0 + 1, c1);
    let (records, out) = settle_records(&mut s);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Notice(_)))
            .collect::<Vec<_>>(),
        [&Output::Notice(Notice::AgentDisconnected {
            agent_id: "a1".into(),
            conn: c1
        })],
        "a counted failure, not a reclaim"
    );
    let failed = &records[0];
    assert_eq!(
        (
            failed.status(),
            failed.retry_count(),
            failed.reclaim_count(),
            failed.last_error()
        ),
        (
            Status::Queued,
            1,
            0,
            Some(coordinator_scheduler::RESULT_TOO_LARGE)
        )
    );
    assert_eq!(assigned(&out), vec![(c2, "t1".to_owned(), 3)]);
    let a1 = s.scheduler().agent(&AgentId::from("a1")).unwrap();
    assert!(!a1.connected);
    assert_eq!(s.agent_of(c1), None);
}

#[test]
fn an_oversize_close_past_max_retries_dead_letters_the_task() {
    let mut s = session();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    let tasks = vec![NewTask::new("t1", "work").with_max_retries(0)];
    s.handle_request(T0, RequestId::new(1), Request::Submit { tasks });
    settle(&mut s);
    s.handle_closed_too_large(T0 + 1, c);
    let (records, out) = settle_records(&mut s);
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].status(),
            records[0].retry_count(),
            records[0].last_error()
        ),
        (
            Status::DeadLetter,
            1,
            Some(coordinator_scheduler::RESULT_TOO_LARGE)
        )
    );
    assert!(assigned(&out).is_empty());
    assert!(s.scheduler().queue().is_empty());
}

#[test]
fn an_oversize_close_of_a_stranger_or_a_replaced_connection_changes_nothing() {
    let mut s = session();
    let (c1, c2, c3) = (ConnId::new(1), ConnId::new(2), ConnId::new(3));
    // Never identified.
    s.handle_opened(T0, c3);
    s.handle_closed_too_large(T0, c3);
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(s.connections().count(), 0);
    // Replaced by a newer connection of the same agent before it closed.
    connect(&mut s, c1, "a1");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    connect(&mut s, c2, "a1");
    let before = s.scheduler().queue().get(&TaskId::from("t1")).cloned();
    s.handle_closed_too_large(T0 + 1, c1);
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(
        s.scheduler().queue().get(&TaskId::from("t1")).cloned(),
        before
    );
    assert_eq!(before.map(|t| t.retry_count()), Some(0));
    // Unknown connections, and twice the same, are ignored.
    s.handle_closed_too_large(T0 + 2, c1);
    s.handle_closed_too_large(T0 + 2, ConnId::new(99));
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn a_submission_whose_deadline_has_passed_is_refused_as_invalid() {
    let mut s = session();
    for (request, by) in [(1, T0 - 1), (2, T0)] {
        let tasks = vec![NewTask::new("t1", "work").with_complete_by(by)];
        s.handle_request(T0, RequestId::new(request), Request::Submit { tasks });
        let out = drain(&mut s);
        let [Output::Reply {
            answer: Answer::Refused(refusal),
            ..
        }] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(refusal.kind, RefusalKind::Invalid);
        assert!(refusal.detail.contains("complete_by"), "{}", refusal.detail);
    }
    // One late task refuses the whole batch.
    let tasks = vec![
        NewTask::new("ok", "work").with_complete_by(T0 + 1),
        NewTask::new("late", "work").with_complete_by(T0 - 5),
    ];
    s.handle_request(T0, RequestId::new(3), Request::Submit { tasks });
    let out = drain(&mut s);
    let [Output::Reply {
        answer: Answer::Refused(refusal),
        ..
    }] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(refusal.kind, RefusalKind::Invalid);
    assert!(refusal.detail.starts_with("task 1: "), "{}", refusal.detail);
    assert!(s.scheduler().queue().is_empty());
}

#[test]
fn revoking_a_token_closes_the_sockets_it_authenticated_after_the_commit() {
    let mut s = session();
    let (c1, c2) = (ConnId::new(1), ConnId::new(2));
    connect(&mut s, c1, "a1");
    connect(&mut s, c2, "a2");
    submit(&mut s, 1, &["t1"]);
    settle(&mut s);
    s.handle_request(
        T0,
        RequestId::new(2),
        Request::RevokeTokens {
            identity: Identity::Agent("a1".into()),
            live_ids: vec![7],
            live_admins: 1,
        },
    );
    let before = drain(&mut s);
    let Some(Output::Persist(batch)) = before.last().cloned() else {
        panic!("the revocation is committed first: {before:?}")
    };
    assert!(
        !before
            .iter()
            .any(|o| matches!(o, Output::Close { .. } | Output::Reply { .. })),
        "nothing leaves before the commit: {before:?}"
    );
    s.handle_committed(batch.seq);
    let out = drain(&mut s);
    let closes: Vec<&Output> = out
        .iter()
        .filter(|o| matches!(o, Output::Close { .. } | Output::Reply { .. }))
        .collect();
    assert_eq!(
        closes,
        vec![
            &Output::Close {
                conn: c1,
                code: CLOSE_POLICY,
                reason: "token_revoked".into()
            },
            &Output::Reply {
                request: RequestId::new(2),
                answer: Answer::TokensRevoked(1)
            }
        ]
    );
    assert_eq!(assigned(&out), vec![(c2, "t1".to_owned(), 3)]);
    // Nothing more is read from it, and its task was reclaimed at once as for a
    // disconnect: it goes to the other agent, in the same commit.
    let _ = out;
    s.handle_message(T0, c1, AgentMessage::Ping {});
    assert_eq!(drain(&mut s), vec![]);
    s.handle_closed(T0 + 1, c1);
    assert!(settle(&mut s).is_empty());
    let task = s.scheduler().queue().get(&TaskId::from("t1")).unwrap();
    assert_eq!(
        (task.assigned_to().map(|a| a.as_str()), task.generation()),
        (Some("a2"), 3)
    );
}

#[test]
fn the_last_admin_token_is_not_revoked_here() {
    let mut s = session();
    s.handle_request(
        T0,
        RequestId::new(1),
        Request::RevokeTokens {
            identity: Identity::Admin("admin".into()),
            live_ids: vec![1],
            live_admins: 1,
        },
    );
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply { answer: Answer::Refused(r), .. }] if r.kind == RefusalKind::Conflict),
        "{out:?}"
    );
}

#[test]
fn a_socket_that_does_not_identify_in_time_is_closed() {
    let mut s = Session::new(
        SessionConfig {
            identify_timeout_ms: 100,
            max_unidentified: 2,
            ..SessionConfig::default()
        },
        T0,
        Vec::new(),
    )
    .unwrap();
    let (c1, c2, c3) = (ConnId::new(1), ConnId::new(2), ConnId::new(3));
    s.handle_opened(T0, c1);
    s.handle_opened(T0 + 10, c2);
    // A third waiting socket is over the limit.
    s.handle_opened(T0 + 20, c3);
    assert_eq!(
        drain(&mut s),
        vec![Output::Close {
            conn: c3,
            code: CLOSE_POLICY,
            reason: "too many connections waiting to identify".into()
        }]
    );
    // c2 identifies in time; c1 does not.
    s.handle_message(T0 + 50, c2, identify("a2", "secret"));
    let _ = drain(&mut s);
    s.handle_identity(T0 + 50, c2, Some(Identity::Agent("a2".into())));
    let _ = settle(&mut s);
    assert_eq!(s.poll_timeout(), Some(T0 + 100));
    s.handle_timeout(T0 + 100);
    assert_eq!(
        drain(&mut s),
        vec![Output::Close {
            conn: c1,
            code: CLOSE_POLICY,
            reason: "identify timeout".into()
        }]
    );
    s.handle_timeout(T0 + 110);
    assert_eq!(drain(&mut s), vec![], "an identified socket stays");
}

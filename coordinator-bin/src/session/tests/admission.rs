//! Admission control (room in the queue, metadata size) and assignments whose
//! texts are read back from storage.

use coordinator_queue::{NewTask, Payload, TaskId};
use coordinator_scheduler::SchedulerConfig;
use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage};

use super::{assigned, connect, drain, settle, submit, T0};
use crate::session::*;

fn admitting(max_queued: usize, max_metadata_bytes: usize) -> Session {
    let config = SessionConfig {
        max_queued,
        max_metadata_bytes,
        ..SessionConfig::default()
    };
    Session::new(config, T0, Vec::new()).unwrap()
}

/// A session whose queue keeps texts of at most 4 bytes in memory.
fn forgetful() -> Session {
    let mut config = SessionConfig::default();
    config.scheduler.queue.max_inline_payload_bytes = 4;
    Session::new(config, T0, Vec::new()).unwrap()
}

fn refusal(outputs: &[Output]) -> Option<&Refusal> {
    outputs.iter().find_map(|o| match o {
        Output::Reply {
            answer: Answer::Refused(r),
            ..
        } => Some(r),
        _ => None,
    })
}

fn refused_for(outputs: &[Output]) -> Vec<&'static str> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Notice(Notice::SubmitRefused { reason }) => Some(*reason),
            _ => None,
        })
        .collect()
}

fn with_metadata(id: &str, metadata: &str) -> NewTask {
    let mut task = NewTask::new(id, "work");
    task.metadata = metadata.to_owned();
    task
}

#[test]
fn metadata_over_the_limit_refuses_the_whole_batch_before_any_other_check() {
    let mut s = admitting(10, 10);
    let tasks = vec![
        with_metadata("a", r#"{"k":1}"#),
        // Invalid too, but the size is checked first.
        NewTask::new("b", " "),
        with_metadata("c", r#"{"k":"long"}"#),
    ];
    s.handle_request(T0, RequestId::new(1), Request::Submit { tasks });
    let out = drain(&mut s);
    let r = refusal(&out).expect("refused");
    assert_eq!(r.kind, RefusalKind::MetadataTooLarge);
    assert_eq!(
        r.detail,
        "task 2: metadata is 12 bytes, over the limit of 10"
    );
    assert_eq!(refused_for(&out), vec!["metadata_too_large"]);
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))));
    assert!(s.scheduler().queue().is_empty());
    // Exactly the limit is fine.
    let tasks = vec![with_metadata("d", r#"{"k":"ab"}"#)];
    s.handle_request(T0, RequestId::new(2), Request::Submit { tasks });
    assert!(refusal(&settle(&mut s)).is_none());
}

#[test]
fn a_full_queue_refuses_whole_batches_until_a_task_leaves_it() {
    let mut s = admitting(3, 1024);
    submit(&mut s, 1, &["t1", "t2"]);
    assert!(refusal(&settle(&mut s)).is_none());
    // Two more do not fit: neither is queued.
    submit(&mut s, 2, &["t3", "t4"]);
    let out = drain(&mut s);
    let r = refusal(&out).expect("refused");
    // Nothing completed in the last minute: the longest wait.
    assert_eq!(r.kind, RefusalKind::QueueFull { retry_after_s: 60 });
    assert!(r.detail.contains("takes at most 3"), "{}", r.detail);
    assert_eq!(refused_for(&out), vec!["queue_full"]);
    assert_eq!(s.scheduler().queue().queued_len(), 2);
    assert!(s.scheduler().queue().get(&TaskId::from("t3")).is_none());
    // One does.
    submit(&mut s, 3, &["t3"]);
    assert!(refusal(&settle(&mut s)).is_none());
    submit(&mut s, 4, &["t4"]);
    assert!(refusal(&settle(&mut s)).is_some());
    // An agent takes one: room again.
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    assert_eq!(s.scheduler().queue().queued_len(), 2);
    submit(&mut s, 5, &["t4"]);
    assert!(refusal(&settle(&mut s)).is_none());
}

#[test]
fn a_retry_from_the_dead_letter_needs_room_in_the_queue_too() {
    let mut s = admitting(1, 1024);
    submit(&mut s, 1, &["t1"]);
    let _ = settle(&mut s);
    s.handle_request(
        T0,
        RequestId::new(2),
        Request::Retry {
            task_id: "dead".into(),
        },
    );
    let out = drain(&mut s);
    assert!(matches!(
        refusal(&out).map(|r| r.kind),
        Some(RefusalKind::QueueFull { .. })
    ));
    assert!(!out.iter().any(|o| matches!(o, Output::Load { .. })));
}

#[test]
fn retry_after_is_how_long_the_completions_of_the_last_minute_take_to_make_room() {
    let mut s = admitting(2, 1024);
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    // 30 completions within the last minute: one every 2 s.
    for i in 0..30 {
        let id = format!("done-{i}");
        submit(&mut s, 100 + i, &[id.as_str()]);
        let out = settle(&mut s);
        let (_, task_id, generation) = assigned(&out)[0].clone();
        s.handle_message(
            T0 + i,
            c,
            AgentMessage::TaskComplete {
                task_id,
                generation,
                result: serde_json::json!({}),
                tokens_used: None,
            },
        );
        let _ = settle(&mut s);
    }
    // The agent is busy from here on; the queue fills.
    submit(&mut s, 1, &["busy"]);
    let _ = settle(&mut s);
    submit(&mut s, 4, &["q1", "q2"]);
    let _ = settle(&mut s);
    assert_eq!(s.scheduler().queue().queued_len(), 2);
    submit(&mut s, 2, &["x1"]);
    let out = drain(&mut s);
    assert_eq!(
        refusal(&out).map(|r| r.kind),
        Some(RefusalKind::QueueFull { retry_after_s: 2 })
    );
    submit(&mut s, 3, &["x1", "x2", "x3"]);
    let out = drain(&mut s);
    assert_eq!(
        refusal(&out).map(|r| r.kind),
        Some(RefusalKind::QueueFull { retry_after_s: 6 })
    );
}

fn long_task(id: &str) -> NewTask {
    let mut task = NewTask::new(id, "a long description");
    task.metadata = r#"{"k":"long"}"#.into();
    task
}

fn texts() -> Result<Option<LoadedPayload>, String> {
    Ok(Some(LoadedPayload {
        description: "a long description".into(),
        metadata: r#"{"k":"long"}"#.into(),
        dependencies: Vec::new(),
    }))
}

#[test]
fn an_assignment_whose_texts_are_in_storage_waits_for_them() {
    let mut s = forgetful();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    s.handle_request(
        T0,
        RequestId::new(1),
        Request::Submit {
            tasks: vec![long_task("t1")],
        },
    );
    let out = settle(&mut s);
    assert!(assigned(&out).is_empty(), "not sent without its texts");
    let t1 = TaskId::from("t1");
    assert!(out.contains(&Output::LoadPayload {
        task_id: t1.clone()
    }));
    assert!(!s.is_settled(), "a read is awaited");
    s.handle_payload_loaded(T0, &t1, texts());
    let out = drain(&mut s);
    let [Output::Send {
        conn,
        frame: Frame::Assign(a),
    }] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*conn, c);
    assert_eq!(a.texts(), Some(("a long description", r#"{"k":"long"}"#)));
    assert!(s.is_settled());
    // The queue still keeps only the lengths.
    let kept = s.scheduler().queue().get(&TaskId::from("t1")).unwrap();
    assert_eq!(*kept.metadata(), Payload::Stored { len: 12 });
}

#[test]
fn frames_for_the_agent_wait_behind_an_assignment_waiting_for_its_texts() {
    let mut s = forgetful();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    s.handle_request(
        T0,
        RequestId::new(1),
        Request::Submit {
            tasks: vec![long_task("t1")],
        },
    );
    let _ = settle(&mut s);
    // Cancelled while its texts are read: task_cancel waits, then goes alone
    // (the assignment is history by then).
    s.handle_request(
        T0 + 1,
        RequestId::new(2),
        Request::Cancel {
            task_id: "t1".into(),
            stored: None,
        },
    );
    let out = settle(&mut s);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Send { .. })),
        "{out:?}"
    );
    s.handle_payload_loaded(T0 + 1, &TaskId::from("t1"), texts());
    assert_eq!(
        drain(&mut s),
        vec![Output::Send {
            conn: c,
            frame: Frame::Message(CoordinatorMessage::TaskCancel {
                task_id: "t1".into()
            })
        }]
    );
    assert!(s.is_settled());
}

/// A session with agent `a1` on `c` and a long task `t1` (max_retries 0)
/// assigned to it, its texts asked for.
fn waiting_for_texts(c: ConnId) -> Session {
    let mut s = forgetful();
    connect(&mut s, c, "a1");
    let mut task = long_task("t1");
    task.max_retries = Some(0);
    s.handle_request(T0, RequestId::new(1), Request::Submit { tasks: vec![task] });
    let out = settle(&mut s);
    assert!(out.contains(&Output::LoadPayload {
        task_id: TaskId::from("t1")
    }));
    s
}

#[test]
fn texts_that_cannot_be_read_fail_the_task_not_the_session() {
    let c = ConnId::new(1);
    let mut s = waiting_for_texts(c);
    s.handle_payload_loaded(T0 + 1, &TaskId::from("t1"), Err("disk on fire".into()));
    let out = settle(&mut s);
    assert!(!s.is_failed());
    assert!(out.contains(&Output::Notice(Notice::AssignUndeliverable {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        error: "disk on fire".into(),
    })));
    assert!(assigned(&out).is_empty());
    // Its one attempt is spent: dead letter, and the agent is free again.
    assert!(s.scheduler().queue().get(&TaskId::from("t1")).is_none());
    assert_eq!(s.agent_infos()[0].state, "idle");
    assert!(s.is_settled());

    // Taken back before the read failed: nothing to fail, nothing to send.
    let mut s = waiting_for_texts(c);
    s.handle_closed(T0 + 1, c);
    let _ = settle(&mut s);
    s.handle_payload_loaded(T0 + 2, &TaskId::from("t1"), Err("disk on fire".into()));
    let out = settle(&mut s);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Notice(Notice::AssignUndeliverable { .. }))),
        "{out:?}"
    );
    assert!(s.scheduler().queue().get(&TaskId::from("t1")).is_some());
    assert!(s.is_settled());
}

#[test]
fn a_store_without_the_record_of_an_assigned_task_stops_the_session() {
    let mut s = waiting_for_texts(ConnId::new(1));
    s.handle_payload_loaded(T0 + 1, &TaskId::from("t1"), Ok(None));
    assert_eq!(
        drain(&mut s),
        vec![Output::Fatal(Fatal::PayloadUnreadable {
            task_id: "t1".into(),
            error: "no stored record".into()
        })]
    );
}

#[test]
fn a_completion_with_a_long_description_leaves_it_to_storage_on_the_dashboard() {
    let mut config = SessionConfig {
        scheduler: SchedulerConfig::default(),
        ..SessionConfig::default()
    };
    config.scheduler.queue.max_inline_payload_bytes = 4;
    let mut s = Session::new(config, T0, Vec::new()).unwrap();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    submit(&mut s, 1, &["t1"]);
    let out = settle(&mut s);
    let (_, task_id, generation) = assigned(&out)[0].clone();
    s.handle_message(
        T0 + 1,
        c,
        AgentMessage::TaskComplete {
            task_id,
            generation,
            result: serde_json::json!({}),
            tokens_used: None,
        },
    );
    s.handle_request(
        T0 + 2,
        RequestId::new(2),
        Request::Submit {
            tasks: vec![long_task("t2")],
        },
    );
    let _ = settle(&mut s);
    s.handle_payload_loaded(T0 + 2, &TaskId::from("t2"), texts());
    let _ = drain(&mut s);
    s.handle_message(
        T0 + 3,
        c,
        AgentMessage::TaskComplete {
            task_id: "t2".into(),
            generation: 1,
            result: serde_json::json!({}),
            tokens_used: None,
        },
    );
    let _ = settle(&mut s);
    let recent = s.dashboard(T0 + 4).recent_completions;
    let descriptions: Vec<(&str, Option<&str>)> = recent
        .iter()
        .map(|c| (c.task_id.as_str(), c.description.as_deref()))
        .collect();
    assert_eq!(descriptions, vec![("t2", None), ("t1", Some("work"))]);
}

//! Tests of events and drains as session outputs: numbered, held by the commit
//! gate, and only about what is committed.

use coordinator_queue::{NewTask, Status, TaskId};
use coordinator_transport::protocol::{AgentMessage, CapabilityEntry};

use crate::session::{
    Answer, ConnId, Event, EventKind, Identity, Output, Refusal, RefusalKind, Request, RequestId,
    Session, SessionConfig,
};

const T0: u64 = 1_700_000_000_000;

fn drain(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// Commits every batch as it comes out; returns the other outputs.
fn settle(s: &mut Session) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        let mut committed = false;
        for output in drain(s) {
            match output {
                Output::Persist(batch) => {
                    s.handle_committed(batch.seq);
                    committed = true;
                }
                other => out.push(other),
            }
        }
        if !committed {
            return out;
        }
    }
}

fn events(outputs: &[Output]) -> Vec<&Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// (kind, name, status-or-state) of each event.
fn summary(outputs: &[Output]) -> Vec<(String, String, String)> {
    events(outputs)
        .into_iter()
        .map(|e| match &e.kind {
            EventKind::Task(t) => (
                format!("task:{}", t.event),
                t.task_id.to_string(),
                t.status.to_string(),
            ),
            EventKind::Agent(a) => (
                format!("agent{}", if a.drained { ":drained" } else { "" }),
                a.agent_id.to_string(),
                a.state.to_owned(),
            ),
        })
        .collect()
}

fn s3(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.to_owned(), b.to_owned(), c.to_owned())
}

fn connect(s: &mut Session, conn: ConnId, agent: &str) -> Vec<Output> {
    s.handle_opened(T0, conn);
    s.handle_message(
        T0,
        conn,
        AgentMessage::Identify {
            agent_id: agent.into(),
            token: "secret".into(),
            name: None,
            capabilities: vec![CapabilityEntry::Name("linux".into())],
            status: None,
            client_type: None,
            current_task: None,
        },
    );
    let _ = drain(s);
    s.handle_identity(T0, conn, Some(Identity::Agent(agent.into())));
    settle(s)
}

fn submit(s: &mut Session, request: u64, id: &str) {
    s.handle_request(
        T0,
        RequestId::new(request),
        Request::Submit {
            tasks: vec![NewTask::new(id, "work")],
        },
    );
}

#[test]
fn events_leave_after_their_commit_numbered_in_order() {
    let mut s = Session::new(SessionConfig::default(), T0, Vec::new()).unwrap();
    let out = connect(&mut s, ConnId::new(1), "a1");
    assert_eq!(summary(&out), [s3("agent", "a1", "idle")]);
    let first_id = events(&out)[0].id;
    assert_eq!(first_id, T0 * crate::session::IDS_PER_MS);

    submit(&mut s, 1, "t1");
    let Some(Output::Persist(batch)) = s.poll_output() else {
        panic!("the submission's batch first")
    };
    assert_eq!(s.poll_output(), None, "no event before the commit");
    s.handle_committed(batch.seq);
    let out = settle(&mut s);
    assert_eq!(
        summary(&out),
        [
            s3("task:submitted", "t1", "queued"),
            s3("task:assigned", "t1", "assigned"),
            s3("agent", "a1", "assigned"),
        ]
    );
    let ids: Vec<u64> = events(&out).iter().map(|e| e.id).collect();
    assert_eq!(ids, [first_id + 1, first_id + 2, first_id + 3]);
    // The events come before the answer and the assignment they report.
    assert!(matches!(out[0], Output::Event(_)));

    // A progress report changes no state: no event.
    s.handle_message(
        T0 + 1,
        ConnId::new(1),
        AgentMessage::TaskAccepted {
            task_id: "t1".into(),
        },
    );
    let out = settle(&mut s);
    assert_eq!(
        summary(&out),
        [
            s3("task:accepted", "t1", "working"),
            s3("agent", "a1", "working")
        ]
    );
    s.handle_message(
        T0 + 2,
        ConnId::new(1),
        AgentMessage::TaskProgress {
            task_id: "t1".into(),
            progress: None,
        },
    );
    assert_eq!(summary(&settle(&mut s)), []);
}

#[test]
fn a_failed_commit_releases_no_event() {
    let mut s = Session::new(SessionConfig::default(), T0, Vec::new()).unwrap();
    submit(&mut s, 1, "t1");
    let Some(Output::Persist(_)) = s.poll_output() else {
        panic!()
    };
    s.handle_commit_failed("disk full".into());
    let out = drain(&mut s);
    assert!(events(&out).is_empty(), "{out:?}");
}

#[test]
fn a_disconnect_shows_the_agent_offline_and_its_task_queued_again() {
    let mut s = Session::new(SessionConfig::default(), T0, Vec::new()).unwrap();
    connect(&mut s, ConnId::new(1), "a1");
    submit(&mut s, 1, "t1");
    settle(&mut s);
    s.handle_closed(T0 + 1, ConnId::new(1));
    let out = settle(&mut s);
    assert_eq!(
        summary(&out),
        [
            s3("task:reclaimed", "t1", "queued"),
            s3("agent", "a1", "offline")
        ]
    );
}

#[test]
fn a_drained_agent_is_offered_nothing_and_its_event_comes_before_the_answer() {
    let mut s = Session::new(SessionConfig::default(), T0, Vec::new()).unwrap();
    connect(&mut s, ConnId::new(1), "a1");
    let drain_request = |drained| Request::Drain {
        agent_id: "a1".into(),
        drained,
    };
    s.handle_request(T0, RequestId::new(1), drain_request(true));
    let out = settle(&mut s);
    assert_eq!(summary(&out), [s3("agent:drained", "a1", "idle")]);
    assert_eq!(
        out.last(),
        Some(&Output::Reply {
            request: RequestId::new(1),
            answer: Answer::Drained {
                drained: true,
                changed: true
            }
        })
    );
    submit(&mut s, 2, "t1");
    let out = settle(&mut s);
    assert_eq!(summary(&out), [s3("task:submitted", "t1", "queued")]);
    assert_eq!(
        s.scheduler()
            .queue()
            .get(&TaskId::from("t1"))
            .map(|t| t.status()),
        Some(Status::Queued)
    );
    // Undrained: the task goes to it at once, after the agent's event.
    s.handle_request(T0, RequestId::new(3), drain_request(false));
    let out = settle(&mut s);
    assert_eq!(
        summary(&out),
        [
            s3("task:assigned", "t1", "assigned"),
            s3("agent", "a1", "assigned")
        ]
    );
    s.handle_request(
        T0,
        RequestId::new(4),
        Request::Drain {
            agent_id: "nobody".into(),
            drained: true,
        },
    );
    assert_eq!(
        settle(&mut s),
        [Output::Reply {
            request: RequestId::new(4),
            answer: Answer::Refused(Refusal {
                kind: RefusalKind::NotFound,
                detail: "no agent with this id has connected since the coordinator started".into()
            })
        }]
    );
}

#[test]
fn the_end_of_a_cancel_grace_shows_the_agent_without_its_flag() {
    let mut s = Session::new(SessionConfig::default(), T0, Vec::new()).unwrap();
    connect(&mut s, ConnId::new(1), "a1");
    submit(&mut s, 1, "t1");
    settle(&mut s);
    s.handle_request(
        T0,
        RequestId::new(2),
        crate::session::Request::Cancel {
            task_id: "t1".into(),
            stored: Some(Status::Assigned),
        },
    );
    let flags_of = |out: &[Output], agent: &str| -> Vec<Vec<&'static str>> {
        events(out)
            .into_iter()
            .filter_map(|e| match &e.kind {
                EventKind::Agent(a) if a.agent_id.as_str() == agent => Some(a.flags.clone()),
                _ => None,
            })
            .collect()
    };
    let out = settle(&mut s);
    assert_eq!(flags_of(&out, "a1"), [vec!["cancelling"]]);
    // The agent never reports; the grace ends on a timer, which names no agent.
    let grace = SessionConfig::default().scheduler.cancel_grace_ms;
    s.handle_timeout(T0 + grace - 1);
    assert_eq!(flags_of(&settle(&mut s), "a1"), Vec::<Vec<&str>>::new());
    s.handle_timeout(T0 + grace);
    assert_eq!(flags_of(&settle(&mut s), "a1"), [Vec::<&str>::new()]);
}

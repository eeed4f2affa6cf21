//! The window of scheduled tasks kept in memory, as the session drives it:
//! far-future tasks leave memory once submitted, are read back after the
//! commits before the read, run on time, and can be cancelled or depended on
//! while only storage holds them.

use coordinator_queue::{QueueConfig, ScheduledLoad, ScheduledPage, ScheduledWindow};

use super::*;

const HOUR_MS: u64 = 3_600_000;

fn windowed() -> Session {
    let config = SessionConfig {
        scheduler: SchedulerConfig::default().with_queue(
            QueueConfig::default().with_scheduled_window(Some(ScheduledWindow::new(HOUR_MS, 100))),
        ),
        ..SessionConfig::default()
    };
    Session::new(config, T0, Vec::new()).unwrap()
}

fn later(id: &str, run_at_ms: u64) -> NewTask {
    NewTask::new(id, "work").with_run_at(run_at_ms)
}

fn in_memory(s: &Session, id: &str) -> bool {
    s.scheduler().queue().get(&TaskId::from(id)).is_some()
}

/// Fires every timer due by `now_ms` and settles.
fn tick(s: &mut Session, now_ms: u64) -> (Vec<Task>, Vec<Output>) {
    s.handle_timeout(now_ms);
    settle_records(s)
}

/// Submits a far-future task and a near one; the far one leaves memory.
fn with_far_and_near(s: &mut Session) -> Task {
    s.handle_request(
        T0,
        RequestId::new(1),
        Request::Submit {
            tasks: vec![later("far", T0 + 3 * HOUR_MS), later("near", T0 + 1_000)],
        },
    );
    let (records, out) = settle_records(s);
    assert!(
        matches!(&out[..], [Output::Reply { answer: Answer::Submitted(r), .. }] if r.len() == 2)
    );
    // Its record is committed; it leaves memory at once.
    assert_eq!(s.poll_timeout(), Some(0));
    let (_, out) = tick(s, T0);
    assert_eq!(out, vec![]);
    assert!(!in_memory(s, "far"));
    assert!(in_memory(s, "near"));
    records
        .into_iter()
        .find(|t| t.id().as_str() == "far")
        .expect("persisted")
}

/// The reads of scheduled tasks among `out`.
fn reads(out: &[Output]) -> Vec<(u64, ScheduledLoad)> {
    out.iter()
        .filter_map(|o| match o {
            Output::LoadScheduled { read, load } => Some((*read, *load)),
            _ => None,
        })
        .collect()
}

fn status_in(records: &[Task], id: &str) -> Option<Status> {
    records
        .iter()
        .rev()
        .find(|t| t.id().as_str() == id)
        .map(|t| t.status())
}

#[test]
fn a_far_future_task_leaves_memory_and_is_read_back_in_time_to_run() {
    let mut s = windowed();
    let far = with_far_and_near(&mut s);
    // The near one runs at its time.
    assert_eq!(s.poll_timeout(), Some(T0 + 1_000));
    let (records, _) = tick(&mut s, T0 + 1_000);
    assert_eq!(status_in(&records, "near"), Some(Status::Queued));
    // The far one is read when it comes within the window: after the commits
    // before the read, one read at a time.
    let due = T0 + 2 * HOUR_MS;
    assert!(s.poll_timeout().is_some_and(|at| at <= due));
    let (_, out) = tick(&mut s, due);
    let load = ScheduledLoad::new((T0 + 3 * HOUR_MS, 0), due + HOUR_MS, 100);
    assert_eq!(reads(&out), vec![(1, load)]);
    assert!(!s.is_settled());
    // A stale or unknown read's answer changes nothing.
    s.handle_scheduled_loaded(due, 7, Ok(ScheduledPage::default()));
    assert!(!in_memory(&s, "far"));
    let page = ScheduledPage {
        tasks: vec![far],
        next: None,
    };
    s.handle_scheduled_loaded(due, 1, Ok(page));
    assert!(in_memory(&s, "far"));
    assert!(s.is_settled());
    assert!(s.poll_timeout().is_some_and(|at| at <= T0 + 3 * HOUR_MS));
    let (records, out) = tick(&mut s, T0 + 3 * HOUR_MS);
    assert_eq!(status_in(&records, "far"), Some(Status::Queued));
    assert!(reads(&out).is_empty());
    // Matched like any task: an agent that connects gets it after `near`.
    let c = ConnId::new(1);
    let out = connect(&mut s, c, "a1");
    assert_eq!(assigned(&out), vec![(c, "near".into(), 1)]);
}

#[test]
fn a_failed_read_is_asked_again_a_second_later() {
    let mut s = windowed();
    with_far_and_near(&mut s);
    let due = T0 + 2 * HOUR_MS;
    let (_, out) = tick(&mut s, due);
    let [(read, load)] = reads(&out)[..] else {
        panic!("a read: {out:?}")
    };
    s.handle_scheduled_loaded(due, read, Err("disk on fire".into()));
    assert_eq!(
        drain(&mut s),
        vec![Output::Notice(Notice::ScheduledLoadFailed {
            error: "disk on fire".into()
        })]
    );
    assert_eq!(s.poll_timeout(), Some(due + 1_000));
    let (_, out) = tick(&mut s, due + 1_000);
    let again = ScheduledLoad::new(load.from, due + 1_000 + HOUR_MS, load.limit);
    assert_eq!(reads(&out), vec![(read + 1, again)]);
}

#[test]
fn a_task_only_storage_holds_is_cancelled_from_its_record() {
    let mut s = windowed();
    let far = with_far_and_near(&mut s);
    let request = RequestId::new(2);
    s.handle_request(
        T0,
        request,
        Request::Cancel {
            task_id: "far".into(),
            stored: Some(Status::Scheduled),
        },
    );
    let out = settle(&mut s);
    assert_eq!(
        out,
        vec![Output::Load {
            request,
            task_id: "far".into()
        }]
    );
    s.handle_loaded(T0, request, Ok(Some(far)));
    let (records, out) = settle_records(&mut s);
    assert_eq!(
        out,
        vec![Output::Reply {
            request,
            answer: Answer::Cancelled
        }]
    );
    assert_eq!(
        records
            .iter()
            .map(|t| (t.id().to_string(), t.status()))
            .collect::<Vec<_>>(),
        vec![("far".to_owned(), Status::Cancelled)]
    );
    assert!(!in_memory(&s, "far"));
}

#[test]
fn a_cancel_whose_task_ended_while_its_record_was_read_is_refused() {
    let mut s = windowed();
    let c = ConnId::new(1);
    connect(&mut s, c, "a1");
    let far = with_far_and_near(&mut s);
    // Read back and released while the cancel's read runs.
    let due = T0 + 3 * HOUR_MS;
    let (_, out) = tick(&mut s, due - HOUR_MS);
    let [(read, _)] = reads(&out)[..] else {
        panic!("a read: {out:?}")
    };
    let request = RequestId::new(2);
    s.handle_request(
        due - HOUR_MS,
        request,
        Request::Cancel {
            task_id: "far".into(),
            stored: Some(Status::Scheduled),
        },
    );
    settle(&mut s);
    s.handle_scheduled_loaded(
        due - HOUR_MS,
        read,
        Ok(ScheduledPage {
            tasks: vec![far.clone()],
            next: None,
        }),
    );
    // near ran and completed earlier; far is assigned at its time, completed.
    tick(&mut s, T0 + 1_000);
    s.handle_message(
        due,
        c,
        AgentMessage::TaskComplete {
            task_id: "near".into(),
            generation: 1,
            result: serde_json::json!({}),
            tokens_used: None,
        },
    );
    settle(&mut s);
    tick(&mut s, due);
    s.handle_message(
        due,
        c,
        AgentMessage::TaskComplete {
            task_id: "far".into(),
            generation: 1,
            result: serde_json::json!({}),
            tokens_used: None,
        },
    );
    settle(&mut s);
    assert!(!in_memory(&s, "far"));
    // The record read before says scheduled: stale.
    s.handle_loaded(due, request, Ok(Some(far)));
    let (records, out) = settle_records(&mut s);
    assert!(records.is_empty(), "{records:?}");
    assert!(
        matches!(&out[..], [Output::Reply { answer: Answer::Refused(r), .. }] if r.kind == RefusalKind::Conflict),
        "{out:?}"
    );
}

#[test]
fn a_dependency_only_storage_holds_counts_as_live() {
    let mut s = windowed();
    with_far_and_near(&mut s);
    let after = NewTask::new("after", "work").with_depends_on(["far"]);
    s.handle_request(
        T0,
        RequestId::new(2),
        Request::Submit { tasks: vec![after] },
    );
    let out = settle(&mut s);
    let Some(Output::Lookup {
        request,
        dependencies,
        ..
    }) = out.first().cloned()
    else {
        panic!("a lookup: {out:?}")
    };
    assert_eq!(dependencies, vec!["far".to_owned()]);
    let lookup = Lookup {
        statuses: vec![("far".into(), Some(Status::Scheduled))],
        keyed: Vec::new(),
    };
    s.handle_looked_up(T0, request, Ok(lookup));
    let out = settle(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply { answer: Answer::Submitted(r), .. }] if r[0].status == "waiting"),
        "{out:?}"
    );
}

//! Tests of resumes, filters, the SSE text and the hub.

use std::collections::VecDeque;
use std::sync::Arc;

use coordinator_queue::{AgentId, Capabilities, Priority, Status, TaskId};

use super::*;
use crate::session::{AgentEvent, Event, EventKind, TaskEvent};

fn task_event(id: u64, task: &str, status: Status, agent: Option<&str>) -> Event {
    Event {
        id,
        kind: EventKind::Task(TaskEvent {
            task_id: TaskId::from(task),
            event: "assigned",
            status,
            priority: Priority::Normal,
            generation: 1,
            assigned_to: agent.map(AgentId::from),
            agent_id: agent.map(AgentId::from),
            retry_count: 0,
            last_error: None,
            description: Some(Arc::from("line one\nline two")),
            needed_capabilities: Capabilities::default(),
            updated_at_ms: 5,
        }),
    }
}

fn agent_event(id: u64, agent: &str) -> Event {
    Event {
        id,
        kind: EventKind::Agent(AgentEvent {
            agent_id: AgentId::from(agent),
            state: "idle",
            connected: true,
            current_task: None,
            generation: None,
            drained: true,
            flags: vec![],
            state_since_ms: 3,
        }),
    }
}

fn window(ids: std::ops::RangeInclusive<u64>) -> VecDeque<Arc<Event>> {
    ids.map(|i| Arc::new(agent_event(i, "a"))).collect()
}

fn ids(resume: Resume) -> Option<Vec<u64>> {
    match resume {
        Resume::Replay(events) => Some(events.iter().map(|e| e.id).collect()),
        Resume::Reset => None,
    }
}

#[test]
fn a_resume_replays_what_was_missed_or_resets() {
    let w = window(10..=14);
    assert_eq!(ids(resume(&w, Some(14), None)), Some(vec![]));
    assert_eq!(ids(resume(&w, Some(14), Some(14))), Some(vec![]));
    assert_eq!(ids(resume(&w, Some(14), Some(11))), Some(vec![12, 13, 14]));
    // The one just before the window: nothing missed beyond it.
    assert_eq!(
        ids(resume(&w, Some(14), Some(9))),
        Some(vec![10, 11, 12, 13, 14])
    );
    // Older: events fell out of the window.
    assert_eq!(ids(resume(&w, Some(14), Some(8))), None);
    // From the future (another run).
    assert_eq!(ids(resume(&w, Some(14), Some(15))), None);
    // Nothing published by this run yet.
    assert_eq!(ids(resume(&VecDeque::new(), None, Some(3))), None);
    assert_eq!(ids(resume(&VecDeque::new(), None, None)), Some(vec![]));
}

#[test]
fn filters_combine_and_agent_events_pass_only_agent_filters() {
    let t = task_event(1, "t1", Status::Working, Some("a1"));
    let a = agent_event(2, "a1");
    let all = Filter::default();
    assert!(all.admits(&t) && all.admits(&a));
    let by_task = Filter {
        task_id: Some("t1".into()),
        ..Filter::default()
    };
    assert!(by_task.admits(&t) && !by_task.admits(&a));
    assert!(!by_task.admits(&task_event(3, "t2", Status::Working, None)));
    let by_status = Filter {
        statuses: vec![Status::Completed, Status::Working],
        ..Filter::default()
    };
    assert!(by_status.admits(&t) && !by_status.admits(&a));
    assert!(!by_status.admits(&task_event(3, "t1", Status::Queued, None)));
    let by_agent = Filter {
        agent_id: Some("a1".into()),
        ..Filter::default()
    };
    assert!(by_agent.admits(&t) && by_agent.admits(&a));
    assert!(!by_agent.admits(&agent_event(4, "a2")));
    assert!(!by_agent.admits(&task_event(5, "t1", Status::Queued, None)));
    let both = Filter {
        task_id: Some("t1".into()),
        agent_id: Some("a2".into()),
        ..Filter::default()
    };
    assert!(!both.admits(&t));
}

#[test]
fn sse_text_is_one_data_line_with_the_id() {
    let text = sse_text(&task_event(42, "t1", Status::Working, Some("a1")));
    let lines: Vec<&str> = text.trim_end().lines().collect();
    assert_eq!(lines[0], "id: 42");
    assert_eq!(lines[1], "event: task");
    assert!(lines[2].starts_with("data: {"));
    assert_eq!(lines.len(), 3, "{text}");
    assert!(text.ends_with("\n\n"));
    let data: serde_json::Value = serde_json::from_str(&lines[2][6..]).unwrap();
    assert_eq!(data["status"], "working");
    assert_eq!(data["agent_id"], "a1");
    assert_eq!(data["description"], "line one\nline two");
    let (kind, agent) = event_json(&agent_event(7, "a9"));
    assert_eq!(
        (kind, &agent["drained"]),
        ("agent", &serde_json::json!(true))
    );
}

#[test]
fn the_hub_keeps_a_bounded_window_and_drops_laggards() {
    let hub = EventHub::new(3, 2);
    let mut early = hub.subscribe(None);
    assert_eq!(early.resume, Resume::Replay(vec![]));
    for id in 1..=5 {
        hub.publish(agent_event(id, "a"));
    }
    // The window holds 3..=5: a resume after 2 replays them, after 1 resets.
    assert_eq!(ids(hub.subscribe(Some(2)).resume), Some(vec![3, 4, 5]));
    assert_eq!(ids(hub.subscribe(Some(1)).resume), None);
    // The early watcher read nothing: it lagged past the channel's bound.
    let live = early.live.as_mut().unwrap();
    assert!(matches!(
        live.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))
    ));
    // Closing ends every live channel.
    let mut late = hub.subscribe(Some(5));
    hub.close();
    assert!(matches!(
        late.live.as_mut().unwrap().try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Closed)
    ));
    assert!(hub.subscribe(None).live.is_none());
}

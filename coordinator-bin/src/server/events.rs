//! The event fan-out behind `GET /api/events`: the driver publishes each
//! [`Event`] the session releases (so only committed ones); watchers get them
//! through a bounded in-memory window (for `Last-Event-ID` resumes) and a
//! bounded broadcast channel (a watcher that falls behind it is dropped with a
//! final `dropped` event, never buffered without bound).
//!
//! The choices a watcher's stream makes (resume or reset, which events pass
//! its filter, the SSE text) are plain functions here, tested beside.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use coordinator_queue::Status;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::session::{Event, EventKind};

/// Events kept for resumes.
pub const WINDOW: usize = 10_000;

/// Events a watcher may fall behind the newest before it is dropped.
pub const LAG_LIMIT: usize = 4_096;

/// Characters of a task's description an event carries.
const DESCRIPTION_CHARS: usize = 120;

/// The events a watcher asked for (`task_id`, `status`, `agent_id`; all given
/// must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this task's events.
    pub task_id: Option<String>,
    /// Only task events with one of these statuses.
    pub statuses: Vec<Status>,
    /// Only this agent's events and events of tasks it holds or held last.
    pub agent_id: Option<String>,
}

impl Filter {
    /// Whether `event` passes.
    pub fn admits(&self, event: &Event) -> bool {
        match &event.kind {
            EventKind::Task(t) => {
                self.task_id
                    .as_deref()
                    .is_none_or(|id| t.task_id.as_str() == id)
                    && (self.statuses.is_empty() || self.statuses.contains(&t.status))
                    && self
                        .agent_id
                        .as_deref()
                        .is_none_or(|id| t.agent_id.as_ref().is_some_and(|a| a.as_str() == id))
            }
            EventKind::Agent(a) => {
                self.task_id.is_none()
                    && self.statuses.is_empty()
                    && self
                        .agent_id
                        .as_deref()
                        .is_none_or(|id| a.agent_id.as_str() == id)
            }
        }
    }
}

/// Where a new watcher starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// These events (possibly none), then live ones.
    Replay(Vec<Arc<Event>>),
    /// It missed events the window no longer holds (or its id is from another
    /// run): a `reset` event, then live ones.
    Reset,
}

/// What a watcher that last saw `last_id` (from `Last-Event-ID`) must get
/// first, given the window (oldest first) and the newest id published.
pub fn resume(window: &VecDeque<Arc<Event>>, newest: Option<u64>, last_id: Option<u64>) -> Resume {
    let Some(last) = last_id else {
        return Resume::Replay(Vec::new());
    };
    let Some(newest) = newest else {
        // Nothing published by this run: the id is from an earlier one.
        return Resume::Reset;
    };
    if last > newest {
        return Resume::Reset;
    }
    let oldest = window.front().map_or(newest + 1, |e| e.id);
    if last.saturating_add(1) < oldest {
        return Resume::Reset;
    }
    Resume::Replay(window.iter().filter(|e| e.id > last).cloned().collect())
}

/// One event as SSE text: `id`, `event` (`task` or `agent`) and one `data` line
/// of JSON.
pub fn sse_text(event: &Event) -> String {
    let (kind, data) = event_json(event);
    format!("id: {}\nevent: {kind}\ndata: {data}\n\n", event.id)
}

/// A control event without an id (`reset`, `dropped`).
pub fn sse_control(kind: &str, data: &Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

/// The event's name and JSON body.
pub fn event_json(event: &Event) -> (&'static str, Value) {
    match &event.kind {
        EventKind::Task(t) => (
            "task",
            json!({
                "id": event.id,
                "type": "task",
                "event": t.event,
                "task_id": t.task_id.as_str(),
                "status": t.status.as_str(),
                "priority": t.priority.as_str(),
                "generation": t.generation,
                "assigned_to": t.assigned_to.as_ref().map(|a| a.as_str()),
                "agent_id": t.agent_id.as_ref().map(|a| a.as_str()),
                "retry_count": t.retry_count,
                "last_error": t.last_error.as_deref(),
                "description": t.description.as_deref().map(|d| d.chars().take(DESCRIPTION_CHARS).collect::<String>()),
                "needed_capabilities": &*t.needed_capabilities,
                "at": t.updated_at_ms,
            }),
        ),
        EventKind::Agent(a) => (
            "agent",
            json!({
                "id": event.id,
                "type": "agent",
                "agent_id": a.agent_id.as_str(),
                "state": a.state,
                "connected": a.connected,
                "current_task": a.current_task.as_ref().map(|t| t.as_str()),
                "generation": a.generation,
                "drained": a.drained,
                "flags": a.flags,
                "state_since": a.state_since_ms,
            }),
        ),
    }
}

#[derive(Debug)]
struct Window {
    events: VecDeque<Arc<Event>>,
    newest: Option<u64>,
    /// `None` once the service stops: watchers' streams end.
    live: Option<broadcast::Sender<Arc<Event>>>,
}

/// Published events for watchers: the window and the live channel.
#[derive(Debug)]
pub struct EventHub {
    window: Mutex<Window>,
    capacity: usize,
}

/// A watcher's start: what to send first, and the live events after it.
#[derive(Debug)]
pub struct Subscription {
    /// What to send first.
    pub resume: Resume,
    /// The live events, from right after the window's newest; `None` when the
    /// service is stopping.
    pub live: Option<broadcast::Receiver<Arc<Event>>>,
}

impl EventHub {
    /// A hub keeping `capacity` events for resumes and letting a watcher fall
    /// `lag_limit` events behind.
    pub fn new(capacity: usize, lag_limit: usize) -> EventHub {
        let (live, _) = broadcast::channel(lag_limit.max(1));
        EventHub {
            window: Mutex::new(Window {
                events: VecDeque::with_capacity(capacity.min(1024)),
                newest: None,
                live: Some(live),
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a committed event (ids must grow).
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        let mut window = self.lock();
        debug_assert!(window.newest.is_none_or(|n| n < event.id));
        window.newest = Some(event.id);
        if window.events.len() == self.capacity {
            window.events.pop_front();
        }
        window.events.push_back(event.clone());
        if let Some(live) = &window.live {
            // No watcher is fine.
            let _ = live.send(event);
        }
    }

    /// A new watcher that last saw `last_id`: the replay and the live channel
    /// are taken under one lock, so nothing falls between them.
    pub fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        let window = self.lock();
        Subscription {
            resume: resume(&window.events, window.newest, last_id),
            live: window.live.as_ref().map(broadcast::Sender::subscribe),
        }
    }

    /// The service stops: every watcher's stream ends.
    pub fn close(&self) {
        self.lock().live = None;
    }
}

#[cfg(test)]
mod tests;

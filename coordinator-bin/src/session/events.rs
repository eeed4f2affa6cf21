//! Events for watchers (`GET /api/events`): every task change and every agent
//! change as one numbered [`Event`], held by the commit gate like every other
//! output, so that no watcher ever sees a state that is not on disk.
//!
//! Task events come from the records staged for a commit (one per record with
//! a history entry; progress touches are not events). Agent events come from
//! comparing what a watcher was last shown of an agent with its state now, for
//! the agents an input touched (after a timer, those the scheduler lists as
//! changed by it), so one input costs O(agents it touched).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use coordinator_queue::{AgentId, Capabilities, Change, Payload, Priority, Status, TaskId};

use super::views::agent_flags;
use super::{Held, Output, Session};

/// How many event ids one millisecond of the session's start time is worth: ids
/// start at `started_ms * IDS_PER_MS`, so the ids of a later run are above those
/// of an earlier one unless that run made more than this many events per
/// millisecond it lived.
pub const IDS_PER_MS: u64 = 1_000;

/// One event, numbered in the order it leaves the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increasing id (the SSE `id:`).
    pub id: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A task's committed record changed.
    Task(TaskEvent),
    /// An agent's state, connection, task, drain or flags changed.
    Agent(AgentEvent),
}

/// A task's new state, as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// The task.
    pub task_id: TaskId,
    /// The history entry of the change (`submitted`, `assigned`, `completed`, ...).
    pub event: &'static str,
    /// Its status now.
    pub status: Status,
    /// Its lane.
    pub priority: Priority,
    /// Its generation now.
    pub generation: u64,
    /// Who holds it now.
    pub assigned_to: Option<AgentId>,
    /// The agent the change concerns: the holder, or the last one assigned.
    pub agent_id: Option<AgentId>,
    /// Failures counted so far.
    pub retry_count: u32,
    /// The last failure's text.
    pub last_error: Option<Box<str>>,
    /// What to do (shortened when encoded); `None` when the description is long
    /// and only storage holds it.
    pub description: Option<Arc<str>>,
    /// Capabilities it needs.
    pub needed_capabilities: Capabilities,
    /// Time of the change.
    pub updated_at_ms: u64,
}

/// What a watcher sees of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEvent {
    /// The agent.
    pub agent_id: AgentId,
    /// `offline`, `idle`, `assigned`, `working`, `blocked`.
    pub state: &'static str,
    /// Whether a connection speaks for it.
    pub connected: bool,
    /// The task it holds.
    pub current_task: Option<TaskId>,
    /// That task's generation.
    pub generation: Option<u64>,
    /// Drained by an operator.
    pub drained: bool,
    /// `unresponsive`, `cancelling`.
    pub flags: Vec<&'static str>,
    /// Since when it is in its state.
    pub state_since_ms: u64,
}

/// The session's bookkeeping of events.
#[derive(Debug)]
pub(crate) struct EventLog {
    next_id: u64,
    /// Agents an input touched since the last flush (ordered: same order every run).
    touched: BTreeSet<AgentId>,
    /// What watchers were last shown of each agent.
    shown: HashMap<AgentId, AgentEvent>,
}

impl EventLog {
    pub(crate) fn new(started_ms: u64) -> EventLog {
        EventLog {
            next_id: started_ms.saturating_mul(IDS_PER_MS).max(1),
            touched: BTreeSet::new(),
            shown: HashMap::new(),
        }
    }

    fn number(&mut self, kind: EventKind) -> Event {
        let id = self.next_id;
        self.next_id += 1;
        Event { id, kind }
    }
}

impl Session {
    /// The event of a record about to be staged (`None` for a progress touch);
    /// the caller holds it right after staging the record.
    pub(super) fn task_event(&mut self, change: &Change) -> Option<Event> {
        let entry = change.recorded_event()?;
        let task = change.task();
        let assigned_to = task.assigned_to().cloned();
        let agent_id = assigned_to
            .clone()
            .or_else(|| task.last_assignment().map(|(a, _)| AgentId::from(a)));
        if let Some(agent) = &agent_id {
            self.events.touched.insert(agent.clone());
        }
        let event = self.events.number(EventKind::Task(TaskEvent {
            task_id: task.id().clone(),
            event: entry.event.as_str(),
            status: task.status(),
            priority: task.priority(),
            generation: task.generation(),
            assigned_to,
            agent_id,
            retry_count: task.retry_count(),
            last_error: task.last_error().map(Into::into),
            description: match &task.description() {
                Payload::Inline(text) => Some(text.clone()),
                Payload::Stored { .. } => None,
            },
            needed_capabilities: task.needed_capabilities().clone(),
            updated_at_ms: task.updated_at_ms(),
        }));
        Some(event)
    }

    /// The agent may have changed: compared at the next flush.
    pub(super) fn touch_agent(&mut self, agent_id: &AgentId) {
        self.events.touched.insert(agent_id.clone());
    }

    /// Holds an event for every touched agent that looks different now from
    /// what watchers were last shown.
    pub(super) fn flush_agent_events(&mut self) {
        while let Some(agent_id) = self.events.touched.pop_first() {
            let Some(now) = self.agent_event(&agent_id) else {
                continue;
            };
            if self.events.shown.get(&agent_id) == Some(&now) {
                continue;
            }
            self.events.shown.insert(agent_id, now.clone());
            let event = self.events.number(EventKind::Agent(now));
            self.gate.hold(Held::Out(Output::Event(event)));
        }
    }

    fn agent_event(&self, agent_id: &AgentId) -> Option<AgentEvent> {
        let view = self.scheduler.agent(agent_id)?;
        let agent = view.agent;
        Some(AgentEvent {
            agent_id: agent_id.clone(),
            state: agent.state().as_str(),
            connected: view.connected,
            current_task: agent.task().map(|h| h.task_id.clone()),
            generation: agent.task().map(|h| h.generation),
            drained: view.drained,
            flags: agent_flags(&view),
            state_since_ms: agent.state_since_ms(),
        })
    }
}

#[cfg(test)]
mod tests;

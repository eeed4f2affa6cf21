//! What the API shows of the live state: agents, recent completions, throughput.

use std::collections::VecDeque;

use coordinator_queue::Task;
use coordinator_scheduler::{AgentView, Unroutable};

use super::operators::{AgentTally, MinuteSample};

/// What an agent looks like to the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent id.
    pub agent_id: String,
    /// Display name from identify.
    pub name: Option<String>,
    /// `offline`, `idle`, `assigned`, `working`, `blocked`.
    pub state: &'static str,
    /// Whether a connection speaks for it.
    pub connected: bool,
    /// The task it holds.
    pub current_task: Option<String>,
    /// That task's generation.
    pub generation: Option<u64>,
    /// Declared capabilities.
    pub capabilities: Vec<String>,
    /// Flags (`unresponsive`; `cancelling` while a cancelled task's report is awaited).
    pub flags: Vec<&'static str>,
    /// Since when it is in its state.
    pub state_since_ms: u64,
    /// Tasks it held before a restart or reconnect, not yet recovered.
    pub awaiting_recovery: usize,
    /// Drained by an operator: no new work.
    pub drained: bool,
    /// Its work since the coordinator started.
    pub tally: AgentTally,
}

/// A completion shown on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentCompletion {
    /// The task.
    pub task_id: String,
    /// The first 120 characters of its description; `None` when the
    /// description is long and only storage holds it (the shell reads it there).
    pub description: Option<String>,
    /// Who completed it.
    pub agent_id: Option<String>,
    /// From assignment to completion.
    pub duration_ms: u64,
    /// Tokens reported.
    pub tokens_used: Option<u64>,
    /// When.
    pub completed_at_ms: u64,
}

/// The dashboard's one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSnapshot {
    /// Time of the snapshot.
    pub now_ms: u64,
    /// Since the session started.
    pub uptime_ms: u64,
    /// Queued tasks per lane, urgent first.
    pub queue_depth: [usize; 4],
    /// Live tasks that are queued, assigned, working.
    pub queued: usize,
    /// Held, not yet accepted.
    pub assigned: usize,
    /// Accepted.
    pub working: usize,
    /// Every known agent.
    pub agents: Vec<AgentInfo>,
    /// Newest first.
    pub recent_completions: Vec<RecentCompletion>,
    /// Completions over the last 60 seconds.
    pub completed_last_minute: u64,
    /// Queued tasks no connected, undrained agent can take, by capability set.
    pub unroutable: Vec<Unroutable>,
    /// The last hour, one sample per minute, oldest first.
    pub chart: Vec<MinuteSample>,
}

/// How many recent completions the dashboard shows.
const RECENT: usize = 20;

/// Recent completions and completions per second over the last minute.
#[derive(Debug)]
pub(crate) struct Activity {
    recent: VecDeque<RecentCompletion>,
    /// A ring of one-second buckets: (second, completions in it).
    buckets: [(u64, u64); 60],
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            recent: VecDeque::with_capacity(RECENT),
            buckets: [(0, 0); 60],
        }
    }

    /// A task completed (its final record).
    pub(crate) fn note_completion(&mut self, task: &Task) {
        let second = task.updated_at_ms() / 1000;
        let slot = &mut self.buckets[(second % 60) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_back();
        }
        self.recent.push_front(RecentCompletion {
            task_id: task.id().to_string(),
            description: task
                .description()
                .as_inline()
                .map(|d| d.chars().take(120).collect()),
            agent_id: task.assigned_to().map(|a| a.to_string()),
            duration_ms: task
                .updated_at_ms()
                .saturating_sub(task.assigned_at_ms().unwrap_or(task.created_at_ms())),
            tokens_used: task.tokens_used(),
            completed_at_ms: task.updated_at_ms(),
        });
    }

    pub(crate) fn recent(&self) -> Vec<RecentCompletion> {
        self.recent.iter().cloned().collect()
    }

    pub(crate) fn last_minute(&self, now_ms: u64) -> u64 {
        let second = now_ms / 1000;
        self.buckets
            .iter()
            .filter(|(s, _)| *s + 60 > second && *s <= second)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The flags shown for an agent (in its card and its events): `unresponsive`
/// after a missed acceptance, `cancelling` while a cancel awaits its report.
pub(crate) fn agent_flags(view: &AgentView<'_>) -> Vec<&'static str> {
    [
        view.agent.is_unresponsive().then_some("unresponsive"),
        view.cancelling.is_some().then_some("cancelling"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

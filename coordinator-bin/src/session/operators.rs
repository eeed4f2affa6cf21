//! What operators act on and look at beyond single tasks: draining agents,
//! per-agent tallies, unroutable tasks, and the last hour of throughput and
//! queue depth per minute (all since the session started; nothing here is
//! persisted).

use std::collections::{HashMap, VecDeque};

use coordinator_queue::{AgentId, Change, HistoryEvent, Status};
use coordinator_scheduler::SchedulerError;

use super::api::{Answer, Refusal, RefusalKind};
use super::{Held, Output, RequestId, Session};

/// Minutes the charts cover.
pub const CHART_MINUTES: usize = 60;

/// One agent's work since the session started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentTally {
    /// Tasks it completed.
    pub completed: u64,
    /// Failures of its tasks (reported, overdue or result too large).
    pub failed: u64,
    /// Sum of assignment-to-completion times of its completed tasks.
    pub busy_ms: u64,
}

impl AgentTally {
    /// Mean assignment-to-completion time of its completed tasks.
    pub fn mean_duration_ms(&self) -> Option<u64> {
        self.busy_ms.checked_div(self.completed)
    }
}

/// One minute of the charts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteSample {
    /// Start of the minute, ms since the epoch.
    pub minute_ms: u64,
    /// Tasks completed in it.
    pub completed: u64,
    /// Failures in it.
    pub failed: u64,
    /// Queued tasks per lane (urgent first) at its last change.
    pub queue_depth: [usize; 4],
}

/// Tallies and per-minute samples, fed from the records staged.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    agents: HashMap<AgentId, AgentTally>,
    minutes: VecDeque<MinuteSample>,
}

impl Tallies {
    /// Notes a staged record; `depth` is the queue depth by lane after it.
    pub(crate) fn note(&mut self, change: &Change, depth: [usize; 4]) {
        let Some(entry) = change.recorded_event() else {
            return;
        };
        let task = change.task();
        let at_ms = entry.timestamp_ms;
        let minute_ms = at_ms - at_ms % 60_000;
        if self.minutes.back().is_none_or(|m| m.minute_ms < minute_ms) {
            self.minutes.push_back(MinuteSample {
                minute_ms,
                ..MinuteSample::default()
            });
            while self.minutes.len() > CHART_MINUTES {
                self.minutes.pop_front();
            }
        }
        let agent = task
            .assigned_to()
            .cloned()
            .or_else(|| task.last_assignment().map(|(a, _)| AgentId::from(a)));
        let completed =
            entry.event == HistoryEvent::Completed && task.status() == Status::Completed;
        let failed = matches!(
            entry.event,
            HistoryEvent::Retried | HistoryEvent::DeadLettered
        ) && task.last_error() != Some(coordinator_queue::TOO_MANY_RECLAIMS);
        if let Some(sample) = self.minutes.back_mut() {
            sample.queue_depth = depth;
            sample.completed += u64::from(completed);
            sample.failed += u64::from(failed);
        }
        if let Some(agent) = agent.filter(|_| completed || failed) {
            let tally = self.agents.entry(agent).or_default();
            if completed {
                tally.completed += 1;
                tally.busy_ms += at_ms.saturating_sub(task.assigned_at_ms().unwrap_or(at_ms));
            } else {
                tally.failed += 1;
            }
        }
    }

    /// One agent's tally.
    pub(crate) fn agent(&self, agent_id: &str) -> AgentTally {
        self.agents.get(agent_id).copied().unwrap_or_default()
    }

    /// The last [`CHART_MINUTES`] minutes up to `now_ms`, oldest first, one sample
    /// per minute (a minute without changes has no completions and the depth of
    /// the one before).
    pub(crate) fn chart(&self, now_ms: u64, depth_now: [usize; 4]) -> Vec<MinuteSample> {
        let this_minute = now_ms - now_ms % 60_000;
        let first = this_minute.saturating_sub((CHART_MINUTES as u64 - 1) * 60_000);
        let mut known = self.minutes.iter().peekable();
        // The depth before the window: the last sample older than it.
        let mut depth = [0; 4];
        while let Some(m) = known.next_if(|m| m.minute_ms < first) {
            depth = m.queue_depth;
        }
        let mut out = Vec::with_capacity(CHART_MINUTES);
        let mut minute_ms = first;
        while minute_ms <= this_minute {
            match known.next_if(|m| m.minute_ms == minute_ms) {
                Some(m) => {
                    depth = m.queue_depth;
                    out.push(*m);
                }
                None => out.push(MinuteSample {
                    minute_ms,
                    completed: 0,
                    failed: 0,
                    queue_depth: depth,
                }),
            }
            minute_ms += 60_000;
        }
        if let Some(last) = out.last_mut() {
            last.queue_depth = depth_now;
        }
        out
    }
}

impl Session {
    /// Drains (`drained`) or undrains an agent: answered once everything before
    /// it is committed, with the agent's event before the answer.
    pub(super) fn drain(&mut self, now_ms: u64, request: RequestId, agent_id: &str, drained: bool) {
        let id = AgentId::from(agent_id);
        let answer = match self.scheduler.handle_drain(now_ms, &id, drained) {
            Ok(changed) => {
                self.touch_agent(&id);
                Answer::Drained { drained, changed }
            }
            Err(SchedulerError::UnknownAgent(_)) => Answer::Refused(Refusal::new(
                RefusalKind::NotFound,
                "no agent with this id has connected since the coordinator started",
            )),
            Err(e) => Answer::Refused(Refusal::new(RefusalKind::Conflict, e.to_string())),
        };
        self.drain_scheduler();
        self.gate.hold(Held::Out(Output::Reply { request, answer }));
    }
}

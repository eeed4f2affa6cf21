//! Messages the shell must send once the records they depend on are committed.

use coordinator_queue::{AgentId, Payload, ReclaimReason, TaskId};

/// A task pushed to an agent (`task_assign` on the wire).
///
/// Its description and metadata are the queue's: a long text is
/// [`Payload::Stored`], and the shell must read it back from storage before the
/// message can be written (see [`Assignment::texts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Assignment {
    /// Who gets it.
    pub agent_id: AgentId,
    /// The task.
    pub task_id: TaskId,
    /// The fencing token the agent must echo.
    pub generation: u64,
    /// When it was assigned.
    pub assigned_at_ms: u64,
    /// What to do.
    pub description: Payload,
    /// Opaque JSON object text.
    pub metadata: Payload,
}

impl Assignment {
    /// The description and metadata, once both are in memory.
    pub fn texts(&self) -> Option<(&str, &str)> {
        Some((self.description.as_inline()?, self.metadata.as_inline()?))
    }
}

/// Something the shell must carry out after the current changes are committed.
///
/// Exhaustive on purpose: a shell must carry out every action (an action it
/// ignored would be a lost message), so a new kind must be a breaking change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Action {
    /// Push this task to its agent.
    Assign(Assignment),
    /// Tell the agent to stop working on a cancelled task (`task_cancel`).
    Cancel {
        /// The agent holding the task.
        agent_id: AgentId,
        /// The cancelled task.
        task_id: TaskId,
    },
    /// A task taken back when the agent's connection dropped is the agent's again
    /// (`task_continue` with the new generation): it was still working on it.
    Reattach {
        /// The agent.
        agent_id: AgentId,
        /// The task.
        task_id: TaskId,
        /// The new generation the agent must echo.
        generation: u64,
    },
    /// A task was taken back from its agent: for logs and metrics. **Nothing is
    /// sent to the agent**, and the scheduler expects nothing to be: the agent
    /// is gone (disconnected, or its connection dropped as a slow consumer), or
    /// it did not accept in time, stopped showing signs of life, or did not
    /// come back after a restart. If it does speak about the task later, its
    /// report carries the old generation and is refused as stale (or, after a
    /// lost connection, the task is re-attached to it, see
    /// [`Action::Reattach`]). Whether to tell it anything (close its socket,
    /// send an error) is the caller's choice.
    Reclaimed {
        /// The task, now queued again, or in the dead letter if this reclaim used
        /// up its reclaim budget.
        task_id: TaskId,
        /// The agent that held it.
        agent_id: AgentId,
        /// Why.
        reason: ReclaimReason,
    },
}

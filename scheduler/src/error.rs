//! The error of the scheduler's inputs.

use coordinator_agent_fsm::IllegalMove;
use coordinator_queue::{AgentId, SubmitError, TaskError};

use crate::ConnId;

/// Why an input was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The submission was invalid.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The operation on the task was refused (not found, stale generation, ...).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The agent is not in a state that allows this.
    #[error(transparent)]
    Agent(#[from] IllegalMove),
    /// No agent with this id has connected.
    #[error("unknown agent `{0}`")]
    UnknownAgent(AgentId),
    /// The connection named does not speak for the agent: it was replaced by a
    /// newer connection of the same agent, or already reported gone. Usually
    /// harmless for a shell (the newer connection is the agent's now); it
    /// changed nothing.
    #[error("connection {given} does not speak for agent `{agent_id}` (its connection is {})", current.map_or("none".to_owned(), |c| c.to_string()))]
    StaleConnection {
        /// The agent.
        agent_id: AgentId,
        /// The connection given.
        given: ConnId,
        /// The connection that speaks for the agent now, if any.
        current: Option<ConnId>,
    },
}

//! The error of the scheduler's inputs.

use coordinator_agent_fsm::IllegalMove;
use coordinator_queue::{AgentId, SubmitError, TaskError};

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
}

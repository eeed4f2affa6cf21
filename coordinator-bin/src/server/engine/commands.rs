//! The engine's inbox: what the HTTP side asks of it, and the answers.

use queue_core::{NewTask, Task};
use scheduler::SchedulerError;
use tokio::sync::oneshot;

use crate::server::auth::Identity;

/// A submission acknowledged to its producer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Receipt {
    /// The new task's id.
    pub task_id: String,
    /// Its lane.
    pub priority: &'static str,
    /// Its submission time.
    pub created_at: u64,
}

/// What an agent looks like to the API.
#[derive(Debug, Clone, serde::Serialize)]
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
    /// Flags (`unresponsive`).
    pub flags: Vec<&'static str>,
    /// Since when it is in its state.
    pub state_since: u64,
    /// Tasks it held before a restart or reconnect, not yet recovered.
    pub awaiting_recovery: usize,
}

/// Requests from the HTTP side.
pub enum Command {
    /// Submit tasks (all valid, checked by the caller).
    Submit {
        /// The tasks.
        tasks: Vec<NewTask>,
        /// Answered after the commit.
        reply: oneshot::Sender<Result<Vec<Receipt>, SchedulerError>>,
    },
    /// Cancel a live task.
    Cancel {
        /// The task.
        task_id: String,
        /// Answered after the commit.
        reply: oneshot::Sender<Result<(), SchedulerError>>,
    },
    /// Requeue a dead-letter record read from storage.
    Retry {
        /// The record.
        record: Task,
        /// Answered after the commit.
        reply: oneshot::Sender<Result<(), SchedulerError>>,
    },
    /// The dashboard snapshot.
    Dashboard {
        /// Answered at once.
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// List agents.
    Agents {
        /// Answered at once.
        reply: oneshot::Sender<Vec<AgentInfo>>,
    },
    /// Result of an identify's token check.
    IdentifyChecked {
        connection: u64,
        agent_id: String,
        name: Option<String>,
        capabilities: Vec<String>,
        identity: Option<Identity>,
    },
}

//! The agent state machine.

use std::fmt;

use coordinator_queue::{AgentId, TaskId};

use crate::Capabilities;

/// Where an agent is.
///
/// Exhaustive on purpose: these are the protocol's agent states, and whoever
/// acts on an agent's state must handle each; a new one is a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum AgentState {
    /// Not connected.
    Offline,
    /// Connected and free for work.
    Idle,
    /// A task was pushed and not accepted yet.
    Assigned,
    /// Working on its accepted task.
    Working,
    /// Working, but waiting on something outside.
    Blocked,
}

impl AgentState {
    /// The wire name (`offline`, `idle`, `assigned`, `working`, `blocked`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Offline => "offline",
            AgentState::Idle => "idle",
            AgentState::Assigned => "assigned",
            AgentState::Working => "working",
            AgentState::Blocked => "blocked",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An input to the state machine, named in [`IllegalMove`] errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Move {
    /// The agent identified.
    Connect,
    /// A task was pushed.
    Assign,
    /// The agent accepted its task.
    Accept,
    /// The task went away from an assigned, working or blocked agent.
    Release,
    /// The agent reported it is blocked.
    Block,
    /// The agent reported it is working again.
    Unblock,
    /// A task held over a reconnect or restart was handed back to the agent.
    Resume,
}

/// The move is not legal from the agent's current state; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent `{agent_id}` cannot {attempted:?} while {from}")]
#[non_exhaustive]
pub struct IllegalMove {
    /// The agent.
    pub agent_id: AgentId,
    /// Its state.
    pub from: AgentState,
    /// What was tried.
    pub attempted: Move,
}

/// The task an agent holds, with the generation it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldTask {
    /// The task.
    pub task_id: TaskId,
    /// Its generation at assignment.
    pub generation: u64,
}

/// One agent's state machine.
///
/// Drive it with the move methods, each given `now_ms`; after every call arm a
/// timer for [`Agent::poll_timeout`] and, when it fires, call
/// [`Agent::handle_timeout`], which returns the task to reclaim if the acceptance
/// deadline passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    id: AgentId,
    capabilities: Capabilities,
    state: AgentState,
    task: Option<HeldTask>,
    accept_deadline_ms: Option<u64>,
    unresponsive: bool,
    state_since_ms: u64,
}

impl Agent {
    /// A new agent, offline.
    pub fn new(id: AgentId, capabilities: Capabilities) -> Agent {
        Agent {
            id,
            capabilities,
            state: AgentState::Offline,
            task: None,
            accept_deadline_ms: None,
            unresponsive: false,
            state_since_ms: 0,
        }
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// What the agent declared it can do.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Replaces the declared capabilities (a new identify may declare others).
    pub fn set_capabilities(&mut self, capabilities: Capabilities) {
        self.capabilities = capabilities;
    }

    /// The current state.
    pub fn state(&self) -> AgentState {
        self.state
    }

    /// When the agent entered its current state (for idle agents: idle since).
    pub fn state_since_ms(&self) -> u64 {
        self.state_since_ms
    }

    /// The task it holds, if any.
    pub fn task(&self) -> Option<&HeldTask> {
        self.task.as_ref()
    }

    /// True once the agent let an acceptance deadline pass, until it accepts a task.
    pub fn is_unresponsive(&self) -> bool {
        self.unresponsive
    }

    /// The time at which [`Agent::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.accept_deadline_ms
    }

    /// `offline → idle`: the agent identified.
    pub fn connect(&mut self, now_ms: u64) -> Result<(), IllegalMove> {
        self.expect(&[AgentState::Offline], Move::Connect)?;
        self.enter(now_ms, AgentState::Idle);
        Ok(())
    }

    /// `idle → assigned`: a task was pushed; it must be accepted within `accept_timeout_ms`.
    pub fn assign(
        &mut self,
        now_ms: u64,
        task_id: TaskId,
        generation: u64,
        accept_timeout_ms: u64,
    ) -> Result<(), IllegalMove> {
        self.expect(&[AgentState::Idle], Move::Assign)?;
        self.task = Some(HeldTask {
            task_id,
            generation,
        });
        self.accept_deadline_ms = Some(now_ms.saturating_add(accept_timeout_ms));
        self.enter(now_ms, AgentState::Assigned);
        Ok(())
    }

    /// `idle → working`: the agent came back holding a task
    /// that is still its own (a restart or reconnect followed by recovery).
    pub fn resume(
        &mut self,
        now_ms: u64,
        task_id: TaskId,
        generation: u64,
    ) -> Result<(), IllegalMove> {
        self.expect(&[AgentState::Idle], Move::Resume)?;
        self.task = Some(HeldTask {
            task_id,
            generation,
        });
        self.accept_deadline_ms = None;
        self.enter(now_ms, AgentState::Working);
        Ok(())
    }

    /// `assigned → working`: the agent accepted; the deadline is cleared and so is
    /// the `unresponsive` flag.
    pub fn accept(&mut self, now_ms: u64) -> Result<(), IllegalMove> {
        self.expect(&[AgentState::Assigned], Move::Accept)?;
        self.accept_deadline_ms = None;
        self.unresponsive = false;
        self.enter(now_ms, AgentState::Working);
        Ok(())
    }

    /// `working → blocked`.
    pub fn block(&mut self, now_ms: u64) -> Result<(), IllegalMove> {
        self.expect(&[AgentState::Working], Move::Block)?;
        self.enter(now_ms, AgentState::Blocked);
        Ok(())
    }

    /// `blocked → working`.
    pub fn unblock(&mut self, now_ms: u64) -> Result<(), IllegalMove> {
        self.expect(&[AgentState::Blocked], Move::Unblock)?;
        self.enter(now_ms, AgentState::Working);
        Ok(())
    }

    /// `assigned | working | blocked → idle`: the task completed, failed, was
    /// rejected, reclaimed or cancelled. Returns the task the agent held.
    pub fn release(&mut self, now_ms: u64) -> Result<HeldTask, IllegalMove> {
        self.expect(
            &[
                AgentState::Assigned,
                AgentState::Working,
                AgentState::Blocked,
            ],
            Move::Release,
        )?;
        self.accept_deadline_ms = None;
        self.enter(now_ms, AgentState::Idle);
        Ok(self.task.take().expect("a busy agent holds a task"))
    }

    /// `any → offline`: the connection closed. Returns the task to reclaim, if any.
    pub fn disconnect(&mut self, now_ms: u64) -> Option<HeldTask> {
        self.accept_deadline_ms = None;
        self.enter(now_ms, AgentState::Offline);
        self.task.take()
    }

    /// Checks the acceptance deadline: when it has passed, the agent goes back to
    /// idle, is flagged `unresponsive`, and the task to reclaim is returned.
    #[must_use]
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<HeldTask> {
        let deadline = self.accept_deadline_ms?;
        if now_ms < deadline || self.state != AgentState::Assigned {
            return None;
        }
        self.unresponsive = true;
        self.release(now_ms).ok()
    }

    fn expect(&self, allowed: &[AgentState], attempted: Move) -> Result<(), IllegalMove> {
        if allowed.contains(&self.state) {
            Ok(())
        } else {
            Err(IllegalMove {
                agent_id: self.id.clone(),
                from: self.state,
                attempted,
            })
        }
    }

    fn enter(&mut self, now_ms: u64, state: AgentState) {
        self.state = state;
        self.state_since_ms = now_ms;
    }
}

//! The invariants of a [`Scheduler`]'s state, checked from its public reads.

use std::collections::{HashMap, HashSet};

use coordinator_agent_fsm::{AgentState, Capabilities};
use coordinator_queue::{Change, TaskId};

use crate::{Action, Assignment, Scheduler};

/// An invariant that did not hold, or a step of the kit that failed; the
/// message says which and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Violation(format!($($fmt)+)));
        }
    };
}

/// Checks the invariants that must hold between any two inputs once the
/// outputs are drained:
///
/// - every held task names an agent that holds it with the same generation
///   (the fencing token), unless that agent has yet to come back and recover
///   it after a restart;
/// - every agent that holds a task is the one the queue names, with the
///   task's current generation, and no two agents hold the same task;
/// - an agent is busy (assigned, working, blocked) exactly while it holds a
///   task, connected exactly while not offline, and an assigned agent has its
///   acceptance deadline armed (`poll_timeout` is at or before it);
/// - no queued task could be taken by an agent that is available (connected,
///   idle, not drained, not cooling down, not waiting for a cancel, a settle
///   window or a recovery): matching left no pair behind.
pub fn check_invariants(scheduler: &Scheduler) -> Result<(), Violation> {
    let queue = scheduler.queue();
    for task in queue.held() {
        let Some(holder) = task.assigned_to() else {
            return Err(Violation(format!("held task {} has no holder", task.id())));
        };
        let Some(view) = scheduler.agent(holder) else {
            // Restored after a restart: the agent has not come back yet (the
            // recovery grace reclaims the task if it never does).
            continue;
        };
        let holds = view
            .agent
            .task()
            .is_some_and(|h| &h.task_id == task.id() && h.generation == task.generation());
        ensure!(
            holds || view.awaiting_recovery > 0,
            "{} (generation {}) is held by {holder}, but the agent holds {:?}",
            task.id(),
            task.generation(),
            view.agent.task()
        );
    }
    let mut holders: HashMap<&TaskId, &str> = HashMap::new();
    for view in scheduler.agents() {
        let agent = view.agent;
        let busy = matches!(
            agent.state(),
            AgentState::Assigned | AgentState::Working | AgentState::Blocked
        );
        ensure!(
            agent.task().is_some() == busy,
            "{} is {} but holds {:?}",
            agent.id(),
            agent.state(),
            agent.task()
        );
        ensure!(
            view.connected == (agent.state() != AgentState::Offline),
            "{} is {} with connected = {}",
            agent.id(),
            agent.state(),
            view.connected
        );
        if let Some(deadline) = agent.poll_timeout() {
            ensure!(
                scheduler.poll_timeout().is_some_and(|t| t <= deadline),
                "{}'s acceptance deadline {deadline} is not armed (poll_timeout {:?})",
                agent.id(),
                scheduler.poll_timeout()
            );
        }
        if let Some(held) = agent.task() {
            let Some(task) = queue.get(&held.task_id) else {
                return Err(Violation(format!(
                    "{} holds {}, which is not live",
                    agent.id(),
                    held.task_id
                )));
            };
            ensure!(
                task.status().is_held() && task.assigned_to() == Some(agent.id()),
                "{} holds {}, but the queue has it {} by {:?}",
                agent.id(),
                task.id(),
                task.status(),
                task.assigned_to()
            );
            ensure!(
                task.generation() == held.generation,
                "{} holds {} at generation {}, the task is at {}",
                agent.id(),
                task.id(),
                held.generation,
                task.generation()
            );
            if let Some(other) = holders.insert(&held.task_id, agent.id().as_str()) {
                return Err(Violation(format!(
                    "{} is held by both {other} and {}",
                    held.task_id,
                    agent.id()
                )));
            }
        }
    }
    let mut needs: HashSet<&Capabilities> = HashSet::new();
    for task in queue.queued_in_order() {
        needs.insert(task.needed_capabilities());
    }
    for view in scheduler.agents() {
        let available = view.connected
            && view.agent.state() == AgentState::Idle
            && !view.drained
            && view.awaiting_recovery == 0
            && view.cooldown_until_ms.is_none()
            && view.cancelling.is_none()
            && view.settling_until_ms.is_none();
        if !available {
            continue;
        }
        for need in &needs {
            ensure!(
                !need.is_subset_of(view.agent.capabilities()),
                "{} is available and could take a queued task that needs {:?}",
                view.agent.id(),
                need.names()
            );
        }
    }
    Ok(())
}

/// Checks an [`Action::Assign`] against the state it was emitted in: the task
/// is held by that agent at that generation (unless it was taken back again
/// within the same input), and the agent has every capability the task needs.
/// Other actions pass.
pub fn check_action(scheduler: &Scheduler, action: &Action) -> Result<(), Violation> {
    let Action::Assign(Assignment {
        agent_id,
        task_id,
        generation,
        ..
    }) = action
    else {
        return Ok(());
    };
    let Some(task) = scheduler.queue().get(task_id) else {
        // Taken back and finalized (cancelled, dead letter) before the drain.
        return Ok(());
    };
    let Some(view) = scheduler.agent(agent_id) else {
        return Err(Violation(format!(
            "{task_id} assigned to {agent_id}, an agent the scheduler does not know"
        )));
    };
    let need = task.needed_capabilities();
    ensure!(
        need.is_subset_of(view.agent.capabilities()),
        "{task_id} (needs {:?}) assigned to {agent_id} (offers {:?})",
        need.names(),
        view.agent.capabilities().names()
    );
    ensure!(
        task.assigned_to() != Some(agent_id) || task.generation() == *generation,
        "{task_id} assigned to {agent_id} at generation {generation}, the task is at {}",
        task.generation()
    );
    Ok(())
}

/// [`check_invariants`] plus what needs memory across steps: a task's
/// generation (its fencing token) never goes down, in the scheduler or in the
/// records persisted.
#[derive(Debug, Clone, Default)]
pub struct InvariantChecker {
    generations: HashMap<TaskId, u64>,
}

impl InvariantChecker {
    /// A checker that has seen nothing.
    pub fn new() -> InvariantChecker {
        InvariantChecker::default()
    }

    /// Checks a record about to be persisted.
    pub fn check_change(&mut self, change: &Change) -> Result<(), Violation> {
        self.see(change.task().id(), change.task().generation())
    }

    /// Checks the scheduler's state (see [`check_invariants`]).
    pub fn check(&mut self, scheduler: &Scheduler) -> Result<(), Violation> {
        check_invariants(scheduler)?;
        for task in scheduler.queue().held() {
            self.see(task.id(), task.generation())?;
        }
        Ok(())
    }

    fn see(&mut self, task_id: &TaskId, generation: u64) -> Result<(), Violation> {
        let last = self.generations.entry(task_id.clone()).or_insert(0);
        ensure!(
            generation >= *last,
            "the generation of {task_id} went down from {last} to {generation}"
        );
        *last = generation;
        Ok(())
    }
}

//! The scheduler: queue + agents + matching index, driven by `handle_*` inputs.

use std::collections::{BTreeSet, HashMap, VecDeque};

use coordinator_agent_fsm::{Agent, AgentState, Capabilities};
use coordinator_queue::{
    AgentId, Change, Completion, FailOutcome, IdMap, NewTask, Queue, QueueConfig, ReclaimOutcome,
    ReclaimReason, Recovery, RestoreError, ScheduledLoad, ScheduledPage, Status, Swept, Task,
    TaskError, TaskId,
};

use crate::idle::{IdleAgents, IdleKey};
use crate::{Action, Assignment, ConnId, SchedulerError};

/// `last_error` of a task whose holder's connection was closed for a frame over
/// the size limit (see [`Scheduler::handle_oversize`]).
pub const RESULT_TOO_LARGE: &str = "result_too_large";

/// `last_error` of a task whose `task_assign` could not be written because its
/// stored description and metadata could not be read back (see
/// [`Scheduler::handle_undeliverable`]).
pub const PAYLOAD_UNREADABLE: &str = "payload_unreadable";

/// Settings of a [`Scheduler`].
///
/// Start from [`SchedulerConfig::default`] and change what you need, field by
/// field or with the `with_*` methods (the struct may grow, so it cannot be
/// built from a literal outside this crate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Settings of the queue (default retries, stuck threshold, reclaim budget).
    pub queue: QueueConfig,
    /// An assigned task not accepted within this is reclaimed, and its agent flagged.
    pub accept_timeout_ms: u64,
    /// A task still held by an agent that is gone (after a coordinator restart or a
    /// replaced connection) waits this long for the agent to recover it.
    pub recovery_grace_ms: u64,
    /// An agent that rejected a task is offered no work for this long.
    pub reject_backoff_ms: u64,
    /// An agent told to stop a cancelled task is offered no work until it reports
    /// on that task, or for at most this long.
    pub cancel_grace_ms: u64,
    /// A freshly identified agent that was the last holder of a task is offered no
    /// work until its first message (other than `ping`) or for this long, so that
    /// it can say it still works on that task.
    pub identify_settle_ms: u64,
}

impl SchedulerConfig {
    /// Sets the queue's settings.
    pub fn with_queue(mut self, queue: QueueConfig) -> Self {
        self.queue = queue;
        self
    }

    /// Sets [`SchedulerConfig::accept_timeout_ms`].
    pub fn with_accept_timeout_ms(mut self, accept_timeout_ms: u64) -> Self {
        self.accept_timeout_ms = accept_timeout_ms;
        self
    }

    /// Sets [`SchedulerConfig::recovery_grace_ms`].
    pub fn with_recovery_grace_ms(mut self, recovery_grace_ms: u64) -> Self {
        self.recovery_grace_ms = recovery_grace_ms;
        self
    }

    /// Sets [`SchedulerConfig::reject_backoff_ms`].
    pub fn with_reject_backoff_ms(mut self, reject_backoff_ms: u64) -> Self {
        self.reject_backoff_ms = reject_backoff_ms;
        self
    }

    /// Sets [`SchedulerConfig::cancel_grace_ms`].
    pub fn with_cancel_grace_ms(mut self, cancel_grace_ms: u64) -> Self {
        self.cancel_grace_ms = cancel_grace_ms;
        self
    }

    /// Sets [`SchedulerConfig::identify_settle_ms`].
    pub fn with_identify_settle_ms(mut self, identify_settle_ms: u64) -> Self {
        self.identify_settle_ms = identify_settle_ms;
        self
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            queue: QueueConfig::default(),
            accept_timeout_ms: 60_000,
            recovery_grace_ms: 30_000,
            reject_backoff_ms: 1_000,
            cancel_grace_ms: 30_000,
            identify_settle_ms: 1_000,
        }
    }
}

#[derive(Debug)]
struct AgentSlot {
    fsm: Agent,
    /// The shell's id of the connection currently speaking for this agent.
    connection: Option<ConnId>,
    /// Arrival order, the tie-break between agents idle since the same instant.
    seq: u64,
    /// The agent's key in the idle index while it is in there.
    idle_key: Option<IdleKey>,
    /// No work is offered before this time (after a reject).
    cooldown_until_ms: Option<u64>,
    /// A cancelled task the agent was told to stop, and until when it is waited for.
    cancelling: Option<(TaskId, u64)>,
    /// Freshly identified as a last holder: no work before this time or its first message.
    settling_until_ms: Option<u64>,
    /// An operator drained it: no new work until undrained (its current task
    /// finishes; re-attaching its own task is not new work).
    drained: bool,
}

/// A read-only view of one agent.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AgentView<'a> {
    /// The state machine (state, task, flags, capabilities).
    pub agent: &'a Agent,
    /// True while a connection speaks for the agent.
    pub connected: bool,
    /// The shell's id of the connection speaking for the agent (as given to
    /// [`Scheduler::handle_connect`]).
    pub connection: Option<ConnId>,
    /// Tasks the agent still holds from before a restart or reconnect and has not
    /// recovered yet.
    pub awaiting_recovery: usize,
    /// Set after a reject: no work is offered before this time.
    pub cooldown_until_ms: Option<u64>,
    /// A cancelled task the agent was told to stop and has not reported on yet: no
    /// work is offered until it does or the cancel grace passes.
    pub cancelling: Option<&'a TaskId>,
    /// Freshly identified as a last holder: no work before this time or its first
    /// message.
    pub settling_until_ms: Option<u64>,
    /// Drained by an operator: offered no new work until undrained.
    pub drained: bool,
}

/// Queued tasks that no connected agent can take (see [`Scheduler::unroutable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Unroutable {
    /// The capability set the tasks need.
    pub needed: Capabilities,
    /// Names of that set no connected, undrained agent offers.
    pub missing: Capabilities,
    /// How many queued tasks need exactly this set.
    pub n_tasks: usize,
}

/// The coordinator's pure core. See the [crate documentation](crate) for the
/// order in which its outputs must be drained.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    queue: Queue,
    agents: HashMap<AgentId, AgentSlot>,
    next_agent_seq: u64,
    /// Idle agents that can be offered work, grouped by capabilities; the queued
    /// tasks are indexed the same way inside the queue.
    idle: IdleAgents,
    accept_deadlines: BTreeSet<(u64, AgentId)>,
    cooldowns: BTreeSet<(u64, AgentId)>,
    cancel_deadlines: BTreeSet<(u64, AgentId)>,
    settle_deadlines: BTreeSet<(u64, AgentId)>,
    /// Per agent, the task last taken back from it when its connection dropped (it
    /// may have it back while nobody else was assigned it; checked on use).
    reattachable: HashMap<AgentId, TaskId>,
    /// Held tasks whose agent has not come back to recover them, with their deadline.
    awaiting_recovery: IdMap<TaskId, (AgentId, u64)>,
    recovery_deadlines: BTreeSet<(u64, TaskId)>,
    actions: VecDeque<Action>,
    /// Agents a timer or the sweep changed since the last
    /// [`Scheduler::poll_timer_touched`]; at most one entry per agent.
    timer_touched: BTreeSet<AgentId>,
}

impl Scheduler {
    /// A scheduler with an empty queue and no agents.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        let queue = Queue::new(config.queue.clone());
        Scheduler::with_queue(config, queue)
    }

    /// Rebuilds the scheduler from persisted task records after a restart.
    ///
    /// Tasks that were held stay with their agents for `recovery_grace_ms` from
    /// `now_ms`, so that the agents can reconnect and recover them; after that they
    /// are reclaimed.
    pub fn restore(
        config: SchedulerConfig,
        now_ms: u64,
        records: impl IntoIterator<Item = Task>,
    ) -> Result<Scheduler, RestoreError> {
        let queue = Queue::restore(config.queue.clone(), records)?;
        let mut scheduler = Scheduler::with_queue(config, queue);
        let held: Vec<(TaskId, AgentId)> = scheduler
            .queue
            .held()
            .filter_map(|t| Some((t.id().clone(), t.assigned_to()?.clone())))
            .collect();
        let deadline = now_ms.saturating_add(scheduler.config.recovery_grace_ms);
        for (task_id, agent_id) in held {
            scheduler.await_recovery(task_id, agent_id, deadline);
        }
        let reattachable: Vec<(AgentId, TaskId)> = scheduler
            .queue
            .queued_in_order()
            .filter_map(|t| Some((AgentId::from(t.reattachable_to()?.0), t.id().clone())))
            .collect();
        scheduler.reattachable.extend(reattachable);
        Ok(scheduler)
    }

    fn with_queue(config: SchedulerConfig, queue: Queue) -> Scheduler {
        Scheduler {
            config,
            queue,
            agents: HashMap::new(),
            next_agent_seq: 0,
            idle: IdleAgents::default(),
            accept_deadlines: BTreeSet::new(),
            cooldowns: BTreeSet::new(),
            cancel_deadlines: BTreeSet::new(),
            settle_deadlines: BTreeSet::new(),
            reattachable: HashMap::new(),
            awaiting_recovery: IdMap::default(),
            recovery_deadlines: BTreeSet::new(),
            actions: VecDeque::new(),
            timer_touched: BTreeSet::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The queue, for reads.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// One agent, if it ever connected.
    pub fn agent(&self, id: &AgentId) -> Option<AgentView<'_>> {
        let slot = self.agents.get(id)?;
        Some(self.view(slot))
    }

    /// Every agent that ever connected since start, in no particular order.
    pub fn agents(&self) -> impl Iterator<Item = AgentView<'_>> + '_ {
        self.agents.values().map(|slot| self.view(slot))
    }

    fn view<'a>(&'a self, slot: &'a AgentSlot) -> AgentView<'a> {
        AgentView {
            agent: &slot.fsm,
            connected: slot.connection.is_some(),
            connection: slot.connection,
            awaiting_recovery: self.recovery_count(slot.fsm.id()),
            cooldown_until_ms: slot.cooldown_until_ms,
            cancelling: slot.cancelling.as_ref().map(|(task_id, _)| task_id),
            settling_until_ms: slot.settling_until_ms,
            drained: slot.drained,
        }
    }

    /// The next record to persist.
    #[must_use]
    pub fn poll_change(&mut self) -> Option<Change> {
        self.queue.poll_change()
    }

    /// The next message to send once the changes drained so far are committed.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next agent that [`Scheduler::handle_timeout`] or
    /// [`Scheduler::handle_sweep`] may have changed (a deadline expired, a
    /// grace or back-off ended, a held task was reclaimed or failed) since the
    /// last call, each agent once, in id order.
    ///
    /// A caller that shows agents' states (the coordinator's event stream)
    /// re-reads these after a timer instead of every agent. Agents changed by
    /// a call that names them are not listed: the caller knows them. The list
    /// holds at most one entry per agent, whether or not it is polled.
    #[must_use]
    pub fn poll_timer_touched(&mut self) -> Option<AgentId> {
        self.timer_touched.pop_first()
    }

    /// When [`Scheduler::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        [
            self.accept_deadlines.first().map(|d| d.0),
            self.cooldowns.first().map(|d| d.0),
            self.cancel_deadlines.first().map(|d| d.0),
            self.settle_deadlines.first().map(|d| d.0),
            self.recovery_deadlines.first().map(|d| d.0),
            self.queue.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A task was submitted: queue it and match it at once if an agent can take
    /// it (a scheduled or waiting task is matched when it is released).
    pub fn handle_submit(&mut self, now_ms: u64, task: NewTask) -> Result<(), SchedulerError> {
        let task_id = self.queue.submit(now_ms, task)?.id().clone();
        self.enqueue(now_ms, &task_id);
        Ok(())
    }

    /// Offers the tasks the queue released (their `run_at` came, their last
    /// dependency completed) to the idle agents.
    fn match_released(&mut self, now_ms: u64) {
        while let Some(task_id) = self.queue.poll_released() {
            self.enqueue(now_ms, &task_id);
        }
    }

    /// A dead-letter record (read back from storage) is retried by an operator.
    pub fn handle_retry(&mut self, now_ms: u64, record: Task) -> Result<(), SchedulerError> {
        let task_id = record.id().clone();
        self.queue.retry_dead_letter(now_ms, record)?;
        self.enqueue(now_ms, &task_id);
        Ok(())
    }

    /// An agent identified on connection `connection` (an id chosen by the shell).
    ///
    /// A connection that replaces a live one takes over the agent; the task the
    /// old connection held is taken back at once, as for a disconnect, and can be
    /// re-attached to the agent. A task the agent held before a coordinator
    /// restart (still within `recovery_grace_ms`) is its own again at once, with
    /// its generation. An agent that was the last holder of a task waits
    /// `identify_settle_ms` (or until its first message) before it is offered work.
    pub fn handle_connect(
        &mut self,
        now_ms: u64,
        agent_id: AgentId,
        capabilities: Capabilities,
        connection: ConnId,
    ) {
        if !self.agents.contains_key(&agent_id) {
            let slot = AgentSlot {
                fsm: Agent::new(agent_id.clone(), capabilities.clone()),
                connection: None,
                seq: self.next_agent_seq,
                idle_key: None,
                cooldown_until_ms: None,
                cancelling: None,
                settling_until_ms: None,
                drained: false,
            };
            self.next_agent_seq += 1;
            self.agents.insert(agent_id.clone(), slot);
        }
        self.make_unavailable(&agent_id);
        let held = self
            .move_agent(&agent_id, |fsm| {
                let held = fsm.disconnect(now_ms);
                fsm.set_capabilities(capabilities);
                fsm.connect(now_ms).expect("offline agents can connect");
                held
            })
            .flatten();
        if let Some(slot) = self.agents.get_mut(&agent_id) {
            slot.connection = Some(connection);
        }
        if held.is_some() || self.reattachable_task(&agent_id).is_some() {
            let until = now_ms.saturating_add(self.config.identify_settle_ms);
            if let Some(slot) = self.agents.get_mut(&agent_id) {
                if let Some(old) = slot.settling_until_ms.replace(until) {
                    self.settle_deadlines.remove(&(old, agent_id.clone()));
                }
                self.settle_deadlines.insert((until, agent_id.clone()));
            }
        }
        if let Some(held) = held {
            self.reclaim(now_ms, &held.task_id, ReclaimReason::Disconnected);
        }
        let recovered: Vec<TaskId> = self
            .awaiting_recovery
            .iter()
            .filter(|(_, (owner, _))| owner == &agent_id)
            .map(|(task_id, _)| task_id.clone())
            .collect();
        for task_id in recovered {
            self.reattach(now_ms, &agent_id, &task_id);
        }
        self.refresh_availability(now_ms, &agent_id);
    }

    /// A message (other than `ping`) from the agent, after it was handled: a
    /// freshly identified agent has said what it holds and can be offered work.
    pub fn handle_agent_message(&mut self, now_ms: u64, agent_id: &AgentId) {
        let Some(slot) = self.agents.get_mut(agent_id) else {
            return;
        };
        if let Some(until) = slot.settling_until_ms.take() {
            self.settle_deadlines.remove(&(until, agent_id.clone()));
            self.refresh_availability(now_ms, agent_id);
        }
    }

    /// The task taken back from `agent_id` when its connection dropped, if it is
    /// still queued and assigned to nobody since.
    fn reattachable_task(&self, agent_id: &AgentId) -> Option<TaskId> {
        let task_id = self.reattachable.get(agent_id)?;
        let task = self.queue.get(task_id)?;
        (task.reattachable_to()?.0 == agent_id.as_str()).then(|| task_id.clone())
    }

    /// Gives the agent back the task taken from it when its connection dropped:
    /// the task is held by it again with a new generation; returns the generation.
    /// With `announce`, the agent is told (`Action::Reattach`); without, the
    /// caller answers the agent's own report.
    fn reattach_reclaimed(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
        announce: bool,
    ) -> Option<u64> {
        let idle = self
            .agents
            .get(agent_id)
            .is_some_and(|slot| slot.connection.is_some() && slot.fsm.state() == AgentState::Idle);
        if !idle {
            return None;
        }
        let generation = self.queue.reattach(now_ms, task_id, agent_id).ok()?;
        self.reattachable.remove(agent_id);
        self.make_unavailable(agent_id);
        let task_id = task_id.clone();
        self.move_agent(agent_id, |fsm| {
            fsm.resume(now_ms, task_id.clone(), generation)
        })
        .and_then(Result::ok)?;
        if announce {
            self.actions.push_back(Action::Reattach {
                agent_id: agent_id.clone(),
                task_id,
                generation,
            });
        }
        Some(generation)
    }

    /// Connection `connection` of an agent closed or stopped answering: the agent goes
    /// offline and its task is reclaimed and matched again at once.
    ///
    /// A connection that no longer speaks for the agent (replaced by a newer
    /// one, or already gone) is refused with [`SchedulerError::StaleConnection`]
    /// and changes nothing; an agent that never connected with
    /// [`SchedulerError::UnknownAgent`].
    pub fn handle_disconnect(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        connection: ConnId,
    ) -> Result<(), SchedulerError> {
        self.drop_agent(now_ms, agent_id, connection, ReclaimReason::Disconnected)
    }

    /// The agent's outbound queue overflowed and the shell dropped its
    /// connection: as [`Scheduler::handle_disconnect`], with the reclaim reason
    /// `slow_consumer`.
    pub fn handle_slow_consumer(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        connection: ConnId,
    ) -> Result<(), SchedulerError> {
        self.drop_agent(now_ms, agent_id, connection, ReclaimReason::SlowConsumer)
    }

    /// Connection `connection` of an agent was closed because the agent sent a frame
    /// over the size limit (typically a result too large to carry): the agent goes
    /// offline as for a disconnect, and the task it held gets a counted failure with
    /// `last_error` [`RESULT_TOO_LARGE`] (retried or dead-lettered), so that a result
    /// that can never be delivered does not make the task run forever. A
    /// connection that no longer speaks for the agent is refused as by
    /// [`Scheduler::handle_disconnect`].
    pub fn handle_oversize(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        connection: ConnId,
    ) -> Result<(), SchedulerError> {
        self.take_connection(agent_id, connection)?;
        let held = self
            .move_agent(agent_id, |fsm| fsm.disconnect(now_ms))
            .flatten();
        self.make_unavailable(agent_id);
        if let Some(held) = held {
            self.fail_holder(now_ms, &held.task_id, RESULT_TOO_LARGE);
        }
        Ok(())
    }

    /// Marks the agent's connection `connection` gone, if it is the one that
    /// speaks for the agent.
    fn take_connection(
        &mut self,
        agent_id: &AgentId,
        connection: ConnId,
    ) -> Result<(), SchedulerError> {
        let slot = self
            .agents
            .get_mut(agent_id)
            .ok_or_else(|| SchedulerError::UnknownAgent(agent_id.clone()))?;
        if slot.connection != Some(connection) {
            return Err(SchedulerError::StaleConnection {
                agent_id: agent_id.clone(),
                given: connection,
                current: slot.connection,
            });
        }
        slot.connection = None;
        Ok(())
    }

    /// The assignment of `task_id` to `agent_id` at `generation` cannot be
    /// sent (the shell could not read back the task's stored description and
    /// metadata): a counted failure with `last_error` [`PAYLOAD_UNREADABLE`],
    /// retried or dead-lettered as any failure, and the agent is free again.
    /// Refused, changing nothing, unless the agent holds the task at that
    /// generation.
    pub fn handle_undeliverable(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
        generation: u64,
    ) -> Result<(), SchedulerError> {
        let task = self
            .queue
            .get(task_id)
            .ok_or_else(|| TaskError::NotFound(task_id.clone()))?;
        if task.generation() != generation {
            return Err(TaskError::StaleGeneration {
                task_id: task.id().clone(),
                given: generation,
                current: task.generation(),
            }
            .into());
        }
        if !task.is_held_by(agent_id) {
            return Err(TaskError::NotAssigned(task.id().clone()).into());
        }
        let task_id = task.id().clone();
        self.fail_holder(now_ms, &task_id, PAYLOAD_UNREADABLE);
        Ok(())
    }

    fn drop_agent(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        connection: ConnId,
        reason: ReclaimReason,
    ) -> Result<(), SchedulerError> {
        self.take_connection(agent_id, connection)?;
        let held = self
            .move_agent(agent_id, |fsm| fsm.disconnect(now_ms))
            .flatten();
        self.make_unavailable(agent_id);
        if let Some(held) = held {
            self.reclaim(now_ms, &held.task_id, reason);
        }
        Ok(())
    }

    /// The agent accepted its task.
    pub fn handle_accepted(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
    ) -> Result<(), SchedulerError> {
        let slot = self.slot(agent_id)?;
        let holds_it = slot.fsm.task().is_some_and(|h| &h.task_id == task_id);
        if holds_it && slot.fsm.state() != AgentState::Assigned {
            return Err(TaskError::WrongStatus {
                task_id: task_id.clone(),
                status: self
                    .queue
                    .get(task_id)
                    .map_or(coordinator_queue::Status::Working, |t| t.status()),
            }
            .into());
        }
        self.queue.accept(now_ms, task_id, agent_id)?;
        if holds_it {
            self.move_agent(agent_id, |fsm| {
                fsm.accept(now_ms).expect("assigned agents can accept")
            });
        } else {
            self.reattach(now_ms, agent_id, task_id);
        }
        Ok(())
    }

    /// The agent reported progress: a sign of life for the stuck sweep.
    pub fn handle_progress(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
    ) -> Result<(), SchedulerError> {
        self.slot(agent_id)?;
        if self.reattachable_task(agent_id).as_deref() == Some(task_id) {
            // Still at work on the task taken back when its connection dropped.
            if self
                .reattach_reclaimed(now_ms, agent_id, task_id, true)
                .is_some()
            {
                return Ok(());
            }
        }
        self.queue.progress(now_ms, task_id, agent_id)?;
        self.reattach(now_ms, agent_id, task_id);
        Ok(())
    }

    /// The agent completed its task, fenced by `generation`.
    pub fn handle_complete(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
        generation: u64,
        completion: Completion,
    ) -> Result<(), SchedulerError> {
        self.slot(agent_id)?;
        self.queue
            .complete(now_ms, task_id, agent_id, generation, completion)?;
        // Dependents it released go to the agents idle longest, this one last.
        self.release_agent(now_ms, agent_id, task_id);
        self.match_released(now_ms);
        self.refresh_availability(now_ms, agent_id);
        Ok(())
    }

    /// The agent failed its task, fenced by `generation`: retried or dead-lettered.
    pub fn handle_failed(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
        generation: u64,
        error: &str,
    ) -> Result<FailOutcome, SchedulerError> {
        self.slot(agent_id)?;
        let outcome = self
            .queue
            .fail(now_ms, task_id, agent_id, generation, error)?;
        // The task is offered to the other idle agents before this one.
        self.release_agent(now_ms, agent_id, task_id);
        if outcome == FailOutcome::Retried {
            self.enqueue(now_ms, task_id);
        }
        self.refresh_availability(now_ms, agent_id);
        Ok(outcome)
    }

    /// The agent declined its task: the task is queued again (no retry counted) and
    /// the agent is offered no work for `reject_backoff_ms`.
    pub fn handle_rejected(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
        reason: &str,
    ) -> Result<(), SchedulerError> {
        self.slot(agent_id)?;
        self.queue.reject(now_ms, task_id, agent_id, reason)?;
        let until = now_ms.saturating_add(self.config.reject_backoff_ms);
        let slot = self.agents.get_mut(agent_id).expect("checked above");
        if let Some(old) = slot.cooldown_until_ms.replace(until) {
            self.cooldowns.remove(&(old, agent_id.clone()));
        }
        self.cooldowns.insert((until, agent_id.clone()));
        self.release_agent(now_ms, agent_id, task_id);
        self.enqueue(now_ms, task_id);
        self.refresh_availability(now_ms, agent_id);
        Ok(())
    }

    /// The agent restarted holding `task_id`: continue if it is still its own.
    pub fn handle_recovering(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
    ) -> Result<Recovery, SchedulerError> {
        let slot = self.slot(agent_id)?;
        let holds_other = slot.fsm.task().is_some_and(|h| &h.task_id != task_id);
        if holds_other {
            return Ok(Recovery::Reassign);
        }
        let recovery = self.queue.recover(now_ms, task_id, agent_id);
        if let Recovery::Continue { .. } = recovery {
            self.reattach(now_ms, agent_id, task_id);
            return Ok(recovery);
        }
        if self.reattachable_task(agent_id).as_deref() == Some(task_id) {
            if let Some(generation) = self.reattach_reclaimed(now_ms, agent_id, task_id, false) {
                return Ok(Recovery::Continue { generation });
            }
        }
        Ok(recovery)
    }

    /// Says that storage may hold scheduled tasks that were not given to
    /// [`Scheduler::restore`], all with a `queue_seq` below
    /// `next_queue_seq`: see [`Queue::handle_stored_scheduled`].
    pub fn handle_stored_scheduled(&mut self, next_queue_seq: u64) {
        self.queue.handle_stored_scheduled(next_queue_seq);
    }

    /// The read of stored scheduled tasks due now, if any: see
    /// [`Queue::poll_load`]. Poll it after every input.
    #[must_use]
    pub fn poll_load(&mut self, now_ms: u64) -> Option<ScheduledLoad> {
        self.queue.poll_load(now_ms)
    }

    /// The answer to [`Scheduler::poll_load`]: see
    /// [`Queue::handle_scheduled_loaded`]. Tasks read that are due already
    /// are released by the next [`Scheduler::handle_timeout`], which
    /// [`Scheduler::poll_timeout`] asks for at once.
    pub fn handle_scheduled_loaded(&mut self, now_ms: u64, page: ScheduledPage) {
        self.queue.handle_scheduled_loaded(now_ms, page);
    }

    /// The read of [`Scheduler::poll_load`] failed; another follows later.
    pub fn handle_scheduled_load_failed(&mut self, now_ms: u64) {
        self.queue.handle_scheduled_load_failed(now_ms);
    }

    /// An operator cancelled a task that was scheduled when its stored
    /// `record` was read: in memory, as [`Scheduler::handle_cancel`]; left
    /// in storage, from the record (see [`Queue::cancel_stored`]).
    pub fn handle_cancel_stored(
        &mut self,
        now_ms: u64,
        record: Task,
    ) -> Result<(), SchedulerError> {
        if self.queue.get(record.id()).is_some() {
            let task_id = record.id().clone();
            return self.handle_cancel(now_ms, &task_id);
        }
        self.queue.cancel_stored(now_ms, record)?;
        Ok(())
    }

    /// An operator cancelled a live task; its holder, if any, is told to stop and
    /// is offered no work until it reports on the task or `cancel_grace_ms` passes
    /// (an agent may well go on working until it reads the cancel, or ignore it).
    pub fn handle_cancel(&mut self, now_ms: u64, task_id: &TaskId) -> Result<(), SchedulerError> {
        let holder = self.queue.cancel(now_ms, task_id)?;
        if let Some(agent_id) = holder {
            let task_id = task_id.clone();
            self.actions.push_back(Action::Cancel {
                agent_id: agent_id.clone(),
                task_id: task_id.clone(),
            });
            let until = now_ms.saturating_add(self.config.cancel_grace_ms);
            if let Some(slot) = self.agents.get_mut(&agent_id) {
                if let Some((_, old)) = slot.cancelling.replace((task_id.clone(), until)) {
                    self.cancel_deadlines.remove(&(old, agent_id.clone()));
                }
                self.cancel_deadlines.insert((until, agent_id.clone()));
            }
            self.task_left_agent(now_ms, &agent_id, &task_id);
        }
        Ok(())
    }

    /// The agent reported on a task (`task_complete`, `task_failed` or
    /// `task_rejected`). If that task was cancelled under it, the report is the
    /// one awaited: it changes nothing, the agent can be offered work again, and
    /// `true` says the report should be acknowledged as `cancelled`. Otherwise
    /// `false`, and the report goes its usual way.
    pub fn handle_report_after_cancel(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        task_id: &TaskId,
    ) -> bool {
        let Some(slot) = self.agents.get_mut(agent_id) else {
            return false;
        };
        let Some((_, until)) = slot
            .cancelling
            .take_if(|(cancelled, _)| cancelled == task_id)
        else {
            return false;
        };
        self.cancel_deadlines.remove(&(until, agent_id.clone()));
        self.refresh_availability(now_ms, agent_id);
        true
    }

    /// An operator drains (`true`) or undrains (`false`) an agent that has
    /// connected since start. A drained agent is offered no new work, also after
    /// it reconnects; the task it holds goes on to its end, and its own task taken
    /// back on a disconnect may still be re-attached when it reports on it. An
    /// undrained idle agent is offered work at once. Returns whether anything
    /// changed (draining a drained agent changes nothing).
    pub fn handle_drain(
        &mut self,
        now_ms: u64,
        agent_id: &AgentId,
        drained: bool,
    ) -> Result<bool, SchedulerError> {
        let slot = self
            .agents
            .get_mut(agent_id)
            .ok_or_else(|| SchedulerError::UnknownAgent(agent_id.clone()))?;
        if slot.drained == drained {
            return Ok(false);
        }
        slot.drained = drained;
        self.refresh_availability(now_ms, agent_id);
        Ok(true)
    }

    /// Queued tasks that no connected, undrained agent can take, grouped by their
    /// needed capabilities: for each set, how many tasks, and which of its names
    /// no such agent offers at all (empty when each name is offered, but by no
    /// single agent). Costs O(capability sets queued × agents).
    pub fn unroutable(&self) -> Vec<Unroutable> {
        let offered: Vec<&Capabilities> = self
            .agents
            .values()
            .filter(|slot| slot.connection.is_some() && !slot.drained)
            .map(|slot| slot.fsm.capabilities())
            .collect();
        let mut out: Vec<Unroutable> = self
            .queue
            .queued_by_capabilities()
            .filter(|(needed, _)| !offered.iter().any(|caps| needed.is_subset_of(caps)))
            .map(|(needed, n_tasks)| Unroutable {
                needed: needed.clone(),
                missing: Capabilities::new(
                    needed
                        .iter()
                        .filter(|name| !offered.iter().any(|caps| caps.contains(name)))
                        .cloned(),
                ),
                n_tasks,
            })
            .collect();
        out.sort_by(|a, b| {
            b.n_tasks
                .cmp(&a.n_tasks)
                .then_with(|| a.needed.cmp(&b.needed))
        });
        out
    }

    /// Deadlines: scheduled tasks whose `run_at` came (queued and matched),
    /// acceptance timeouts (reclaim and flag), recovery grace (reclaim),
    /// cancel graces and reject back-offs (offer work again).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.queue.handle_timeout(now_ms);
        self.match_released(now_ms);
        while let Some((deadline, agent_id)) = self.accept_deadlines.first().cloned() {
            if deadline > now_ms {
                break;
            }
            // Removed first, so that the loop always moves on.
            self.accept_deadlines.remove(&(deadline, agent_id.clone()));
            self.timer_touched.insert(agent_id.clone());
            let expired = self
                .move_agent(&agent_id, |fsm| fsm.handle_timeout(now_ms))
                .flatten();
            if let Some(held) = expired {
                self.reclaim(now_ms, &held.task_id, ReclaimReason::AcceptTimeout);
                self.refresh_availability(now_ms, &agent_id);
            }
        }
        while let Some((deadline, task_id)) = self.recovery_deadlines.first().cloned() {
            if deadline > now_ms {
                break;
            }
            if let Some(agent_id) = self.forget_recovery(&task_id) {
                self.reclaim(now_ms, &task_id, ReclaimReason::RecoveryExpired);
                self.refresh_availability(now_ms, &agent_id);
                self.timer_touched.insert(agent_id);
            }
        }
        // Waits that keep an agent from work: when one ends, it may have work.
        for agent_id in take_due(&mut self.settle_deadlines, now_ms) {
            if let Some(slot) = self.agents.get_mut(&agent_id) {
                slot.settling_until_ms = None;
            }
            self.refresh_availability(now_ms, &agent_id);
            self.timer_touched.insert(agent_id);
        }
        for agent_id in take_due(&mut self.cancel_deadlines, now_ms) {
            if let Some(slot) = self.agents.get_mut(&agent_id) {
                slot.cancelling = None;
            }
            self.refresh_availability(now_ms, &agent_id);
            self.timer_touched.insert(agent_id);
        }
        for agent_id in take_due(&mut self.cooldowns, now_ms) {
            if let Some(slot) = self.agents.get_mut(&agent_id) {
                slot.cooldown_until_ms = None;
            }
            self.refresh_availability(now_ms, &agent_id);
            self.timer_touched.insert(agent_id);
        }
    }

    /// The periodic safety net: fails overdue tasks (`deadline_exceeded`, a counted
    /// failure) and reclaims stuck ones, then matches whatever can be matched.
    ///
    /// # How often
    ///
    /// Held tasks' `complete_by` deadlines and the stuck threshold
    /// ([`QueueConfig::stuck_after_ms`]) are checked here only, not through
    /// [`Scheduler::poll_timeout`] (they move with every sign of life of every
    /// held task). Call it on a fixed period, short against `stuck_after_ms`
    /// and against the deadlines you care about: a task is failed or reclaimed
    /// up to one period after it became due. The coordinator's default is
    /// every 30 s for a `stuck_after_ms` of 5 min. Each call costs
    /// O(held tasks + idle agents).
    ///
    /// A late call (the shell was busy, the machine slept) loses nothing: it
    /// acts on everything due by `now_ms` at once, in queue order, then matches.
    /// A call with nothing due changes nothing but may still match (it is also
    /// the safety net for a match missed by the event-driven rules).
    pub fn handle_sweep(&mut self, now_ms: u64) {
        for swept in self.queue.sweep(now_ms) {
            match swept {
                Swept::Stuck {
                    task_id,
                    agent_id,
                    outcome,
                } => {
                    self.after_reclaim(now_ms, &task_id, &agent_id, ReclaimReason::Stuck, outcome);
                    self.timer_touched.insert(agent_id);
                }
                Swept::Overdue {
                    task_id,
                    agent_id,
                    outcome,
                } => {
                    self.after_failure(now_ms, &task_id, &agent_id, outcome);
                    self.timer_touched.insert(agent_id);
                }
            }
        }
        // Longest idle first, as for any match (and the same order on every run).
        let mut idle: Vec<(IdleKey, AgentId)> = self
            .idle
            .iter()
            .map(|(key, agent)| (key.clone(), agent.clone()))
            .collect();
        idle.sort_unstable();
        for (_, agent_id) in idle {
            self.match_agent(now_ms, &agent_id);
        }
    }

    fn slot(&self, agent_id: &AgentId) -> Result<&AgentSlot, SchedulerError> {
        self.agents
            .get(agent_id)
            .filter(|s| s.connection.is_some())
            .ok_or_else(|| SchedulerError::UnknownAgent(agent_id.clone()))
    }

    fn recovery_count(&self, agent_id: &AgentId) -> usize {
        self.awaiting_recovery
            .values()
            .filter(|(a, _)| a == agent_id)
            .count()
    }

    fn await_recovery(&mut self, task_id: TaskId, agent_id: AgentId, deadline: u64) {
        self.recovery_deadlines.insert((deadline, task_id.clone()));
        self.awaiting_recovery.insert(task_id, (agent_id, deadline));
    }

    /// If `task_id` was waiting for `agent_id` to come back, the agent has it again.
    fn reattach(&mut self, now_ms: u64, agent_id: &AgentId, task_id: &TaskId) {
        if self.awaiting_recovery.get(task_id).map(|(owner, _)| owner) != Some(agent_id) {
            return;
        }
        let task_id = task_id.clone();
        self.forget_recovery(&task_id);
        let generation = self.queue.get(&task_id).map_or(0, |t| t.generation());
        self.make_unavailable(agent_id);
        let slot = self.agents.get_mut(agent_id).expect("connected agent");
        if slot
            .fsm
            .resume(now_ms, task_id.clone(), generation)
            .is_err()
        {
            // The agent is busy with other work: the old task cannot be its own again.
            self.reclaim(now_ms, &task_id, ReclaimReason::RecoveryExpired);
        }
        self.refresh_availability(now_ms, agent_id);
    }

    /// `task_id` reached an end with `agent_id` (completed, failed, rejected,
    /// cancelled): the agent is free again.
    fn task_left_agent(&mut self, now_ms: u64, agent_id: &AgentId, task_id: &TaskId) {
        self.release_agent(now_ms, agent_id, task_id);
        self.refresh_availability(now_ms, agent_id);
    }

    /// Frees the agent from `task_id` without offering it new work yet.
    fn release_agent(&mut self, now_ms: u64, agent_id: &AgentId, task_id: &TaskId) {
        self.forget_recovery(task_id);
        self.move_agent(agent_id, |fsm| {
            if fsm.task().is_some_and(|h| &h.task_id == task_id) {
                fsm.release(now_ms).expect("a busy agent can be released");
            }
        });
    }

    /// Applies `change` to the agent's state machine and keeps the acceptance
    /// deadline index in step with what the machine says afterwards.
    fn move_agent<R>(
        &mut self,
        agent_id: &AgentId,
        change: impl FnOnce(&mut Agent) -> R,
    ) -> Option<R> {
        let slot = self.agents.get_mut(agent_id)?;
        let before = slot.fsm.poll_timeout();
        let result = change(&mut slot.fsm);
        let after = slot.fsm.poll_timeout();
        if before != after {
            if let Some(deadline) = before {
                self.accept_deadlines.remove(&(deadline, agent_id.clone()));
            }
            if let Some(deadline) = after {
                self.accept_deadlines.insert((deadline, agent_id.clone()));
            }
        }
        Some(result)
    }

    /// Stops waiting for the agent that held `task_id` to recover it; returns that agent.
    fn forget_recovery(&mut self, task_id: &TaskId) -> Option<AgentId> {
        let (agent_id, deadline) = self.awaiting_recovery.remove(task_id)?;
        self.recovery_deadlines.remove(&(deadline, task_id.clone()));
        Some(agent_id)
    }

    /// Reclaims a held task from whoever holds it, and queues it again (unless its
    /// reclaim budget ran out and it went to the dead letter).
    fn reclaim(&mut self, now_ms: u64, task_id: &TaskId, reason: ReclaimReason) {
        if let Ok(reclaimed) = self.queue.reclaim(now_ms, task_id, reason) {
            let agent_id = reclaimed.agent_id;
            self.after_reclaim(now_ms, task_id, &agent_id, reason, reclaimed.outcome);
        }
    }

    fn after_reclaim(
        &mut self,
        now_ms: u64,
        task_id: &TaskId,
        agent_id: &AgentId,
        reason: ReclaimReason,
        outcome: ReclaimOutcome,
    ) {
        self.actions.push_back(Action::Reclaimed {
            task_id: task_id.clone(),
            agent_id: agent_id.clone(),
            reason,
        });
        let requeued = outcome == ReclaimOutcome::Requeued;
        if requeued
            && matches!(
                reason,
                ReclaimReason::Disconnected | ReclaimReason::SlowConsumer
            )
        {
            self.reattachable.insert(agent_id.clone(), task_id.clone());
        }
        // Other idle agents get the task before the one it was taken from.
        self.release_agent(now_ms, agent_id, task_id);
        if requeued {
            self.enqueue(now_ms, task_id);
        }
        self.refresh_availability(now_ms, agent_id);
    }

    /// A counted failure of whoever holds `task_id`, decided here rather than
    /// reported by the agent.
    fn fail_holder(&mut self, now_ms: u64, task_id: &TaskId, error: &str) {
        if let Ok((agent_id, outcome)) = self.queue.fail_holder(now_ms, task_id, error) {
            self.after_failure(now_ms, task_id, &agent_id, outcome);
        }
    }

    /// The task failed on `agent_id`: the agent is free, the task retried first by
    /// the other idle agents, or gone to the dead letter.
    fn after_failure(
        &mut self,
        now_ms: u64,
        task_id: &TaskId,
        agent_id: &AgentId,
        outcome: FailOutcome,
    ) {
        self.release_agent(now_ms, agent_id, task_id);
        if outcome == FailOutcome::Retried {
            self.enqueue(now_ms, task_id);
        }
        self.refresh_availability(now_ms, agent_id);
    }

    /// A task entered the queue: index it and offer it to the best idle agent.
    fn enqueue(&mut self, now_ms: u64, task_id: &TaskId) {
        let Some(task) = self
            .queue
            .get(task_id)
            .filter(|t| t.status() == Status::Queued)
        else {
            return;
        };
        let caps = task.needed_capabilities().clone();
        let agent = self
            .idle
            .best(|agent_caps| caps.is_subset_of(agent_caps))
            .cloned();
        if let Some(agent_id) = agent {
            self.assign(now_ms, task_id, &agent_id);
        }
    }

    /// Puts the agent in or out of the idle index to match its state; an agent that
    /// became available is offered the best task it can take.
    fn refresh_availability(&mut self, now_ms: u64, agent_id: &AgentId) {
        let waiting = self.recovery_count(agent_id) > 0;
        let Some(slot) = self.agents.get_mut(agent_id) else {
            return;
        };
        let available = slot.connection.is_some()
            && slot.fsm.state() == AgentState::Idle
            && slot.cooldown_until_ms.is_none()
            && slot.cancelling.is_none()
            && slot.settling_until_ms.is_none()
            && !slot.drained
            && !waiting;
        if !available {
            leave_idle(&mut self.idle, slot);
            return;
        }
        if slot.idle_key.is_some() {
            return;
        }
        let key = IdleKey {
            unresponsive: slot.fsm.is_unresponsive(),
            idle_since_ms: slot.fsm.state_since_ms(),
            seq: slot.seq,
        };
        let caps = slot.fsm.capabilities().clone();
        // Work waiting for it is assigned at once, as `match_agent` would,
        // without entering the idle index only to leave it again.
        if self.reattachable_task(agent_id).is_none() {
            if let Some(task_id) = self.queue.best_queued(&caps).map(|t| t.id().clone()) {
                self.assign(now_ms, &task_id, agent_id);
                return;
            }
        }
        if let Some(slot) = self.agents.get_mut(agent_id) {
            slot.idle_key = Some(key.clone());
        }
        self.idle.insert(&caps, key, agent_id.clone());
        self.match_agent(now_ms, agent_id);
    }

    fn make_unavailable(&mut self, agent_id: &AgentId) {
        if let Some(slot) = self.agents.get_mut(agent_id) {
            leave_idle(&mut self.idle, slot);
        }
    }

    /// Offers an idle agent the best queued task it can take.
    fn match_agent(&mut self, now_ms: u64, agent_id: &AgentId) {
        let Some(slot) = self.agents.get(agent_id) else {
            return;
        };
        if slot.idle_key.is_none() {
            return;
        }
        // Its own task back rather than a second run of it elsewhere.
        if let Some(task_id) = self.reattachable_task(agent_id) {
            if self
                .reattach_reclaimed(now_ms, agent_id, &task_id, true)
                .is_some()
            {
                return;
            }
        }
        let Some(slot) = self.agents.get(agent_id) else {
            return;
        };
        let best = self
            .queue
            .best_queued(slot.fsm.capabilities())
            .map(|task| task.id().clone());
        if let Some(task_id) = best {
            self.assign(now_ms, &task_id, agent_id);
        }
    }

    fn assign(&mut self, now_ms: u64, task_id: &TaskId, agent_id: &AgentId) {
        let generation = self
            .queue
            .assign(now_ms, task_id, agent_id)
            .expect("indexed tasks are queued");
        self.make_unavailable(agent_id);
        let accept_timeout_ms = self.config.accept_timeout_ms;
        self.move_agent(agent_id, |fsm| {
            fsm.assign(now_ms, task_id.clone(), generation, accept_timeout_ms)
                .expect("indexed agents are idle")
        })
        .expect("indexed agents exist");
        let task = self.queue.get(task_id).expect("assigned task is live");
        self.actions.push_back(Action::Assign(Assignment {
            agent_id: agent_id.clone(),
            task_id: task_id.clone(),
            generation,
            assigned_at_ms: now_ms,
            description: task.description().clone(),
            metadata: task.metadata().clone(),
        }));
    }
}

/// Removes and returns, in deadline order, the agents whose deadline is due.
fn take_due(deadlines: &mut BTreeSet<(u64, AgentId)>, now_ms: u64) -> Vec<AgentId> {
    let mut due = Vec::new();
    while deadlines.first().is_some_and(|(at, _)| *at <= now_ms) {
        if let Some((_, agent_id)) = deadlines.pop_first() {
            due.push(agent_id);
        }
    }
    due
}

/// Takes the agent of `slot` out of the idle index, if it is there.
fn leave_idle(idle: &mut IdleAgents, slot: &mut AgentSlot) {
    if let Some(key) = slot.idle_key.take() {
        idle.remove(slot.fsm.capabilities(), &key);
    }
}

//! The reference model of the queue: the real [`Queue`], a [`MemoryStore`] and
//! a tiny model that predicts every observable, driven by one [`QueueOp`] at a
//! time.

use std::collections::BTreeMap;

use super::MemoryStore;
use crate::*;

/// The agents the model's operations speak for.
pub const MODEL_AGENTS: [&str; 3] = ["a0", "a1", "a2"];
const AGENTS: [&str; 3] = MODEL_AGENTS;

/// One operation on the queue, its store and the model; see
/// [`strategies::queue_op`](super::strategies::queue_op).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueOp {
    /// Submits the next task `t0`, `t1`, ...
    Submit {
        /// Lane index into [`Priority::ALL`].
        priority: u8,
        /// Its `max_retries`.
        max_retries: u8,
        /// 0: `complete_by` now, 1: just before now (both refused), 2-3: in the
        /// future, otherwise none.
        deadline: u8,
        /// A description longer than the queue keeps in memory.
        long: bool,
        /// 0: run at once; 1: `run_at` just passed; 2-3: `run_at` ahead.
        run_at: u8,
        /// Tasks it depends on (indexes into the tasks so far; one past the
        /// end names an unknown task).
        deps: Vec<usize>,
        /// An idempotency key of the one submitter, if any.
        key: Option<u8>,
    },
    /// Its holder completes the task with the current generation (so that
    /// dependencies complete often enough to release their dependents).
    CompleteByHolder {
        /// Index of a submitted task (modulo their number).
        task: usize,
    },
    /// Time passes; scheduled tasks whose `run_at` came are released.
    Tick {
        /// The pause.
        advance_ms: u64,
    },
    /// Assigns the head of the queue to an agent.
    AssignNext {
        /// Index into [`MODEL_AGENTS`].
        agent: usize,
    },
    /// An agent accepts a task.
    Accept {
        /// Index of a submitted task (modulo their number).
        task: usize,
        /// Index into [`MODEL_AGENTS`].
        agent: usize,
    },
    /// An agent reports progress.
    Progress {
        /// Index of a submitted task (modulo their number).
        task: usize,
        /// Index into [`MODEL_AGENTS`].
        agent: usize,
    },
    /// An agent completes a task, with its current generation or a stale one.
    Complete {
        /// Index of a submitted task (modulo their number).
        task: usize,
        /// Index into [`MODEL_AGENTS`].
        agent: usize,
        /// Whether the generation sent is not the current one.
        stale: bool,
    },
    /// An agent fails a task, with its current generation or another one.
    Fail {
        /// Index of a submitted task (modulo their number).
        task: usize,
        /// Index into [`MODEL_AGENTS`].
        agent: usize,
        /// Whether the generation sent is not the current one.
        stale: bool,
    },
    /// An agent rejects a task.
    Reject {
        /// Index of a submitted task (modulo their number).
        task: usize,
        /// Index into [`MODEL_AGENTS`].
        agent: usize,
    },
    /// The task is taken back from its holder (its connection dropped).
    Reclaim {
        /// Index of a submitted task (modulo their number).
        task: usize,
    },
    /// The holder's connection closed over an oversize result.
    FailHolder {
        /// Index of a submitted task (modulo their number).
        task: usize,
    },
    /// An agent says, after a reconnect, that it still works on a task.
    Recover {
        /// Index of a submitted task (modulo their number).
        task: usize,
        /// Index into [`MODEL_AGENTS`].
        agent: usize,
    },
    /// An agent re-attaches to a task reclaimed from it.
    Reattach {
        /// Index of a submitted task (modulo their number).
        task: usize,
        /// Index into [`MODEL_AGENTS`].
        agent: usize,
    },
    /// An operator cancels a task.
    Cancel {
        /// Index of a submitted task (modulo their number).
        task: usize,
    },
    /// An operator retries a task from the dead letter (its stored record).
    RetryDeadLetter {
        /// Index of a submitted task (modulo their number).
        task: usize,
    },
    /// Time passes, then the sweep runs.
    Sweep {
        /// The pause.
        advance_ms: u64,
    },
    /// The process restarts: the queue is restored from the store.
    Restore,
}

/// The reference model: just enough to predict every observable.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelTask {
    status: Status,
    generation: u64,
    retry_count: u32,
    reclaim_count: u32,
    max_retries: u32,
    last_error: Option<String>,
    holder: Option<usize>,
    priority: Priority,
    seq: u64,
    last_alive_ms: Option<u64>,
    complete_by_ms: Option<u64>,
    /// The agent and generation of the newest assignment.
    last_assigned: Option<(usize, u64)>,
    /// Taken back from this agent (and its assignment's generation) when its
    /// connection dropped, assigned to nobody since: it may have it back.
    reattachable: Option<(usize, u64)>,
    /// As submitted; storage must always hold it.
    description: String,
    run_at_ms: Option<u64>,
    /// Indexes of the tasks it depends on, without repeats.
    deps: Vec<usize>,
    key: Option<u8>,
}

/// The real queue, its store and the reference model side by side.
///
/// [`QueueModel::apply`] runs a [`QueueOp`] on the queue, persists its changes
/// into the store, predicts the outcome with the model and panics with a
/// message naming the difference if queue, store and model disagree: results
/// and errors of every call, lane and FIFO order, generations, retry and
/// reclaim counts, holders, sweeps, texts kept out of memory, a refused
/// operation changing nothing, and a restore giving the same queue.
///
/// The queue runs with [`QueueModel::config`]: small budgets, so that short
/// sequences reach the dead letter.
#[derive(Debug)]
pub struct QueueModel {
    queue: Queue,
    /// Everything persisted so far, as the shell would keep it.
    store: MemoryStore,
    model: BTreeMap<usize, ModelTask>,
    ids: Vec<TaskId>,
    now_ms: u64,
    next_seq: u64,
    /// Tasks released by a completed dependency in this step.
    released: Vec<TaskId>,
    /// With a [`ScheduledWindow`]: scheduled tasks beyond it stay in storage,
    /// and the shell's part (reads answered, the timeout handled) runs after
    /// every step.
    windowed: bool,
}

const STUCK_MS: u64 = 1_000;
/// Small, so that sequences reach the end of the reclaim budget.
const MAX_RECLAIMS: u32 = 2;
/// Small, so that long descriptions are kept out of memory.
const MAX_INLINE: usize = 8;

/// The window of [`QueueModel::windowed`]: `run_at`s 150 ms ahead are beyond
/// it at first, and at most two scheduled tasks stay in memory.
const WINDOW: ScheduledWindow = ScheduledWindow {
    ahead_ms: 120,
    max_tasks: 2,
};

fn config() -> QueueConfig {
    QueueConfig {
        default_max_retries: 3,
        stuck_after_ms: STUCK_MS,
        max_reclaims: MAX_RECLAIMS,
        max_inline_payload_bytes: MAX_INLINE,
        scheduled_window: None,
    }
}

impl Default for QueueModel {
    fn default() -> Self {
        QueueModel::new()
    }
}

impl QueueModel {
    /// An empty queue, store and model at a fixed start time.
    pub fn new() -> QueueModel {
        QueueModel {
            queue: Queue::new(config()),
            windowed: false,
            store: MemoryStore::new(),
            model: BTreeMap::new(),
            ids: Vec::new(),
            now_ms: 1_000_000,
            next_seq: 0,
            released: Vec::new(),
        }
    }

    /// As [`QueueModel::new`], with a small [`ScheduledWindow`]: most
    /// scheduled tasks stay in storage, and the model checks that they
    /// behave as if they were in memory (the shell's part runs after every
    /// step: due tasks are released, the reads the queue asks for are
    /// answered from the store).
    pub fn windowed() -> QueueModel {
        QueueModel {
            queue: Queue::new(Self::windowed_config()),
            windowed: true,
            ..QueueModel::new()
        }
    }

    /// The settings of [`QueueModel::windowed`].
    pub fn windowed_config() -> QueueConfig {
        config().with_scheduled_window(Some(WINDOW))
    }

    fn own_config(&self) -> QueueConfig {
        if self.windowed {
            Self::windowed_config()
        } else {
            config()
        }
    }

    /// Whether the live task `id` is scheduled and left in storage.
    fn stored_only(&self, id: &TaskId) -> bool {
        self.windowed && self.queue.get(id).is_none()
    }

    /// Releases the scheduled tasks due by now, in `run_at` order, as the
    /// queue must (answering its reads when windowed); true if any was.
    fn release_due(&mut self) -> bool {
        let now = self.now_ms;
        let mut got = Vec::new();
        loop {
            self.queue.handle_timeout(now);
            got.extend(std::iter::from_fn(|| self.queue.poll_released()));
            self.persist();
            let load = if self.windowed {
                self.queue.poll_load(now)
            } else {
                None
            };
            let Some(load) = load else {
                break;
            };
            let page = self.store.load_scheduled(&load);
            self.queue.handle_scheduled_loaded(now, page);
        }
        let mut due: Vec<(u64, u64, usize)> = self
            .model
            .iter()
            .filter(|(_, m)| m.status == Status::Scheduled)
            .filter_map(|(i, m)| Some((m.run_at_ms?, m.seq, *i)))
            .filter(|(at, _, _)| *at <= now)
            .collect();
        due.sort();
        let mut released = Vec::new();
        for (_, _, i) in &due {
            let m = self.model.get_mut(i).unwrap();
            m.status = Status::Queued;
            m.seq = self.next_seq;
            self.next_seq += 1;
            released.push(self.ids[*i].clone());
        }
        assert_eq!(got, released, "released in run_at order");
        !due.is_empty()
    }

    /// Task `ended` reached a final state: its waiting dependents are released
    /// when it completed, and cancelled, theirs after them, when it did not
    /// (in the order the queue takes: submission order, last cancelled first).
    fn cascade(&mut self, ended: usize) {
        let now = self.now_ms;
        let mut stack = vec![ended];
        while let Some(dep) = stack.pop() {
            let status = self.model[&dep].status;
            let dependents: Vec<usize> = self
                .model
                .iter()
                .filter(|(_, m)| m.status == Status::Waiting && m.deps.contains(&dep))
                .map(|(i, _)| *i)
                .collect();
            for w in dependents {
                if status == Status::Completed {
                    let done = self.model[&w]
                        .deps
                        .iter()
                        .all(|d| self.model[d].status == Status::Completed);
                    if !done {
                        continue;
                    }
                    let seq = self.next_seq;
                    let m = self.model.get_mut(&w).unwrap();
                    if m.run_at_ms.is_some_and(|at| at > now) {
                        m.status = Status::Scheduled;
                    } else {
                        m.status = Status::Queued;
                        m.seq = seq;
                        self.next_seq += 1;
                        self.released.push(self.ids[w].clone());
                    }
                } else {
                    let error = format!("{DEPENDENCY_FAILED}:{}", self.ids[dep]);
                    let m = self.model.get_mut(&w).unwrap();
                    m.status = Status::Cancelled;
                    m.last_error = Some(error);
                    stack.push(w);
                }
            }
        }
    }

    /// The settings of the model's queue: a stuck task after 1 s, two reclaims,
    /// texts over 8 bytes out of memory, three retries by default.
    pub fn config() -> QueueConfig {
        config()
    }

    /// The real queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// What was persisted.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// The virtual time of the last operation.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn pick(&self, task: usize) -> Option<(usize, TaskId)> {
        if self.ids.is_empty() {
            return None;
        }
        let idx = task % self.ids.len();
        Some((idx, self.ids[idx].clone()))
    }

    /// Writes the records as the shell does: a text the record leaves out
    /// ([`Payload::Stored`]) keeps the one already stored.
    fn persist(&mut self) -> Vec<Change> {
        match self.store.persist(&mut self.queue) {
            Ok(changes) => changes,
            Err(e) => panic!("{e}"),
        }
    }

    fn requeue(m: &mut ModelTask) {
        m.status = Status::Queued;
        m.holder = None;
        m.last_alive_ms = None;
        m.reattachable = None;
    }

    /// Whether a report of `agent` with generation `gen` is its own last
    /// assignment's, while nobody else was assigned the task since.
    fn widened(m: &ModelTask, agent: usize, gen: u64) -> bool {
        m.last_assigned == Some((agent, gen))
            && ((m.status == Status::Queued && m.reattachable == Some((agent, gen)))
                || (m.status.is_held() && m.holder == Some(agent)))
    }

    /// A counted failure of a held task; a dead letter keeps its last holder.
    fn fail(m: &mut ModelTask, error: &str) -> FailOutcome {
        m.retry_count += 1;
        m.last_error = Some(error.to_owned());
        if m.retry_count <= m.max_retries {
            QueueModel::requeue(m);
            FailOutcome::Retried
        } else {
            m.status = Status::DeadLetter;
            m.reattachable = None;
            FailOutcome::DeadLettered
        }
    }

    /// A reclaim of a held task: the generation moves on, one reclaim is counted.
    fn reclaim(m: &mut ModelTask) -> ReclaimOutcome {
        m.generation += 1;
        m.reclaim_count += 1;
        if m.reclaim_count <= MAX_RECLAIMS {
            QueueModel::requeue(m);
            ReclaimOutcome::Requeued
        } else {
            m.status = Status::DeadLetter;
            m.reattachable = None;
            m.last_error = Some(TOO_MANY_RECLAIMS.to_owned());
            ReclaimOutcome::DeadLettered
        }
    }

    /// Runs one operation on queue, store and model, then checks them all.
    ///
    /// # Panics
    ///
    /// Where the queue, the store and the model disagree.
    pub fn apply(&mut self, op: &QueueOp) {
        self.now_ms += 1;
        let statuses_before: Vec<Status> = self.model.values().map(|m| m.status).collect();
        let now = self.now_ms;
        let before: Vec<Task> = self
            .ids
            .iter()
            .filter_map(|id| self.queue.get(id).cloned())
            .collect();
        let ok = match *op {
            QueueOp::Submit {
                priority,
                max_retries,
                deadline,
                long,
                run_at,
                ref deps,
                key,
            } => 'submit: {
                let idx = self.ids.len();
                let id = TaskId::from(format!("t{idx}"));
                let priority = Priority::ALL[priority as usize];
                let complete_by_ms = match deadline {
                    0 => Some(now),
                    1 => Some(now - 1),
                    2 | 3 => Some(now + 300),
                    _ => None,
                };
                let description = if long {
                    format!("the long description of {id}")
                } else {
                    "work".to_owned()
                };
                let mut new = NewTask::new(id.clone(), description.clone())
                    .with_priority(priority)
                    .with_max_retries(max_retries as u32)
                    .with_submitted_by("s");
                new.complete_by_ms = complete_by_ms;
                if let Some(by) = complete_by_ms.filter(|by| *by <= now) {
                    assert_eq!(
                        self.queue.submit(now, new).unwrap_err(),
                        SubmitError::DeadlinePassed {
                            complete_by_ms: by,
                            now_ms: now
                        }
                    );
                    break 'submit false;
                }
                let run_at_ms = match run_at {
                    1 => Some(now - 1),
                    2 | 3 => Some(now + 50 * u64::from(run_at)),
                    _ => None,
                };
                new.run_at_ms = run_at_ms;
                // One task per key: a key whose task is final is storage's
                // business (the session asks it), not the queue's.
                if let Some(k) = key {
                    let owner = self.model.iter().find(|(_, m)| m.key == Some(k));
                    match owner {
                        Some((_, m)) if m.status.is_final() => break 'submit false,
                        // Left in storage: storage answers, as for a final one.
                        Some((idx, _)) if self.stored_only(&self.ids[*idx]) => break 'submit false,
                        Some((idx, _)) => {
                            new.idempotency_key = Some(format!("key{k}"));
                            assert_eq!(
                                self.queue.submit(now, new).unwrap_err(),
                                SubmitError::DuplicateKey(self.ids[*idx].clone())
                            );
                            break 'submit false;
                        }
                        None => new.idempotency_key = Some(format!("key{k}")),
                    }
                }
                let mut dep_idxs: Vec<usize> = Vec::new();
                for d in deps {
                    if *d >= idx {
                        new.depends_on = vec![TaskId::from(format!("t{}", idx + 1))];
                        assert!(matches!(
                            self.queue.submit(now, new).unwrap_err(),
                            SubmitError::UnknownDependency(_)
                        ));
                        break 'submit false;
                    }
                    if !dep_idxs.contains(d) {
                        dep_idxs.push(*d);
                    }
                    new.depends_on.push(self.ids[*d].clone());
                }
                for d in &dep_idxs {
                    let m = &self.model[d];
                    if m.status.is_final() || self.stored_only(&self.ids[*d]) {
                        // Read from storage by the caller, as the session does.
                        let stored = self.store.get(&self.ids[*d]).expect("persisted").status;
                        new.settled_dependencies
                            .push((self.ids[*d].clone(), stored));
                    }
                }
                if let Some(d) = dep_idxs.iter().find(|d| {
                    matches!(
                        self.model[*d].status,
                        Status::DeadLetter | Status::Cancelled
                    )
                }) {
                    let status = self.model[d].status;
                    assert_eq!(
                        self.queue.submit(now, new).unwrap_err(),
                        SubmitError::DependencyFailed {
                            id: self.ids[*d].clone(),
                            status
                        }
                    );
                    break 'submit false;
                }
                self.queue.submit(now, new).expect("fresh id");
                self.ids.push(id);
                let waiting = dep_idxs
                    .iter()
                    .any(|d| self.model[d].status != Status::Completed);
                let status = if waiting {
                    Status::Waiting
                } else if run_at_ms.is_some_and(|at| at > now) {
                    Status::Scheduled
                } else {
                    Status::Queued
                };
                self.model.insert(
                    idx,
                    ModelTask {
                        status,
                        generation: 0,
                        retry_count: 0,
                        reclaim_count: 0,
                        max_retries: max_retries as u32,
                        last_error: None,
                        holder: None,
                        priority,
                        seq: self.next_seq,
                        last_alive_ms: None,
                        complete_by_ms,
                        last_assigned: None,
                        reattachable: None,
                        description,
                        run_at_ms,
                        deps: dep_idxs,
                        key,
                    },
                );
                self.next_seq += 1;
                true
            }
            QueueOp::CompleteByHolder { task } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let m = self.model.get_mut(&idx).unwrap();
                let Some(holder) = m.holder.filter(|_| m.status.is_held()) else {
                    return;
                };
                let res = self.queue.complete(
                    now,
                    &id,
                    &AgentId::from(AGENTS[holder]),
                    m.generation,
                    Completion::default(),
                );
                assert_eq!(res, Ok(()));
                m.status = Status::Completed;
                true
            }
            QueueOp::Tick { advance_ms } => {
                self.now_ms += advance_ms;
                // Windowed, time passing may read tasks into memory.
                self.release_due() || self.windowed
            }
            QueueOp::AssignNext { agent } => {
                let expected = self
                    .model
                    .iter()
                    .filter(|(_, m)| m.status == Status::Queued)
                    .min_by_key(|(_, m)| (m.priority.rank(), m.seq))
                    .map(|(idx, _)| *idx);
                let head = self.queue.next_queued().map(|t| t.id.clone());
                assert_eq!(
                    head,
                    expected.map(|i| self.ids[i].clone()),
                    "lane/FIFO order"
                );
                match expected {
                    None => false,
                    Some(idx) => {
                        let g = self
                            .queue
                            .assign(now, &self.ids[idx], &AgentId::from(AGENTS[agent]))
                            .expect("head is queued");
                        let m = self.model.get_mut(&idx).unwrap();
                        m.generation += 1;
                        assert_eq!(g, m.generation);
                        m.status = Status::Assigned;
                        m.holder = Some(agent);
                        m.last_alive_ms = Some(now);
                        m.last_assigned = Some((agent, g));
                        m.reattachable = None;
                        true
                    }
                }
            }
            QueueOp::Accept { task, agent } => self.held_op(
                task,
                agent,
                |q, id, a| q.accept(now, id, a),
                |m| {
                    if m.status != Status::Assigned {
                        return false;
                    }
                    m.status = Status::Working;
                    m.last_alive_ms = Some(now);
                    true
                },
            ),
            QueueOp::Progress { task, agent } => self.held_op(
                task,
                agent,
                |q, id, a| q.progress(now, id, a),
                |m| {
                    m.last_alive_ms = Some(now);
                    true
                },
            ),
            QueueOp::Reject { task, agent } => self.held_op(
                task,
                agent,
                |q, id, a| q.reject(now, id, a, "busy"),
                |m| {
                    m.generation += 1;
                    QueueModel::requeue(m);
                    true
                },
            ),
            QueueOp::Complete { task, agent, stale } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let m = self.model.get(&idx).unwrap().clone();
                let gen = if stale {
                    m.generation.wrapping_sub(1)
                } else {
                    m.generation
                };
                let res = self.queue.complete(
                    now,
                    &id,
                    &AgentId::from(AGENTS[agent]),
                    gen,
                    Completion::default(),
                );
                let normal = !m.status.is_final() && !stale && m.holder == Some(agent);
                let widened = QueueModel::widened(&m, agent, gen);
                let legal = normal || widened;
                assert_eq!(res.is_ok(), legal, "complete {op:?} on {m:?}: {res:?}");
                if !m.status.is_final() && stale && !widened {
                    if self.stored_only(&id) {
                        // Never held, not in memory: a report about it is unknown.
                        assert_eq!(res, Err(TaskError::NotFound(id.clone())));
                    } else {
                        assert!(matches!(res, Err(TaskError::StaleGeneration { .. })));
                    }
                }
                if widened && m.status == Status::Queued {
                    // Re-attached on the way: one more generation, held by the agent.
                    let m = self.model.get_mut(&idx).unwrap();
                    m.generation += 1;
                    m.holder = Some(agent);
                }
                if legal {
                    let m = self.model.get_mut(&idx).unwrap();
                    m.status = Status::Completed;
                }
                legal
            }
            QueueOp::Fail { task, agent, stale } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let m = self.model.get(&idx).unwrap().clone();
                let gen = if stale {
                    m.generation + 1
                } else {
                    m.generation
                };
                let res = self
                    .queue
                    .fail(now, &id, &AgentId::from(AGENTS[agent]), gen, "boom");
                let normal = !m.status.is_final() && !stale && m.holder == Some(agent);
                let widened = QueueModel::widened(&m, agent, gen);
                let legal = normal || widened;
                assert_eq!(res.is_ok(), legal, "fail {op:?} on {m:?}: {res:?}");
                if legal {
                    let m = self.model.get_mut(&idx).unwrap();
                    if widened && m.status == Status::Queued {
                        m.generation += 1;
                        m.holder = Some(agent);
                    }
                    assert_eq!(res.unwrap(), QueueModel::fail(m, "boom"));
                }
                legal
            }
            QueueOp::Reclaim { task } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let res = self.queue.reclaim(now, &id, ReclaimReason::Disconnected);
                let m = self.model.get_mut(&idx).unwrap();
                let legal = m.status.is_held();
                assert_eq!(res.is_ok(), legal);
                if legal {
                    let holder = AgentId::from(AGENTS[m.holder.unwrap()]);
                    let last = m.last_assigned;
                    let outcome = QueueModel::reclaim(m);
                    if outcome == ReclaimOutcome::Requeued {
                        // Taken back for a lost connection: its holder may re-attach.
                        m.reattachable = last;
                    }
                    assert_eq!(
                        res.unwrap(),
                        Reclaimed {
                            agent_id: holder,
                            outcome
                        }
                    );
                }
                legal
            }
            QueueOp::FailHolder { task } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let res = self.queue.fail_holder(now, &id, "result_too_large");
                let m = self.model.get_mut(&idx).unwrap();
                let legal = m.status.is_held();
                assert_eq!(res.is_ok(), legal);
                if legal {
                    let holder = AgentId::from(AGENTS[m.holder.unwrap()]);
                    m.generation += 1;
                    let outcome = QueueModel::fail(m, "result_too_large");
                    assert_eq!(res.unwrap(), (holder, outcome));
                }
                legal
            }
            QueueOp::Reattach { task, agent } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let res = self.queue.reattach(now, &id, &AgentId::from(AGENTS[agent]));
                let m = self.model.get_mut(&idx).unwrap();
                let legal =
                    m.status == Status::Queued && m.reattachable.map(|(a, _)| a) == Some(agent);
                assert_eq!(res.is_ok(), legal, "reattach {op:?} on {m:?}: {res:?}");
                if legal {
                    m.generation += 1;
                    assert_eq!(res.unwrap(), m.generation);
                    m.status = Status::Working;
                    m.holder = Some(agent);
                    m.last_alive_ms = Some(now);
                    m.reattachable = None;
                }
                legal
            }
            QueueOp::Recover { task, agent } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let res = self.queue.recover(now, &id, &AgentId::from(AGENTS[agent]));
                let m = self.model.get_mut(&idx).unwrap();
                if m.status.is_held() && m.holder == Some(agent) {
                    assert_eq!(
                        res,
                        Recovery::Continue {
                            generation: m.generation
                        }
                    );
                    m.last_alive_ms = Some(now);
                    true
                } else {
                    assert_eq!(res, Recovery::Reassign);
                    false
                }
            }
            QueueOp::Cancel { task } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let res = if self.stored_only(&id) && !self.model[&idx].status.is_final() {
                    // The session cancels it from its stored record.
                    let record = self.store.get(&id).cloned().expect("persisted");
                    self.queue.cancel_stored(now, record).map(|()| None)
                } else {
                    self.queue.cancel(now, &id)
                };
                let m = self.model.get_mut(&idx).unwrap();
                let legal = !m.status.is_final();
                assert_eq!(res.is_ok(), legal);
                if legal {
                    assert_eq!(
                        res.unwrap().map(|a| a.to_string()),
                        m.holder.map(|h| AGENTS[h].to_owned())
                    );
                    m.status = Status::Cancelled;
                }
                legal
            }
            QueueOp::RetryDeadLetter { task } => {
                let Some((idx, id)) = self.pick(task) else {
                    return;
                };
                let record = self
                    .store
                    .get(&id)
                    .cloned()
                    .expect("submitted tasks are persisted");
                let res = self.queue.retry_dead_letter(now, record);
                let m = self.model.get_mut(&idx).unwrap();
                let legal = m.status == Status::DeadLetter;
                assert_eq!(res.is_ok(), legal, "{res:?}");
                if legal {
                    m.status = Status::Queued;
                    m.holder = None;
                    m.retry_count = 0;
                    m.reclaim_count = 0;
                    m.seq = self.next_seq;
                    self.next_seq = self.next_seq.max(m.seq) + 1;
                }
                legal
            }
            QueueOp::Sweep { advance_ms } => {
                self.now_ms += advance_ms;
                let now = self.now_ms;
                let swept = self.queue.sweep(now);
                let mut expected = Vec::new();
                for (idx, m) in self.model.iter_mut() {
                    if !m.status.is_held() {
                        continue;
                    }
                    let task_id = self.ids[*idx].clone();
                    let agent_id = AgentId::from(AGENTS[m.holder.unwrap()]);
                    if m.complete_by_ms.is_some_and(|by| now > by) {
                        m.generation += 1;
                        let outcome = QueueModel::fail(m, DEADLINE_EXCEEDED);
                        expected.push(Swept::Overdue {
                            task_id,
                            agent_id,
                            outcome,
                        });
                    } else if m.last_alive_ms.is_some_and(|a| now - a >= STUCK_MS) {
                        let outcome = QueueModel::reclaim(m);
                        expected.push(Swept::Stuck {
                            task_id,
                            agent_id,
                            outcome,
                        });
                    }
                }
                let mut got = swept;
                got.sort_by(|a, b| a.task_id().cmp(b.task_id()));
                expected.sort_by(|a, b| a.task_id().cmp(b.task_id()));
                assert_eq!(got, expected);
                !expected.is_empty()
            }
            QueueOp::Restore => {
                if self.windowed {
                    // The shell's part at this time, before the restart.
                    self.release_due();
                }
                self.persist();
                let mut restored = if self.windowed {
                    self.store.restore_queue_windowed(self.own_config())
                } else {
                    self.store.restore_queue(config())
                }
                .expect("own records restore");
                if self.windowed {
                    // The shell's part after a start: reads, and nothing due.
                    std::mem::swap(&mut self.queue, &mut restored);
                    assert!(!self.release_due(), "nothing came due at a restore");
                    std::mem::swap(&mut self.queue, &mut restored);
                }
                let order = |q: &Queue| -> Vec<TaskId> {
                    q.queued_in_order().map(|t| t.id.clone()).collect()
                };
                assert_eq!(order(&restored), order(&self.queue));
                for id in &self.ids {
                    assert_eq!(restored.get(id), self.queue.get(id), "restored {id}");
                }
                assert_eq!(restored.len(), self.queue.len());
                self.queue = restored;
                // Windowed, the shell's part before it may have read or released.
                self.windowed
            }
        };
        let mut ended: Vec<(u64, usize)> = self
            .model
            .iter()
            .zip(statuses_before)
            .filter(|((_, m), before)| m.status.is_final() && !before.is_final())
            .map(|((i, m), _)| (m.seq, *i))
            .collect();
        ended.sort();
        for (_, i) in ended {
            self.cascade(i);
        }
        let released: Vec<TaskId> = std::iter::from_fn(|| self.queue.poll_released()).collect();
        let mut expected_released: Vec<TaskId> = std::mem::take(&mut self.released);
        expected_released.sort();
        let mut released_sorted = released;
        released_sorted.sort();
        assert_eq!(
            released_sorted, expected_released,
            "released by dependencies"
        );
        let changes = self.persist();
        if !ok {
            assert!(
                changes.is_empty(),
                "a refused operation emitted {changes:?}"
            );
            let after: Vec<Task> = self
                .ids
                .iter()
                .filter_map(|id| self.queue.get(id).cloned())
                .collect();
            assert_eq!(before, after, "a refused operation changed the queue");
        }
        if self.windowed {
            self.release_due();
        }
        self.check();
    }

    /// Runs an operation that needs `agent` to hold `task`; `model` applies the change.
    fn held_op(
        &mut self,
        task: usize,
        agent: usize,
        real: impl FnOnce(&mut Queue, &TaskId, &AgentId) -> Result<(), TaskError>,
        model: impl FnOnce(&mut ModelTask) -> bool,
    ) -> bool {
        let Some((idx, id)) = self.pick(task) else {
            return false;
        };
        let res = real(&mut self.queue, &id, &AgentId::from(AGENTS[agent]));
        let m = self.model.get_mut(&idx).unwrap();
        let legal = m.status.is_held() && m.holder == Some(agent) && model(m);
        assert_eq!(res.is_ok(), legal, "{res:?} on {m:?}");
        legal
    }

    /// Checks that store and queue hold what the model predicts.
    ///
    /// # Panics
    ///
    /// At the first difference.
    pub fn check(&self) {
        for (idx, m) in &self.model {
            let id = &self.ids[*idx];
            let stored = self
                .store
                .get(id)
                .expect("no task is ever lost from storage");
            assert_eq!(stored.status, m.status, "{id} stored status");
            assert_eq!(stored.generation, m.generation, "{id} generation");
            assert_eq!(stored.retry_count, m.retry_count, "{id} retry_count");
            assert_eq!(stored.reclaim_count, m.reclaim_count, "{id} reclaim_count");
            assert_eq!(
                stored.last_error.as_deref(),
                m.last_error.as_deref(),
                "{id} last_error"
            );
            assert_eq!(
                stored.assigned_to().as_ref().map(|a| a.to_string()),
                m.holder.map(|h| AGENTS[h].to_owned())
            );
            assert_eq!(
                stored.description.as_inline(),
                Some(m.description.as_str()),
                "{id}: storage holds the description"
            );
            match self.queue.get(id) {
                Some(live) => {
                    assert!(!m.status.is_final(), "{id} final but live");
                    assert_eq!(
                        live.description.is_stored(),
                        m.description.len() > MAX_INLINE,
                        "{id}: only a short description stays in memory"
                    );
                    let mut kept = stored.clone();
                    kept.description.elide(MAX_INLINE);
                    kept.metadata.elide(MAX_INLINE);
                    assert_eq!(live, &kept, "{id}: memory and storage agree");
                }
                None if m.status == Status::Scheduled && self.windowed => {
                    let key = (m.run_at_ms.unwrap_or(0), m.seq);
                    assert!(
                        self.queue.stored_from().is_some_and(|from| key >= from),
                        "{id} left in storage before the stored ones start"
                    );
                }
                None => assert!(m.status.is_final(), "{id} live but missing"),
            }
            assert!(stored.history.len() <= HISTORY_CAP);
        }
        let live = self.model.values().filter(|m| !m.status.is_final()).count();
        let n_stored = self
            .model
            .iter()
            .filter(|(i, m)| m.status == Status::Scheduled && self.stored_only(&self.ids[**i]))
            .count();
        assert_eq!(self.queue.len() + n_stored, live);
        let next_run_at = self
            .model
            .values()
            .filter(|m| m.status == Status::Scheduled)
            .filter_map(|m| m.run_at_ms)
            .min();
        if self.windowed {
            // Never late; the window bounded; the earliest ones in memory.
            let wake = self.queue.poll_timeout().unwrap_or(u64::MAX);
            assert!(wake <= next_run_at.unwrap_or(u64::MAX), "the next wake-up");
            assert!(self.queue.scheduled_in_memory() <= WINDOW.max_tasks);
            let horizon = self.now_ms + WINDOW.ahead_ms;
            let mut keys: Vec<(u64, u64, bool)> = self
                .model
                .iter()
                .filter(|(_, m)| m.status == Status::Scheduled)
                .map(|(i, m)| {
                    let in_memory = self.queue.get(&self.ids[*i]).is_some();
                    (m.run_at_ms.unwrap_or(0), m.seq, in_memory)
                })
                .collect();
            keys.sort();
            let expected: Vec<bool> = keys
                .iter()
                .enumerate()
                .map(|(n, (at, _, _))| n < WINDOW.max_tasks && *at <= horizon)
                .collect();
            let got: Vec<bool> = keys.iter().map(|k| k.2).collect();
            assert_eq!(got, expected, "memory holds the next ones due");
        } else {
            assert_eq!(self.queue.poll_timeout(), next_run_at, "the next wake-up");
        }
        for (idx, m) in &self.model {
            let stored = self.store.get(&self.ids[*idx]).expect("persisted");
            assert_eq!(stored.run_at_ms, m.run_at_ms);
            let deps: Vec<TaskId> = m.deps.iter().map(|d| self.ids[*d].clone()).collect();
            assert_eq!(stored.depends_on.to_vec(), deps);
            let key = m.key.map(|k| format!("key{k}"));
            assert_eq!(stored.idempotency_key.as_deref(), key.as_deref());
            let in_memory = self.queue.get(&self.ids[*idx]).is_some();
            if let (Some(key), false, true) = (&key, m.status.is_final(), in_memory) {
                assert_eq!(
                    self.queue.find_by_key(Some("s"), key),
                    Some(&self.ids[*idx])
                );
            }
        }
        let queued: Vec<TaskId> = self.queue.queued_in_order().map(|t| t.id.clone()).collect();
        let mut expected: Vec<(u8, u64, TaskId)> = self
            .model
            .iter()
            .filter(|(_, m)| m.status == Status::Queued)
            .map(|(i, m)| (m.priority.rank(), m.seq, self.ids[*i].clone()))
            .collect();
        expected.sort();
        let seqs: Vec<(u64, Option<u64>)> = expected
            .iter()
            .map(|e| (e.1, self.queue.get(&e.2).map(|t| t.queue_seq)))
            .collect();
        assert_eq!(
            queued,
            expected.into_iter().map(|e| e.2).collect::<Vec<_>>(),
            "lane order (model and queue places: {seqs:?})"
        );
    }
}

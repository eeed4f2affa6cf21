//! The coordinator's own decisions as one pure state machine: which connection
//! carries which agent, what a protocol message means in each state, how a request
//! turns into calls on the [`coordinator_scheduler::Scheduler`], and when a reply or frame may
//! leave (only after the commit of the changes it reports).
//!
//! This module performs no I/O: it reads no clock, spawns nothing, touches no
//! socket or file and never exits the process. Time comes in as `now_ms`; every
//! side effect comes out as an [`Output`].
//!
//! # The contract
//!
//! After every `handle_*` call (or a burst of them, which makes bigger batches),
//! the driver drains [`Session::poll_output`] until it returns `None` and carries
//! out each output in order:
//! - [`Output::Persist`]: commit the batch in one transaction, then call
//!   [`Session::handle_committed`] with its `seq` (or
//!   [`Session::handle_commit_failed`]);
//! - [`Output::Send`], [`Output::Reply`], [`Output::Close`], [`Output::Event`]:
//!   carry out at once (an event goes to the watchers of `/api/events`); the
//!   session only hands them out once the changes they report are committed;
//! - [`Output::Authenticate`]: check the token, then call
//!   [`Session::handle_identity`];
//! - [`Output::Load`], [`Output::LoadScheduled`], [`Output::Lookup`] and
//!   [`Output::LoadPayload`]: read from storage, then call
//!   [`Session::handle_loaded`], [`Session::handle_scheduled_loaded`],
//!   [`Session::handle_looked_up`] or [`Session::handle_payload_loaded`];
//! - [`Output::Fatal`]: stop the process with a non-zero exit.
//!
//! Then it arms one timer for [`Session::poll_timeout`] and calls
//! [`Session::handle_timeout`] when it fires.
//!
//! # Example
//!
//! ```
//! use coordinator_bin::session::{
//!     Answer, ConnId, Output, Request, RequestId, Session, SessionConfig,
//! };
//! use coordinator_queue::NewTask;
//!
//! let now_ms = 1_700_000_000_000;
//! let mut session = Session::new(SessionConfig::default(), now_ms, Vec::new())?;
//! let request = RequestId::new(1);
//! session.handle_request(now_ms, request, Request::Submit {
//!     tasks: vec![NewTask::new("t1", "build the docs")],
//! });
//! // Nothing is answered before the batch that holds the task is committed.
//! let Some(Output::Persist(batch)) = session.poll_output() else { panic!() };
//! assert_eq!(session.poll_output(), None);
//! session.handle_committed(batch.seq);
//! // Watchers hear of the task, then the submitter gets its answer.
//! let Some(Output::Event(_)) = session.poll_output() else { panic!() };
//! let Some(Output::Reply { request: r, answer: Answer::Submitted(receipts) }) =
//!     session.poll_output() else { panic!() };
//! assert_eq!((r, receipts[0].task_id.as_str()), (request, "t1"));
//! # let _ = ConnId::new(1);
//! # Ok::<(), coordinator_queue::RestoreError>(())
//! ```

mod api;
mod events;
mod gate;
mod leadership;
pub mod lease;
mod operators;
mod options;
mod output;
mod payloads;
mod requests;
mod views;
mod window;
mod wire;

use std::collections::{BTreeSet, HashMap, VecDeque};

use coordinator_queue::{AgentId, Change, IdMap, IdSet, RestoreError, Status, Task, TaskId};
use coordinator_scheduler::{Action, Scheduler, SchedulerConfig};
use coordinator_transport::protocol::CoordinatorMessage;

pub use api::{Answer, Identity, Receipt, Refusal, RefusalKind, Request};
pub use events::{AgentEvent, Event, EventKind, TaskEvent, IDS_PER_MS};
pub use gate::Batch;
pub use leadership::{
    LeadershipError, NotLeader, Role, CLOSE_TRY_AGAIN_LATER, FIRST_EPOCH, NOT_LEADER_REASON,
    NOT_LEADER_RETRY_AFTER_S,
};
pub use operators::{AgentTally, MinuteSample, CHART_MINUTES};
pub(crate) use options::receipt_status;
pub use options::Lookup;
pub use output::{ConnId, Fatal, Frame, LoadedPayload, Notice, Output, RequestId, TokenWrite};
pub use views::{AgentInfo, DashboardSnapshot, RecentCompletion};

use events::EventLog;
use gate::Gate;
use operators::Tallies;
use payloads::AwaitingPayload;
use views::Activity;

/// WebSocket close code: the server is going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code: policy violation (bad token, replaced connection, slow consumer).
pub const CLOSE_POLICY: u16 = 1008;

/// Settings of a [`Session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Settings of the scheduler (and its queue).
    pub scheduler: SchedulerConfig,
    /// Period of the overdue/stuck sweep and of the retention purge.
    pub sweep_interval_ms: u64,
    /// Final tasks older than this are purged.
    pub retention_ms: u64,
    /// A socket that has not identified by then is closed (1008).
    pub identify_timeout_ms: u64,
    /// At most this many sockets may be open without having identified; more are
    /// closed at once (1008).
    pub max_unidentified: usize,
    /// A submission that would take the number of queued tasks past this is
    /// refused whole ([`RefusalKind::QueueFull`]).
    pub max_queued: usize,
    /// A submission with a task whose metadata text is longer than this is
    /// refused whole ([`RefusalKind::MetadataTooLarge`]).
    pub max_metadata_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            scheduler: SchedulerConfig::default(),
            sweep_interval_ms: 30_000,
            retention_ms: 7 * 24 * 3_600_000,
            identify_timeout_ms: 10_000,
            max_unidentified: 1_000,
            max_queued: 1_000_000,
            max_metadata_bytes: 64 * 1024,
        }
    }
}

/// What a stored record is read for ([`Output::Load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadFor {
    /// A retry from the dead letter.
    Retry,
    /// A cancel of a scheduled task that only storage holds.
    Cancel,
}

/// An output waiting in the commit gate; frames for agents find their connection
/// when they leave.
#[derive(Debug)]
enum Held {
    Out(Output),
    ToAgent { agent_id: AgentId, frame: Frame },
}

/// An `identify` whose token is being checked.
#[derive(Debug)]
struct PendingIdentify {
    agent_id: String,
    name: Option<String>,
    capabilities: Vec<String>,
    /// The task the agent says it still works on.
    current_task: Option<String>,
}

/// One open agent socket.
#[derive(Debug, Default)]
struct Conn {
    /// The agent it speaks for, once identified.
    agent: Option<AgentId>,
    /// An identify waiting for its token check.
    identifying: Option<PendingIdentify>,
    /// A close was asked for: nothing more is read from it.
    closing: bool,
    /// Who the token it identified with speaks for (revoking it closes the socket).
    identity: Option<Identity>,
    /// While it waits to identify: its deadline (its entry in `identify_deadlines`).
    identify_by_ms: Option<u64>,
}

/// The coordinator's session core. See the [module documentation](self) for the
/// order in which its outputs must be drained.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    scheduler: Scheduler,
    gate: Gate<Held>,
    /// Outputs that need no commit (token checks, notices, closes of sockets that
    /// misbehave), handed out before anything released by the gate.
    ready: VecDeque<Output>,
    conns: IdMap<ConnId, Conn>,
    names: HashMap<AgentId, String>,
    activity: Activity,
    /// Event numbering and what watchers were last shown of each agent.
    events: EventLog,
    /// Per-agent tallies and per-minute samples for operators.
    tallies: Tallies,
    /// Retries and cancels waiting for their stored record, by request.
    loading: IdMap<RequestId, (String, LoadFor)>,
    /// Tasks that reached a final state while a cancel waits for its stored
    /// record (a record read before that is stale).
    ended_while_loading: IdSet<TaskId>,
    /// The read of scheduled tasks handed out and not answered yet.
    scheduled_read: Option<u64>,
    /// Reads of scheduled tasks handed out so far.
    reads_asked: u64,
    /// Submissions waiting for what storage knows of their options.
    lookups: options::Lookups,
    /// Agents whose next frame is a `task_assign` waiting for its texts from
    /// storage, with the frames queued behind it.
    awaiting_payload: HashMap<AgentId, AwaitingPayload>,
    /// Sockets waiting to identify, by deadline: exactly the open, not closing,
    /// not yet identified ones (so its length is how many wait).
    identify_deadlines: BTreeSet<(u64, ConnId)>,
    started_ms: u64,
    next_sweep_ms: u64,
    fatal: Option<Fatal>,
    /// Leader (serving) or standby (see `leadership.rs`).
    role: Role,
    /// The newest epoch led; a takeover must bring a newer one.
    highest_epoch: u64,
}

impl Session {
    /// A session over the task records restored from storage at `now_ms`; it
    /// leads from the start, in epoch [`FIRST_EPOCH`] (see
    /// [`Session::new_standby`] for one that does not).
    pub fn new(
        config: SessionConfig,
        now_ms: u64,
        records: Vec<Task>,
    ) -> Result<Session, RestoreError> {
        let scheduler = Scheduler::restore(config.scheduler.clone(), now_ms, records)?;
        Ok(Session {
            next_sweep_ms: now_ms.saturating_add(config.sweep_interval_ms.max(1)),
            config,
            scheduler,
            gate: Gate::new(),
            ready: VecDeque::new(),
            conns: IdMap::default(),
            names: HashMap::new(),
            activity: Activity::new(),
            events: EventLog::new(now_ms),
            tallies: Tallies::default(),
            loading: IdMap::default(),
            ended_while_loading: IdSet::default(),
            scheduled_read: None,
            reads_asked: 0,
            lookups: options::Lookups::default(),
            awaiting_payload: HashMap::new(),
            identify_deadlines: BTreeSet::new(),
            started_ms: now_ms,
            fatal: None,
            role: Role::Leader { epoch: FIRST_EPOCH },
            highest_epoch: FIRST_EPOCH,
        })
    }

    /// The scheduler, for reads.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The agent a connection speaks for, if it has identified.
    pub fn agent_of(&self, conn: ConnId) -> Option<&AgentId> {
        self.conns.get(&conn)?.agent.as_ref()
    }

    /// Open connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// True once the session has stopped for good.
    pub fn is_failed(&self) -> bool {
        self.fatal.is_some()
    }

    /// True when nothing is staged, in flight, held, waiting for a read or ready.
    pub fn is_settled(&self) -> bool {
        self.gate.is_settled()
            && self.ready.is_empty()
            && self.awaiting_payload.is_empty()
            && self.lookups.is_empty()
            && self.scheduled_read.is_none()
    }

    /// True while a batch handed out in [`Output::Persist`] is not committed yet.
    pub fn awaits_commit(&self) -> bool {
        self.fatal.is_none() && self.gate.awaits_commit()
    }

    /// The newest batch number reported committed.
    pub fn committed_seq(&self) -> u64 {
        self.gate.committed_seq()
    }

    /// The next thing to carry out; `None` when there is nothing until the next input.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(output) = self.ready.pop_front() {
            return Some(output);
        }
        if self.fatal.is_some() {
            return None;
        }
        while let Some(held) = self.gate.poll_released() {
            match held {
                Held::Out(output) => return Some(output),
                Held::ToAgent { agent_id, frame } => {
                    if let Some(output) = self.release_to_agent(agent_id, frame) {
                        return Some(output);
                    }
                }
            }
        }
        self.gate.take_batch().map(Output::Persist)
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.fatal.is_some() {
            return None;
        }
        let identify = self.identify_deadlines.first().map(|(at, _)| *at);
        if !self.role.is_leader() {
            return identify;
        }
        [
            self.scheduler.poll_timeout(),
            identify,
            Some(self.next_sweep_ms),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Timers: acceptance and recovery deadlines, reject back-offs, and every
    /// `sweep_interval_ms` the overdue/stuck sweep and the retention purge.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.fatal.is_some() {
            return;
        }
        let leading = self.role.is_leader();
        if leading && self.scheduler.poll_timeout().is_some_and(|at| at <= now_ms) {
            self.scheduler.handle_timeout(now_ms);
        }
        if leading {
            self.poll_scheduled_load(now_ms);
        }
        while let Some(&(at, conn)) = self.identify_deadlines.first() {
            if at > now_ms {
                break;
            }
            self.identify_deadlines.remove(&(at, conn));
            if let Some(open) = self.conns.get_mut(&conn) {
                open.identify_by_ms = None;
            }
            let silent = self
                .conns
                .get(&conn)
                .is_some_and(|c| c.agent.is_none() && !c.closing);
            if silent {
                self.close_now(conn, "identify timeout");
            }
        }
        // A standby keeps no live state: nothing to sweep or purge.
        if !leading {
            return;
        }
        if self.next_sweep_ms <= now_ms {
            self.scheduler.handle_sweep(now_ms);
            self.next_sweep_ms = now_ms.saturating_add(self.config.sweep_interval_ms.max(1));
            self.ready.push_back(Output::Purge {
                before_ms: now_ms.saturating_sub(self.config.retention_ms),
            });
        }
        // Timers change agents without an input naming them (graces,
        // cooldowns, expiries): the scheduler lists them.
        while let Some(agent_id) = self.scheduler.poll_timer_touched() {
            self.touch_agent(&agent_id);
        }
        self.drain_scheduler();
    }

    /// The store committed every batch up to `seq`.
    pub fn handle_committed(&mut self, seq: u64) {
        if self.fatal.is_some() {
            return;
        }
        if let Err(e) = self.gate.handle_committed(seq) {
            self.fail(Fatal::CommitFromTheFuture {
                reported: e.reported,
                sent: e.sent,
            });
        }
    }

    /// The store could not commit: nothing held may leave, and the session stops.
    pub fn handle_commit_failed(&mut self, error: String) {
        if self.fatal.is_none() {
            self.fail(Fatal::CommitFailed(error));
        }
    }

    /// The service is stopping: every socket is closed with 1001 once what it
    /// was promised is committed.
    pub fn handle_shutdown(&mut self) {
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort();
        for conn in conns {
            self.stop_waiting(conn);
            if let Some(open) = self.conns.get_mut(&conn) {
                open.closing = true;
            }
            self.gate.hold(Held::Out(Output::Close {
                conn,
                code: CLOSE_GOING_AWAY,
                reason: "coordinator shutting down".into(),
            }));
        }
    }

    /// Closes a socket at once (1008); nothing more is read from it.
    fn close_now(&mut self, conn: ConnId, reason: &'static str) {
        self.stop_waiting(conn);
        if let Some(open) = self.conns.get_mut(&conn) {
            open.closing = true;
            self.ready.push_back(Output::Close {
                conn,
                code: CLOSE_POLICY,
                reason: reason.into(),
            });
        }
    }

    /// The socket no longer waits to identify (it did, or it is closing).
    fn stop_waiting(&mut self, conn: ConnId) {
        let deadline = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.identify_by_ms.take());
        if let Some(at) = deadline {
            self.identify_deadlines.remove(&(at, conn));
        }
    }

    fn fail(&mut self, fatal: Fatal) {
        self.gate.abandon();
        self.ready.clear();
        self.ready.push_back(Output::Fatal(fatal.clone()));
        self.fatal = Some(fatal);
    }

    /// Stages the scheduler's records and holds its messages behind them.
    fn drain_scheduler(&mut self) {
        self.stage_changes();
        self.hold_actions();
    }

    /// Stages the scheduler's records only; an answer held next waits for them and
    /// leaves before the messages of the same step (an agent hears `task_ack` for
    /// its report before the next `task_assign`).
    fn stage_changes(&mut self) {
        while let Some(change) = self.scheduler.poll_change() {
            if let Change::Finalized(task) = &change {
                self.lookups.note_final(task);
                if self
                    .loading
                    .values()
                    .any(|(_, why)| *why == LoadFor::Cancel)
                {
                    self.ended_while_loading.insert(task.id().clone());
                }
                if task.status() == Status::Completed {
                    self.activity.note_completion(task);
                }
            }
            self.tallies
                .note(&change, self.scheduler.queue().queued_by_lane());
            let event = self.task_event(&change);
            self.gate.stage(change);
            // Behind the record it reports.
            if let Some(event) = event {
                self.gate.hold(Held::Out(Output::Event(event)));
            }
        }
    }

    /// Holds the scheduler's messages behind the records staged so far, then the
    /// events of the agents that changed.
    fn hold_actions(&mut self) {
        while let Some(action) = self.scheduler.poll_action() {
            match &action {
                Action::Assign(a) => self.touch_agent(&a.agent_id),
                Action::Cancel { agent_id, .. }
                | Action::Reattach { agent_id, .. }
                | Action::Reclaimed { agent_id, .. } => self.touch_agent(agent_id),
            }
            match action {
                Action::Assign(assignment) => self.gate.hold(Held::ToAgent {
                    agent_id: assignment.agent_id.clone(),
                    frame: Frame::Assign(assignment),
                }),
                Action::Cancel { agent_id, task_id } => self.gate.hold(Held::ToAgent {
                    agent_id,
                    frame: Frame::Message(CoordinatorMessage::TaskCancel {
                        task_id: task_id.to_string(),
                    }),
                }),
                Action::Reattach {
                    agent_id,
                    task_id,
                    generation,
                } => self.gate.hold(Held::ToAgent {
                    agent_id,
                    frame: Frame::Message(CoordinatorMessage::TaskContinue {
                        task_id: task_id.to_string(),
                        generation,
                    }),
                }),
                Action::Reclaimed {
                    task_id,
                    agent_id,
                    reason,
                } => self.ready.push_back(Output::Notice(Notice::Reclaimed {
                    task_id,
                    agent_id,
                    reason,
                })),
            }
        }
        self.flush_agent_events();
    }

    /// Holds a frame for a connection behind the current changes.
    fn send(&mut self, conn: ConnId, message: CoordinatorMessage) {
        self.gate.hold(Held::Out(Output::Send {
            conn,
            frame: Frame::Message(message),
        }));
    }
}

#[cfg(test)]
mod tests;

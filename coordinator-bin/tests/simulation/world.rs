//! The simulated world around one real [`Session`]: a store whose commits finish
//! after random delays and lose what is in flight on a crash, a network of agent
//! connections with delays and cuts, producers and operators over "HTTP", and
//! coordinator crashes with a restart from the committed records.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use coordinator_bin::session::{
    Answer, Batch, ConnId, Frame, Identity, LoadedPayload, Output, RefusalKind, Request, RequestId,
    Session, SessionConfig, TokenWrite,
};
use coordinator_queue::{AgentId, Change, HistoryEvent, NewTask, Status, Task, TaskId};
use coordinator_scheduler::SchedulerConfig;
use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage};

use crate::agent::SimAgent;
use crate::rng::Rng;

/// The token of an operator, who may identify as any agent.
pub const ADMIN_TOKEN: &str = "admin-token";

/// Start of virtual time.
pub const T0: u64 = 1_700_000_000_000;

/// The size of one run.
#[derive(Debug, Clone)]
pub struct Params {
    /// Simulated agents.
    pub agents: usize,
    /// Tasks submitted over the run (some batches are refused, so fewer may exist).
    pub tasks: u64,
    /// Virtual time during which faults happen.
    pub fault_ms: u64,
    /// Virtual time allowed after faults stop for every task to reach its end.
    pub settle_ms: u64,
}

impl Params {
    /// A size drawn from the seed: 1 to 6 agents, 5 to 60 tasks, 20 to 180 s of faults.
    pub fn draw(rng: &mut Rng) -> Params {
        Params {
            agents: rng.between(1, 6) as usize,
            tasks: rng.between(5, 60),
            fault_ms: rng.between(20_000, 180_000),
            settle_ms: 900_000,
        }
    }
}

/// Something that happens at a virtual time.
#[derive(Debug, Clone)]
pub enum Event {
    /// The store finishes committing (some of) what is in flight.
    Commit { epoch: u64 },
    /// A frame from an agent reaches the coordinator.
    ToCoordinator { conn: ConnId, message: AgentMessage },
    /// A frame from the coordinator reaches an agent.
    ToAgent { conn: ConnId, frame: Frame },
    /// The coordinator's socket task reports the end of a connection.
    CoordinatorSeesClose { conn: ConnId },
    /// The coordinator's socket task closed a connection for a frame over the
    /// size limit (1009).
    CoordinatorSeesOversize { conn: ConnId },
    /// The agent notices its connection is gone.
    AgentSeesClose { agent: usize, conn: ConnId },
    /// A read of a task's stored record finishes.
    Loaded {
        epoch: u64,
        request: RequestId,
        task_id: String,
    },
    /// A read of a task's stored description and metadata finishes.
    PayloadLoaded { epoch: u64, task_id: TaskId },
    /// A token check finishes.
    Identity {
        epoch: u64,
        conn: ConnId,
        identity: Option<Identity>,
    },
    /// An agent's own timer (work done, progress, reconnect, restart).
    AgentWake { agent: usize, wake: u64 },
    /// An agent sends an old report again, late (on whatever connection it has then).
    LateReport {
        agent: usize,
        report: crate::agent::Report,
    },
    /// A producer or operator acts.
    ClientTick,
    /// Something breaks.
    FaultTick,
}

/// What the answer to a submission must be, decided when it is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    /// A task's metadata is over the limit (checked before anything else).
    TooLarge,
    /// A task is invalid.
    Invalid,
    /// Valid, but the queue has no room for it.
    QueueFull,
}

/// What a request was, to check its answer.
#[derive(Debug, Clone)]
enum Pending {
    Submit {
        ids: Vec<String>,
        expect: Expect,
    },
    Cancel {
        task_id: String,
    },
    Retry {
        task_id: String,
    },
    CreateToken {
        name: String,
    },
    RevokeTokens {
        ids: Vec<i64>,
    },
    Drain {
        agent_id: String,
        drained: bool,
        /// The agent was known to the session when asked.
        known: bool,
        /// The agent's drain requests so far, this one included.
        nth: u64,
        /// When it was asked.
        at_ms: u64,
    },
    Other,
}

/// The coordinator's side of a socket.
#[derive(Debug, Clone)]
struct Socket {
    agent: usize,
    /// Nothing more is read from it (cut, or closed by the coordinator).
    dead: bool,
}

/// A token row as the simulated store keeps it.
#[derive(Debug, Clone)]
struct TokenRow {
    name: String,
    revoked: bool,
}

/// The store: what is committed, and batches in flight.
#[derive(Debug, Default)]
struct Store {
    committed: BTreeMap<String, Task>,
    tokens: BTreeMap<i64, TokenRow>,
    in_flight: VecDeque<Batch>,
    commit_scheduled: bool,
    last_seq: u64,
}

/// The simulated world. Every step checks the invariants; the first violation
/// ends the run with its description.
pub struct World {
    pub rng: Rng,
    pub now: u64,
    params: Params,
    config: SessionConfig,
    session: Session,
    epoch: u64,
    events: BTreeMap<(u64, u64), Event>,
    next_event: u64,
    store: Store,
    pub agents: Vec<SimAgent>,
    sockets: BTreeMap<ConnId, Socket>,
    /// Per connection and direction, the time of the last delivery (TCP keeps order).
    link_clock: BTreeMap<(ConnId, bool), u64>,
    next_conn: u64,
    requests: BTreeMap<RequestId, Pending>,
    next_request: u64,
    submitted: u64,
    /// Tasks whose submission was acknowledged.
    acked: BTreeSet<String>,
    /// The description and metadata of every task submitted, by id: what a
    /// `task_assign` must carry, byte for byte.
    texts: BTreeMap<String, (String, String)>,
    /// `task_ack complete` frames sent, per task.
    completes_acked: BTreeMap<String, u32>,
    /// Completed records committed, per task.
    completions_committed: BTreeMap<String, u32>,
    /// Requeues from the dead letter committed, and retries answered, per task.
    requeues_committed: BTreeMap<String, u32>,
    retries_answered: BTreeMap<String, u32>,
    /// Reports sent by agents: (task, generation, succeeded).
    pub reports_sent: BTreeSet<(String, u64, bool)>,
    /// The highest generation seen per task.
    max_generation: BTreeMap<String, u64>,
    /// Connections closed with 1001 (going away).
    going_away: BTreeSet<ConnId>,
    /// Every task state committed: (task, generation, status, updated at).
    states_committed: BTreeSet<(String, u64, Status, u64)>,
    /// Every holding committed: (task, generation, agent).
    holds_committed: BTreeSet<(String, u64, String)>,
    /// The id of the last event that came out.
    last_event_id: u64,
    /// Agents whose drain was answered (and not undrained since, nor lost in a
    /// coordinator crash), with the time the drain was asked: no assignment made
    /// after it may reach them (one made before may still be on its way, its
    /// frame waiting for its commit or its texts).
    drained: BTreeMap<String, u64>,
    /// Drain and undrain requests made, per agent.
    drain_requests: BTreeMap<String, u64>,
    pub faults: bool,
    pub steps: u64,
    pub crashes: u64,
    pub trace: Option<Vec<String>>,
}

/// A broken invariant.
pub type Violation = String;

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        let mut rng = Rng::new(seed);
        let params = Params::draw(&mut rng);
        let config = SessionConfig {
            scheduler: SchedulerConfig::default()
                .with_accept_timeout_ms(rng.between(2_000, 8_000))
                .with_recovery_grace_ms(rng.between(1_000, 5_000))
                .with_reject_backoff_ms(1_000)
                .with_cancel_grace_ms(rng.between(1_000, 10_000))
                .with_identify_settle_ms(rng.between(100, 2_000))
                .with_queue(
                    coordinator_queue::QueueConfig::default()
                        .with_default_max_retries(rng.below(3) as u32)
                        .with_stuck_after_ms(rng.between(10_000, 30_000))
                        .with_max_reclaims(rng.between(1, 6) as u32)
                        // Mostly small, so that many texts stay in storage only and
                        // every assignment of them waits for a read.
                        .with_max_inline_payload_bytes(if rng.chance(700) { 8 } else { 256 }),
                ),
            sweep_interval_ms: rng.between(1_000, 5_000),
            retention_ms: 7 * 24 * 3_600_000,
            identify_timeout_ms: rng.between(300, 10_000),
            max_unidentified: rng.between(1, 8) as usize,
            max_queued: if rng.chance(300) {
                rng.between(2, 12) as usize
            } else {
                1_000_000
            },
            max_metadata_bytes: 64,
        };
        let session = Session::new(config.clone(), T0, Vec::new()).expect("an empty restore");
        let agents = (0..params.agents)
            .map(|i| SimAgent::new(i, &mut rng))
            .collect();
        let mut world = World {
            rng,
            now: T0,
            params,
            config,
            session,
            epoch: 0,
            events: BTreeMap::new(),
            next_event: 0,
            store: Store::default(),
            agents,
            sockets: BTreeMap::new(),
            link_clock: BTreeMap::new(),
            next_conn: 1,
            requests: BTreeMap::new(),
            next_request: 1,
            submitted: 0,
            acked: BTreeSet::new(),
            texts: BTreeMap::new(),
            completes_acked: BTreeMap::new(),
            completions_committed: BTreeMap::new(),
            requeues_committed: BTreeMap::new(),
            retries_answered: BTreeMap::new(),
            reports_sent: BTreeSet::new(),
            max_generation: BTreeMap::new(),
            going_away: BTreeSet::new(),
            states_committed: BTreeSet::new(),
            holds_committed: BTreeSet::new(),
            last_event_id: 0,
            drained: BTreeMap::new(),
            drain_requests: BTreeMap::new(),
            faults: true,
            steps: 0,
            crashes: 0,
            trace: trace.then(Vec::new),
        };
        for agent in 0..world.agents.len() {
            let delay = world.rng.below(500);
            world.wake_agent(agent, delay);
        }
        world.schedule(0, Event::ClientTick);
        let first_fault = world.rng.between(500, 3_000);
        world.schedule(first_fault, Event::FaultTick);
        world
    }

    pub fn note(&mut self, text: impl FnOnce() -> String) {
        let now = self.now;
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>8} {}", now - T0, text()));
        }
    }

    pub fn schedule(&mut self, delay_ms: u64, event: Event) {
        self.next_event += 1;
        self.events
            .insert((self.now + delay_ms, self.next_event), event);
    }

    /// Schedules a frame on a link, after the frames before it.
    fn schedule_on_link(&mut self, conn: ConnId, to_agent: bool, event: Event) {
        let delay = if self.rng.chance(50) {
            self.rng.between(50, 400)
        } else {
            self.rng.below(8)
        };
        let at = (self.now + delay).max(*self.link_clock.get(&(conn, to_agent)).unwrap_or(&0));
        self.link_clock.insert((conn, to_agent), at);
        self.next_event += 1;
        self.events.insert((at, self.next_event), event);
    }

    /// The run: faults for `fault_ms`, then none until every task has ended.
    pub fn run(&mut self) -> Result<(), Violation> {
        let fault_end = T0 + self.params.fault_ms;
        let deadline = fault_end + self.params.settle_ms;
        loop {
            if self.faults && self.now >= fault_end {
                self.stop_faults();
            }
            if !self.faults && self.all_done() {
                self.final_checks()?;
                return self.shut_down();
            }
            let next_event = self.events.keys().next().map(|k| k.0);
            let next_timer = self.session.poll_timeout();
            let next = match (next_event, next_timer) {
                (Some(e), Some(t)) => e.min(t),
                (Some(e), None) => e,
                (None, Some(t)) => t,
                (None, None) => return Err("nothing left to happen".into()),
            };
            if next > deadline {
                return Err(format!(
                    "tasks did not reach their end {} ms after faults stopped: {}",
                    self.params.settle_ms,
                    self.unfinished()
                ));
            }
            self.now = self.now.max(next);
            self.steps += 1;
            if next_timer.is_some_and(|t| t <= self.now) {
                self.note(|| "timer".into());
                self.session.handle_timeout(self.now);
            } else {
                let key = *self.events.keys().next().expect("an event is due");
                let event = self.events.remove(&key).expect("present");
                self.handle(event)?;
            }
            self.pump()?;
            self.check_state()?;
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Commit { epoch } => {
                if epoch == self.epoch {
                    self.store.commit_scheduled = false;
                    self.commit()?;
                }
            }
            Event::ToCoordinator { conn, message } => {
                if self.sockets.get(&conn).is_some_and(|s| !s.dead) {
                    self.note(|| format!("{conn} -> coordinator {message:?}"));
                    self.session.handle_message(self.now, conn, message);
                }
            }
            Event::ToAgent { conn, frame } => {
                let agent = self.agents.iter().position(|a| a.conn == Some(conn));
                if let Some(agent) = agent {
                    self.note(|| format!("{conn} -> agent {agent} {frame:?}"));
                    self.agent_receives(agent, frame)?;
                }
            }
            Event::CoordinatorSeesClose { conn } => {
                if self.sockets.remove(&conn).is_some() {
                    self.note(|| format!("{conn} closed at the coordinator"));
                    self.session.handle_closed(self.now, conn);
                }
            }
            Event::CoordinatorSeesOversize { conn } => {
                if self.sockets.remove(&conn).is_some() {
                    self.note(|| format!("{conn} closed at the coordinator: frame too large"));
                    self.session.handle_closed_too_large(self.now, conn);
                }
            }
            Event::AgentSeesClose { agent, conn } => {
                if self.agents[agent].conn == Some(conn) {
                    self.note(|| format!("agent {agent} sees {conn} closed"));
                    self.agent_lost_connection(agent);
                }
            }
            Event::Loaded {
                epoch,
                request,
                task_id,
            } => {
                if epoch == self.epoch {
                    // Read now, as the driver's read would.
                    let stored = self.store.committed.get(&task_id).cloned();
                    self.session.handle_loaded(self.now, request, Ok(stored));
                }
            }
            Event::PayloadLoaded { epoch, task_id } => {
                if epoch == self.epoch {
                    // Read now, as the driver's read would; during faults the
                    // read may fail, which stops the session if it matters.
                    let loaded = if self.faults && self.rng.chance(5) {
                        Err("simulated read error".to_owned())
                    } else {
                        Ok(self
                            .store
                            .committed
                            .get(task_id.as_str())
                            .map(|t| LoadedPayload {
                                description: t.description().as_inline().unwrap_or("").to_owned(),
                                metadata: t.metadata().as_inline().unwrap_or("").to_owned(),
                                dependencies: Vec::new(),
                            }))
                    };
                    self.note(|| format!("texts of {task_id} read: {}", loaded.is_ok()));
                    self.session
                        .handle_payload_loaded(self.now, &task_id, loaded);
                }
            }
            Event::Identity {
                epoch,
                conn,
                identity,
            } => {
                if epoch == self.epoch {
                    self.session.handle_identity(self.now, conn, identity);
                }
            }
            Event::AgentWake { agent, wake } => {
                if self.agents[agent].wake == wake {
                    self.agent_wakes(agent)?;
                }
            }
            Event::LateReport { agent, report } => {
                if self.agents[agent].identified {
                    self.note(|| format!("agent {agent} repeats an old report {report:?}"));
                    self.send_report(agent, &report);
                }
            }
            Event::ClientTick => self.client_acts(),
            Event::FaultTick => {
                if self.faults {
                    self.fault()?;
                    let next = self.rng.between(300, 4_000);
                    self.schedule(next, Event::FaultTick);
                }
            }
        }
        Ok(())
    }

    /// Carries out every output of the session, checking each against the store.
    fn pump(&mut self) -> Result<(), Violation> {
        let mut fatal = false;
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Persist(batch) => {
                    if batch.seq != self.store.last_seq + 1 {
                        return Err(format!(
                            "batch {} handed out after batch {}",
                            batch.seq, self.store.last_seq
                        ));
                    }
                    self.store.last_seq = batch.seq;
                    self.store.in_flight.push_back(batch);
                    if !self.store.commit_scheduled {
                        self.store.commit_scheduled = true;
                        let delay = self.commit_delay();
                        let epoch = self.epoch;
                        self.schedule(delay, Event::Commit { epoch });
                    }
                }
                Output::Load { request, task_id } => {
                    let delay = self.rng.below(20);
                    let epoch = self.epoch;
                    self.schedule(
                        delay,
                        Event::Loaded {
                            epoch,
                            request,
                            task_id,
                        },
                    );
                }
                Output::Lookup { request, .. } => {
                    // The simulated clients submit no options.
                    return Err(format!(
                        "a lookup for {request:?}, whose tasks have no options"
                    ));
                }
                Output::LoadScheduled { read, .. } => {
                    // The simulated clients schedule nothing.
                    return Err(format!(
                        "read {read} of scheduled tasks, though none is scheduled"
                    ));
                }
                Output::LoadPayload { task_id } => {
                    let delay = self.rng.below(20);
                    let epoch = self.epoch;
                    self.schedule(delay, Event::PayloadLoaded { epoch, task_id });
                }
                Output::Authenticate { conn, token } => {
                    let identity = if token == ADMIN_TOKEN {
                        Some(Identity::Admin("ops".into()))
                    } else {
                        token
                            .strip_prefix("token-of-")
                            .map(|owner| Identity::Agent(owner.to_owned()))
                    };
                    let delay = self.rng.below(5);
                    let epoch = self.epoch;
                    self.schedule(
                        delay,
                        Event::Identity {
                            epoch,
                            conn,
                            identity,
                        },
                    );
                }
                Output::Send { conn, frame } => {
                    self.check_frame(conn, &frame)?;
                    if self.sockets.get(&conn).is_some_and(|s| !s.dead) {
                        self.schedule_on_link(conn, true, Event::ToAgent { conn, frame });
                    }
                }
                Output::Reply { request, answer } => self.check_reply(request, answer)?,
                Output::Close { conn, code, .. } => {
                    if code == coordinator_bin::session::CLOSE_GOING_AWAY {
                        self.going_away.insert(conn);
                    }
                    if let Some(socket) = self.sockets.get_mut(&conn) {
                        socket.dead = true;
                        let agent = socket.agent;
                        // Frames already queued still go out before the close.
                        self.schedule_on_link(conn, true, Event::AgentSeesClose { agent, conn });
                        let delay = self.rng.below(20);
                        self.schedule(delay, Event::CoordinatorSeesClose { conn });
                    }
                }
                Output::Event(event) => self.check_event(&event)?,
                Output::Purge { .. } | Output::Notice(_) => {}
                // One coordinator on its own store leads for good.
                Output::Role(role) => return Err(format!("role changed to {role:?}")),
                Output::Fatal(f) => {
                    self.note(|| format!("fatal: {f}"));
                    fatal = true;
                }
            }
        }
        if fatal {
            self.crash_coordinator()?;
        }
        Ok(())
    }

    /// How long a commit takes: usually milliseconds, now and then (during faults)
    /// a stall of seconds, so that much happens while replies wait for it.
    fn commit_delay(&mut self) -> u64 {
        if self.faults && self.rng.chance(30) {
            self.rng.between(500, 6_000)
        } else {
            self.rng.between(1, 30)
        }
    }

    /// The store commits the oldest batches in flight (all, or only some of them).
    fn commit(&mut self) -> Result<(), Violation> {
        if self.store.in_flight.is_empty() {
            return Ok(());
        }
        if self.faults && self.rng.chance(3) {
            self.note(|| "commit fails".into());
            self.session
                .handle_commit_failed("simulated I/O error".into());
            let mut saw_fatal = false;
            while let Some(output) = self.session.poll_output() {
                match output {
                    Output::Fatal(_) => saw_fatal = true,
                    other => return Err(format!("{other:?} came out after a failed commit")),
                }
            }
            if !saw_fatal {
                return Err("a failed commit did not stop the session".into());
            }
            return self.crash_coordinator();
        }
        let n = if self.rng.chance(300) {
            self.rng.between(1, self.store.in_flight.len() as u64) as usize
        } else {
            self.store.in_flight.len()
        };
        let mut seq = 0;
        for _ in 0..n {
            let batch = self.store.in_flight.pop_front().expect("counted");
            seq = batch.seq;
            for change in batch.changes {
                self.apply(change)?;
            }
            for write in batch.tokens {
                self.apply_token(write);
            }
        }
        self.note(|| format!("committed up to batch {seq}"));
        self.session.handle_committed(seq);
        if !self.store.in_flight.is_empty() {
            self.store.commit_scheduled = true;
            let delay = self.commit_delay();
            let epoch = self.epoch;
            self.schedule(delay, Event::Commit { epoch });
        }
        Ok(())
    }

    fn apply_token(&mut self, write: TokenWrite) {
        match write {
            TokenWrite::Create { identity, .. } => {
                let id = self.store.tokens.len() as i64 + 1;
                let name = identity.name().to_owned();
                self.store.tokens.insert(
                    id,
                    TokenRow {
                        name,
                        revoked: false,
                    },
                );
            }
            TokenWrite::Revoke { ids, .. } => {
                for id in ids {
                    if let Some(row) = self.store.tokens.get_mut(&id) {
                        row.revoked = true;
                    }
                }
            }
        }
    }

    fn apply(&mut self, change: Change) -> Result<(), Violation> {
        let requeued = change
            .recorded_event()
            .is_some_and(|e| e.event == HistoryEvent::Requeued);
        let mut task = change.into_task();
        let id = task.id().to_string();
        // A text the record leaves out keeps the stored one, as the writer does;
        // there must be one.
        let stored = self.store.committed.get(&id);
        if task.description().is_stored() {
            let description = stored.map(|t| t.description().clone()).ok_or_else(|| {
                format!("task {id}: a record without its description, and none stored")
            })?;
            task = task.with_description(description);
        }
        if task.metadata().is_stored() {
            let metadata = stored.map(|t| t.metadata().clone()).ok_or_else(|| {
                format!("task {id}: a record without its metadata, and none stored")
            })?;
            task = task.with_metadata(metadata);
        }
        let submitted = self.texts.get(&id).map(|(d, m)| (d.as_str(), m.as_str()));
        if submitted.is_some_and(|texts| {
            Some(texts)
                != task
                    .description()
                    .as_inline()
                    .zip(task.metadata().as_inline())
        }) {
            return Err(format!(
                "task {id}: stored texts differ from the submitted ones"
            ));
        }
        if requeued {
            *self.requeues_committed.entry(id.clone()).or_default() += 1;
        }
        if let Some(old) = self.store.committed.get(&id) {
            if task.generation() < old.generation() {
                return Err(format!(
                    "task {id}: generation went back from {} to {} in the store",
                    old.generation(),
                    task.generation()
                ));
            }
            if old.status() == Status::Completed {
                return Err(format!(
                    "task {id}: a record after its completion: {task:?}"
                ));
            }
        }
        // Budgets: no task outlives its reclaims or its retries.
        let max_reclaims = self.config.scheduler.queue.max_reclaims;
        let spent = task.reclaim_count() > max_reclaims;
        let dead_by_reclaims = task.status() == Status::DeadLetter
            && task.last_error() == Some(coordinator_queue::TOO_MANY_RECLAIMS);
        if (spent && !dead_by_reclaims) || task.reclaim_count() > max_reclaims + 1 {
            return Err(format!(
                "task {id}: {} reclaims with a budget of {max_reclaims}, yet {}",
                task.reclaim_count(),
                task.status()
            ));
        }
        if task.retry_count() > task.max_retries() + 1
            || (task.retry_count() > task.max_retries() && task.status() != Status::DeadLetter)
        {
            return Err(format!(
                "task {id}: {} failures with max_retries {}, yet {}",
                task.retry_count(),
                task.max_retries(),
                task.status()
            ));
        }
        if task.status() == Status::Completed {
            // Fencing: the outcome recorded is a report of the current generation, or
            // the holder's report carrying the generation of its own last assignment.
            let last = task.last_assignment().map(|(_, g)| g);
            let reported = |g: Option<u64>| {
                g.is_some_and(|g| self.reports_sent.contains(&(id.clone(), g, true)))
            };
            if !reported(Some(task.generation())) && !reported(last) {
                return Err(format!(
                    "task {id} completed at generation {} without a report of that generation",
                    task.generation()
                ));
            }
            let n = self.completions_committed.entry(id.clone()).or_default();
            *n += 1;
            if *n > 1 {
                return Err(format!("task {id} completed twice"));
            }
        }
        self.states_committed.insert((
            id.clone(),
            task.generation(),
            task.status(),
            task.updated_at_ms(),
        ));
        if let Some(holder) = task.assigned_to().filter(|_| task.status().is_held()) {
            self.holds_committed
                .insert((id.clone(), task.generation(), holder.to_string()));
        }
        self.store.committed.insert(id, task);
        Ok(())
    }

    /// A drain request's record. An undrain takes effect when asked (work may
    /// reach the agent before the answer), a drain once answered.
    fn drain_request(&mut self, agent_id: &str, drained: bool) -> Pending {
        let nth = self.drain_requests.entry(agent_id.to_owned()).or_default();
        *nth += 1;
        let nth = *nth;
        if !drained {
            self.drained.remove(agent_id);
        }
        Pending::Drain {
            agent_id: agent_id.to_owned(),
            drained,
            known: self
                .session
                .scheduler()
                .agent(&AgentId::from(agent_id))
                .is_some(),
            nth,
            at_ms: self.now,
        }
    }

    /// Persist before publish, for events: a task event reports a committed
    /// record, an agent event a committed holding; ids only grow, across
    /// restarts too.
    fn check_event(&mut self, event: &coordinator_bin::session::Event) -> Result<(), Violation> {
        use coordinator_bin::session::EventKind;
        if event.id <= self.last_event_id {
            return Err(format!(
                "event {} came out after event {}",
                event.id, self.last_event_id
            ));
        }
        self.last_event_id = event.id;
        match &event.kind {
            EventKind::Task(t) => {
                let key = (
                    t.task_id.to_string(),
                    t.generation,
                    t.status,
                    t.updated_at_ms,
                );
                if !self.states_committed.contains(&key) {
                    return Err(format!(
                        "event {} reports an uncommitted state: {t:?}",
                        event.id
                    ));
                }
            }
            EventKind::Agent(a) => {
                if let (Some(task), Some(generation)) = (&a.current_task, a.generation) {
                    let key = (task.to_string(), generation, a.agent_id.to_string());
                    if !self.holds_committed.contains(&key) {
                        return Err(format!(
                            "event {} shows an uncommitted holding: {a:?}",
                            event.id
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The coordinator process dies: what is in flight is lost, every socket
    /// drops, and a new session starts from the committed records.
    pub fn crash_coordinator(&mut self) -> Result<(), Violation> {
        self.crashes += 1;
        self.epoch += 1;
        self.note(|| "COORDINATOR CRASH".into());
        self.store.in_flight.clear();
        self.store.commit_scheduled = false;
        self.store.last_seq = 0;
        self.requests.clear();
        // Drains are kept in memory only.
        self.drained.clear();
        let sockets = std::mem::take(&mut self.sockets);
        for (conn, socket) in sockets {
            let delay = self.rng.between(1, 200);
            let agent = socket.agent;
            self.schedule(delay, Event::AgentSeesClose { agent, conn });
        }
        for id in &self.acked {
            if !self.store.committed.contains_key(id) {
                return Err(format!("acknowledged task {id} is gone after a crash"));
            }
        }
        // What the dead process had not committed was never sent or answered:
        // from here on generations grow from the committed ones.
        self.max_generation = self
            .store
            .committed
            .iter()
            .map(|(id, t)| (id.clone(), t.generation()))
            .collect();
        let records: Vec<Task> = self
            .store
            .committed
            .values()
            .filter(|t| !t.status().is_final())
            .cloned()
            .collect();
        self.session = Session::new(self.config.clone(), self.now, records)
            .map_err(|e| format!("restore failed: {e}"))?;
        Ok(())
    }

    /// An agent opens a connection and identifies.
    pub fn open_connection(&mut self, agent: usize, token: String) {
        let conn = ConnId::new(self.next_conn);
        self.next_conn += 1;
        self.sockets.insert(conn, Socket { agent, dead: false });
        self.session.handle_opened(self.now, conn);
        self.agents[agent].conn = Some(conn);
        self.agents[agent].identified = false;
        let id = self.agents[agent].id.clone();
        let capabilities = self.agents[agent].capabilities();
        self.note(|| format!("agent {agent} connects on {conn}"));
        self.agent_sends(
            agent,
            AgentMessage::Identify {
                agent_id: id,
                token,
                name: None,
                capabilities,
                status: None,
                client_type: None,
                current_task: None,
            },
        );
    }

    /// A frame from an agent on its current connection.
    pub fn agent_sends(&mut self, agent: usize, message: AgentMessage) {
        if let Some(conn) = self.agents[agent].conn {
            self.schedule_on_link(conn, false, Event::ToCoordinator { conn, message });
        }
    }

    /// The network between an agent and the coordinator breaks.
    pub fn cut(&mut self, agent: usize) {
        let Some(conn) = self.agents[agent].conn else {
            return;
        };
        self.note(|| format!("network cut of agent {agent} ({conn})"));
        if let Some(socket) = self.sockets.get_mut(&conn) {
            socket.dead = true;
            let delay = self.rng.between(1, 500);
            self.schedule(delay, Event::CoordinatorSeesClose { conn });
        }
        self.agent_lost_connection(agent);
    }

    pub fn wake_agent(&mut self, agent: usize, delay_ms: u64) {
        self.agents[agent].wake += 1;
        let wake = self.agents[agent].wake;
        self.schedule(delay_ms, Event::AgentWake { agent, wake });
    }

    fn client_acts(&mut self) {
        if self.submitted < self.params.tasks || self.faults {
            let next = self.rng.between(100, 1_500);
            self.schedule(next, Event::ClientTick);
        }
        let request = RequestId::new(self.next_request);
        self.next_request += 1;
        let roll = self.rng.below(100);
        let (pending, body) = if roll < 60 && self.submitted < self.params.tasks {
            let n = self.rng.between(1, 3);
            let mut tasks = Vec::new();
            let mut ids = Vec::new();
            let mut valid = true;
            let mut too_large = false;
            for _ in 0..n {
                self.submitted += 1;
                let id = format!("t{}", self.submitted);
                let broken = self.rng.chance(40);
                valid &= !broken;
                // Short texts stay in memory; long ones (past the inline limit)
                // only in storage, read back for each assignment.
                let description = if broken {
                    " ".to_owned()
                } else if self.rng.chance(400) {
                    format!("work on {id}, described at length")
                } else {
                    "work".to_owned()
                };
                let mut task = NewTask::new(id.as_str(), description.clone())
                    .with_max_retries(self.rng.below(3) as u32);
                if self.rng.chance(400) {
                    // Now and then over the metadata limit, which refuses the batch.
                    let pad = self.rng.between(0, 70) as usize;
                    task.metadata = format!(r#"{{"{id}":"{}"}}"#, "m".repeat(pad));
                    too_large |= task.metadata.len() > self.config.max_metadata_bytes;
                }
                self.texts
                    .insert(id.clone(), (description, task.metadata.clone()));
                if self.rng.chance(300) {
                    task = task.with_capabilities(["gpu"]);
                }
                if self.rng.chance(100) {
                    // A deadline: mostly ahead (it may pass while the task runs),
                    // now and then already past, which refuses the whole batch.
                    let by = if self.rng.chance(200) {
                        self.now - self.rng.below(1_000)
                    } else {
                        self.now + self.rng.between(1_000, 60_000)
                    };
                    valid &= by > self.now;
                    task = task.with_complete_by(by);
                }
                ids.push(id);
                tasks.push(task);
            }
            if self.rng.chance(40) {
                if let Some(live) = self.acked.iter().next().cloned() {
                    // A live id again: the whole batch must be refused.
                    if self
                        .session
                        .scheduler()
                        .queue()
                        .get(&TaskId::from(live.as_str()))
                        .is_some()
                    {
                        valid = false;
                        tasks.push(NewTask::new(live.as_str(), "again"));
                    }
                }
            }
            let queue = self.session.scheduler().queue();
            let expect = if too_large {
                Expect::TooLarge
            } else if !valid {
                Expect::Invalid
            } else if queue.queued_len() + tasks.len() > self.config.max_queued {
                Expect::QueueFull
            } else {
                Expect::Accepted
            };
            (Pending::Submit { ids, expect }, Request::Submit { tasks })
        } else if roll < 75 && !self.acked.is_empty() {
            let i = self.rng.below(self.acked.len() as u64) as usize;
            let task_id = self.acked.iter().nth(i).cloned().expect("in range");
            let stored = self.store.committed.get(&task_id).map(|t| t.status());
            (
                Pending::Cancel {
                    task_id: task_id.clone(),
                },
                Request::Cancel { task_id, stored },
            )
        } else if roll < 92 {
            let dead: Vec<&Task> = self
                .store
                .committed
                .values()
                .filter(|t| t.status() == Status::DeadLetter)
                .collect();
            if dead.is_empty() {
                return;
            }
            let task_id = dead[self.rng.below(dead.len() as u64) as usize]
                .id()
                .to_string();
            (
                Pending::Retry {
                    task_id: task_id.clone(),
                },
                Request::Retry { task_id },
            )
        } else if roll < 94 {
            let agent = self.rng.below(self.agents.len() as u64) as usize;
            let name = self.agents[agent].id.clone();
            let identity = Identity::Agent(name.clone());
            (
                Pending::CreateToken { name },
                Request::CreateToken {
                    identity,
                    hash: [7; 32],
                },
            )
        } else if roll < 96 {
            // Revoking an agent's tokens closes its sockets; it comes back.
            let agent = self.rng.below(self.agents.len() as u64) as usize;
            let name = self.agents[agent].id.clone();
            let live_ids: Vec<i64> = self
                .store
                .tokens
                .iter()
                .filter(|(_, row)| row.name == name && !row.revoked)
                .map(|(id, _)| *id)
                .collect();
            (
                Pending::RevokeTokens {
                    ids: live_ids.clone(),
                },
                Request::RevokeTokens {
                    identity: Identity::Agent(name),
                    live_ids,
                    live_admins: 1,
                },
            )
        } else if roll < 97 {
            // An operator drains or undrains an agent (only while faults happen:
            // every agent is undrained when they stop).
            if !self.faults {
                return;
            }
            let agent = self.rng.below(self.agents.len() as u64) as usize;
            let agent_id = self.agents[agent].id.clone();
            let drained = self.rng.chance(600);
            (
                self.drain_request(&agent_id, drained),
                Request::Drain { agent_id, drained },
            )
        } else if roll < 98 {
            (Pending::Other, Request::Agents)
        } else {
            (Pending::Other, Request::Dashboard)
        };
        self.note(|| format!("request {} {body:?}", request.get()));
        self.requests.insert(request, pending);
        self.session.handle_request(self.now, request, body);
    }

    fn fault(&mut self) -> Result<(), Violation> {
        let roll = self.rng.below(100);
        let agent = self.rng.below(self.agents.len() as u64) as usize;
        if roll < 30 {
            self.cut(agent);
        } else if roll < 50 {
            self.crash_agent(agent);
        } else if roll < 58 {
            self.crash_coordinator()?;
        } else if roll < 65 {
            // A stranger with a bad token.
            let stranger = agent;
            if self.agents[stranger].conn.is_none() && self.agents[stranger].alive {
                let token = if self.rng.chance(500) {
                    "not-a-token".to_owned()
                } else {
                    // Another agent's token.
                    format!("token-of-agent-{}", stranger + 1)
                };
                self.open_connection(stranger, token);
            }
        } else if roll < 75 {
            self.agents[agent].hang = true;
        } else if roll < 80 {
            // The agent stops reading: its outbound queue overflows.
            if let Some(conn) = self.agents[agent].conn {
                self.note(|| format!("{conn} overflows"));
                self.session.handle_send_overflow(self.now, conn);
            }
        } else if roll < 83 {
            self.oversize(agent);
        }
        Ok(())
    }

    /// The agent sends a frame over the size limit (say, a huge result): the
    /// coordinator's socket task closes the connection with 1009.
    fn oversize(&mut self, agent: usize) {
        let Some(conn) = self.agents[agent].conn else {
            return;
        };
        self.note(|| format!("agent {agent} sends an oversize frame on {conn}"));
        if let Some(socket) = self.sockets.get_mut(&conn) {
            socket.dead = true;
            let delay = self.rng.between(1, 50);
            self.schedule(delay, Event::CoordinatorSeesOversize { conn });
        }
        self.agent_lost_connection(agent);
    }

    fn stop_faults(&mut self) {
        self.note(|| "faults stop".into());
        self.faults = false;
        // Every agent gets work again.
        for agent in 0..self.agents.len() {
            let request = RequestId::new(self.next_request);
            self.next_request += 1;
            let agent_id = self.agents[agent].id.clone();
            let pending = self.drain_request(&agent_id, false);
            self.requests.insert(request, pending);
            self.session.handle_request(
                self.now,
                request,
                Request::Drain {
                    agent_id,
                    drained: false,
                },
            );
        }
        for agent in 0..self.agents.len() {
            self.agents[agent].hang = false;
            if !self.agents[agent].alive || self.agents[agent].conn.is_none() {
                self.wake_agent(agent, 100);
            } else if self.agents[agent].work.is_some() {
                self.wake_agent(agent, 10);
            }
        }
    }

    fn all_done(&self) -> bool {
        self.submitted >= self.params.tasks
            && self.requests.is_empty()
            && self.acked.iter().all(|id| {
                self.store
                    .committed
                    .get(id)
                    .is_some_and(|t| t.status().is_final())
            })
            && self.session.is_settled()
    }

    fn unfinished(&self) -> String {
        let open: Vec<String> = self
            .acked
            .iter()
            .filter_map(|id| {
                let t = self.store.committed.get(id)?;
                (!t.status().is_final()).then(|| format!("{id}:{}@{}", t.status(), t.generation()))
            })
            .collect();
        format!(
            "{open:?}; pending requests {}; settled {}",
            self.requests.len(),
            self.session.is_settled()
        )
    }

    /// A graceful stop: every open socket is closed with 1001 once nothing is in
    /// flight, and nothing is left staged or held.
    fn shut_down(&mut self) -> Result<(), Violation> {
        let open: Vec<ConnId> = self
            .sockets
            .iter()
            .filter(|(_, s)| !s.dead)
            .map(|(c, _)| *c)
            .collect();
        self.session.handle_shutdown();
        self.going_away.clear();
        for _ in 0..100 {
            self.pump()?;
            if !self.session.awaits_commit() {
                break;
            }
            self.commit()?;
        }
        if !self.session.is_settled() {
            return Err("the session is not settled after a shutdown".into());
        }
        for conn in open {
            if !self.going_away.contains(&conn) {
                return Err(format!("{conn} was not closed with 1001 at shutdown"));
            }
        }
        Ok(())
    }

    fn final_checks(&self) -> Result<(), Violation> {
        let live = self.session.scheduler().queue().len();
        if live != 0 {
            return Err(format!(
                "{live} tasks still in memory with every task final"
            ));
        }
        for (id, n) in &self.completes_acked {
            if *n > 1 {
                return Err(format!("task {id}: completion acknowledged {n} times"));
            }
        }
        Ok(())
    }

    /// Persist before acknowledge, for frames: what a frame reports is committed.
    fn check_frame(&self, conn: ConnId, frame: &Frame) -> Result<(), Violation> {
        let agent = self.sockets.get(&conn).map(|s| &self.agents[s.agent]);
        let stored = |id: &str| self.store.committed.get(id);
        match frame {
            Frame::Assign(a) => {
                if let Some(since) = self.drained.get(a.agent_id.as_str()) {
                    if a.assigned_at_ms > *since {
                        return Err(format!(
                            "task_assign {} to {}, assigned at {} after its drain at {since}",
                            a.task_id, a.agent_id, a.assigned_at_ms
                        ));
                    }
                }
                // With the texts submitted, byte for byte (read back from
                // storage when the queue does not keep them).
                let submitted = self.texts.get(a.task_id.as_str());
                let sent = a.texts();
                if submitted.map(|(d, m)| (d.as_str(), m.as_str())) != sent {
                    return Err(format!(
                        "task_assign {}@{} carries {sent:?}, submitted {submitted:?}",
                        a.task_id, a.generation
                    ));
                }
                // Exactly the committed assignment: never an older one.
                let ok = stored(a.task_id.as_str()).is_some_and(|t| {
                    t.generation() == a.generation && t.assigned_to() == Some(&a.agent_id)
                });
                if !ok {
                    return Err(format!(
                        "task_assign {}@{} is not the committed assignment (stored: {:?})",
                        a.task_id,
                        a.generation,
                        stored(a.task_id.as_str()).map(|t| (t.status(), t.generation()))
                    ));
                }
            }
            Frame::Message(CoordinatorMessage::TaskAck { task_id, status }) => {
                let t = stored(task_id);
                let held_by_agent_at = |g: u64| {
                    t.is_some_and(|t| {
                        t.status().is_held()
                            && t.generation() == g
                            && agent.is_some_and(|a| {
                                t.assigned_to().map(|x| x.as_str()) == Some(a.id.as_str())
                            })
                    })
                };
                let generation = agent.and_then(|a| a.generation_of(task_id));
                let ok = match status.as_str() {
                    "complete" => t.is_some_and(|t| t.status() == Status::Completed),
                    "accepted" => {
                        t.is_some()
                            && !generation.is_some_and(|g| {
                                t.is_some_and(|t| {
                                    t.status() == Status::Assigned && t.generation() == g
                                })
                            })
                    }
                    "cancelled" => t.is_some_and(|t| t.status() == Status::Cancelled),
                    "retried" | "dead_letter" | "rejected" => {
                        t.is_some() && !generation.is_some_and(held_by_agent_at)
                    }
                    other => return Err(format!("unknown ack status {other}")),
                };
                if !ok {
                    return Err(format!(
                        "task_ack {status} for {task_id} sent before its commit (stored: {:?})",
                        t.map(|t| (t.status(), t.generation()))
                    ));
                }
            }
            Frame::Message(CoordinatorMessage::TaskCancel { task_id }) => {
                if stored(task_id).is_none_or(|t| t.status() != Status::Cancelled) {
                    return Err(format!("task_cancel for {task_id} sent before its commit"));
                }
            }
            Frame::Message(CoordinatorMessage::TaskContinue {
                task_id,
                generation,
            }) => {
                if stored(task_id).is_none_or(|t| t.generation() < *generation) {
                    return Err(format!("task_continue for {task_id} before its commit"));
                }
            }
            Frame::Message(_) => {}
        }
        Ok(())
    }

    /// Persist before acknowledge, for replies; and a batch is all or nothing.
    fn check_reply(&mut self, request: RequestId, answer: Answer) -> Result<(), Violation> {
        let Some(pending) = self.requests.remove(&request) else {
            return Err(format!("reply to unknown request {}", request.get()));
        };
        self.note(|| format!("reply {} {answer:?}", request.get()));
        let stored = |id: &str| self.store.committed.get(id);
        match (pending, answer) {
            (Pending::Submit { ids, expect }, Answer::Submitted(receipts)) => {
                if expect != Expect::Accepted {
                    return Err(format!(
                        "a batch to refuse ({expect:?}) was accepted: {ids:?}"
                    ));
                }
                let got: Vec<&str> = receipts.iter().map(|r| r.task_id.as_str()).collect();
                if got != ids {
                    return Err(format!("receipts {got:?} for {ids:?}"));
                }
                for id in ids {
                    if stored(&id).is_none() {
                        return Err(format!("201 for {id} before its commit"));
                    }
                    self.acked.insert(id);
                }
            }
            (Pending::Submit { ids, expect }, Answer::Refused(refusal)) => {
                let as_expected = match refusal.kind {
                    RefusalKind::MetadataTooLarge => expect == Expect::TooLarge,
                    RefusalKind::Invalid => expect == Expect::Invalid,
                    RefusalKind::QueueFull { retry_after_s } => {
                        expect == Expect::QueueFull && (1..=60).contains(&retry_after_s)
                    }
                    _ => false,
                };
                if !as_expected {
                    return Err(format!(
                        "batch {ids:?} refused with {refusal:?}, expected {expect:?}"
                    ));
                }
                for id in ids {
                    if self
                        .session
                        .scheduler()
                        .queue()
                        .get(&TaskId::from(id.as_str()))
                        .is_some()
                        || stored(&id).is_some()
                    {
                        return Err(format!("{id} of a refused batch was queued"));
                    }
                }
            }
            (Pending::Cancel { task_id }, Answer::Cancelled) => {
                if stored(&task_id).is_none_or(|t| t.status() != Status::Cancelled) {
                    return Err(format!("cancel of {task_id} answered before its commit"));
                }
            }
            (Pending::Retry { task_id }, Answer::Retried) => {
                // Its requeue is committed (the task may be back in the dead letter
                // already: an overdue sweep or an oversize close needs no agent).
                let answered = self.retries_answered.entry(task_id.clone()).or_default();
                *answered += 1;
                if self.requeues_committed.get(&task_id).copied().unwrap_or(0) < *answered {
                    return Err(format!("retry of {task_id} answered before its commit"));
                }
            }
            (Pending::Cancel { .. } | Pending::Retry { .. }, Answer::Refused(_)) => {}
            (Pending::CreateToken { name }, Answer::TokenCreated) => {
                if !self.store.tokens.values().any(|row| row.name == name) {
                    return Err(format!("token of {name} answered before its commit"));
                }
            }
            (Pending::RevokeTokens { ids }, Answer::TokensRevoked(n)) => {
                if n != ids.len() || ids.iter().any(|id| !self.store.tokens[id].revoked) {
                    return Err(format!("revocation of {ids:?} answered before its commit"));
                }
            }
            (Pending::RevokeTokens { ids }, Answer::Refused(_)) if ids.is_empty() => {}
            (
                Pending::Drain {
                    agent_id,
                    drained,
                    nth,
                    at_ms,
                    ..
                },
                Answer::Drained { drained: now, .. },
            ) => {
                if now != drained {
                    return Err(format!("drain {drained} of {agent_id} answered {now}"));
                }
                // Drained from this answer on, unless an undrain came after it.
                if drained && self.drain_requests.get(&agent_id) == Some(&nth) {
                    self.drained.insert(agent_id, at_ms);
                }
            }
            (
                Pending::Drain {
                    agent_id, known, ..
                },
                Answer::Refused(_),
            ) => {
                if known {
                    return Err(format!("drain of known agent {agent_id} refused"));
                }
            }
            (Pending::Other, Answer::Agents(_) | Answer::Dashboard(_)) => {}
            (pending, answer) => {
                return Err(format!("answer {answer:?} to {pending:?}"));
            }
        }
        Ok(())
    }

    /// Invariants of the session's state after every step.
    fn check_state(&mut self) -> Result<(), Violation> {
        let scheduler = self.session.scheduler();
        let queue = scheduler.queue();
        let mut holders: BTreeMap<String, String> = BTreeMap::new();
        for view in scheduler.agents() {
            let agent_id = view.agent.id().to_string();
            if let Some(conn) = view.connection {
                if self.session.agent_of(conn) != Some(view.agent.id()) {
                    return Err(format!(
                        "agent {agent_id} says {conn} speaks for it, the connection disagrees"
                    ));
                }
            }
            if let Some(held) = view.agent.task() {
                let task_id = held.task_id.to_string();
                if let Some(other) = holders.insert(task_id.clone(), agent_id.clone()) {
                    return Err(format!("task {task_id} held by {other} and {agent_id}"));
                }
                let Some(task) = queue.get(&TaskId::from(task_id.as_str())) else {
                    return Err(format!("{agent_id} holds {task_id}, which is not live"));
                };
                if !task.status().is_held()
                    || task.assigned_to() != Some(view.agent.id())
                    || task.generation() != held.generation
                {
                    return Err(format!(
                        "{agent_id} holds {task_id}@{}, the task is {}@{} held by {:?}",
                        held.generation,
                        task.status(),
                        task.generation(),
                        task.assigned_to()
                    ));
                }
            }
        }
        for conn in self.session.connections() {
            if let Some(agent) = self.session.agent_of(conn) {
                let view = scheduler.agent(&AgentId::from(agent.as_str()));
                if view.and_then(|v| v.connection) != Some(conn) {
                    return Err(format!("{conn} speaks for {agent}, who does not know it"));
                }
            }
        }
        for task in queue.held().chain(queue.queued_in_order()) {
            let seen = self
                .max_generation
                .entry(task.id().to_string())
                .or_default();
            if task.generation() < *seen {
                return Err(format!(
                    "task {}: generation went back from {} to {}",
                    task.id(),
                    seen,
                    task.generation()
                ));
            }
            *seen = task.generation();
        }
        Ok(())
    }

    /// Counts a `task_ack complete` received by an agent.
    pub fn note_complete_ack(&mut self, task_id: &str) -> Result<(), Violation> {
        let n = self.completes_acked.entry(task_id.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            return Err(format!("task {task_id}: completion acknowledged twice"));
        }
        Ok(())
    }
}

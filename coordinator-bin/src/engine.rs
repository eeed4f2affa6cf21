//! The one loop that owns the scheduler: every HTTP command, WebSocket frame,
//! commit and timer becomes a call on the pure core; its changes go to the writer
//! and its messages leave only after the commit that holds them.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use agent_fsm::Capabilities;
use queue_core::{AgentId, Change, Completion, FailOutcome, NewTask, Recovery, Task, TaskError};
use scheduler::{Action, Scheduler, SchedulerError};
use tokio::sync::{mpsc, oneshot, watch};
use transport_ws::protocol::{AgentMessage, CoordinatorMessage, ErrorCode};
use transport_ws::server::{
    SocketEvent, SocketEventKind, SocketHandle, CLOSE_GOING_AWAY, CLOSE_POLICY,
};

use crate::auth::{Authenticator, Identity};
use crate::clock::now_ms;
use crate::writer::{Committed, WriteJob, Writer};

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

/// Settings of the engine.
pub struct EngineConfig {
    /// Period of the overdue/stuck sweep.
    pub sweep_interval: Duration,
    /// Final tasks older than this are deleted.
    pub retention: Duration,
    /// When the service started (for uptime).
    pub started: std::time::Instant,
}

/// A completion shown on the dashboard.
#[derive(Debug, Clone, serde::Serialize)]
struct RecentCompletion {
    task_id: String,
    description: String,
    agent_id: Option<String>,
    duration_ms: u64,
    tokens_used: Option<u64>,
    completed_at: u64,
}

/// How many recent completions the dashboard shows.
const RECENT: usize = 20;

/// Completions per second over the last minute, in a ring of one-second buckets.
#[derive(Debug)]
struct Throughput {
    buckets: [(u64, u64); 60],
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            buckets: [(0, 0); 60],
        }
    }
}

impl Throughput {
    fn record(&mut self, now_ms: u64) {
        let second = now_ms / 1000;
        let slot = &mut self.buckets[(second % 60) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
    }

    fn last_minute(&self, now_ms: u64) -> u64 {
        let second = now_ms / 1000;
        self.buckets
            .iter()
            .filter(|(s, _)| *s + 60 > second && *s <= second)
            .map(|(_, n)| n)
            .sum()
    }
}

enum Output {
    Reply(Box<dyn FnOnce() + Send>),
    Frame(u64, CoordinatorMessage),
    Close(u64, u16, &'static str),
    Action(Action),
}

struct Conn {
    handle: SocketHandle,
    agent: Option<AgentId>,
}

/// The engine: the scheduler and everything that carries its outputs out.
pub struct Engine {
    scheduler: Scheduler,
    writer: Writer,
    auth: Authenticator,
    commands: mpsc::Sender<Command>,
    config: EngineConfig,
    sent_seq: u64,
    committed_seq: u64,
    pending: Vec<Change>,
    outputs: VecDeque<(u64, Output)>,
    connections: HashMap<u64, Conn>,
    agent_connection: HashMap<AgentId, u64>,
    agent_names: HashMap<AgentId, String>,
    recent: VecDeque<RecentCompletion>,
    throughput: Throughput,
}

impl Engine {
    /// An engine over a restored scheduler.
    pub fn new(
        scheduler: Scheduler,
        writer: Writer,
        auth: Authenticator,
        commands: mpsc::Sender<Command>,
        config: EngineConfig,
    ) -> Engine {
        Engine {
            scheduler,
            writer,
            auth,
            commands,
            config,
            sent_seq: 0,
            committed_seq: 0,
            pending: Vec::new(),
            outputs: VecDeque::new(),
            connections: HashMap::new(),
            agent_connection: HashMap::new(),
            agent_names: HashMap::new(),
            recent: VecDeque::with_capacity(RECENT),
            throughput: Throughput::default(),
        }
    }

    /// Runs until `shutdown` changes, then closes sockets and flushes the writer.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut sockets: mpsc::Receiver<SocketEvent>,
        mut committed: mpsc::UnboundedReceiver<Committed>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut sweep = tokio::time::interval(self.config.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timeout = self
                .scheduler
                .poll_timeout()
                .map(|at| at.saturating_sub(now_ms()));
            let sleep = tokio::time::sleep(Duration::from_millis(timeout.unwrap_or(3_600_000)));
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(c) = committed.recv() => self.on_committed(c),
                Some(cmd) = commands.recv() => self.on_command(cmd),
                Some(ev) = sockets.recv() => self.on_socket(ev),
                _ = sleep, if timeout.is_some() => {
                    self.scheduler.handle_timeout(now_ms());
                    self.drain_scheduler();
                }
                _ = sweep.tick() => {
                    let now = now_ms();
                    self.scheduler.handle_sweep(now);
                    self.drain_scheduler();
                    let before_ms = now.saturating_sub(self.config.retention.as_millis() as u64);
                    self.writer.submit(WriteJob::Cleanup { before_ms });
                }
            }
            // Take whatever else is ready, so that one commit carries many changes.
            for _ in 0..512 {
                if let Ok(c) = committed.try_recv() {
                    self.on_committed(c);
                } else if let Ok(ev) = sockets.try_recv() {
                    self.on_socket(ev);
                } else if let Ok(cmd) = commands.try_recv() {
                    self.on_command(cmd);
                } else {
                    break;
                }
            }
            self.flush();
            self.release();
        }
        self.shut_down(&mut committed).await;
    }

    async fn shut_down(mut self, committed: &mut mpsc::UnboundedReceiver<Committed>) {
        self.flush();
        while self.committed_seq < self.sent_seq {
            match committed.recv().await {
                Some(c) => self.on_committed(c),
                None => break,
            }
        }
        self.release();
        for conn in self.connections.values() {
            conn.handle
                .close(CLOSE_GOING_AWAY, "coordinator shutting down");
        }
        // Let every socket write its close frame (bounded: a dead peer cannot hold us).
        let handles: Vec<SocketHandle> = self
            .connections
            .values()
            .map(|c| c.handle.clone())
            .collect();
        let all_closed = async {
            for handle in &handles {
                handle.closed().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), all_closed).await;
        self.writer.shutdown();
        tracing::info!("engine stopped; everything acknowledged is committed");
    }

    fn on_committed(&mut self, c: Committed) {
        self.committed_seq = c.seq;
        crate::metrics::record_commit(c.rows, c.commit_micros);
        self.release();
    }

    /// Sends the pending changes to the writer as one batch.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.sent_seq += 1;
        let changes = std::mem::take(&mut self.pending);
        if !self.writer.submit(WriteJob::Batch {
            seq: self.sent_seq,
            changes,
        }) {
            tracing::error!("the writer stopped; exiting");
            std::process::exit(3);
        }
    }

    /// Carries out every output whose changes are committed.
    fn release(&mut self) {
        while self
            .outputs
            .front()
            .is_some_and(|(seq, _)| *seq <= self.committed_seq)
        {
            let (_, output) = self.outputs.pop_front().expect("checked");
            self.execute(output);
        }
    }

    fn execute(&mut self, output: Output) {
        match output {
            Output::Reply(send) => send(),
            Output::Frame(connection, message) => self.send_frame(connection, &message),
            Output::Close(connection, code, reason) => {
                if let Some(conn) = self.connections.get(&connection) {
                    conn.handle.close(code, reason);
                }
            }
            Output::Action(Action::Assign(a)) => {
                let Some(&connection) = self.agent_connection.get(&a.agent_id) else {
                    return;
                };
                let metadata =
                    serde_json::from_str(&a.metadata).unwrap_or_else(|_| serde_json::json!({}));
                let message = CoordinatorMessage::TaskAssign {
                    task_id: a.task_id.to_string(),
                    description: a.description.to_string(),
                    metadata,
                    generation: a.generation,
                    assigned_at: a.assigned_at_ms,
                };
                self.send_frame(connection, &message);
            }
            Output::Action(Action::Cancel { agent_id, task_id }) => {
                if let Some(&connection) = self.agent_connection.get(&agent_id) {
                    let message = CoordinatorMessage::TaskCancel {
                        task_id: task_id.to_string(),
                    };
                    self.send_frame(connection, &message);
                }
            }
            Output::Action(Action::Reclaimed { .. }) => {}
        }
    }

    fn send_frame(&mut self, connection: u64, message: &CoordinatorMessage) {
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        if conn.handle.send(message).is_err() {
            // A slow consumer must not stall everyone: drop it, reclaim its task.
            conn.handle.close(CLOSE_POLICY, "outbound queue overflow");
            if let Some(agent) = conn.agent.clone() {
                tracing::warn!(agent_id = %agent, "agent too slow to read; dropping its connection");
                self.scheduler
                    .handle_slow_consumer(now_ms(), &agent, connection);
                self.drain_scheduler();
            }
        }
    }

    /// The batch number an output queued now must wait for.
    fn required_seq(&self) -> u64 {
        if self.pending.is_empty() {
            self.sent_seq
        } else {
            self.sent_seq + 1
        }
    }

    fn collect_changes(&mut self) {
        while let Some(change) = self.scheduler.poll_change() {
            log_change(&change);
            crate::metrics::record_change(&change);
            if let Change::Finalized(task) = &change {
                if task.status == queue_core::Status::Completed {
                    self.note_completion(task);
                }
            }
            self.pending.push(change);
        }
    }

    fn note_completion(&mut self, task: &Task) {
        self.throughput.record(task.updated_at_ms);
        if self.recent.len() == RECENT {
            self.recent.pop_back();
        }
        self.recent.push_front(RecentCompletion {
            task_id: task.id.to_string(),
            description: task.description.chars().take(120).collect(),
            agent_id: task.assigned_to().map(|a| a.to_string()),
            duration_ms: task
                .updated_at_ms
                .saturating_sub(task.assigned_at_ms().unwrap_or(task.created_at_ms)),
            tokens_used: task.tokens_used(),
            completed_at: task.updated_at_ms,
        });
    }

    fn dashboard(&self) -> serde_json::Value {
        let now = now_ms();
        let stats = self.scheduler.queue().stats();
        let mut depth = [0usize; 4];
        for task in self.scheduler.queue().queued_in_order() {
            depth[task.priority.rank() as usize] += 1;
        }
        let lanes: serde_json::Map<String, serde_json::Value> = queue_core::Priority::ALL
            .iter()
            .map(|p| {
                (
                    p.as_str().to_owned(),
                    serde_json::json!(depth[p.rank() as usize]),
                )
            })
            .collect();
        let per_minute = self.throughput.last_minute(now);
        serde_json::json!({
            "uptime_ms": self.config.started.elapsed().as_millis() as u64,
            "now": now,
            "queue_depth": lanes,
            "live": {
                "queued": stats.status(queue_core::Status::Queued),
                "assigned": stats.status(queue_core::Status::Assigned),
                "working": stats.status(queue_core::Status::Working),
            },
            "agents": self.agent_infos(),
            "recent_completions": self.recent,
            "throughput": {"completed_last_minute": per_minute, "per_second": per_minute as f64 / 60.0},
        })
    }

    fn emit(&mut self, output: Output) {
        self.collect_changes();
        let seq = self.required_seq();
        self.outputs.push_back((seq, output));
    }

    fn reply<T: Send + 'static>(&mut self, tx: oneshot::Sender<T>, value: T) {
        self.emit(Output::Reply(Box::new(move || {
            let _ = tx.send(value);
        })));
    }

    fn drain_scheduler(&mut self) {
        self.collect_changes();
        while let Some(action) = self.scheduler.poll_action() {
            if let Action::Reclaimed {
                task_id,
                agent_id,
                reason,
            } = &action
            {
                tracing::info!(task_id = %task_id, agent_id = %agent_id, reason = reason.as_str(), "task reclaimed");
                crate::metrics::record_reclaim(reason.as_str());
            }
            self.emit(Output::Action(action));
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = now_ms();
        match command {
            Command::Submit { tasks, reply } => {
                let mut receipts = Vec::with_capacity(tasks.len());
                let mut error = None;
                for task in tasks {
                    let receipt = Receipt {
                        task_id: task.id.to_string(),
                        priority: task.priority.as_str(),
                        created_at: now,
                    };
                    match self.scheduler.handle_submit(now, task) {
                        Ok(()) => receipts.push(receipt),
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                let answer = match error {
                    Some(e) => Err(e),
                    None => Ok(receipts),
                };
                self.reply(reply, answer);
            }
            Command::Cancel { task_id, reply } => {
                let answer = self.scheduler.handle_cancel(now, &task_id);
                self.reply(reply, answer);
            }
            Command::Retry { record, reply } => {
                let answer = self.scheduler.handle_retry(now, record);
                self.reply(reply, answer);
            }
            Command::Agents { reply } => {
                let _ = reply.send(self.agent_infos());
            }
            Command::Dashboard { reply } => {
                let _ = reply.send(self.dashboard());
            }
            Command::IdentifyChecked {
                connection,
                agent_id,
                name,
                capabilities,
                identity,
            } => self.finish_identify(connection, agent_id, name, capabilities, identity),
        }
        self.drain_scheduler();
    }

    fn agent_infos(&self) -> Vec<AgentInfo> {
        let mut infos: Vec<AgentInfo> = self
            .scheduler
            .agents()
            .map(|view| {
                let agent = view.agent;
                AgentInfo {
                    agent_id: agent.id().to_string(),
                    name: self.agent_names.get(agent.id()).cloned(),
                    state: agent.state().as_str(),
                    connected: view.connected,
                    current_task: agent.task().map(|h| h.task_id.to_string()),
                    generation: agent.task().map(|h| h.generation),
                    capabilities: agent.capabilities().names().to_vec(),
                    flags: if agent.is_unresponsive() {
                        vec!["unresponsive"]
                    } else {
                        vec![]
                    },
                    state_since: agent.state_since_ms(),
                    awaiting_recovery: view.awaiting_recovery,
                }
            })
            .collect();
        infos.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        infos
    }

    fn on_socket(&mut self, event: SocketEvent) {
        let connection = event.connection;
        match event.kind {
            SocketEventKind::Opened(handle) => {
                self.connections.insert(
                    connection,
                    Conn {
                        handle,
                        agent: None,
                    },
                );
            }
            SocketEventKind::Closed(cause) => {
                if let Some(conn) = self.connections.remove(&connection) {
                    if let Some(agent) = conn.agent {
                        tracing::info!(agent_id = %agent, ?cause, "agent disconnected");
                        if self.agent_connection.get(&agent) == Some(&connection) {
                            self.agent_connection.remove(&agent);
                        }
                        self.scheduler
                            .handle_disconnect(now_ms(), &agent, connection);
                    }
                }
            }
            SocketEventKind::Message(message) => self.on_message(connection, message),
        }
        self.drain_scheduler();
    }

    fn on_message(&mut self, connection: u64, message: AgentMessage) {
        crate::metrics::record_frame(message.type_name());
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        let agent = conn.agent.clone();
        let now = now_ms();
        match (message, agent) {
            (AgentMessage::Ping {}, _) => self.emit(Output::Frame(
                connection,
                CoordinatorMessage::Pong { timestamp: now },
            )),
            (
                AgentMessage::Identify {
                    agent_id,
                    token,
                    name,
                    capabilities,
                    ..
                },
                None,
            ) => {
                let auth = self.auth.clone();
                let commands = self.commands.clone();
                let capabilities = capabilities.iter().map(|c| c.name().to_owned()).collect();
                tokio::spawn(async move {
                    let identity = auth.check(&token).await;
                    let _ = commands
                        .send(Command::IdentifyChecked {
                            connection,
                            agent_id,
                            name,
                            capabilities,
                            identity,
                        })
                        .await;
                });
            }
            (AgentMessage::Identify { .. }, Some(_)) => {
                self.protocol_error(
                    connection,
                    ErrorCode::InvalidState,
                    None,
                    "already identified",
                );
            }
            (other, None) => {
                let detail = format!("`{}` before a successful identify", other.type_name());
                self.protocol_error(connection, ErrorCode::NotIdentified, None, &detail);
            }
            (message, Some(agent)) => self.on_lifecycle(connection, &agent, message, now),
        }
    }

    fn finish_identify(
        &mut self,
        connection: u64,
        agent_id: String,
        name: Option<String>,
        capabilities: Vec<String>,
        identity: Option<Identity>,
    ) {
        if !self.connections.contains_key(&connection) {
            return;
        }
        let code = match &identity {
            None => Some((ErrorCode::InvalidToken, "the token is unknown or revoked")),
            Some(Identity::Agent(owner)) if owner != &agent_id => Some((
                ErrorCode::TokenAgentMismatch,
                "the token belongs to another agent id",
            )),
            Some(_) => None,
        };
        if let Some((code, detail)) = code {
            tracing::warn!(agent_id, code = code.as_str(), "identify refused");
            self.protocol_error(connection, code, None, detail);
            self.emit(Output::Close(connection, CLOSE_POLICY, "identify refused"));
            return;
        }
        let agent = AgentId::from(agent_id.as_str());
        if let Some(old) = self.agent_connection.insert(agent.clone(), connection) {
            if old != connection {
                if let Some(conn) = self.connections.get_mut(&old) {
                    conn.agent = None;
                    conn.handle
                        .close(CLOSE_POLICY, "replaced by a new connection");
                }
            }
        }
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.agent = Some(agent.clone());
        }
        if let Some(name) = name {
            self.agent_names.insert(agent.clone(), name);
        }
        tracing::info!(agent_id = %agent, capabilities = ?capabilities, "agent identified");
        self.emit(Output::Frame(
            connection,
            CoordinatorMessage::Identified { agent_id },
        ));
        self.scheduler
            .handle_connect(now_ms(), agent, Capabilities::new(capabilities), connection);
    }

    fn on_lifecycle(&mut self, connection: u64, agent: &AgentId, message: AgentMessage, now: u64) {
        let tokens_used = message.tokens_used();
        let failure = message.failure_text().map(str::to_owned);
        let (task_id, result) = match message {
            AgentMessage::TaskAccepted { task_id } => {
                let r = self
                    .scheduler
                    .handle_accepted(now, agent, &task_id)
                    .map(|()| Some("accepted"));
                (task_id, r)
            }
            AgentMessage::TaskProgress { task_id, .. } => {
                let r = self
                    .scheduler
                    .handle_progress(now, agent, &task_id)
                    .map(|()| None);
                (task_id, r)
            }
            AgentMessage::TaskComplete {
                task_id,
                generation,
                result,
                ..
            } => {
                let completion = Completion {
                    result: result.to_string(),
                    tokens_used,
                };
                let r = self
                    .scheduler
                    .handle_complete(now, agent, &task_id, generation, completion)
                    .map(|()| Some("complete"));
                (task_id, r)
            }
            AgentMessage::TaskFailed {
                task_id,
                generation,
                ..
            } => {
                let error = failure.unwrap_or_default();
                let r = self
                    .scheduler
                    .handle_failed(now, agent, &task_id, generation, &error)
                    .map(|outcome| {
                        Some(match outcome {
                            FailOutcome::Retried => "retried",
                            FailOutcome::DeadLettered => "dead_letter",
                        })
                    });
                (task_id, r)
            }
            AgentMessage::TaskRejected { task_id, reason } => {
                let reason = reason.unwrap_or_else(|| "no reason given".to_owned());
                let r = self
                    .scheduler
                    .handle_rejected(now, agent, &task_id, &reason)
                    .map(|()| Some("rejected"));
                (task_id, r)
            }
            AgentMessage::TaskRecovering { task_id } => {
                let reply = match self.scheduler.handle_recovering(now, agent, &task_id) {
                    Ok(Recovery::Continue { generation }) => CoordinatorMessage::TaskContinue {
                        task_id,
                        generation,
                    },
                    Ok(Recovery::Reassign) | Err(_) => CoordinatorMessage::TaskReassign { task_id },
                };
                self.emit(Output::Frame(connection, reply));
                return;
            }
            AgentMessage::Identify { .. } | AgentMessage::Ping {} => return,
        };
        match result {
            Ok(Some(status)) => self.emit(Output::Frame(
                connection,
                CoordinatorMessage::TaskAck {
                    task_id,
                    status: status.to_owned(),
                },
            )),
            Ok(None) => {}
            Err(err) => {
                let (code, detail) = error_code(&err);
                self.protocol_error(connection, code, Some(&task_id), &detail);
            }
        }
    }

    fn protocol_error(
        &mut self,
        connection: u64,
        code: ErrorCode,
        task_id: Option<&str>,
        detail: &str,
    ) {
        crate::metrics::record_protocol_error(code.as_str());
        self.emit(Output::Frame(
            connection,
            CoordinatorMessage::error(code, task_id, detail),
        ));
    }
}

/// The wire code for a refused lifecycle message.
fn error_code(err: &SchedulerError) -> (ErrorCode, String) {
    let code = match err {
        SchedulerError::Task(TaskError::StaleGeneration { .. }) => ErrorCode::StaleGeneration,
        SchedulerError::Task(TaskError::NotAssigned(_))
        | SchedulerError::Task(TaskError::NotFound(_)) => ErrorCode::NotAssigned,
        SchedulerError::UnknownAgent(_) => ErrorCode::NotIdentified,
        SchedulerError::Submit(_) => ErrorCode::InvalidMessage,
        _ => ErrorCode::InvalidState,
    };
    (code, err.to_string())
}

fn log_change(change: &Change) {
    let task = change.task();
    // Progress reports refresh liveness without a history entry; they are not logged.
    if let Some(entry) = task
        .history
        .last()
        .filter(|e| e.timestamp_ms == task.updated_at_ms)
    {
        tracing::info!(
            task_id = %task.id,
            agent_id = task.assigned_to().map(|a| a.as_str()).unwrap_or("-"),
            generation = task.generation,
            status = task.status.as_str(),
            event = entry.event.as_str(),
            "task {}",
            entry.event.as_str()
        );
    }
}

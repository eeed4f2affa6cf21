//! The one loop that owns the scheduler: every HTTP command, WebSocket frame,
//! commit and timer becomes a call on the pure core; its changes go to the writer
//! and its messages leave only after the commit that holds them.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use queue_core::{AgentId, Change};
use scheduler::{Action, Scheduler};
use tokio::sync::{mpsc, oneshot, watch};
use transport_ws::protocol::{encode_task_assign, CoordinatorMessage};
use transport_ws::server::{SendError, SocketEvent, SocketHandle, CLOSE_GOING_AWAY, CLOSE_POLICY};

use crate::server::auth::Authenticator;
use crate::server::clock::now_ms;
use crate::server::writer::{Committed, WriteJob, Writer};

mod activity;
mod commands;
mod wire;

use activity::{RecentCompletion, Throughput, RECENT};
pub use commands::{AgentInfo, Command, Receipt};

/// Settings of the engine.
pub struct EngineConfig {
    /// Period of the overdue/stuck sweep.
    pub sweep_interval: Duration,
    /// Final tasks older than this are deleted.
    pub retention: Duration,
    /// When the service started (for uptime).
    pub started: std::time::Instant,
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
        crate::server::metrics::record_commit(c.rows, c.commit_micros);
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
                let frame = encode_task_assign(
                    &a.task_id,
                    &a.description,
                    &a.metadata,
                    a.generation,
                    a.assigned_at_ms,
                );
                self.send_text(connection, frame);
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
        self.send_text(connection, message.encode());
    }

    fn send_text(&mut self, connection: u64, text: Vec<u8>) {
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        // A closed socket reports its own end; only a full queue is handled here.
        if conn.handle.send_encoded(text) == Err(SendError::Full) {
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
            crate::server::metrics::record_change(&change);
            if let Change::Finalized(task) = &change {
                if task.status == queue_core::Status::Completed {
                    self.note_completion(task);
                }
            }
            self.pending.push(change);
        }
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
                crate::server::metrics::record_reclaim(reason.as_str());
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
}

fn log_change(change: &Change) {
    let Some(entry) = change.recorded_event() else {
        return;
    };
    let task = change.task();
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

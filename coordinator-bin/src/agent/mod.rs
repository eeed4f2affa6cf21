//! `coordinator agent`: the bundled sidecar that makes any command-line program an
//! agent. One task at a time; the task is saved before it is accepted and its
//! outcome is kept until the coordinator acknowledges it.

mod command;
pub mod config;
mod state;

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use transport_ws::client::{connect_with_retry, Backoff, ClientConfig, ClientError, Connection};
use transport_ws::protocol::{AgentMessage, CoordinatorMessage, ErrorCode};

use command::RunSettings;
use config::RunnerConfig;
use state::{HeldTask, Outcome, StateFile};

/// A connection that lasted this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

struct Running {
    task_id: String,
    handle: JoinHandle<Option<Outcome>>,
    cancel: watch::Sender<bool>,
}

/// The runner's state between connections.
struct Runner {
    config: RunnerConfig,
    state: StateFile,
    held: Option<HeldTask>,
    running: Option<Running>,
    settings: RunSettings,
    progress_tx: mpsc::UnboundedSender<(String, Value)>,
    stopping: bool,
}

/// Runs the agent until SIGTERM/SIGINT (exit 0) or a refused token (error).
pub fn run(config: RunnerConfig) -> Result<(), String> {
    crate::logging::init_logging(crate::cli::LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(main_loop(config))
}

async fn main_loop(config: RunnerConfig) -> Result<(), String> {
    let state = StateFile::new(&config.state_file);
    let held = state.load()?;
    if let Some(task) = &held {
        tracing::info!(task_id = %task.task_id, generation = task.generation, "state file holds a task; will recover it");
    }
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let mut runner = Runner {
        settings: RunSettings {
            exec: config.exec.clone(),
            timeout: config.task_timeout,
            max_output_bytes: config.max_output_bytes,
        },
        config,
        state,
        held,
        running: None,
        progress_tx,
        stopping: false,
    };
    let mut backoff = Backoff::new(runner.config.backoff_initial, runner.config.backoff_max);
    let mut client = ClientConfig::new(
        &runner.config.hub,
        &runner.config.agent_id,
        &runner.config.token,
    );
    client.capabilities = runner.config.capabilities.clone();
    client.name = runner.config.name.clone();
    client.client_type = "coordinator-agent".into();
    let mut signals = Signals::new()?;
    loop {
        let mut conn = tokio::select! {
            conn = connect_with_retry(&client, &mut backoff) => match conn {
                Ok(conn) => conn,
                Err(e @ ClientError::Refused { .. }) | Err(e @ ClientError::InvalidUrl(_)) => return Err(e.to_string()),
                Err(e) => return Err(e.to_string()),
            },
            _ = signals.recv() => {
                runner.stopping = true;
                if runner.finish_offline().await { return Ok(()); }
                continue;
            }
        };
        tracing::info!(hub = %runner.config.hub, agent_id = %runner.config.agent_id, "connected and identified");
        let connected_at = Instant::now();
        if let Some(task) = &runner.held {
            send(
                &conn,
                &AgentMessage::TaskRecovering {
                    task_id: task.task_id.clone(),
                },
            )
            .await;
        }
        let done = runner
            .session(&mut conn, &mut progress_rx, &mut signals)
            .await;
        if connected_at.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        if done {
            return Ok(());
        }
        tracing::warn!("connection to the coordinator lost; reconnecting");
    }
}

async fn send(conn: &Connection, message: &AgentMessage) -> bool {
    conn.send(message).await.is_ok()
}

impl Runner {
    /// Serves one connection. Returns true when the runner should exit.
    async fn session(
        &mut self,
        conn: &mut Connection,
        progress: &mut mpsc::UnboundedReceiver<(String, Value)>,
        signals: &mut Signals,
    ) -> bool {
        // A result produced while disconnected goes out now (after recovery says continue).
        loop {
            let running = async {
                match self.running.as_mut() {
                    Some(r) => Some((&mut r.handle).await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = conn.recv() => match message {
                    Some(message) => {
                        if self.on_message(conn, message).await {
                            return true;
                        }
                    }
                    None => return false,
                },
                finished = running => {
                    let Some(joined) = finished else { continue };
                    let running = self.running.take().expect("a running command finished");
                    match joined {
                        Ok(Some(outcome)) => self.finished(conn, &running.task_id, outcome).await,
                        Ok(None) => tracing::info!(task_id = %running.task_id, "command stopped (cancelled)"),
                        Err(e) => self.finished(conn, &running.task_id, Outcome::Failed { error: format!("the runner lost the command: {e}") }).await,
                    }
                    if self.stopping && self.held.is_none() {
                        return true;
                    }
                }
                Some((task_id, value)) = progress.recv() => {
                    send(conn, &AgentMessage::TaskProgress { task_id, progress: Some(value) }).await;
                }
                _ = signals.recv() => {
                    tracing::info!("stop requested: taking no new work");
                    self.stopping = true;
                    if self.held.is_none() {
                        return true;
                    }
                    if let Some(r) = &self.running {
                        let cancel = r.cancel.clone();
                        let grace = self.config.shutdown_grace;
                        tokio::spawn(async move {
                            tokio::time::sleep(grace).await;
                            let _ = cancel.send(true);
                        });
                    }
                }
            }
        }
    }

    /// Without a connection, on a stop request: wait for the command (up to the
    /// grace), keep its outcome in the state file, and exit.
    async fn finish_offline(&mut self) -> bool {
        if let Some(r) = self.running.take() {
            let outcome = tokio::time::timeout(self.config.shutdown_grace, r.handle).await;
            if let Ok(Ok(Some(outcome))) = outcome {
                self.record_outcome(outcome);
            } else {
                let _ = r.cancel.send(true);
            }
        }
        true
    }

    fn record_outcome(&mut self, outcome: Outcome) {
        if let Some(task) = self.held.as_mut() {
            task.outcome = Some(outcome);
            if let Err(e) = self.state.save(Some(task)) {
                tracing::error!(error = %e, "cannot save the outcome to the state file");
            }
        }
    }

    async fn finished(&mut self, conn: &Connection, task_id: &str, outcome: Outcome) {
        if self.held.as_ref().is_none_or(|t| t.task_id != task_id) {
            return;
        }
        match &outcome {
            Outcome::Complete { .. } => tracing::info!(task_id, "command succeeded"),
            Outcome::Failed { error } => tracing::warn!(task_id, error = %error, "command failed"),
        }
        self.record_outcome(outcome);
        self.report(conn).await;
    }

    async fn report(&self, conn: &Connection) {
        let Some(task) = &self.held else { return };
        let message = match &task.outcome {
            Some(Outcome::Complete {
                result,
                tokens_used,
            }) => AgentMessage::TaskComplete {
                task_id: task.task_id.clone(),
                generation: task.generation,
                result: result.clone(),
                tokens_used: *tokens_used,
            },
            Some(Outcome::Failed { error }) => AgentMessage::TaskFailed {
                task_id: task.task_id.clone(),
                generation: task.generation,
                error: Some(error.clone()),
                reason: None,
            },
            None => return,
        };
        send(conn, &message).await;
    }

    fn forget(&mut self, task_id: &str) {
        if self.held.as_ref().is_some_and(|t| t.task_id == task_id) {
            self.held = None;
            if let Err(e) = self.state.save(None) {
                tracing::error!(error = %e, "cannot clear the state file");
            }
        }
    }

    fn stop_command(&mut self, task_id: &str) {
        if let Some(r) = self.running.take() {
            if r.task_id == task_id {
                let _ = r.cancel.send(true);
                tokio::spawn(async move {
                    let _ = r.handle.await;
                });
            } else {
                self.running = Some(r);
            }
        }
    }

    fn start_command(&mut self) {
        let Some(task) = self.held.clone() else {
            return;
        };
        let (cancel, cancelled) = watch::channel(false);
        let settings = self.settings.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forward = self.progress_tx.clone();
        let id = task.task_id.clone();
        tokio::spawn(async move {
            while let Some(value) = rx.recv().await {
                if forward.send((id.clone(), value)).is_err() {
                    return;
                }
            }
        });
        tracing::info!(task_id = %task.task_id, generation = task.generation, "running the command");
        let task_id = task.task_id.clone();
        let handle =
            tokio::spawn(async move { command::run(&task, &settings, tx, cancelled).await });
        self.running = Some(Running {
            task_id,
            handle,
            cancel,
        });
    }

    /// Handles one message; true when the runner should exit.
    async fn on_message(&mut self, conn: &Connection, message: CoordinatorMessage) -> bool {
        match message {
            CoordinatorMessage::TaskAssign {
                task_id,
                description,
                metadata,
                generation,
                assigned_at,
            } => {
                if let Some(task) = self.held.as_mut().filter(|t| t.task_id == task_id) {
                    // The task we already hold came back to us (after a restart or
                    // reconnect): adopt the new generation and go on with it.
                    task.generation = generation;
                    let has_outcome = task.outcome.is_some();
                    let _ = self.state.save(Some(task));
                    tracing::info!(task_id, generation, "held task assigned again; adopting it");
                    send(conn, &AgentMessage::TaskAccepted { task_id }).await;
                    if has_outcome {
                        self.report(conn).await;
                    } else if self.running.is_none() {
                        self.start_command();
                    }
                    return false;
                }
                if self.held.is_some() || self.stopping {
                    let reason = if self.stopping {
                        "shutting_down"
                    } else {
                        "busy"
                    };
                    tracing::info!(task_id, reason, "rejecting a task");
                    send(
                        conn,
                        &AgentMessage::TaskRejected {
                            task_id,
                            reason: Some(reason.into()),
                        },
                    )
                    .await;
                    return false;
                }
                let task = HeldTask {
                    task_id: task_id.clone(),
                    generation,
                    description,
                    metadata,
                    assigned_at,
                    outcome: None,
                };
                if let Err(e) = self.state.save(Some(&task)) {
                    tracing::error!(error = %e, task_id, "cannot save the task; rejecting it");
                    send(
                        conn,
                        &AgentMessage::TaskRejected {
                            task_id,
                            reason: Some(format!("state file: {e}")),
                        },
                    )
                    .await;
                    return false;
                }
                self.held = Some(task);
                tracing::info!(task_id, generation, "task assigned and saved; accepting");
                send(conn, &AgentMessage::TaskAccepted { task_id }).await;
                self.start_command();
            }
            CoordinatorMessage::TaskContinue {
                task_id,
                generation,
            } => {
                let Some(task) = self.held.as_mut().filter(|t| t.task_id == task_id) else {
                    return false;
                };
                task.generation = generation;
                let has_outcome = task.outcome.is_some();
                let _ = self.state.save(Some(task));
                tracing::info!(task_id, generation, "coordinator says continue");
                if has_outcome {
                    self.report(conn).await;
                } else if self.running.is_none() {
                    self.start_command();
                }
            }
            CoordinatorMessage::TaskReassign { task_id } => {
                tracing::info!(
                    task_id,
                    "coordinator says the task went elsewhere; dropping it"
                );
                self.stop_command(&task_id);
                self.forget(&task_id);
                return self.stopping;
            }
            CoordinatorMessage::TaskCancel { task_id } => {
                tracing::info!(task_id, "task cancelled; stopping the command");
                self.stop_command(&task_id);
                self.forget(&task_id);
                return self.stopping;
            }
            CoordinatorMessage::TaskAck { task_id, status }
                if status != "accepted" && self.running.is_none() =>
            {
                tracing::info!(task_id, status, "outcome acknowledged");
                self.forget(&task_id);
                return self.stopping;
            }
            CoordinatorMessage::Error {
                error,
                task_id: Some(task_id),
                detail,
            } => {
                tracing::warn!(
                    task_id,
                    code = error.as_str(),
                    detail = detail.as_deref().unwrap_or(""),
                    "coordinator refused a message"
                );
                let reported = self
                    .held
                    .as_ref()
                    .is_some_and(|t| t.task_id == task_id && t.outcome.is_some());
                if reported && matches!(error, ErrorCode::StaleGeneration | ErrorCode::NotAssigned)
                {
                    // The task is no longer ours; keeping it would block us forever.
                    self.forget(&task_id);
                    return self.stopping;
                }
            }
            _ => {}
        }
        false
    }
}

/// SIGTERM and SIGINT as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            int: signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

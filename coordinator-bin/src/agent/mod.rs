//! `coordinator agent`: the bundled sidecar that makes any command-line program an
//! agent. One task at a time; the task is saved before it is accepted and its
//! outcome is kept until the coordinator acknowledges it. Every (re)connect while
//! holding a task names it in `identify` (`current_task`) and sends
//! `task_recovering`, so that the task is re-attached rather than run again.
//!
//! Every decision is made by the pure [`session::AgentSession`]; this file is the
//! shell around it: it feeds in connections, frames, command ends, progress lines,
//! stop signals and timer ticks, and executes what comes out (save the state file,
//! send, start or kill the command, exit).

mod command;
pub mod config;
mod session;
mod state;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use coordinator_transport::client::{
    connect_with_retry, Backoff, ClientConfig, ClientError, Connection,
};
use coordinator_transport::protocol::CoordinatorMessage;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use command::RunSettings;
use config::RunnerConfig;
use session::{AgentSession, Output, SessionConfig};
use state::{HeldTask, Outcome, StateFile};

/// A connection that lasted this long resets the reconnect backoff.
const STABLE_AFTER_MS: u64 = 30_000;

/// On exit, killed commands get this long to be reaped (their process group is
/// killed on the way).
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The command being run.
struct Running {
    handle: JoinHandle<Option<Outcome>>,
    cancel: watch::Sender<bool>,
}

/// A connection attempt that owns the backoff and hands it back.
type Connecting = Pin<Box<dyn Future<Output = (Result<Connection, ClientError>, Backoff)>>>;

/// The I/O around [`AgentSession`]: the state file, the connection, the command,
/// signals and the one clock. It decides nothing.
struct Shell {
    state: StateFile,
    settings: RunSettings,
    progress_tx: mpsc::UnboundedSender<(String, Value)>,
    /// The one clock: milliseconds since the runner started.
    started: Instant,
    conn: Option<Connection>,
    connected_at_ms: u64,
    command: Option<Running>,
    /// Killed commands still being reaped.
    dying: Vec<JoinHandle<Option<Outcome>>>,
}

async fn main_loop(config: RunnerConfig) -> Result<(), String> {
    let state = StateFile::new(&config.state_file);
    let held = state.load()?;
    if let Some(task) = &held {
        tracing::info!(
            task_id = task.task_id.as_str(),
            generation = task.generation,
            "state file holds a task; will recover it"
        );
    }
    let mut session = AgentSession::new(
        SessionConfig {
            shutdown_grace_ms: u64::try_from(config.shutdown_grace.as_millis()).unwrap_or(u64::MAX),
        },
        held,
    );
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let mut shell = Shell {
        state,
        settings: RunSettings {
            exec: config.exec.clone(),
            timeout: config.task_timeout,
            max_output_bytes: config.max_output_bytes,
        },
        progress_tx,
        started: Instant::now(),
        conn: None,
        connected_at_ms: 0,
        command: None,
        dying: Vec::new(),
    };
    let mut client = ClientConfig::new(&config.hub, &config.agent_id, &config.token);
    client.capabilities = config.capabilities.clone();
    client.name = config.name.clone();
    client.client_type = "coordinator-agent".into();
    let mut backoff = Some(Backoff::new(config.backoff_initial, config.backoff_max));
    let mut connecting: Option<Connecting> = None;
    let mut signals = Signals::new()?;
    loop {
        while let Some(output) = session.poll_output() {
            if shell.execute(&mut session, output).await {
                shell.reap().await;
                return Ok(());
            }
        }
        if shell.conn.is_none() && connecting.is_none() && session.wants_connection() {
            if let Some(mut backoff) = backoff.take() {
                // Every identify names the held task, so that the coordinator
                // re-attaches it rather than running it again.
                client.current_task = session.current_task();
                let client = client.clone();
                connecting = Some(Box::pin(async move {
                    let result = connect_with_retry(&client, &mut backoff).await;
                    (result, backoff)
                }));
            }
        }
        let deadline = session
            .poll_timeout()
            .map(|ms| tokio::time::Instant::from_std(shell.started + Duration::from_millis(ms)));
        tokio::select! {
            (result, returned) = attempt(&mut connecting), if session.wants_connection() => {
                connecting = None;
                backoff = Some(returned);
                shell.conn = Some(result.map_err(|e| e.to_string())?);
                shell.connected_at_ms = shell.now_ms();
                tracing::info!(hub = %config.hub, agent_id = config.agent_id.as_str(), "connected and identified");
                session.handle_connected();
            }
            message = receive(&mut shell.conn) => match message {
                Some(message) => session.handle_message(message),
                None => {
                    shell.conn = None;
                    if shell.now_ms().saturating_sub(shell.connected_at_ms) >= STABLE_AFTER_MS {
                        if let Some(backoff) = backoff.as_mut() {
                            backoff.reset();
                        }
                    }
                    tracing::warn!("connection to the coordinator lost; reconnecting");
                    session.handle_disconnected();
                }
            },
            joined = finish(&mut shell.command) => {
                shell.command = None;
                let outcome = match joined {
                    Ok(Some(outcome)) => outcome,
                    Ok(None) => Outcome::Failed { error: "the command stopped without a result".into() },
                    Err(e) => Outcome::Failed { error: format!("the runner lost the command: {e}") },
                };
                session.handle_command_finished(outcome);
            }
            Some((task_id, value)) = progress_rx.recv(), if shell.conn.is_some() => {
                session.handle_progress(task_id, value);
            }
            _ = signals.recv() => session.handle_shutdown(shell.now_ms()),
            _ = sleep_until(deadline) => session.handle_timeout(shell.now_ms()),
        }
    }
}

/// The end of the connection attempt; never, without one.
async fn attempt(
    connecting: &mut Option<Connecting>,
) -> (Result<Connection, ClientError>, Backoff) {
    match connecting {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// The next frame (`None`: the connection closed); never, without a connection.
async fn receive(conn: &mut Option<Connection>) -> Option<CoordinatorMessage> {
    match conn {
        Some(conn) => conn.recv().await,
        None => std::future::pending().await,
    }
}

/// The end of the running command; never, without one.
async fn finish(command: &mut Option<Running>) -> Result<Option<Outcome>, tokio::task::JoinError> {
    match command {
        Some(running) => (&mut running.handle).await,
        None => std::future::pending().await,
    }
}

/// The deadline; never, without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Shell {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Executes one output; true on [`Output::Exit`].
    async fn execute(&mut self, session: &mut AgentSession, output: Output) -> bool {
        match output {
            Output::SaveState(task) => {
                let result = self.state.save(Some(&task));
                session.handle_state_saved(self.saved(result));
            }
            Output::ClearState => {
                let result = self.state.save(None);
                session.handle_state_saved(self.saved(result));
            }
            Output::Send(message) => {
                if let Some(conn) = &self.conn {
                    // A failed send shows up as the connection's end.
                    let _ = conn.send(&message).await;
                }
            }
            Output::StartCommand(task) => self.start_command(task),
            Output::KillCommand { task_id } => {
                if let Some(running) = self.command.take() {
                    tracing::info!(task_id, "killing the command");
                    let _ = running.cancel.send(true);
                    self.dying.retain(|handle| !handle.is_finished());
                    self.dying.push(running.handle);
                }
            }
            Output::Exit => return true,
        }
        false
    }

    fn saved(&self, result: std::io::Result<()>) -> Result<(), String> {
        result.map_err(|e| {
            tracing::error!(error = %e, file = %self.state.path().display(), "cannot write the state file");
            e.to_string()
        })
    }

    fn start_command(&mut self, task: HeldTask) {
        debug_assert!(self.command.is_none(), "one command at a time");
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
        let handle =
            tokio::spawn(async move { command::run(&task, &settings, tx, cancelled).await });
        self.command = Some(Running { handle, cancel });
    }

    /// Waits (bounded) for killed commands, so that their process groups are gone
    /// before the runner exits.
    async fn reap(&mut self) {
        for handle in self.dying.drain(..) {
            let _ = tokio::time::timeout(REAP_TIMEOUT, handle).await;
        }
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

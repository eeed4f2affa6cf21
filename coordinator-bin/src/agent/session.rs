//! The agent runner's protocol decisions as a pure state machine: what to save,
//! send, start and kill in answer to coordinator messages, command ends,
//! connection changes and stop requests.
//!
//! This module performs no I/O: no sockets, files, processes, tasks or clocks.
//! Time comes in as `now_ms` (milliseconds on any monotonic clock the caller
//! keeps), and every side effect comes out as an [`Output`] value.
//!
//! # Driving it
//!
//! ```text
//! let mut session = AgentSession::new(config, state_file.load()?);
//! loop {
//!     while let Some(output) = session.poll_output() {
//!         match output {
//!             Output::SaveState(task) => session.handle_state_saved(save(Some(&task))),
//!             Output::ClearState => session.handle_state_saved(save(None)),
//!             Output::Send(message) => connection.send(message),
//!             Output::StartCommand(task) => spawn the command,
//!             Output::KillCommand { .. } => kill the command, forget it,
//!             Output::Exit => return,
//!         }
//!     }
//!     wait for one event (connect if `wants_connection()`, naming `current_task()`
//!     in identify; a frame, the command's end, a progress line, a stop signal, the
//!     `poll_timeout()` deadline) and feed it in with the matching `handle_*` call.
//! }
//! ```
//!
//! # Re-attach after every reconnect
//!
//! Whenever the runner connects while it holds a task (after its own restart, a
//! network blip or a coordinator restart; running, or with an outcome not yet
//! acknowledged), its `identify` names the task in `current_task` and, once
//! identified, it sends `task_recovering`. It then holds its outcome back until
//! the coordinator answers: `task_continue` (go on; later reports carry the
//! generation given there) or `task_reassign` (the task went elsewhere: the command
//! is killed and the task dropped, as for `task_cancel`). A coordinator that
//! re-attaches on `current_task` and then answers `task_recovering` too sends the
//! same `task_continue` twice; the repeat changes nothing.

use std::collections::VecDeque;

use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage, CurrentTask, ErrorCode};
use serde_json::Value;

use super::state::{HeldTask, Outcome};

#[cfg(test)]
mod tests;

/// Settings of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// After a stop request, a running command may go on this long before it is
    /// killed.
    pub shutdown_grace_ms: u64,
}

/// One thing the shell must do, drained with [`AgentSession::poll_output`] and
/// executed in the order given.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Write this task to the state file (atomically), then report the result with
    /// [`AgentSession::handle_state_saved`] before polling again.
    SaveState(HeldTask),
    /// Empty the state file, then report the result with
    /// [`AgentSession::handle_state_saved`] before polling again.
    ClearState,
    /// Send this message on the current connection.
    Send(AgentMessage),
    /// Run the command for this task; report its end with
    /// [`AgentSession::handle_command_finished`]. At most one runs at a time.
    StartCommand(HeldTask),
    /// Kill the running command of this task. Its end is not reported: from now on
    /// no command is running.
    KillCommand {
        /// The task whose command to kill.
        task_id: String,
    },
    /// The runner is done: exit (status 0). Nothing follows.
    Exit,
}

/// Where the runner stands towards stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Taking work.
    Serving,
    /// Stop requested while connected: no new work; the running command may finish
    /// within the grace, its outcome is reported and acknowledged, then exit. A lost
    /// connection is made again to report.
    Draining,
    /// Stop requested while disconnected: no reconnect; the running command may
    /// finish within the grace and its outcome is saved, then exit.
    Leaving,
    /// `Exit` was emitted.
    Exited,
}

/// A queued step: an output, or the save of a newly assigned task whose result
/// decides between accepting and rejecting it.
#[derive(Debug)]
enum Step {
    Output(Output),
    SaveNewTask(HeldTask),
}

/// The save the shell is executing.
#[derive(Debug)]
enum SaveInFlight {
    /// An update of the held task or a clear: its result changes nothing here.
    Update,
    /// The first save of a newly assigned task: accept it if it worked.
    NewTask(String),
}

/// The runner's protocol state: the task it holds, whether its command runs,
/// whether it is connected, and whether it is stopping.
///
/// Call order:
/// 1. [`new`](Self::new) with the task found in the state file, if any.
/// 2. After every `handle_*` call, drain [`poll_output`](Self::poll_output) until it
///    returns `None`, executing each output in order. After executing a
///    [`Output::SaveState`] or [`Output::ClearState`], call
///    [`handle_state_saved`](Self::handle_state_saved) with its result before
///    anything else: until then `poll_output` returns `None`. That is how "saved
///    before accepted" holds by construction.
/// 3. Re-arm one timer at [`poll_timeout`](Self::poll_timeout) and call
///    [`handle_timeout`](Self::handle_timeout) when it passes.
/// 4. Connect only while [`wants_connection`](Self::wants_connection) is true, with
///    [`current_task`](Self::current_task) as `identify`'s `current_task`; report the
///    connection with [`handle_connected`](Self::handle_connected) and its loss with
///    [`handle_disconnected`](Self::handle_disconnected).
///
/// After [`Output::Exit`], every input is ignored and nothing more comes out.
#[derive(Debug)]
pub struct AgentSession {
    config: SessionConfig,
    /// The task this agent holds (as in the state file).
    held: Option<HeldTask>,
    /// The held task's command runs. Implies `held.is_some()`.
    command_running: bool,
    connected: bool,
    /// `task_recovering` went out on this connection and was not answered yet:
    /// the outcome waits for `task_continue`.
    recovering: bool,
    phase: Phase,
    /// When the running command is killed (set by a stop request).
    kill_at_ms: Option<u64>,
    save_in_flight: Option<SaveInFlight>,
    steps: VecDeque<Step>,
}

impl AgentSession {
    /// A session holding `held`, the content of the state file.
    pub fn new(config: SessionConfig, held: Option<HeldTask>) -> AgentSession {
        AgentSession {
            config,
            held,
            command_running: false,
            connected: false,
            recovering: false,
            phase: Phase::Serving,
            kill_at_ms: None,
            save_in_flight: None,
            steps: VecDeque::new(),
        }
    }

    /// True while the runner should be connected (or trying to connect).
    pub fn wants_connection(&self) -> bool {
        matches!(self.phase, Phase::Serving | Phase::Draining)
    }

    /// The task to name in `identify` (its `current_task` field) when connecting:
    /// the held task, running or with an outcome not yet acknowledged, with the
    /// generation of this agent's assignment of it. It does not change while the
    /// runner is disconnected, so the shell may read it when it starts connecting.
    pub fn current_task(&self) -> Option<CurrentTask> {
        self.held.as_ref().map(|task| CurrentTask {
            task_id: task.task_id.clone(),
            generation: task.generation,
        })
    }

    /// The next thing to do, in order; `None` when there is nothing, or while a
    /// save awaits [`handle_state_saved`](Self::handle_state_saved).
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.save_in_flight.is_some() {
            return None;
        }
        match self.steps.pop_front()? {
            Step::SaveNewTask(task) => {
                self.save_in_flight = Some(SaveInFlight::NewTask(task.task_id.clone()));
                Some(Output::SaveState(task))
            }
            Step::Output(output) => {
                if matches!(output, Output::SaveState(_) | Output::ClearState) {
                    self.save_in_flight = Some(SaveInFlight::Update);
                }
                Some(output)
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.kill_at_ms
    }

    /// The result of the last [`Output::SaveState`] or [`Output::ClearState`]
    /// (the error as text). A failed first save of a task rejects the task; any
    /// other failure changes nothing here (the shell reports it).
    pub fn handle_state_saved(&mut self, result: Result<(), String>) {
        let Some(save) = self.save_in_flight.take() else {
            debug_assert!(false, "handle_state_saved without a save in flight");
            return;
        };
        let SaveInFlight::NewTask(task_id) = save else {
            return;
        };
        match result {
            Ok(()) => {
                let Some(task) = self.held.clone().filter(|t| t.task_id == task_id) else {
                    debug_assert!(false, "the saved new task is no longer held");
                    return;
                };
                tracing::info!(task_id, "task assigned and saved; accepting");
                self.command_running = true;
                // In front: these belong right after the save.
                self.steps
                    .push_front(Step::Output(Output::StartCommand(task)));
                self.push_front_send(AgentMessage::TaskAccepted { task_id });
            }
            Err(error) => {
                tracing::error!(error, task_id, "cannot save the task; rejecting it");
                self.held = None;
                self.push_front_send(AgentMessage::TaskRejected {
                    task_id,
                    reason: Some(format!("state file: {error}")),
                });
            }
        }
    }

    /// The connection is up and identified (its `identify` named
    /// [`current_task`](Self::current_task)). A held task is announced with
    /// `task_recovering`, after every (re)connect; the coordinator's answer decides
    /// what happens to it, and its outcome waits for that answer.
    pub fn handle_connected(&mut self) {
        if !self.accepts_input() {
            return;
        }
        debug_assert!(!self.connected, "handle_connected twice");
        self.connected = true;
        if let Some(task) = &self.held {
            tracing::info!(
                task_id = task.task_id.as_str(),
                "holding a task; telling the coordinator"
            );
            let task_id = task.task_id.clone();
            self.recovering = true;
            self.send(AgentMessage::TaskRecovering { task_id });
        }
    }

    /// The connection is gone. Unsent messages are dropped; the held task and its
    /// outcome stay.
    pub fn handle_disconnected(&mut self) {
        if !self.accepts_input() {
            return;
        }
        self.connected = false;
        self.recovering = false;
        self.steps
            .retain(|step| !matches!(step, Step::Output(Output::Send(_))));
    }

    /// One message from the coordinator.
    pub fn handle_message(&mut self, message: CoordinatorMessage) {
        if !self.accepts_input() {
            return;
        }
        debug_assert!(self.connected, "a message without a connection");
        match message {
            CoordinatorMessage::TaskAssign {
                task_id,
                description,
                metadata,
                generation,
                assigned_at,
            } => self.on_assign(HeldTask {
                task_id,
                generation,
                description,
                metadata,
                assigned_at,
                outcome: None,
            }),
            CoordinatorMessage::TaskContinue {
                task_id,
                generation,
            } => self.on_continue(task_id, generation),
            CoordinatorMessage::TaskReassign { task_id } => {
                tracing::info!(
                    task_id,
                    "coordinator says the task went elsewhere; dropping it"
                );
                self.release(&task_id);
            }
            CoordinatorMessage::TaskCancel { task_id } => {
                tracing::info!(task_id, "task cancelled; stopping the command");
                self.release(&task_id);
            }
            CoordinatorMessage::TaskAck { task_id, status }
                if status != "accepted" && !self.command_running =>
            {
                tracing::info!(task_id, status, "outcome acknowledged");
                self.release(&task_id);
            }
            CoordinatorMessage::Error {
                error,
                task_id: Some(task_id),
                detail,
            } => self.on_error(error, task_id, detail),
            CoordinatorMessage::Error {
                error,
                task_id: None,
                detail,
            } => tracing::warn!(
                code = error.as_str(),
                detail = detail.as_deref().unwrap_or(""),
                "coordinator reported an error"
            ),
            _ => {}
        }
    }

    /// The held task's command ended with `outcome`. The outcome is saved, then
    /// reported when the coordinator can take it; it is kept until acknowledged.
    pub fn handle_command_finished(&mut self, outcome: Outcome) {
        if !self.accepts_input() {
            return;
        }
        debug_assert!(
            self.command_running,
            "a command finished that was not running"
        );
        if !self.command_running {
            return;
        }
        self.command_running = false;
        self.kill_at_ms = None;
        let Some(task) = self.held.as_mut() else {
            debug_assert!(false, "a running command without a held task");
            return;
        };
        match &outcome {
            Outcome::Complete { .. } => {
                tracing::info!(task_id = task.task_id.as_str(), "command succeeded")
            }
            Outcome::Failed { error } => {
                tracing::warn!(
                    task_id = task.task_id.as_str(),
                    error = error.as_str(),
                    "command failed"
                )
            }
        }
        task.outcome = Some(outcome);
        self.save_held();
        if self.phase == Phase::Leaving {
            self.exit();
        } else {
            self.report();
        }
    }

    /// The running command printed a progress line. It goes out while the task is
    /// held, unfinished, and the coordinator is connected.
    pub fn handle_progress(&mut self, task_id: String, progress: Value) {
        if !self.accepts_input() || !self.connected {
            return;
        }
        let working = self
            .held
            .as_ref()
            .is_some_and(|t| t.task_id == task_id && t.outcome.is_none());
        if working {
            self.send(AgentMessage::TaskProgress {
                task_id,
                progress: Some(progress),
            });
        }
    }

    /// SIGTERM or SIGINT at `now_ms`: take no new work. Idle: exit at once.
    /// Otherwise a running command gets the grace to finish; connected, the runner
    /// reports the outcome and exits once it is acknowledged; disconnected, it only
    /// saves the outcome and exits. A task without a command stays in the state file.
    pub fn handle_shutdown(&mut self, now_ms: u64) {
        if !self.accepts_input() || self.phase == Phase::Leaving {
            return;
        }
        tracing::info!("stop requested: taking no new work");
        if self.held.is_none() {
            self.exit();
            return;
        }
        if self.connected {
            self.phase = Phase::Draining;
        } else {
            self.phase = Phase::Leaving;
            if !self.command_running {
                self.exit();
                return;
            }
        }
        if self.command_running && self.kill_at_ms.is_none() {
            self.kill_at_ms = Some(now_ms.saturating_add(self.config.shutdown_grace_ms));
        }
    }

    /// The clock reached `now_ms`: past the grace, the running command is killed
    /// and the runner exits; the task stays in the state file for the next start.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if !self.accepts_input() {
            return;
        }
        match self.kill_at_ms {
            Some(at) if now_ms >= at => self.kill_at_ms = None,
            _ => return,
        }
        if let Some(task_id) = self.running_task_id() {
            tracing::warn!(task_id, "stop grace over; killing the command");
            self.kill_command(task_id);
            self.exit();
        }
    }

    fn on_assign(&mut self, assigned: HeldTask) {
        let task_id = assigned.task_id.clone();
        if let Some(task) = self.held.as_mut().filter(|t| t.task_id == task_id) {
            // The task we already hold came back to us (after a restart or a
            // reconnect): adopt the new generation and go on with it.
            task.generation = assigned.generation;
            tracing::info!(
                task_id,
                generation = assigned.generation,
                "held task assigned again; adopting it"
            );
            self.recovering = false;
            self.save_held();
            self.send(AgentMessage::TaskAccepted { task_id });
            self.go_on();
            return;
        }
        if self.held.is_some() || self.phase != Phase::Serving {
            let reason = if self.phase != Phase::Serving {
                "shutting_down"
            } else {
                "busy"
            };
            tracing::info!(task_id, reason, "rejecting a task");
            self.send(AgentMessage::TaskRejected {
                task_id,
                reason: Some(reason.into()),
            });
            return;
        }
        tracing::info!(
            task_id,
            generation = assigned.generation,
            "task assigned; saving it"
        );
        self.held = Some(assigned.clone());
        self.steps.push_back(Step::SaveNewTask(assigned));
    }

    fn on_continue(&mut self, task_id: String, generation: u64) {
        let Some(task) = self.held.as_mut().filter(|t| t.task_id == task_id) else {
            return;
        };
        if !self.recovering && task.generation == generation {
            // A repeat: the coordinator re-attached the task on identify's
            // `current_task` and answers `task_recovering` as well, or assigned the
            // task to us again before answering it. Nothing new to do or report.
            tracing::debug!(task_id, generation, "repeated task_continue; nothing to do");
            return;
        }
        task.generation = generation;
        tracing::info!(task_id, generation, "coordinator says continue");
        self.recovering = false;
        self.save_held();
        self.go_on();
    }

    fn on_error(&mut self, error: ErrorCode, task_id: String, detail: Option<String>) {
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
        if reported && matches!(error, ErrorCode::StaleGeneration | ErrorCode::NotAssigned) {
            // The task is no longer ours; keeping it would block us forever.
            self.release(&task_id);
        }
    }

    /// The held task goes on: its outcome is reported, or its command started.
    /// While stopping no command starts: the task stays saved and the runner exits.
    fn go_on(&mut self) {
        let Some(task) = &self.held else { return };
        if task.outcome.is_some() {
            self.report();
        } else if !self.command_running {
            if self.phase != Phase::Serving {
                tracing::info!(
                    task_id = task.task_id.as_str(),
                    "stopping: the task stays in the state file"
                );
                self.exit();
                return;
            }
            tracing::info!(
                task_id = task.task_id.as_str(),
                generation = task.generation,
                "running the command"
            );
            self.command_running = true;
            let task = task.clone();
            self.steps
                .push_back(Step::Output(Output::StartCommand(task)));
        }
    }

    /// Sends the held task's outcome, if there is one and the coordinator can take
    /// it now (connected, not waiting for an answer to `task_recovering`).
    fn report(&mut self) {
        if !self.connected || self.recovering {
            return;
        }
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
        self.send(message);
    }

    /// Drops the held task if it is `task_id`: its command is killed and the state
    /// file emptied. A stopping runner with nothing left exits.
    fn release(&mut self, task_id: &str) {
        if self.held.as_ref().is_none_or(|t| t.task_id != task_id) {
            return;
        }
        if self.command_running {
            self.kill_command(task_id.to_owned());
        }
        self.held = None;
        self.recovering = false;
        self.steps.push_back(Step::Output(Output::ClearState));
        if self.phase != Phase::Serving {
            self.exit();
        }
    }

    fn kill_command(&mut self, task_id: String) {
        self.command_running = false;
        self.kill_at_ms = None;
        self.steps
            .push_back(Step::Output(Output::KillCommand { task_id }));
    }

    fn running_task_id(&self) -> Option<String> {
        self.held
            .as_ref()
            .filter(|_| self.command_running)
            .map(|t| t.task_id.clone())
    }

    fn save_held(&mut self) {
        if let Some(task) = &self.held {
            let task = task.clone();
            self.steps.push_back(Step::Output(Output::SaveState(task)));
        }
    }

    fn send(&mut self, message: AgentMessage) {
        if self.connected {
            self.steps.push_back(Step::Output(Output::Send(message)));
        }
    }

    fn push_front_send(&mut self, message: AgentMessage) {
        if self.connected {
            self.steps.push_front(Step::Output(Output::Send(message)));
        }
    }

    fn exit(&mut self) {
        debug_assert!(!self.command_running, "exit with a command running");
        self.phase = Phase::Exited;
        self.kill_at_ms = None;
        self.steps.push_back(Step::Output(Output::Exit));
    }

    /// False once `Exit` went out. A new input while a save awaits its result is a
    /// misuse of the call order.
    fn accepts_input(&self) -> bool {
        debug_assert!(
            self.save_in_flight.is_none(),
            "an input while a save awaits handle_state_saved"
        );
        self.phase != Phase::Exited
    }
}

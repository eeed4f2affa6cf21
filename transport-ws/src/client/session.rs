//! The agent side of the protocol as a pure state machine: what to save, send,
//! start and cancel in answer to coordinator messages, job ends, connection
//! changes and stop requests. [`crate::client::agent`] drives it for the agent SDK,
//! and through the SDK the bundled runner (`coordinator agent`).
//!
//! This module performs no I/O: no sockets, files, processes, tasks or clocks.
//! Time comes in as `now_ms` (milliseconds on any monotonic clock the caller
//! keeps), and every side effect comes out as an [`Output`] value.
//!
//! # Driving it
//!
//! ```
//! use coordinator_transport::client::session::{AgentSession, Output, SessionConfig};
//!
//! let mut session = AgentSession::new(SessionConfig { shutdown_grace_ms: 30_000 }, None);
//! session.handle_connected(); // identified, with `current_task()` in `identify`
//! while let Some(output) = session.poll_output() {
//!     match output {
//!         // Persist, then say how it went before polling again.
//!         Output::SaveState(_task) => session.handle_state_saved(Ok(())),
//!         Output::ClearState => session.handle_state_saved(Ok(())),
//!         Output::Send(_message) => { /* on the current connection */ }
//!         Output::StartJob { .. } => { /* hand the job to the program */ }
//!         Output::CancelJob { .. } => { /* fire the job's cancellation */ }
//!         Output::Exit => break,
//!     }
//! }
//! // Then wait for one event (connect if `wants_connection()`; a frame, a job's
//! // end or progress, a stop request, the `poll_timeout()` deadline), feed it in
//! // with the matching `handle_*` call, and drain again.
//! ```
//!
//! # Re-attach after every reconnect
//!
//! Whenever the agent connects while it holds a task (after its own restart, a
//! network blip or a coordinator restart; running, or with an outcome not yet
//! acknowledged), its `identify` names the task in `current_task` and, once
//! identified, it sends `task_recovering`. It then holds its outcome back until
//! the coordinator answers: `task_continue` (go on; later reports carry the
//! generation given there) or `task_reassign` (the task went elsewhere: the job is
//! cancelled and the task dropped, as for `task_cancel`). A coordinator that
//! re-attaches on `current_task` and then answers `task_recovering` too sends the
//! same `task_continue` twice; the repeat changes nothing.
//!
//! # Outcomes are kept until acknowledged
//!
//! A job's outcome is saved (see [`Output::SaveState`]) and sent; it stays held,
//! and is sent again after every reconnect (once the coordinator has answered
//! `task_recovering`), until the coordinator acknowledges it with `task_ack`, or
//! refuses it because the task is no longer this agent's. Only then is the agent
//! free for the next task.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{AgentMessage, CoordinatorMessage, CurrentTask, ErrorCode};

#[cfg(test)]
mod tests;

/// How a job ended on this agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Done: the result to report.
    Complete {
        /// The result JSON.
        result: Value,
        /// Tokens used, if known.
        tokens_used: Option<u64>,
    },
    /// Failed: the reason to report.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// The task this agent holds, as a state hook persists it: from its assignment
/// until its outcome is acknowledged (or the task is cancelled or taken away).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldTask {
    /// The task.
    pub task_id: String,
    /// The generation of this agent's assignment of it; reports echo it.
    pub generation: u64,
    /// What to do.
    pub description: String,
    /// The submitter's metadata.
    pub metadata: Value,
    /// When it was assigned, ms since the Unix epoch.
    pub assigned_at: u64,
    /// Set once the job ended; kept until the coordinator acknowledges it.
    pub outcome: Option<Outcome>,
}

/// One run of a job on this agent: a task is run again (a new run) only when it
/// was restored from the state hook after a restart. Reports name their run, so
/// a report from a run that was cancelled is told apart from the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub u64);

/// Why a job's report (progress, outcome) was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The job was cancelled, or its task went to another agent, or the agent
    /// stopped it at the end of a stop grace: nobody wants its report.
    #[error("the job was cancelled or taken away; its report is not wanted")]
    Cancelled,
    /// The job's outcome was already given.
    #[error("the job's outcome was already reported")]
    AlreadyReported,
    /// The agent has stopped.
    #[error("the agent has stopped")]
    Stopped,
    /// No job of this agent has that run id (or it ended too long ago).
    #[error("no such job")]
    UnknownRun,
}

/// The failure reported for a job dropped without an outcome.
pub const JOB_DROPPED: &str = "the agent program dropped the job without reporting an outcome";

/// The reason of the `task_rejected` that reports on a cancelled task: the
/// coordinator offers a cancelled task's holder no new work until it reports on
/// that task (or its cancel grace passes), so the agent says it has let go of
/// the task as soon as the program has: at once if no job was running, else
/// when the job's handles are dropped or it gives an outcome anyway. The
/// coordinator answers `task_ack {status: "cancelled"}` and changes nothing.
pub const CANCELLED: &str = "cancelled";

/// `task_rejected`'s reason for a `task_continue` about a task this agent does
/// not hold (it never received the assignment, or holds another task): the
/// coordinator queues the task again.
pub const NOT_HELD: &str = "not_held";

/// How many ended runs are remembered to explain a late report.
const ENDED_RUNS_KEPT: usize = 16;

/// Settings of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// After a stop request, a running job may go on this long before it is
    /// cancelled.
    pub shutdown_grace_ms: u64,
}

/// One thing the shell must do, drained with [`AgentSession::poll_output`] and
/// executed in the order given.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Persist this task (the state hook; a file written atomically, say), then
    /// report the result with
    /// [`AgentSession::handle_state_saved`] before polling again.
    SaveState(HeldTask),
    /// Persist that no task is held, then report the result with
    /// [`AgentSession::handle_state_saved`] before polling again.
    ClearState,
    /// Send this message on the current connection (if there is none, drop it).
    Send(AgentMessage),
    /// Start working on this task; report the job's end with
    /// [`AgentSession::handle_job_finished`] under `run`. At most one job runs at
    /// a time.
    StartJob {
        /// The run, to name in reports.
        run: RunId,
        /// The task, with the generation of this agent's assignment.
        task: HeldTask,
        /// The task came from the state hook after a restart: work on it may have
        /// begun in the earlier process.
        restored: bool,
    },
    /// Stop this run: cancelled, taken away, or past the stop grace. Its end is
    /// not wanted any more: from now on no job is running.
    CancelJob {
        /// The run to stop.
        run: RunId,
        /// Its task.
        task_id: String,
    },
    /// The agent is done: stop driving the session. Nothing follows.
    Exit,
}

/// Where the agent stands towards stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Taking work.
    Serving,
    /// Stop requested while connected: no new work; the running job may finish
    /// within the grace, its outcome is reported and acknowledged, then exit. A lost
    /// connection is made again to report.
    Draining,
    /// Stop requested while disconnected: no reconnect; the running job may
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

/// The agent's protocol state: the task it holds, whether its job runs,
/// whether it is connected, and whether it is stopping.
///
/// Call order:
/// 1. [`new`](Self::new) with the task the state hook kept, if any.
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
/// After [`Output::Exit`], every input is ignored and nothing more comes out
/// (reports are answered [`ReportError::Stopped`]).
#[derive(Debug)]
pub struct AgentSession {
    config: SessionConfig,
    /// The task this agent holds (as the state hook has it).
    held: Option<HeldTask>,
    /// The run of the held task's job, while it runs. Implies `held.is_some()`.
    running: Option<RunId>,
    /// The next run's number.
    next_run: u64,
    /// How the most recent runs ended, newest last, at most [`ENDED_RUNS_KEPT`].
    ended: VecDeque<(RunId, ReportError)>,
    /// A job cancelled with `task_cancel` whose end is still to be reported.
    cancel_report: Option<(RunId, String)>,
    connected: bool,
    /// `task_recovering` went out on this connection and was not answered yet:
    /// the outcome waits for `task_continue`.
    recovering: bool,
    phase: Phase,
    /// When the running job is cancelled (set by a stop request).
    kill_at_ms: Option<u64>,
    save_in_flight: Option<SaveInFlight>,
    steps: VecDeque<Step>,
}

impl AgentSession {
    /// A session holding `held`, what the state hook kept from an earlier run.
    pub fn new(config: SessionConfig, held: Option<HeldTask>) -> AgentSession {
        AgentSession {
            config,
            held,
            running: None,
            next_run: 1,
            ended: VecDeque::new(),
            cancel_report: None,
            connected: false,
            recovering: false,
            phase: Phase::Serving,
            kill_at_ms: None,
            save_in_flight: None,
            steps: VecDeque::new(),
        }
    }

    /// True while the agent should be connected (or trying to connect).
    pub fn wants_connection(&self) -> bool {
        matches!(self.phase, Phase::Serving | Phase::Draining)
    }

    /// The task to name in `identify` (its `current_task` field) when connecting:
    /// the held task, running or with an outcome not yet acknowledged, with the
    /// generation of this agent's assignment of it. It does not change while the
    /// agent is disconnected, so the shell may read it when it starts connecting.
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
                let run = self.start_run();
                // In front: these belong right after the save.
                self.steps.push_front(Step::Output(Output::StartJob {
                    run,
                    task,
                    restored: false,
                }));
                self.push_front_send(AgentMessage::TaskAccepted { task_id });
            }
            Err(error) => {
                tracing::error!(error, task_id, "cannot save the task; rejecting it");
                self.held = None;
                self.push_front_send(AgentMessage::TaskRejected {
                    task_id,
                    reason: Some(format!("cannot save the task: {error}")),
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
            CoordinatorMessage::TaskCancel { task_id } => self.on_cancel(task_id),
            CoordinatorMessage::TaskAck { task_id, status }
                if status != "accepted" && self.running.is_none() =>
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

    /// The job of `run` ended with `outcome`. The outcome is saved, then reported
    /// when the coordinator can take it; it is kept until acknowledged. A report
    /// for a run that is not the running one is refused and changes nothing.
    pub fn handle_job_finished(&mut self, run: RunId, outcome: Outcome) -> Result<(), ReportError> {
        if let Err(refused) = self.check_run(run) {
            // A cancelled job that ends anyway: it has let go of the task.
            self.report_cancelled(run);
            return Err(refused);
        }
        self.running = None;
        self.kill_at_ms = None;
        self.remember_end(run, ReportError::AlreadyReported);
        let Some(task) = self.held.as_mut() else {
            debug_assert!(false, "a running job without a held task");
            return Ok(());
        };
        match &outcome {
            Outcome::Complete { .. } => {
                tracing::info!(task_id = task.task_id.as_str(), "job done")
            }
            Outcome::Failed { error } => {
                tracing::warn!(
                    task_id = task.task_id.as_str(),
                    error = error.as_str(),
                    "job failed"
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
        Ok(())
    }

    /// Every handle of the job of `run` was dropped. If it still runs, nothing can
    /// report on it any more: it fails (so that the agent does not stay busy with
    /// it); otherwise this changes nothing.
    /// A cancelled job's drop is the sign that the program has stopped working
    /// on it; see [`CANCELLED`].
    pub fn handle_job_dropped(&mut self, run: RunId) {
        if self.check_run(run).is_ok() {
            let _ = self.handle_job_finished(
                run,
                Outcome::Failed {
                    error: JOB_DROPPED.to_owned(),
                },
            );
        } else {
            self.report_cancelled(run);
        }
    }

    /// The job of `run` reports progress. It goes out while that job runs and the
    /// coordinator is connected (disconnected, it is dropped: progress is only a
    /// sign of life). A report for a run that is not the running one is refused.
    pub fn handle_progress(&mut self, run: RunId, progress: Value) -> Result<(), ReportError> {
        self.check_run(run)?;
        if let Some(task) = &self.held {
            let task_id = task.task_id.clone();
            self.send(AgentMessage::TaskProgress {
                task_id,
                progress: Some(progress),
            });
        }
        Ok(())
    }

    /// The coordinator refused this agent's `identify` (its token is no longer
    /// valid): retrying would not help, so the agent stops. A running job is
    /// cancelled; the held task stays as the state hook has it.
    pub fn handle_refused(&mut self) {
        if !self.accepts_input() {
            return;
        }
        if let Some(run) = self.running {
            let task_id = self
                .held
                .as_ref()
                .map(|t| t.task_id.clone())
                .unwrap_or_default();
            self.kill_job(run, task_id);
        }
        self.exit();
    }

    /// A stop request (SIGTERM, the program's own) at `now_ms`: take no new work.
    /// Idle: exit at once. Otherwise a running job gets the grace to finish;
    /// connected, the agent reports the outcome and exits once it is acknowledged;
    /// disconnected, it only saves the outcome and exits. A held task without a
    /// running job stays with the state hook.
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
            if self.running.is_none() {
                self.exit();
                return;
            }
        }
        if self.running.is_some() && self.kill_at_ms.is_none() {
            self.kill_at_ms = Some(now_ms.saturating_add(self.config.shutdown_grace_ms));
        }
    }

    /// The clock reached `now_ms`: past the grace, the running job is cancelled
    /// and the agent exits; the task stays with the state hook for the next start.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if !self.accepts_input() {
            return;
        }
        match self.kill_at_ms {
            Some(at) if now_ms >= at => self.kill_at_ms = None,
            _ => return,
        }
        if let (Some(run), Some(task)) = (self.running, &self.held) {
            let task_id = task.task_id.clone();
            tracing::warn!(task_id, "stop grace over; cancelling the job");
            self.kill_job(run, task_id);
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

    fn on_cancel(&mut self, task_id: String) {
        if self.held.as_ref().is_none_or(|t| t.task_id != task_id) {
            return;
        }
        tracing::info!(task_id, "task cancelled; stopping the job");
        match self.running {
            // Reported once the job has stopped.
            Some(run) => self.cancel_report = Some((run, task_id.clone())),
            None => self.send(AgentMessage::TaskRejected {
                task_id: task_id.clone(),
                reason: Some(CANCELLED.to_owned()),
            }),
        }
        self.release(&task_id);
    }

    /// The cancelled job of `run` has ended: say so, once.
    fn report_cancelled(&mut self, run: RunId) {
        if self.phase == Phase::Exited {
            return;
        }
        if let Some((_, task_id)) = self.cancel_report.take_if(|(r, _)| *r == run) {
            tracing::info!(task_id, "the cancelled job has stopped");
            self.send(AgentMessage::TaskRejected {
                task_id,
                reason: Some(CANCELLED.to_owned()),
            });
        }
    }

    fn on_continue(&mut self, task_id: String, generation: u64) {
        let Some(task) = self.held.as_mut().filter(|t| t.task_id == task_id) else {
            // The coordinator holds us to a task we never received (its
            // assignment was lost with a coordinator that stopped before
            // sending it) or cannot take (we hold another): refused, so that
            // it is queued again rather than held by nobody until the stuck
            // sweep. A refusal from an agent that no longer holds it changes
            // nothing on the coordinator's side.
            tracing::warn!(
                task_id,
                generation,
                "coordinator continues a task this agent does not hold; rejecting it"
            );
            self.send(AgentMessage::TaskRejected {
                task_id,
                reason: Some(NOT_HELD.to_owned()),
            });
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

    /// The held task goes on: its outcome is reported, or its job started (it was
    /// restored after a restart: nothing runs it in this process yet). While
    /// stopping no job starts: the task stays saved and the agent exits.
    fn go_on(&mut self) {
        let Some(task) = &self.held else { return };
        if task.outcome.is_some() {
            self.report();
        } else if self.running.is_none() {
            if self.phase != Phase::Serving {
                tracing::info!(
                    task_id = task.task_id.as_str(),
                    "stopping: the task stays with the state hook"
                );
                self.exit();
                return;
            }
            tracing::info!(
                task_id = task.task_id.as_str(),
                generation = task.generation,
                "running the restored task"
            );
            let task = task.clone();
            let run = self.start_run();
            self.steps.push_back(Step::Output(Output::StartJob {
                run,
                task,
                restored: true,
            }));
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

    /// Drops the held task if it is `task_id`: its job is cancelled and the state
    /// cleared. A stopping agent with nothing left exits.
    fn release(&mut self, task_id: &str) {
        if self.held.as_ref().is_none_or(|t| t.task_id != task_id) {
            return;
        }
        if let Some(run) = self.running {
            self.kill_job(run, task_id.to_owned());
        }
        self.held = None;
        self.recovering = false;
        self.steps.push_back(Step::Output(Output::ClearState));
        if self.phase != Phase::Serving {
            self.exit();
        }
    }

    fn kill_job(&mut self, run: RunId, task_id: String) {
        self.running = None;
        self.kill_at_ms = None;
        self.remember_end(run, ReportError::Cancelled);
        self.steps
            .push_back(Step::Output(Output::CancelJob { run, task_id }));
    }

    /// A new run of the held task starts now.
    fn start_run(&mut self) -> RunId {
        debug_assert!(self.running.is_none(), "one job at a time");
        let run = RunId(self.next_run);
        self.next_run += 1;
        self.running = Some(run);
        run
    }

    fn remember_end(&mut self, run: RunId, end: ReportError) {
        if self.ended.len() == ENDED_RUNS_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back((run, end));
    }

    /// Ok if `run` is the running job; else why its report is refused.
    fn check_run(&self, run: RunId) -> Result<(), ReportError> {
        if !self.accepts_input() {
            return Err(ReportError::Stopped);
        }
        if self.running == Some(run) {
            return Ok(());
        }
        Err(self
            .ended
            .iter()
            .find(|(ended, _)| *ended == run)
            .map_or(ReportError::UnknownRun, |(_, why)| *why))
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
        debug_assert!(self.running.is_none(), "exit with a job running");
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

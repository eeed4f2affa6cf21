//! The agent's one loop: it feeds connections, frames, job reports, stop requests
//! and the timer into [`AgentSession`] and carries out what comes out (save
//! through the hook, send, hand out or cancel a job, end). It decides nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::cancel::CancelSource;
use super::{AgentError, HubFailure, Job, JobHandle, StateHook};
use crate::client::session::{AgentSession, Outcome, Output, ReportError, RunId};
use crate::client::{Backoff, ClientConfig, ClientError, Connection, HubUrl};
use crate::failover::{Failover, Next, Refused};
use crate::protocol::CoordinatorMessage;

/// A connection that lasted this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// How many reports may wait for the driver before a reporter waits.
const COMMAND_QUEUE: usize = 64;

/// What the driver connects to and how.
pub(super) struct Settings {
    /// The hubs, tried in this order.
    pub hubs: Vec<HubUrl>,
    /// Identity and connection settings (its `url` is not used).
    pub client: ClientConfig,
    /// The wait between rounds.
    pub backoff: Backoff,
}

/// The driver's ties to the program.
pub(super) struct Links {
    /// Jobs for [`super::AgentClient::next`].
    pub jobs: mpsc::UnboundedSender<Job>,
    /// Turns true on a stop request.
    pub stop: watch::Receiver<bool>,
    /// The hub connected to, if any.
    pub hub: watch::Sender<Option<String>>,
    /// Told once the first connection is identified (or the agent ended first).
    pub first: Option<oneshot::Sender<Result<(), AgentError>>>,
    /// The last failure of each hub, for a connect that times out.
    pub failures: Arc<Mutex<Vec<HubFailure>>>,
}

/// Where the answer to a report goes.
type Reply = oneshot::Sender<Result<(), ReportError>>;

/// A report from a [`JobHandle`].
enum Command {
    Finish {
        run: RunId,
        outcome: Outcome,
        reply: Reply,
    },
    Progress {
        run: RunId,
        progress: Value,
        reply: Reply,
    },
}

/// What every clone of one job's [`JobHandle`] shares; its drop tells the
/// driver that nothing can report on the job any more.
#[derive(Debug)]
pub(super) struct RunGuard {
    run: RunId,
    pub(super) task_id: String,
    commands: mpsc::Sender<Command>,
    dropped: mpsc::UnboundedSender<RunId>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Finish { run, .. } => write!(f, "Finish({run:?})"),
            Command::Progress { run, .. } => write!(f, "Progress({run:?})"),
        }
    }
}

impl RunGuard {
    pub(super) async fn finish(&self, outcome: Outcome) -> Result<(), ReportError> {
        let (reply, answer) = oneshot::channel();
        self.ask(
            Command::Finish {
                run: self.run,
                outcome,
                reply,
            },
            answer,
        )
        .await
    }

    pub(super) async fn progress(&self, progress: Value) -> Result<(), ReportError> {
        let (reply, answer) = oneshot::channel();
        self.ask(
            Command::Progress {
                run: self.run,
                progress,
                reply,
            },
            answer,
        )
        .await
    }

    async fn ask(
        &self,
        command: Command,
        answer: oneshot::Receiver<Result<(), ReportError>>,
    ) -> Result<(), ReportError> {
        if self.commands.send(command).await.is_err() {
            return Err(ReportError::Stopped);
        }
        answer.await.unwrap_or(Err(ReportError::Stopped))
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = self.dropped.send(self.run);
    }
}

/// How a round over the hubs ended.
enum Round {
    /// Identified by [`Failover::current`].
    Connected(Connection),
    /// A hub refused for good.
    Final(String, ClientError),
    /// Nobody answered.
    Failed,
}

/// A round, and the hubs it moved over (back to the driver when it ends).
type Attempt = Pin<Box<dyn Future<Output = (Round, Failover<HubUrl>)> + Send>>;

/// The loop's state: the session, the hook and the I/O around them.
pub(super) struct Driver {
    session: AgentSession,
    hook: Box<dyn StateHook>,
    /// The hubs and the one to try first (the leader, or the one that last
    /// worked); `None` while a round has them.
    hubs: Option<Failover<HubUrl>>,
    client: ClientConfig,
    backoff: Backoff,
    links: Links,
    commands_tx: mpsc::Sender<Command>,
    commands: mpsc::Receiver<Command>,
    dropped_tx: mpsc::UnboundedSender<RunId>,
    dropped: mpsc::UnboundedReceiver<RunId>,
    /// The one clock.
    started: Instant,
    conn: Option<Connection>,
    connected_at: Instant,
    attempt: Option<Attempt>,
    retry_at: Option<Instant>,
    /// The running job's cancellation.
    running: Option<(RunId, CancelSource)>,
    /// Answers to reporters, sent once the outputs of their report are carried out.
    replies: Vec<(Reply, Result<(), ReportError>)>,
    stop_seen: bool,
    /// How the agent ends.
    end: Result<(), AgentError>,
}

impl Driver {
    pub(super) fn new(
        session: AgentSession,
        hook: Box<dyn StateHook>,
        settings: Settings,
        links: Links,
    ) -> Driver {
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (dropped_tx, dropped) = mpsc::unbounded_channel();
        let started = Instant::now();
        Driver {
            session,
            hook,
            hubs: Failover::new(settings.hubs),
            client: settings.client,
            backoff: settings.backoff,
            links,
            commands_tx,
            commands,
            dropped_tx,
            dropped,
            started,
            conn: None,
            connected_at: started,
            attempt: None,
            retry_at: None,
            running: None,
            replies: Vec::new(),
            stop_seen: false,
            end: Ok(()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Runs the agent until the session says `Exit`; how it ended.
pub(super) async fn run(mut d: Driver) -> Result<(), AgentError> {
    loop {
        while let Some(output) = d.session.poll_output() {
            if d.execute(output).await {
                return d.finish();
            }
        }
        for (reply, result) in d.replies.drain(..) {
            let _ = reply.send(result);
        }
        if !d.session.wants_connection() {
            d.attempt = None;
            d.retry_at = None;
        } else if d.conn.is_none() && d.attempt.is_none() && d.retry_at.is_none() {
            d.start_round();
        }
        let deadline = d
            .session
            .poll_timeout()
            .map(|ms| d.started + Duration::from_millis(ms));
        // In this order when several are ready: a stop request before the frames
        // that follow it, the program's reports before new coordinator frames.
        tokio::select! {
            biased;
            changed = d.links.stop.changed(), if !d.stop_seen => {
                if changed.is_err() || *d.links.stop.borrow() {
                    d.stop_seen = true;
                    let now = d.now_ms();
                    d.session.handle_shutdown(now);
                }
            }
            () = sleep_until(deadline) => {
                let now = d.now_ms();
                d.session.handle_timeout(now);
            }
            Some(command) = d.commands.recv() => d.on_command(command),
            Some(run) = d.dropped.recv() => {
                tracing::debug!(?run, "every handle of a job was dropped");
                d.session.handle_job_dropped(run);
            }
            message = receive(&mut d.conn) => d.on_frame(message),
            (round, hubs) = attempt(&mut d.attempt) => {
                d.attempt = None;
                d.on_round(round, hubs);
            }
            () = sleep_until(d.retry_at) => d.retry_at = None,
        }
    }
}

impl Driver {
    /// Carries out one output; true on [`Output::Exit`].
    async fn execute(&mut self, output: Output) -> bool {
        match output {
            Output::SaveState(task) => {
                let result = self.hook.save(Some(&task));
                self.session.handle_state_saved(logged(result));
            }
            Output::ClearState => {
                let result = self.hook.save(None);
                self.session.handle_state_saved(logged(result));
            }
            Output::Send(message) => {
                if let Some(conn) = &self.conn {
                    // A failed send shows up as the connection's end.
                    let _ = conn.send(&message).await;
                }
            }
            Output::StartJob {
                run,
                task,
                restored,
            } => {
                let (source, cancel) = CancelSource::new();
                self.running = Some((run, source));
                let handle = JobHandle {
                    run: Arc::new(RunGuard {
                        run,
                        task_id: task.task_id.clone(),
                        commands: self.commands_tx.clone(),
                        dropped: self.dropped_tx.clone(),
                    }),
                };
                let job = Job {
                    task,
                    restored,
                    handle,
                    cancel,
                };
                // If the program no longer takes jobs, the job drops here and
                // fails; the program is stopping anyway.
                let _ = self.links.jobs.send(job);
            }
            Output::CancelJob { run, task_id } => {
                tracing::info!(task_id, "cancelling the job");
                if let Some((_, source)) = self.running.take_if(|(r, _)| *r == run) {
                    source.cancel();
                }
            }
            Output::Exit => return true,
        }
        false
    }

    fn start_round(&mut self) {
        let mut client = self.client.clone();
        // Every identify names the held task, so that the coordinator re-attaches
        // it rather than running it again.
        client.current_task = self.session.current_task();
        let Some(hubs) = self.hubs.take() else {
            return;
        };
        self.attempt = Some(Box::pin(round(
            hubs,
            client,
            Arc::clone(&self.links.failures),
        )));
    }

    fn on_round(&mut self, round: Round, hubs: Failover<HubUrl>) {
        let hub = hubs.current().to_string();
        self.hubs = Some(hubs);
        match round {
            Round::Connected(conn) => {
                tracing::info!(
                    hub,
                    agent_id = self.client.agent_id,
                    "connected and identified"
                );
                self.conn = Some(conn);
                self.connected_at = Instant::now();
                self.links.hub.send_replace(Some(hub));
                if let Some(first) = self.links.first.take() {
                    let _ = first.send(Ok(()));
                }
                self.session.handle_connected();
            }
            Round::Final(hub, error) => {
                tracing::error!(hub, error = %error, "cannot connect, and retrying would not help");
                self.end = Err(match error {
                    ClientError::Refused { code, detail } => {
                        AgentError::Refused { hub, code, detail }
                    }
                    other => AgentError::Config(format!("{hub}: {other}")),
                });
                self.session.handle_refused();
            }
            Round::Failed => {
                let delay = self.backoff.next_delay();
                tracing::warn!(
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "no coordinator reachable; retrying"
                );
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }

    fn on_frame(&mut self, message: Option<CoordinatorMessage>) {
        match message {
            Some(message) => self.session.handle_message(message),
            None => {
                let close = self.conn.take().and_then(|mut conn| conn.close_frame());
                // The coordinator stopped leading: the next round starts at the
                // leader it named, or at the next hub.
                if let (Some(leader), Some(hubs)) =
                    (close.as_ref().and_then(|c| c.leader()), self.hubs.as_mut())
                {
                    tracing::warn!(leader = ?leader, "the coordinator is not the leader any more");
                    let _ = hubs.handle_refused(not_leader(leader));
                }
                self.links.hub.send_replace(None);
                if self.connected_at.elapsed() >= STABLE_AFTER {
                    self.backoff.reset();
                }
                tracing::warn!("connection to the coordinator lost; reconnecting");
                self.session.handle_disconnected();
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let (reply, result) = match command {
            Command::Finish {
                run,
                outcome,
                reply,
            } => {
                let result = self.session.handle_job_finished(run, outcome);
                if result.is_ok() {
                    // Reported: its token stays quiet for good.
                    self.running.take_if(|(r, _)| *r == run);
                }
                (reply, result)
            }
            Command::Progress {
                run,
                progress,
                reply,
            } => (reply, self.session.handle_progress(run, progress)),
        };
        // Answered after the outputs of the report (its save) are carried out.
        self.replies.push((reply, result));
    }

    /// After `Exit`: the running job (if any) is cancelled, reporters are
    /// answered, a connect still waiting learns the end.
    fn finish(mut self) -> Result<(), AgentError> {
        if let Some((_, source)) = self.running.take() {
            source.cancel();
        }
        for (reply, _) in self.replies.drain(..) {
            let _ = reply.send(Err(ReportError::Stopped));
        }
        self.links.hub.send_replace(None);
        if let Some(first) = self.links.first.take() {
            // Only a final refusal ends the agent before its first connection.
            let _ = first.send(Err(self.end.clone().err().unwrap_or(AgentError::Crashed)));
        }
        tracing::info!("agent stopped");
        self.end
    }
}

/// The state hook's result, logged when it failed.
fn logged(result: Result<(), String>) -> Result<(), String> {
    if let Err(error) = &result {
        tracing::error!(error, "the state hook could not save the held task");
    }
    result
}

/// Tries the hubs from [`Failover::current`], following a standby to the
/// leader it names and moving on past a hub that cannot be reached, until one
/// identifies the agent, refuses it for good, or the moves run out; records
/// each failure.
async fn round(
    mut hubs: Failover<HubUrl>,
    client: ClientConfig,
    failures: Arc<Mutex<Vec<HubFailure>>>,
) -> (Round, Failover<HubUrl>) {
    loop {
        let hub = hubs.current().clone();
        let refused = match Connection::connect_to(&hub, &client).await {
            Ok(conn) => {
                hubs.handle_success();
                return (Round::Connected(conn), hubs);
            }
            Err(error) if error.is_final() => {
                return (Round::Final(hub.to_string(), error), hubs);
            }
            Err(error) => {
                tracing::warn!(hub = %hub, error = %error, "cannot reach the coordinator");
                let refused = match &error {
                    ClientError::NotLeader { leader } => not_leader(leader.clone()),
                    _ => Refused::Unreachable,
                };
                let failure = HubFailure {
                    hub: hub.to_string(),
                    error: error.to_string(),
                };
                if let Ok(mut failures) = failures.lock() {
                    match failures.iter_mut().find(|f| f.hub == failure.hub) {
                        Some(known) => *known = failure,
                        None => failures.push(failure),
                    }
                }
                refused
            }
        };
        if hubs.handle_refused(refused) == Next::GiveUp {
            return (Round::Failed, hubs);
        }
    }
}

/// A standby's refusal naming `leader` (its advertised URL), as a hub.
fn not_leader(leader: Option<String>) -> Refused<HubUrl> {
    Refused::NotLeader {
        leader: leader.and_then(|url| HubUrl::parse(&url).ok()),
    }
}

/// The end of the attempt; never, without one.
async fn attempt(attempt: &mut Option<Attempt>) -> (Round, Failover<HubUrl>) {
    match attempt {
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

/// The deadline; never, without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

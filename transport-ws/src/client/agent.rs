//! The agent SDK: an agent that outlives its connections.
//!
//! [`AgentClient`] connects to the first coordinator of a list that answers,
//! identifies, and from then on owns the connection: it reconnects with capped
//! exponential backoff (with jitter), trying every hub URL in turn, and names the
//! task it holds on every reconnect so that the coordinator gives it back instead
//! of running it again. Jobs arrive one at a time from [`AgentClient::next`]; each
//! [`Job`] carries a [`JobHandle`] for progress and the outcome and a
//! [`CancelToken`]. The handle works whatever connection is current: an outcome
//! given while disconnected, or whose acknowledgement was lost with its
//! connection, is kept and sent again after the reconnect (once the coordinator
//! has answered `task_recovering`) until the coordinator acknowledges it with
//! `task_ack`. Only then does the next job come.
//!
//! With a [`StateHook`] (for example [`StateFile`]) the held task also survives a
//! restart of the program: it is persisted before the task is accepted and after
//! every change, and handed back to the new process, which recovers it.
//!
//! The protocol rules live in the pure [`crate::client::session::AgentSession`];
//! this module is the I/O around it: sockets, timers, channels and the hook.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! use coordinator_transport::client::agent::{AgentClient, StateFile};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut agent = AgentClient::builder(
//!     ["ws://10.0.0.1:4000/ws", "ws://10.0.0.2:4000/ws"],
//!     "builder-1",
//!     "TOKEN",
//! )
//! .capabilities(["linux"])
//! .state_hook(StateFile::new("./agent-state.json"))
//! .identify_timeout(Duration::from_secs(5))
//! .connect()
//! .await?;
//! while let Some(job) = agent.next().await {
//!     let handle = job.handle();
//!     tokio::select! {
//!         _ = job.cancelled() => continue, // cancelled: nobody wants the outcome
//!         answer = async { job.description().to_uppercase() } => {
//!             // Kept and resent until acknowledged, across reconnects.
//!             if let Err(e) = handle.complete(json!({ "answer": answer })).await {
//!                 eprintln!("{}: {e}", job.task_id());
//!             }
//!         }
//!     }
//! }
//! agent.join().await?; // why it ended: Ok after `stop()`
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::session::{AgentSession, SessionConfig};
use super::{Backoff, ClientConfig, HubUrl, HubUrlError};
use crate::protocol::ErrorCode;

pub use super::session::{HeldTask, Outcome, ReportError};
pub use cancel::CancelToken;
pub use state_file::StateFile;

mod cancel;
mod driver;
mod state_file;

#[cfg(test)]
mod tests;

/// Where a program keeps the task its agent holds, so that a restarted program
/// recovers it instead of the coordinator running it again.
///
/// [`save`](StateHook::save) is called before the task is accepted (a failed save
/// rejects the task), when its generation changes, when its outcome is known, and
/// with `None` once it is finished with. [`load`](StateHook::load) is called once,
/// by [`AgentBuilder::connect`]. Both run on the agent's driver task and block it:
/// keep them short (a small file write).
pub trait StateHook: Send + 'static {
    /// The task kept by an earlier run of the program, if any. An error stops
    /// [`AgentBuilder::connect`]: a task may be in there.
    fn load(&mut self) -> Result<Option<HeldTask>, String>;

    /// Keeps `task` (or that none is held), durably, before returning `Ok`.
    fn save(&mut self, task: Option<&HeldTask>) -> Result<(), String>;
}

/// The default [`StateHook`]: nothing is kept outside the process. The held task
/// and its outcome survive reconnects, not a restart of the program.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoState;

impl StateHook for NoState {
    fn load(&mut self) -> Result<Option<HeldTask>, String> {
        Ok(None)
    }

    fn save(&mut self, _task: Option<&HeldTask>) -> Result<(), String> {
        Ok(())
    }
}

/// One hub that could not be reached, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFailure {
    /// The hub's URL.
    pub hub: String,
    /// What went wrong with the last attempt on it.
    pub error: String,
}

/// Why an agent could not start, or why it ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The builder was given no hub URL.
    #[error("no coordinator URL given")]
    NoHubs,
    /// A hub URL does not parse.
    #[error(transparent)]
    InvalidUrl(#[from] HubUrlError),
    /// The settings cannot work (for example `wss://` without the `rustls`
    /// feature, or a root certificate that does not parse).
    #[error("{0}")]
    Config(String),
    /// The state hook could not load the held task.
    #[error("cannot load the held task: {0}")]
    StateLoad(String),
    /// A coordinator refused the agent's `identify` (its token or agent id);
    /// trying again would not help.
    #[error("the coordinator at {hub} refused identify: {} {detail}", code.as_str())]
    Refused {
        /// The hub that refused.
        hub: String,
        /// `invalid_token` or `token_agent_mismatch`.
        code: ErrorCode,
        /// Its explanation.
        detail: String,
    },
    /// No hub identified the agent within the connect timeout.
    #[error("no coordinator identified the agent within {after_ms} ms{}", list_failures(.failures))]
    Unreachable {
        /// The connect timeout.
        after_ms: u64,
        /// The last failure of each hub tried.
        failures: Vec<HubFailure>,
    },
    /// The agent's driver task ended without saying why (it panicked or its
    /// runtime shut down).
    #[error("the agent's driver task ended unexpectedly")]
    Crashed,
}

fn list_failures(failures: &[HubFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("; {}: {}", f.hub, f.error))
        .collect()
}

/// Entry point of the agent SDK; once connected, the stream of jobs.
///
/// Made with [`AgentClient::builder`] and [`AgentBuilder::connect`]. Take jobs
/// with [`next`](Self::next), one at a time (the next comes once the previous
/// one's outcome is acknowledged). [`stop`](Self::stop) asks for a graceful end:
/// no new work, a running job gets the shutdown grace to finish and its outcome
/// is reported; then [`next`](Self::next) returns `None` and
/// [`join`](Self::join) says how it ended. Dropping the client stops it the same
/// way in the background.
#[derive(Debug)]
pub struct AgentClient {
    jobs: mpsc::UnboundedReceiver<Job>,
    stopper: Stopper,
    hub: watch::Receiver<Option<String>>,
    driver: Option<JoinHandle<Result<(), AgentError>>>,
}

impl AgentClient {
    /// Settings for an agent `agent_id` with `token` (`coordinator token create
    /// AGENT_ID`), connecting to the first of `hubs` that answers (see
    /// [`HubUrl`] for the forms accepted).
    pub fn builder<I, S>(
        hubs: I,
        agent_id: impl Into<String>,
        token: impl Into<String>,
    ) -> AgentBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut client = ClientConfig::new("", agent_id, token);
        client.client_type = "transport-ws-agent".to_owned();
        AgentBuilder {
            hubs: hubs.into_iter().map(Into::into).collect(),
            client,
            hook: Box::new(NoState),
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(30),
            connect_timeout: None,
        }
    }

    /// The next job; `None` once the agent has ended (after [`stop`](Self::stop),
    /// or a refused `identify`; [`join`](Self::join) says which).
    pub async fn next(&mut self) -> Option<Job> {
        self.jobs.recv().await
    }

    /// A handle that stops the agent from anywhere.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Asks for a graceful end; see [`Stopper::stop`].
    pub fn stop(&self) {
        self.stopper.stop();
    }

    /// The URL of the hub the agent is connected to, `None` while disconnected.
    pub fn connected_hub(&self) -> Option<String> {
        self.hub.borrow().clone()
    }

    /// Waits until the agent has ended and says why: `Ok` after a stop, an error
    /// if a coordinator refused the agent. Jobs not taken meanwhile are dropped.
    /// It does not stop the agent: call [`stop`](Self::stop) first for that.
    pub async fn join(mut self) -> Result<(), AgentError> {
        match self.driver.take() {
            Some(driver) => driver.await.unwrap_or(Err(AgentError::Crashed)),
            None => Ok(()),
        }
    }
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        if self.driver.is_some() {
            self.stopper.stop();
        }
    }
}

/// Stops an agent gracefully; cheap to clone.
#[derive(Debug, Clone)]
pub struct Stopper {
    stop: Arc<watch::Sender<bool>>,
}

impl Stopper {
    /// The agent takes no new work (a task assigned meanwhile is rejected as
    /// `shutting_down`). Idle, it ends at once. A running job gets the shutdown
    /// grace to finish; its outcome is reported and, once acknowledged, the agent
    /// ends. Past the grace the job's [`CancelToken`] fires and the agent ends;
    /// the task stays with the state hook for the next start. Repeating it
    /// changes nothing.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// How the agent connects and behaves; made by [`AgentClient::builder`].
pub struct AgentBuilder {
    hubs: Vec<String>,
    client: ClientConfig,
    hook: Box<dyn StateHook>,
    backoff: Backoff,
    shutdown_grace: Duration,
    connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("hubs", &self.hubs)
            .field("agent_id", &self.client.agent_id)
            .field("capabilities", &self.client.capabilities)
            .field("identify_timeout", &self.client.identify_timeout)
            .field("backoff", &self.backoff)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// What the agent can do (tasks needing other capabilities never come).
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// A display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.client.name = Some(name.into());
        self
    }

    /// Sent as `client_type` in `identify` (default `transport-ws-agent`).
    pub fn client_type(mut self, client_type: impl Into<String>) -> Self {
        self.client.client_type = client_type.into();
        self
    }

    /// Where the held task is kept across restarts of the program (default:
    /// [`NoState`], nowhere).
    pub fn state_hook(mut self, hook: impl StateHook) -> Self {
        self.hook = Box::new(hook);
        self
    }

    /// The most one connection attempt may take, from the TCP connect to
    /// `identified` (default 10 s). A hub that does not answer in time counts as
    /// unreachable, and the next one is tried.
    pub fn identify_timeout(mut self, timeout: Duration) -> Self {
        self.client.identify_timeout = timeout;
        self
    }

    /// How long [`connect`](Self::connect) keeps trying before it gives up with
    /// [`AgentError::Unreachable`] (default: for ever). Only the first connection
    /// is bounded: once connected, the agent reconnects for as long as it runs.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The wait after a round in which no hub answered: `initial`, doubling up to
    /// `max`, shortened by up to 20 % at random (default 1 s to 60 s). A
    /// connection that lasted 30 s starts the next wait from `initial` again.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }

    /// How often a JSON `ping` goes out while connected (default 30 s; `None`:
    /// never).
    pub fn ping_interval(mut self, every: Option<Duration>) -> Self {
        self.client.ping_interval = every;
        self
    }

    /// How long a running job may go on after [`Stopper::stop`] before its
    /// [`CancelToken`] fires (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Trusts this root certificate (DER) for `wss://` besides the Mozilla roots:
    /// a private CA, or a coordinator's self-signed certificate. Needs the
    /// `rustls` feature.
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.client.extra_root_certificates.push(der.into());
        self
    }

    /// Loads the held task from the state hook, starts the agent, and waits until
    /// a hub has identified it. Hubs are tried in the order given; after a round
    /// in which none answered, the agent waits (the backoff) and tries again,
    /// until [`connect_timeout`](Self::connect_timeout) if one is set. A refused
    /// `identify` ends it at once. Must be called within a tokio runtime;
    /// dropping the future before it resolves stops the agent.
    pub async fn connect(mut self) -> Result<AgentClient, AgentError> {
        if self.hubs.is_empty() {
            return Err(AgentError::NoHubs);
        }
        let hubs = self
            .hubs
            .iter()
            .map(|url| HubUrl::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        if cfg!(not(feature = "rustls")) {
            if let Some(hub) = hubs.iter().find(|hub| hub.is_tls()) {
                return Err(AgentError::Config(format!(
                    "{hub}: wss:// needs transport-ws built with its `rustls` feature"
                )));
            }
        }
        let held = self.hook.load().map_err(AgentError::StateLoad)?;
        let session = AgentSession::new(
            SessionConfig {
                shutdown_grace_ms: millis(self.shutdown_grace),
            },
            held,
        );
        let (jobs_tx, jobs) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let (hub_tx, hub) = watch::channel(None);
        let (first_tx, first_rx) = oneshot::channel();
        let failures = Arc::new(Mutex::new(Vec::new()));
        let driver = tokio::spawn(driver::run(driver::Driver::new(
            session,
            self.hook,
            driver::Settings {
                hubs,
                client: self.client,
                backoff: self.backoff,
            },
            driver::Links {
                jobs: jobs_tx,
                stop: stop_rx,
                hub: hub_tx,
                first: Some(first_tx),
                failures: Arc::clone(&failures),
            },
        )));
        let mut guard = AbortOnDrop(Some(driver));
        let first = match self.connect_timeout {
            Some(timeout) => tokio::time::timeout(timeout, first_rx).await,
            None => Ok(first_rx.await),
        };
        match first {
            Ok(Ok(Ok(()))) => Ok(AgentClient {
                jobs,
                stopper: Stopper {
                    stop: Arc::new(stop),
                },
                hub,
                driver: guard.0.take(),
            }),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(AgentError::Crashed),
            Err(_) => Err(AgentError::Unreachable {
                after_ms: self.connect_timeout.map_or(0, millis),
                failures: failures.lock().map(|f| f.clone()).unwrap_or_default(),
            }),
        }
    }
}

/// Aborts the driver unless taken: a `connect` that fails or is dropped leaves
/// nothing running.
struct AbortOnDrop(Option<JoinHandle<Result<(), AgentError>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(driver) = self.0.take() {
            driver.abort();
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One task to work on, handed out by [`AgentClient::next`].
///
/// Report on it through its [`handle`](Self::handle): progress while working,
/// then exactly one outcome ([`JobHandle::complete`] or [`JobHandle::fail`]).
/// Stop working when its [`cancelled`](Self::cancelled) resolves. If the job and
/// every clone of its handle are dropped without an outcome, the job fails (so
/// that the agent does not stay busy with it).
#[derive(Debug)]
pub struct Job {
    task: HeldTask,
    restored: bool,
    handle: JobHandle,
    cancel: CancelToken,
}

impl Job {
    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task.task_id
    }

    /// The generation of this agent's assignment of the task when the job
    /// started. Reports carry the current one by themselves (it changes when the
    /// task is re-attached after a reconnect).
    pub fn generation(&self) -> u64 {
        self.task.generation
    }

    /// What to do.
    pub fn description(&self) -> &str {
        &self.task.description
    }

    /// The submitter's metadata (a JSON object).
    pub fn metadata(&self) -> &Value {
        &self.task.metadata
    }

    /// When the task was assigned, ms since the Unix epoch.
    pub fn assigned_at(&self) -> u64 {
        self.task.assigned_at
    }

    /// True when the task came from the state hook after a restart of the
    /// program: an earlier process may have begun the work.
    pub fn is_restored(&self) -> bool {
        self.restored
    }

    /// The handle to report with; clone it into whatever does the work.
    pub fn handle(&self) -> JobHandle {
        self.handle.clone()
    }

    /// The job's cancellation.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Resolves once the job is cancelled; see [`CancelToken::cancelled`].
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// True once the job is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Reports on one job, whatever connection is current; cheap to clone and
/// `Send`.
///
/// An outcome is kept (and given to the state hook) until the coordinator
/// acknowledges it: given while disconnected, or lost with a connection, it is
/// sent again after the reconnect. Each call answers once the agent has taken
/// the report; an error says why it was not taken (the job was cancelled,
/// already reported, or the agent stopped).
#[derive(Debug, Clone)]
pub struct JobHandle {
    run: Arc<driver::RunGuard>,
}

impl JobHandle {
    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.run.task_id
    }

    /// A sign of life with any JSON (a fraction done, a note). Dropped while
    /// disconnected: it only keeps the task from looking stuck.
    pub async fn progress(&self, progress: impl Into<Value>) -> Result<(), ReportError> {
        self.run.progress(progress.into()).await
    }

    /// The job is done with `result` (any JSON). Once this returns `Ok` the
    /// outcome is saved by the state hook and will be delivered.
    pub async fn complete(&self, result: Value) -> Result<(), ReportError> {
        self.finish(Outcome::Complete {
            result,
            tokens_used: None,
        })
        .await
    }

    /// Like [`complete`](Self::complete), with the tokens the job used.
    pub async fn complete_with_tokens(
        &self,
        result: Value,
        tokens_used: u64,
    ) -> Result<(), ReportError> {
        self.finish(Outcome::Complete {
            result,
            tokens_used: Some(tokens_used),
        })
        .await
    }

    /// The job failed with `error` (the coordinator retries it or moves it to
    /// the dead letter).
    pub async fn fail(&self, error: impl Into<String>) -> Result<(), ReportError> {
        self.finish(Outcome::Failed {
            error: error.into(),
        })
        .await
    }

    /// Gives the job's outcome.
    pub async fn finish(&self, outcome: Outcome) -> Result<(), ReportError> {
        self.run.finish(outcome).await
    }
}

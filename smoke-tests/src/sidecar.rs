//! A stand-in for a third-party agent sidecar written for the original hub's
//! protocol v1 (a Node.js process that wakes an AI agent per task and reports from
//! its result files): raw JSON frames on a hand-made WebSocket, with that
//! sidecar's habits, for the edge scenarios of the end-to-end tests.
//!
//! Its habits:
//! - every `task_assign` is new work, counted per task in [`Journal::starts`]; one
//!   that arrives while it works is answered `task_rejected {reason: "busy"}`;
//! - `task_cancel` is ignored: the work goes on and is reported at its end;
//! - while it works it sends `task_progress` now and then
//!   ([`SidecarConfig::progress_every`]);
//! - after a lost connection it identifies again with a plain `identify` (no
//!   `current_task`, no `task_recovering`), goes on working and later reports with
//!   the generation of its original assignment; `task_continue` it did not ask for
//!   is ignored;
//! - only a restarted sidecar ([`Sidecar::kill`], then [`Stopped::restart`]) that
//!   finds a task in its saved state sends `task_recovering`, right after
//!   `identified`; until the answer it is not busy (an assignment then is new work);
//!   `task_continue` gives it the generation to report with, `task_reassign` makes
//!   it drop the task;
//! - a report (`task_complete`) is sent once, whatever then happens to the connection.
//!
//! The work stands for an external process: it outlives connections and restarts
//! of the sidecar and ends when the test says so ([`Sidecar::finish`],
//! [`Sidecar::finish_in`]) or after [`Work::For`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::harness::{client_frame, RawSocket};

#[cfg(test)]
mod tests;

/// How long connecting and identifying, or writing one frame, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest server frame the sidecar reads; a bigger one ends the connection.
const MAX_SERVER_FRAME_BYTES: u64 = 16 << 20;

/// How long the simulated work on a task takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Until the test calls [`Sidecar::finish`] or [`Sidecar::finish_in`].
    UntilFinished,
    /// This long from its start (reported as soon as the sidecar is connected).
    For(Duration),
}

/// What the sidecar is and does.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Its agent id.
    pub agent_id: String,
    /// Its agent token.
    pub token: String,
    /// The capabilities it declares.
    pub capabilities: Vec<String>,
    /// How long each task's work takes.
    pub work: Work,
    /// The `result` of every `task_complete`.
    pub result: Value,
    /// While it works, one `task_progress` this often.
    pub progress_every: Option<Duration>,
    /// After the coordinator closed its connection (not after [`Sidecar::cut`]),
    /// it connects again after this; never if `None`.
    pub reconnect_after: Option<Duration>,
}

impl SidecarConfig {
    /// Work until finished by the test, result `{"by": AGENT_ID}`, progress every
    /// 250 ms, no automatic reconnect.
    pub fn new(agent_id: &str, token: &str) -> SidecarConfig {
        SidecarConfig {
            agent_id: agent_id.to_owned(),
            token: token.to_owned(),
            capabilities: Vec::new(),
            work: Work::UntilFinished,
            result: json!({"by": agent_id}),
            progress_every: Some(Duration::from_millis(250)),
            reconnect_after: None,
        }
    }
}

/// A task the sidecar holds: what its saved state says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The task.
    pub task_id: String,
    /// The generation it reports with.
    pub generation: u64,
}

/// One frame the sidecar received or sent.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The number (1, 2, ...) of the connection it went over.
    pub connection: u32,
    /// True if the sidecar sent it, false if it received it.
    pub sent: bool,
    /// The frame.
    pub frame: Value,
}

/// Everything the sidecar saw and did, kept across connections and restarts.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    /// Every frame received and sent (`identify` included), in order.
    pub log: Vec<Logged>,
    /// How many times work on each task was started.
    pub starts: BTreeMap<String, u32>,
    /// The task being worked on (the state a restarted sidecar reads).
    pub state: Option<Held>,
    /// Connections opened so far.
    pub connections: u32,
    /// Whether the newest connection is open and identified.
    pub identified: bool,
    /// Work that has ended: task id → the start (as counted in `starts`) that ended.
    finished: BTreeMap<String, u32>,
}

impl Journal {
    /// How many times work on `task_id` was started.
    pub fn starts_of(&self, task_id: &str) -> u32 {
        self.starts.get(task_id).copied().unwrap_or(0)
    }

    /// The received frames of type `kind` about `task_id` (any task if `None`).
    pub fn received_of(&self, kind: &str, task_id: Option<&str>) -> Vec<&Value> {
        self.frames_of(false, kind, task_id)
    }

    /// The sent frames of type `kind` about `task_id` (any task if `None`).
    pub fn sent_of(&self, kind: &str, task_id: Option<&str>) -> Vec<&Value> {
        self.frames_of(true, kind, task_id)
    }

    fn frames_of(&self, sent: bool, kind: &str, task_id: Option<&str>) -> Vec<&Value> {
        self.log
            .iter()
            .filter(|l| l.sent == sent && l.frame["type"] == kind)
            .filter(|l| task_id.is_none_or(|id| l.frame["task_id"] == id))
            .map(|l| &l.frame)
            .collect()
    }

    /// Every `error` frame received.
    pub fn errors(&self) -> Vec<&Value> {
        self.received_of("error", None)
    }

    /// The generation of the newest `task_assign` received for `task_id`.
    pub fn assigned_generation(&self, task_id: &str) -> Option<u64> {
        let assigns = self.received_of("task_assign", Some(task_id));
        assigns.last().and_then(|a| a["generation"].as_u64())
    }

    /// One line per frame, in order, for failure messages.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "starts {:?}, state {:?}, {} connections, identified {}",
            self.starts, self.state, self.connections, self.identified
        );
        for logged in &self.log {
            let mut shown = logged.frame.clone();
            if let Some(object) = shown.as_object_mut() {
                for noise in ["description", "metadata", "token", "assigned_at"] {
                    object.remove(noise);
                }
                if object
                    .get("result")
                    .is_some_and(|r| r.to_string().len() > 80)
                {
                    object.insert("result".into(), json!("(long)"));
                }
            }
            let direction = if logged.sent { "->" } else { "<-" };
            let _ = writeln!(text, "  #{} {direction} {shown}", logged.connection);
        }
        text
    }
}

/// The journal and a signal raised on every change, shared by the test and every
/// instance of one sidecar.
struct Shared {
    journal: Mutex<Journal>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn read<R>(&self, f: impl FnOnce(&Journal) -> R) -> R {
        f(&self.journal.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn update<R>(&self, f: impl FnOnce(&mut Journal) -> R) -> R {
        let result = f(&mut self.journal.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n += 1);
        result
    }

    /// Marks the current run of `task_id` finished.
    fn finish(&self, task_id: &str) {
        self.update(|j| {
            let start = j.starts_of(task_id);
            j.finished.insert(task_id.to_owned(), start);
        });
    }

    /// Marks the current run of `task_id` finished after `delay`, unless another
    /// run started meanwhile.
    fn finish_in(self: &Arc<Self>, task_id: &str, delay: Duration) {
        let start = self.read(|j| j.starts_of(task_id));
        let shared = self.clone();
        let task_id = task_id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            shared.update(|j| {
                if j.starts_of(&task_id) == start {
                    j.finished.insert(task_id, start);
                }
            });
        });
    }
}

/// What the test asks of the running sidecar.
enum Command {
    Connect {
        addr: String,
        done: oneshot::Sender<Result<(), String>>,
    },
    Cut {
        done: oneshot::Sender<()>,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
}

/// What a connection's reader hands to the sidecar.
enum Incoming {
    Text(Value),
    Ping(Vec<u8>),
    Closed(String),
}

/// A running sidecar. Dropping it ends it like [`Sidecar::kill`] without waiting.
pub struct Sidecar {
    shared: Arc<Shared>,
    config: Arc<SidecarConfig>,
    commands: mpsc::Sender<Command>,
    actor: JoinHandle<()>,
}

/// A killed sidecar: its saved state and journal, ready to be started again.
pub struct Stopped {
    shared: Arc<Shared>,
    config: Arc<SidecarConfig>,
}

impl Sidecar {
    /// Starts a sidecar with a fresh journal, connects it to `addr`
    /// (`127.0.0.1:PORT`) and waits until it is identified.
    pub async fn start(addr: &str, config: SidecarConfig) -> Sidecar {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            journal: Mutex::new(Journal::default()),
            changed,
        });
        Sidecar::run(shared, Arc::new(config), None, addr).await
    }

    async fn run(
        shared: Arc<Shared>,
        config: Arc<SidecarConfig>,
        recovering: Option<Held>,
        addr: &str,
    ) -> Sidecar {
        let (commands, commands_rx) = mpsc::channel(8);
        let (incoming_tx, incoming_rx) = mpsc::channel(256);
        let actor = Actor {
            config: config.clone(),
            shared: shared.clone(),
            addr: addr.to_owned(),
            link: None,
            incoming_tx,
            recovering,
            recovering_asked: false,
            job: None,
            waiting_identified: None,
            reconnect_at: None,
        };
        let actor = tokio::spawn(actor.run(commands_rx, incoming_rx));
        let sidecar = Sidecar {
            shared,
            config,
            commands,
            actor,
        };
        sidecar.reconnect(addr).await;
        sidecar
    }

    /// Connects again (to `addr`, which may be a restarted coordinator's new
    /// address) with a plain `identify`, and waits until identified. The work goes on.
    pub async fn reconnect(&self, addr: &str) {
        let (done, answer) = oneshot::channel();
        let command = Command::Connect {
            addr: addr.to_owned(),
            done,
        };
        self.commands
            .send(command)
            .await
            .expect("the sidecar is running");
        let outcome = tokio::time::timeout(IO_TIMEOUT * 2, answer)
            .await
            .unwrap_or_else(|_| panic!("{} not identified in time", self.config.agent_id))
            .expect("the sidecar answers");
        if let Err(e) = outcome {
            panic!(
                "{} could not connect to {addr}: {e}\n{}",
                self.config.agent_id,
                self.journal().summary()
            );
        }
    }

    /// Cuts its TCP connection at once (reset, no close frame), as a network
    /// failure would; it stays disconnected until [`Sidecar::reconnect`].
    pub async fn cut(&self) {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Cut { done })
            .await
            .expect("the sidecar is running");
        let _ = answer.await;
    }

    /// Ends the current run of the work on `task_id` now.
    pub fn finish(&self, task_id: &str) {
        self.shared.finish(task_id);
    }

    /// Ends the current run of the work on `task_id` after `delay`.
    pub fn finish_in(&self, task_id: &str, delay: Duration) {
        self.shared.finish_in(task_id, delay);
    }

    /// A copy of its journal.
    pub fn journal(&self) -> Journal {
        self.shared.read(Journal::clone)
    }

    /// Waits until `check` of the journal gives `Some`, at most `timeout`; panics
    /// with the journal otherwise.
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Journal) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut changes = self.shared.changed.subscribe();
        loop {
            if let Some(value) = self.shared.read(&mut check) {
                return value;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; {} saw:\n{}",
                    self.config.agent_id,
                    self.journal().summary()
                );
            }
        }
    }

    /// Waits until work on `task_id` was started `n` times and returns the
    /// generation of the newest such assignment.
    pub async fn wait_started(&self, task_id: &str, n: u32, timeout: Duration) -> u64 {
        self.wait(
            timeout,
            &format!("work on {task_id} started {n} times"),
            |j| {
                (j.starts_of(task_id) >= n)
                    .then(|| j.assigned_generation(task_id))
                    .flatten()
            },
        )
        .await
    }

    /// Kills it (its TCP connection is reset); the work and the saved state stay.
    pub async fn kill(self) -> Stopped {
        let (done, answer) = oneshot::channel();
        if self.commands.send(Command::Stop { done }).await.is_ok() {
            let _ = answer.await;
        }
        Stopped {
            shared: self.shared.clone(),
            config: self.config.clone(),
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.actor.abort();
    }
}

impl Stopped {
    /// Starts the sidecar again with its saved state and journal, connects it to
    /// `addr` and waits until it is identified; if the state names a task, it has
    /// sent `task_recovering` for it right after `identified`.
    pub async fn restart(self, addr: &str) -> Sidecar {
        let recovering = self.shared.update(|j| j.state.take());
        Sidecar::run(self.shared, self.config, recovering, addr).await
    }

    /// A copy of its journal.
    pub fn journal(&self) -> Journal {
        self.shared.read(Journal::clone)
    }
}

/// One open connection.
struct Link {
    number: u32,
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The work in progress: which task, and which start of it.
struct Job {
    held: Held,
    start: u32,
}

/// The single owner of one sidecar instance's connection and work.
struct Actor {
    config: Arc<SidecarConfig>,
    shared: Arc<Shared>,
    addr: String,
    link: Option<Link>,
    incoming_tx: mpsc::Sender<(u32, Incoming)>,
    /// The task of the saved state after a restart, until the answer to
    /// `task_recovering`.
    recovering: Option<Held>,
    recovering_asked: bool,
    job: Option<Job>,
    waiting_identified: Option<oneshot::Sender<Result<(), String>>>,
    reconnect_at: Option<Instant>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut incoming: mpsc::Receiver<(u32, Incoming)>,
    ) {
        let mut changes = self.shared.changed.subscribe();
        let progress_every = self
            .config
            .progress_every
            .unwrap_or(Duration::from_secs(3600));
        let mut progress = tokio::time::interval(progress_every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reconnect_at = self.reconnect_at;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Connect { addr, done }) => self.connect(addr, done).await,
                    Some(Command::Cut { done }) => {
                        self.drop_link().await;
                        let _ = done.send(());
                    }
                    Some(Command::Stop { done }) => {
                        self.drop_link().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                Some((number, message)) = incoming.recv() => {
                    if self.link.as_ref().is_some_and(|l| l.number == number) {
                        self.handle(message).await;
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.report_if_finished().await;
                }
                _ = progress.tick(), if self.config.progress_every.is_some() => {
                    self.send_progress().await;
                }
                _ = tokio::time::sleep_until(reconnect_at.unwrap_or_else(Instant::now)),
                    if reconnect_at.is_some() => {
                    self.reconnect_at = None;
                    let addr = self.addr.clone();
                    if self.open(&addr).await.is_err() {
                        self.schedule_reconnect();
                    }
                }
            }
        }
    }

    async fn connect(&mut self, addr: String, done: oneshot::Sender<Result<(), String>>) {
        self.addr = addr.clone();
        self.reconnect_at = None;
        match self.open(&addr).await {
            Ok(()) => self.waiting_identified = Some(done),
            Err(e) => {
                let _ = done.send(Err(e));
            }
        }
    }

    /// Opens a new connection and sends `identify`.
    async fn open(&mut self, addr: &str) -> Result<(), String> {
        self.drop_link().await;
        let socket = tokio::time::timeout(IO_TIMEOUT, RawSocket::try_connect(addr))
            .await
            .map_err(|_| "no upgrade in time".to_owned())??;
        let (tcp, leftover) = socket.into_parts();
        let _ = tcp.set_nodelay(true);
        // A dropped connection is reset, not closed politely.
        let _ = tcp.set_zero_linger();
        let (read, writer) = tcp.into_split();
        let number = self.shared.update(|j| {
            j.connections += 1;
            j.identified = false;
            j.connections
        });
        let reader = tokio::spawn(read_frames(
            number,
            read,
            leftover,
            self.incoming_tx.clone(),
        ));
        self.link = Some(Link {
            number,
            writer,
            reader,
        });
        let identify = json!({
            "type": "identify",
            "agent_id": self.config.agent_id,
            "token": self.config.token,
            "capabilities": self.config.capabilities,
            "client_type": "node-sidecar",
            "protocol_version": 1,
        });
        if self.send(identify).await {
            Ok(())
        } else {
            Err("the connection closed before identify".into())
        }
    }

    /// Drops the connection (a reset) and waits until its reader has stopped.
    async fn drop_link(&mut self) {
        if let Some(mut link) = self.link.take() {
            link.reader.abort();
            let _ = (&mut link.reader).await;
        }
        self.shared.update(|j| j.identified = false);
    }

    /// The connection ended on the coordinator's side or failed.
    fn lost(&mut self, why: String) {
        self.link = None;
        self.shared.update(|j| j.identified = false);
        if let Some(done) = self.waiting_identified.take() {
            let _ = done.send(Err(why));
        }
        self.schedule_reconnect();
    }

    fn schedule_reconnect(&mut self) {
        if let Some(delay) = self.config.reconnect_after {
            self.reconnect_at = Some(Instant::now() + delay);
        }
    }

    /// Sends one frame; false if there is no connection or it failed (then it is
    /// given up).
    async fn send(&mut self, frame: Value) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let number = link.number;
        let bytes = client_frame(1, frame.to_string().as_bytes());
        let written = tokio::time::timeout(IO_TIMEOUT, link.writer.write_all(&bytes)).await;
        self.shared.update(|j| {
            j.log.push(Logged {
                connection: number,
                sent: true,
                frame,
            })
        });
        match written {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.lost(format!("write: {e}"));
                false
            }
            Err(_) => {
                self.lost("write timed out".into());
                false
            }
        }
    }

    async fn handle(&mut self, message: Incoming) {
        match message {
            Incoming::Closed(why) => self.lost(why),
            Incoming::Ping(payload) => {
                if let Some(link) = self.link.as_mut() {
                    let pong = client_frame(10, &payload);
                    let _ = tokio::time::timeout(IO_TIMEOUT, link.writer.write_all(&pong)).await;
                }
            }
            Incoming::Text(frame) => {
                let number = self.link.as_ref().map_or(0, |l| l.number);
                self.shared.update(|j| {
                    j.log.push(Logged {
                        connection: number,
                        sent: false,
                        frame: frame.clone(),
                    })
                });
                self.handle_frame(&frame).await;
            }
        }
    }

    async fn handle_frame(&mut self, frame: &Value) {
        let task_id = frame["task_id"].as_str().unwrap_or_default().to_owned();
        match frame["type"].as_str().unwrap_or_default() {
            "identified" => {
                self.shared.update(|j| j.identified = true);
                if let Some(done) = self.waiting_identified.take() {
                    let _ = done.send(Ok(()));
                }
                if let (Some(held), false) = (&self.recovering, self.recovering_asked) {
                    let recovering = json!({"type": "task_recovering", "task_id": held.task_id});
                    self.recovering_asked = true;
                    self.send(recovering).await;
                }
                self.report_if_finished().await;
            }
            "task_assign" => {
                if self.job.is_some() {
                    let busy =
                        json!({"type": "task_rejected", "task_id": task_id, "reason": "busy"});
                    self.send(busy).await;
                    return;
                }
                let held = Held {
                    task_id: task_id.clone(),
                    generation: frame["generation"].as_u64().unwrap_or(0),
                };
                self.begin(held, true);
                self.send(json!({"type": "task_accepted", "task_id": task_id}))
                    .await;
            }
            "task_continue" => {
                let asked = self
                    .recovering
                    .as_ref()
                    .is_some_and(|h| h.task_id == task_id);
                if asked && self.job.is_none() {
                    self.recovering = None;
                    let held = Held {
                        task_id,
                        generation: frame["generation"].as_u64().unwrap_or(0),
                    };
                    self.begin(held, false);
                    self.report_if_finished().await;
                }
            }
            "task_reassign"
                if self
                    .recovering
                    .as_ref()
                    .is_some_and(|h| h.task_id == task_id) =>
            {
                self.recovering = None;
            }
            // `task_cancel` is ignored on purpose; acks, errors and pongs are only recorded.
            _ => {}
        }
    }

    /// Takes up `held`: as new work (counted, timed by [`Work`]) or as the work
    /// that went on while the sidecar was down.
    fn begin(&mut self, held: Held, new_work: bool) {
        let task_id = held.task_id.clone();
        let start = self.shared.update(|j| {
            if new_work {
                *j.starts.entry(task_id.clone()).or_default() += 1;
            }
            j.state = Some(held.clone());
            j.starts_of(&task_id)
        });
        self.job = Some(Job { held, start });
        if let (true, Work::For(duration)) = (new_work, self.config.work) {
            self.shared.finish_in(&task_id, duration);
        }
    }

    async fn report_if_finished(&mut self) {
        let Some(job) = &self.job else {
            return;
        };
        let task_id = job.held.task_id.clone();
        let finished = self
            .shared
            .read(|j| j.identified && j.finished.get(&task_id).is_some_and(|s| *s >= job.start));
        if !finished {
            return;
        }
        let report = json!({
            "type": "task_complete",
            "task_id": task_id,
            "generation": job.held.generation,
            "result": self.config.result,
        });
        self.job = None;
        self.shared.update(|j| j.state = None);
        self.send(report).await;
    }

    async fn send_progress(&mut self) {
        let Some(job) = &self.job else {
            return;
        };
        if !self.shared.read(|j| j.identified) {
            return;
        }
        let progress =
            json!({"type": "task_progress", "task_id": job.held.task_id, "progress": 50});
        self.send(progress).await;
    }
}

/// Reads server frames from `read` (after the bytes in `buffer`) and hands text,
/// pings and the end of the connection to the sidecar.
async fn read_frames(
    number: u32,
    mut read: OwnedReadHalf,
    mut buffer: Vec<u8>,
    to_sidecar: mpsc::Sender<(u32, Incoming)>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(parsed) = parse_server_frame(&buffer) {
            let (frame, used) = match parsed {
                Ok(found) => found,
                Err(why) => {
                    let _ = to_sidecar.send((number, Incoming::Closed(why))).await;
                    return;
                }
            };
            buffer.drain(..used);
            let message = match frame.opcode {
                1 => match serde_json::from_slice(&frame.payload) {
                    Ok(value) => Incoming::Text(value),
                    Err(_) => continue,
                },
                8 => {
                    let code = frame
                        .payload
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]));
                    Incoming::Closed(format!("close frame {code:?}"))
                }
                9 => Incoming::Ping(frame.payload),
                _ => continue,
            };
            let closed = matches!(message, Incoming::Closed(_));
            if to_sidecar.send((number, message)).await.is_err() || closed {
                return;
            }
        }
        match read.read(&mut chunk).await {
            Ok(n) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                let _ = to_sidecar
                    .send((number, Incoming::Closed("end of stream".into())))
                    .await;
                return;
            }
            Err(e) => {
                let _ = to_sidecar
                    .send((number, Incoming::Closed(format!("read: {e}"))))
                    .await;
                return;
            }
        }
    }
}

/// One frame from the server.
#[derive(Debug, PartialEq, Eq)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// The first whole frame in `bytes` and how many bytes it took; `None` if more
/// bytes are needed, an error for a frame the sidecar does not read (fragmented or
/// too large).
fn parse_server_frame(bytes: &[u8]) -> Option<Result<(ServerFrame, usize), String>> {
    let [first, second, ..] = *bytes else {
        return None;
    };
    if first & 0x80 == 0 || first & 0x0f == 0 {
        return Some(Err("fragmented frame".into()));
    }
    let masked = second & 0x80 != 0;
    let (length, mut at) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if length > MAX_SERVER_FRAME_BYTES {
        return Some(Err(format!("a frame of {length} bytes")));
    }
    let mask: Option<[u8; 4]> = if masked {
        let key = bytes.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let end = at + length as usize;
    let mut payload = bytes.get(at..end)?.to_vec();
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    let frame = ServerFrame {
        opcode: first & 0x0f,
        payload,
    };
    Some(Ok((frame, end)))
}

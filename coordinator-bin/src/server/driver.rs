//! The driver of the [`Session`] core: it reads the clock once per wake, turns
//! HTTP requests, socket events, commit reports and one timer into `handle_*`
//! calls, and carries every output out (frames, replies, closes, batches for the
//! writer). It decides nothing itself.

use std::sync::Arc;
use std::time::Duration;

use coordinator_transport::protocol::encode_task_assign;
use coordinator_transport::server::{
    CloseCause, SendError, SocketEvent, SocketEventKind, SocketHandle,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use coordinator_queue::{IdMap, ScheduledLoad, ScheduledPage, Task, TaskId};

use super::auth::Authenticator;
use super::clock::now_ms;
use super::events::EventHub;
use super::lease::Leadership;
use super::observe;
use super::store::Store;
use super::writer::{WriteJob, Writer, WriterReport};
use crate::session::{
    receipt_status, Answer, ConnId, Fatal, Frame, Identity, LoadedPayload, Lookup, Output, Receipt,
    Request, RequestId, Role, Session,
};

/// A task's stored description and metadata, or why they could not be read.
pub type PayloadRead = (TaskId, Result<Option<LoadedPayload>, String>);

/// What the HTTP side and token checks send to the driver.
pub enum Command {
    /// A request, answered on `reply` once the session says so.
    Request {
        /// The request.
        body: Request,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// The stored record asked for by [`Output::Load`].
    Loaded {
        /// The request waiting for it.
        request: RequestId,
        /// The record, or why it could not be read.
        stored: Result<Option<Task>, String>,
    },
    /// The scheduled tasks asked for by [`Output::LoadScheduled`].
    ScheduledLoaded {
        /// The number of the read.
        read: u64,
        /// The page read, or why it could not be read.
        page: Result<ScheduledPage, String>,
    },
    /// What storage knows of a submission's options, asked for by
    /// [`Output::Lookup`].
    LookedUp {
        /// The submission.
        request: RequestId,
        /// What was read.
        lookup: Result<Lookup, String>,
    },
    /// The texts asked for by [`Output::LoadPayload`]s, read together.
    PayloadsLoaded(Vec<PayloadRead>),
    /// What the leadership lease decided.
    Leadership(Leadership),
    /// The result of a token check asked for by [`Output::Authenticate`].
    Identity {
        /// The connection that identified.
        conn: ConnId,
        /// Who the token speaks for, if anyone.
        identity: Option<Identity>,
    },
}

/// The channels the driver reads.
pub struct Inbox {
    /// Requests and token-check results.
    pub commands: mpsc::Receiver<Command>,
    /// Agent socket events.
    pub sockets: mpsc::Receiver<SocketEvent>,
    /// The writer's progress.
    pub commits: watch::Receiver<WriterReport>,
    /// Becomes true when the service must stop.
    pub shutdown: watch::Receiver<bool>,
}

/// Why the driver woke up.
enum Wake {
    Report(WriterReport),
    Command(Command),
    Socket(SocketEvent),
    Timer,
}

/// Inputs taken in one wake before the outputs are carried out (bigger batches).
const BURST: usize = 512;

/// The session and the I/O objects its outputs address.
pub struct Driver {
    session: Session,
    writer: Writer,
    auth: Authenticator,
    store: Arc<dyn Store>,
    /// For token checks and reads to report back.
    commands: mpsc::Sender<Command>,
    sockets: IdMap<ConnId, SocketHandle>,
    replies: IdMap<RequestId, oneshot::Sender<Answer>>,
    next_request: u64,
    /// Where committed events go to watchers.
    events: Arc<EventHub>,
    /// The session's role, for the HTTP side.
    role: watch::Sender<Role>,
    /// Set when the lease is lost: the driver stops once the session has
    /// stepped down and its last outputs are carried out.
    lost: Option<Fatal>,
}

impl Driver {
    /// A driver of `session` whose batches go to `writer`.
    pub fn new(
        session: Session,
        writer: Writer,
        auth: Authenticator,
        store: Arc<dyn Store>,
        commands: mpsc::Sender<Command>,
        events: Arc<EventHub>,
    ) -> Driver {
        let session_role = session.role().clone();
        Driver {
            session,
            writer,
            auth,
            store,
            commands,
            sockets: IdMap::default(),
            replies: IdMap::default(),
            next_request: 1,
            events,
            role: watch::Sender::new(session_role),
            lost: None,
        }
    }

    /// The session's role as the HTTP side sees it (updated on every
    /// [`Output::Role`]).
    pub fn role_watch(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Runs until shutdown (then closes sockets and waits for the last commit) or
    /// until the session stops for good.
    pub async fn run(mut self, mut inbox: Inbox) -> Result<(), Fatal> {
        let mut deadline = self.session.poll_timeout();
        let timer = tokio::time::sleep_until(until(now_ms(), deadline));
        tokio::pin!(timer);
        loop {
            let wake = tokio::select! {
                biased;
                _ = inbox.shutdown.changed() => break,
                changed = inbox.commits.changed() => match changed {
                    Ok(()) => Wake::Report(inbox.commits.borrow_and_update().clone()),
                    Err(_) => Wake::Report(WriterReport::Failed("the writer stopped".to_owned())),
                },
                Some(command) = inbox.commands.recv() => Wake::Command(command),
                Some(event) = inbox.sockets.recv() => Wake::Socket(event),
                () = &mut timer, if deadline.is_some() => Wake::Timer,
            };
            // The one clock read of this wake.
            let now = now_ms();
            let timer_fired = matches!(wake, Wake::Timer);
            match wake {
                Wake::Report(report) => self.on_report(report),
                Wake::Command(command) => self.on_command(now, command),
                Wake::Socket(event) => self.on_socket(now, event),
                Wake::Timer => self.session.handle_timeout(now),
            }
            for _ in 0..BURST {
                if let Ok(event) = inbox.sockets.try_recv() {
                    self.on_socket(now, event);
                } else if let Ok(command) = inbox.commands.try_recv() {
                    self.on_command(now, command);
                } else {
                    break;
                }
            }
            self.carry_out(now).await?;
            let queue = self.session.scheduler().queue();
            super::metrics::set_in_memory(queue.len(), queue.scheduled_in_memory());
            if let Some(lost) = self.lost.take() {
                self.events.close();
                return Err(lost);
            }
            // One timer, reset only when the deadline moves (or it has fired).
            let next = self.session.poll_timeout();
            if next != deadline || timer_fired {
                deadline = next;
                timer.as_mut().reset(until(now, deadline));
            }
        }
        self.shut_down(&mut inbox).await
    }

    /// Waits until everything promised is committed and sent, closes every socket
    /// with 1001 (bounded in time), and stops the writer.
    async fn shut_down(mut self, inbox: &mut Inbox) -> Result<(), Fatal> {
        self.session.handle_shutdown();
        loop {
            self.carry_out(now_ms()).await?;
            if !self.session.awaits_commit() {
                break;
            }
            let report = match inbox.commits.changed().await {
                Ok(()) => inbox.commits.borrow_and_update().clone(),
                Err(_) => WriterReport::Failed("the writer stopped".to_owned()),
            };
            self.on_report(report);
        }
        let handles: Vec<SocketHandle> = self.sockets.values().cloned().collect();
        let all_closed = async {
            for handle in &handles {
                handle.closed().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), all_closed).await;
        self.events.close();
        self.writer.shutdown().await;
        tracing::info!("stopped; everything acknowledged is committed");
        Ok(())
    }

    fn on_report(&mut self, report: WriterReport) {
        match report {
            WriterReport::Committed { seq } => self.session.handle_committed(seq),
            WriterReport::Failed(error) => self.session.handle_commit_failed(error),
        }
    }

    fn on_command(&mut self, now: u64, command: Command) {
        match command {
            Command::Request { body, reply } => {
                let request = RequestId::new(self.next_request);
                self.next_request += 1;
                self.replies.insert(request, reply);
                self.session.handle_request(now, request, body);
            }
            Command::Loaded { request, stored } => self.session.handle_loaded(now, request, stored),
            Command::ScheduledLoaded { read, page } => {
                self.session.handle_scheduled_loaded(now, read, page)
            }
            Command::LookedUp { request, lookup } => {
                self.session.handle_looked_up(now, request, lookup)
            }
            Command::PayloadsLoaded(loaded) => {
                for (task_id, texts) in loaded {
                    self.session.handle_payload_loaded(now, &task_id, texts);
                }
            }
            Command::Identity { conn, identity } => {
                self.session.handle_identity(now, conn, identity)
            }
            Command::Leadership(leadership) => self.on_leadership(now, leadership),
        }
    }

    fn on_leadership(&mut self, now: u64, leadership: Leadership) {
        match leadership {
            Leadership::LeaderIs(leader_url) => self.session.handle_leader_is(now, leader_url),
            Leadership::BecameLeader { epoch, live } => {
                let next_queue_seq = live.next_queue_seq;
                let result = self.session.handle_became_leader(now, epoch, live.tasks);
                self.session.handle_stored_scheduled(next_queue_seq);
                if let Err(e) = result {
                    tracing::error!(error = %e, epoch, "cannot serve the epoch taken");
                    self.lost = Some(Fatal::LeadershipLost(format!(
                        "cannot serve epoch {epoch}: {e}"
                    )));
                }
            }
            Leadership::Lost { leader_url, why } => {
                tracing::error!(reason = %why, leader = ?leader_url, "stopped serving: leadership lost");
                self.session.handle_leader_is(now, leader_url);
                self.lost = Some(Fatal::LeadershipLost(why));
            }
        }
    }

    fn on_socket(&mut self, now: u64, event: SocketEvent) {
        let conn = ConnId::new(event.connection);
        match event.kind {
            SocketEventKind::Opened(handle) => {
                self.sockets.insert(conn, handle);
                self.session.handle_opened(now, conn);
            }
            SocketEventKind::Closed(CloseCause::TooLarge) => {
                self.sockets.remove(&conn);
                tracing::warn!(%conn, "socket closed for a frame over the size limit");
                self.session.handle_closed_too_large(now, conn);
            }
            SocketEventKind::Closed(cause) => {
                self.sockets.remove(&conn);
                tracing::debug!(%conn, ?cause, "socket closed");
                self.session.handle_closed(now, conn);
            }
            SocketEventKind::Message(message) => {
                super::metrics::record_frame(message.type_name());
                self.session.handle_message(now, conn, message);
            }
        }
    }

    /// Carries out every output the session has (the texts it asks for are read
    /// together, once it has nothing more).
    async fn carry_out(&mut self, now: u64) -> Result<(), Fatal> {
        let mut payloads = Vec::new();
        let carried = self.carry_out_outputs(now, &mut payloads).await;
        if !payloads.is_empty() {
            self.load_payloads(payloads);
        }
        carried
    }

    async fn carry_out_outputs(
        &mut self,
        now: u64,
        payloads: &mut Vec<TaskId>,
    ) -> Result<(), Fatal> {
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Persist(batch) => {
                    observe::batch(&batch);
                    if !self.writer.submit(WriteJob::Batch(batch)).await {
                        self.session
                            .handle_commit_failed("the writer stopped".to_owned());
                    }
                }
                Output::Authenticate { conn, token } => {
                    let auth = self.auth.clone();
                    let commands = self.commands.clone();
                    tokio::spawn(async move {
                        let identity = auth.check(&token).await;
                        let _ = commands.send(Command::Identity { conn, identity }).await;
                    });
                }
                Output::Load { request, task_id } => {
                    let store = self.store.clone();
                    let commands = self.commands.clone();
                    tokio::spawn(async move {
                        let stored = store.get_task(task_id.to_string()).await.map_err(|e| {
                            super::damage::report_if_damaged(&e);
                            format!("cannot read the task: {e}")
                        });
                        let _ = commands.send(Command::Loaded { request, stored }).await;
                    });
                }
                Output::LoadScheduled { read, load } => self.load_scheduled(read, load),
                Output::Lookup {
                    request,
                    dependencies,
                    keys,
                } => self.look_up(request, dependencies, keys),
                Output::LoadPayload { task_id } => payloads.push(task_id),
                Output::Send { conn, frame } => self.send(now, conn, frame),
                Output::Reply { request, answer } => {
                    if let Some(reply) = self.replies.remove(&request) {
                        let _ = reply.send(answer);
                    }
                }
                Output::Close { conn, code, reason } => {
                    if let Some(handle) = self.sockets.get(&conn) {
                        handle.close(code, &reason);
                    }
                }
                Output::Purge { before_ms } => {
                    let _ = self.writer.submit(WriteJob::Purge { before_ms }).await;
                }
                Output::Event(event) => self.events.publish(event),
                Output::Notice(notice) => observe::notice(&notice),
                Output::Role(role) => {
                    tracing::warn!(role = role.as_str(), epoch = ?role.epoch(), "role changed");
                    self.role.send_replace(role);
                }
                Output::Fatal(fatal) => {
                    tracing::error!(error = %fatal, "stopping so that nothing is acknowledged that is not on disk");
                    return Err(fatal);
                }
            }
        }
        Ok(())
    }

    /// Reads what storage knows of a submission's dependencies and keys and
    /// hands it to the session.
    fn look_up(&self, request: RequestId, dependencies: Vec<String>, keys: Vec<(String, String)>) {
        let store = self.store.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let lookup = async {
                let statuses = store.task_statuses(dependencies).await?;
                let keyed = store
                    .tasks_by_key(keys)
                    .await?
                    .into_iter()
                    .map(|(key, stored)| {
                        let receipt =
                            stored.map(|(task_id, priority, status, created_at_ms)| Receipt {
                                task_id,
                                priority: priority.as_str(),
                                created_at_ms,
                                status: receipt_status(status),
                                duplicate: true,
                            });
                        (key, receipt)
                    })
                    .collect();
                Ok::<_, super::db::DbError>(Lookup { statuses, keyed })
            }
            .await
            .map_err(|e| format!("cannot read the submission's dependencies or keys: {e}"));
            let _ = commands.send(Command::LookedUp { request, lookup }).await;
        });
    }

    /// Reads the scheduled tasks the session asks for and hands them back.
    fn load_scheduled(&self, read: u64, load: ScheduledLoad) {
        let store = self.store.clone();
        let commands = self.commands.clone();
        let max_inline = self
            .session
            .scheduler()
            .config()
            .queue
            .max_inline_payload_bytes;
        tokio::spawn(async move {
            let page = match store.load_scheduled(load, max_inline).await {
                Ok((page, damaged)) => {
                    for row in &damaged {
                        super::damage::report(row);
                    }
                    Ok(page)
                }
                Err(e) => Err(format!("cannot read the scheduled tasks: {e}")),
            };
            let _ = commands.send(Command::ScheduledLoaded { read, page }).await;
        });
    }

    /// Reads the stored texts of `task_ids` together and hands them to the
    /// session.
    fn load_payloads(&self, task_ids: Vec<TaskId>) {
        let store = self.store.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let asked = task_ids.clone();
            let loaded = match store.get_payloads(task_ids).await {
                Ok(read) => read
                    .into_iter()
                    .map(|(task_id, texts)| {
                        let texts = texts.map_err(|e| {
                            super::damage::report_if_damaged(&e);
                            e.to_string()
                        });
                        (task_id, texts)
                    })
                    .collect::<Vec<PayloadRead>>(),
                Err(e) => {
                    let error = e.to_string();
                    asked
                        .into_iter()
                        .map(|task_id| (task_id, Err(error.clone())))
                        .collect()
                }
            };
            let _ = commands.send(Command::PayloadsLoaded(loaded)).await;
        });
    }

    fn send(&mut self, now: u64, conn: ConnId, frame: Frame) {
        let Some(handle) = self.sockets.get(&conn) else {
            return;
        };
        let text = match &frame {
            Frame::Message(message) => message.encode(),
            Frame::Assign(a) => {
                let Some((description, metadata)) = a.texts() else {
                    // The session sends assignments only with their texts.
                    tracing::error!(
                        task_id = a.task_id.as_str(),
                        "task_assign without its texts; not sent"
                    );
                    return;
                };
                encode_task_assign(
                    &a.task_id,
                    description,
                    metadata,
                    a.generation,
                    a.assigned_at_ms,
                )
            }
        };
        // A closed socket reports its own end; only a full queue is handled here.
        if handle.send_encoded(text) == Err(SendError::Full) {
            self.session.handle_send_overflow(now, conn);
        }
    }
}

/// The instant of a deadline in milliseconds since the epoch (far away if none).
fn until(now_ms: u64, deadline_ms: Option<u64>) -> Instant {
    let wait_ms = match deadline_ms {
        Some(at) => at.saturating_sub(now_ms),
        None => 3_600_000,
    };
    Instant::now() + Duration::from_millis(wait_ms)
}

//! What the session core asks its driver to do, and the ids it addresses.

use std::borrow::Cow;

use coordinator_queue::{AgentId, ReclaimReason, TaskId};
use coordinator_scheduler::Assignment;
use coordinator_transport::protocol::{CoordinatorMessage, ErrorCode};

use super::api::{Answer, Identity};
use super::events::Event;
use super::gate::Batch;

/// The driver's name for one agent socket. Never reused while the process runs.
/// The scheduler's own connection id, so that it goes to the scheduler as is.
pub use coordinator_scheduler::ConnId;

/// The driver's name for one request waiting for its [`Answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl RequestId {
    /// The request with this number.
    pub const fn new(n: u64) -> RequestId {
        RequestId(n)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A frame for an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A protocol message.
    Message(CoordinatorMessage),
    /// `task_assign`, kept as the core's assignment so that its metadata text is
    /// written as stored, without a parse and re-encode. In an [`Output::Send`]
    /// its description and metadata are always in memory
    /// ([`Assignment::texts`] is `Some`).
    Assign(Assignment),
}

/// A task's description and metadata as read back from storage, for a
/// `task_assign` whose texts the queue does not keep in memory (see
/// [`Output::LoadPayload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedPayload {
    /// The description.
    pub description: String,
    /// The metadata (JSON object text).
    pub metadata: String,
    /// The stored results of the task's dependencies, in its order (`None`
    /// for one storage no longer has); empty without dependencies.
    pub dependencies: Vec<(String, Option<String>)>,
}

/// A token row to write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenWrite {
    /// A new token; only its SHA-256 digest is stored.
    Create {
        /// Who it speaks for.
        identity: Identity,
        /// SHA-256 of the secret.
        hash: [u8; 32],
        /// Creation time.
        created_at_ms: u64,
    },
    /// Revokes these token rows (by row id).
    Revoke {
        /// The rows.
        ids: Vec<i64>,
        /// Revocation time.
        revoked_at_ms: u64,
    },
}

/// Something worth a log line or a metric; nothing to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A task was taken back from its agent.
    Reclaimed {
        /// The task, now queued again (or final).
        task_id: TaskId,
        /// The agent that held it.
        agent_id: AgentId,
        /// Why.
        reason: ReclaimReason,
    },
    /// A connection now speaks for an agent.
    AgentIdentified {
        /// The agent.
        agent_id: AgentId,
        /// Its connection.
        conn: ConnId,
    },
    /// An identified agent's connection ended.
    AgentDisconnected {
        /// The agent.
        agent_id: AgentId,
        /// The connection that ended.
        conn: ConnId,
    },
    /// An identify was refused.
    IdentifyRefused {
        /// The agent id the connection claimed.
        agent_id: String,
        /// Why.
        code: ErrorCode,
    },
    /// An agent's message was refused with an `error` frame.
    ProtocolError {
        /// The code sent.
        code: ErrorCode,
    },
    /// An agent's socket could not keep up and was dropped.
    SlowConsumer {
        /// The agent, if the connection had identified.
        agent_id: Option<AgentId>,
        /// The connection.
        conn: ConnId,
    },
    /// A `task_assign` could not be sent because the task's stored texts could
    /// not be read; the task failed (`payload_unreadable`).
    AssignUndeliverable {
        /// The task.
        task_id: TaskId,
        /// The agent it was assigned to.
        agent_id: AgentId,
        /// What the store said.
        error: String,
    },
    /// A submission (or a retry from the dead letter) was refused by admission
    /// control.
    SubmitRefused {
        /// `queue_full` or `metadata_too_large`.
        reason: &'static str,
    },
    /// The scheduled tasks asked for by [`Output::LoadScheduled`] could not be
    /// read; they are asked for again a second later.
    ScheduledLoadFailed {
        /// What the store said.
        error: String,
    },
}

/// Why the session stopped for good. The driver must exit non-zero: serving on
/// would mean serving a state that is not on disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fatal {
    /// This coordinator lost the leadership lease (or its connection): it
    /// stopped serving and its write connection is closed.
    #[error("lost the leadership lease: {0}")]
    LeadershipLost(String),
    /// The store could not commit a batch.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The store reported a batch committed that was never handed out.
    #[error("the store reported batch {reported} committed, but only {sent} were handed out")]
    CommitFromTheFuture {
        /// The batch number reported.
        reported: u64,
        /// The newest batch number handed out.
        sent: u64,
    },
    /// The store has no record of a task it committed, whose description and
    /// metadata an agent must be sent.
    #[error("cannot read the stored description and metadata of task {task_id}: {error}")]
    PayloadUnreadable {
        /// The task.
        task_id: TaskId,
        /// What the store said.
        error: String,
    },
}

/// One thing for the driver to carry out. See [`super::Session`] for the order.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Commit these records in one transaction, then call
    /// [`super::Session::handle_committed`] with its `seq`.
    Persist(Batch),
    /// Check this token and call [`super::Session::handle_identity`] with the answer.
    Authenticate {
        /// The connection that sent `identify`.
        conn: ConnId,
        /// The secret it sent.
        token: String,
    },
    /// Read this task's stored record and call [`super::Session::handle_loaded`]
    /// with it (for a retry, or a cancel of a scheduled task only storage
    /// holds; handed out only after every commit before it).
    Load {
        /// The request waiting for it.
        request: RequestId,
        /// The task.
        task_id: String,
    },
    /// Read the scheduled tasks `load` names (see
    /// [`coordinator_queue::ScheduledLoad`]) and call
    /// [`super::Session::handle_scheduled_loaded`] with them and `read`
    /// (handed out only after every commit before it).
    LoadScheduled {
        /// The number of this read.
        read: u64,
        /// What to read.
        load: coordinator_queue::ScheduledLoad,
    },
    /// Read what storage knows of a submission's options and call
    /// [`super::Session::handle_looked_up`] with it: the stored status of each
    /// dependency, and the stored task of each (submitter, idempotency key).
    /// Handed out only after every commit before it.
    Lookup {
        /// The submission waiting for it.
        request: RequestId,
        /// Dependencies that are not live.
        dependencies: Vec<String>,
        /// (submitter, key) pairs no live task has.
        keys: Vec<(String, String)>,
    },
    /// Read this task's stored description and metadata and call
    /// [`super::Session::handle_payload_loaded`] with them: a committed
    /// `task_assign` waits for them (the queue keeps long texts out of memory),
    /// and so does every later frame for the same agent.
    LoadPayload {
        /// The task.
        task_id: TaskId,
    },
    /// Write a frame to a connection (if it is still open).
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// Answer a request.
    Reply {
        /// The request.
        request: RequestId,
        /// The answer.
        answer: Answer,
    },
    /// Close a connection with this WebSocket close code.
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: Cow<'static, str>,
    },
    /// Delete final tasks last changed before this time (retention).
    Purge {
        /// The cut-off time.
        before_ms: u64,
    },
    /// Publish this event to watchers (it reports only what is committed).
    Event(Event),
    /// For logs and metrics.
    Notice(Notice),
    /// This coordinator's role changed: the HTTP side answers by it (`/health`,
    /// `/metrics`, 503 `not_leader`).
    Role(super::Role),
    /// Stop: nothing more will come out of the session.
    Fatal(Fatal),
}

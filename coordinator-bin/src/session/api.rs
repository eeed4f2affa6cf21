//! Requests from the HTTP side and their answers, as plain data.

use coordinator_queue::{NewTask, Status};

use super::views::{AgentInfo, DashboardSnapshot};

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An operator: every route.
    Admin(String),
    /// One agent: the WebSocket as that agent id, and the task routes.
    Agent(String),
}

impl Identity {
    /// The admin name or agent id (recorded as `submitted_by`).
    pub fn name(&self) -> &str {
        match self {
            Identity::Admin(name) | Identity::Agent(name) => name,
        }
    }

    /// `admin` or `agent`.
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::Admin(_) => "admin",
            Identity::Agent(_) => "agent",
        }
    }
}

/// A request the driver read from the HTTP side (already decoded and validated
/// for form; the session decides what it means).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Submit one task or a batch: all of them or none.
    Submit {
        /// The tasks, in order.
        tasks: Vec<NewTask>,
    },
    /// Cancel a task.
    Cancel {
        /// The task.
        task_id: String,
        /// Its status in storage, read by the driver before asking (decides 404
        /// against 409 when the task is not live).
        stored: Option<Status>,
    },
    /// Put a dead-letter task back in the queue. The session asks for the stored
    /// record itself ([`Output::Load`](super::Output::Load)) once every commit in
    /// flight has landed, and no other retry of the task runs meanwhile, so a
    /// record read before a concurrent change can never bring a task back.
    Retry {
        /// The task.
        task_id: String,
    },
    /// Store a new token (its secret was made and hashed by the driver).
    CreateToken {
        /// Who it speaks for.
        identity: Identity,
        /// SHA-256 of the secret.
        hash: [u8; 32],
    },
    /// Revoke the live tokens of one agent id or one admin name; every socket
    /// they authenticated is closed (1008, `token_revoked`).
    RevokeTokens {
        /// The kind and name whose tokens go.
        identity: Identity,
        /// The row ids of its live tokens, read by the driver before asking.
        live_ids: Vec<i64>,
        /// Live admin tokens in the table, read with `live_ids` (the last one is
        /// not revoked here).
        live_admins: usize,
    },
    /// Drain (`drained: true`) or undrain an agent: no new work for it until
    /// undrained (kept in memory only).
    Drain {
        /// The agent.
        agent_id: String,
        /// Drain or undrain.
        drained: bool,
    },
    /// Every known agent.
    Agents,
    /// The dashboard snapshot.
    Dashboard,
}

/// A task accepted by a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The task's id.
    pub task_id: String,
    /// Its lane.
    pub priority: &'static str,
    /// Its submission time.
    pub created_at_ms: u64,
    /// `scheduled`, `waiting` or `queued` (as submitted).
    pub status: &'static str,
    /// True when this is the first task of an idempotency key submitted
    /// again: nothing new was created.
    pub duplicate: bool,
}

/// Why a request was refused; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No such thing (HTTP 404).
    NotFound,
    /// The thing's state does not allow this (HTTP 409).
    Conflict,
    /// A field has an invalid value (HTTP 422).
    Invalid,
    /// A task's metadata is over `max_metadata_bytes` (HTTP 413
    /// `metadata_too_large`).
    MetadataTooLarge,
    /// The tasks would take the queue past `max_queued` (HTTP 429 `queue_full`).
    QueueFull {
        /// How long the client should wait before trying again.
        retry_after_s: u64,
    },
    /// Storage could not be read (HTTP 500).
    Internal,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// For people.
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(kind: RefusalKind, detail: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            detail: detail.into(),
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Every task of the submission is queued, scheduled or waiting (or
    /// assigned), or was there already (a repeat of an idempotency key).
    Submitted(Vec<Receipt>),
    /// The task is cancelled.
    Cancelled,
    /// The dead-letter task is queued again.
    Retried,
    /// The token is stored.
    TokenCreated,
    /// This many tokens were revoked.
    TokensRevoked(usize),
    /// The agent is drained or undrained now.
    Drained {
        /// Its drain now.
        drained: bool,
        /// False when it already was.
        changed: bool,
    },
    /// Every known agent, by id.
    Agents(Vec<AgentInfo>),
    /// The dashboard snapshot.
    Dashboard(Box<DashboardSnapshot>),
    /// Refused; nothing changed.
    Refused(Refusal),
    /// This coordinator is not the leader (HTTP 503 `not_leader`); nothing
    /// changed. Also the answer to a request whose changes were not committed
    /// when leadership was lost: the new leader may or may not have them.
    NotLeader(super::NotLeader),
}

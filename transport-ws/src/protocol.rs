//! The wire protocol, version 1: one JSON text object per frame, tagged by `type`.
//!
//! The field names are those of the original hub's v1 protocol; clients that speak
//! it work unmodified. The rules at the edges (SPEC §12), as the coordinator
//! applies them:
//! - **Re-attach, don't re-run.** An agent whose connection dropped while it held a
//!   task gets that task back, while nobody else was assigned it, when it says so
//!   after identifying again: `task_recovering`, progress, its result, or the
//!   `current_task {task_id, generation}` field of `identify`. The answer is
//!   `task_continue` with a new generation; its result carrying the generation of
//!   its own last assignment is accepted too. A freshly identified last holder is
//!   offered no work until its first message other than `ping`, or for
//!   `--identify-settle-ms`; an agent that stays silent gets its own task back as
//!   `task_continue`, never as a second `task_assign`.
//! - **Cancel grace.** After `task_cancel` the agent is offered no work until it
//!   reports on that task (or `--cancel-grace-ms` passes); that late report is
//!   answered `task_ack {status: "cancelled"}` and changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A capability as sent in `identify`: a plain string or an object with a `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CapabilityEntry {
    /// `"gpu"`.
    Name(String),
    /// `{"name": "gpu", ...}`; other fields are ignored.
    Object {
        /// The capability's name.
        name: String,
    },
}

impl CapabilityEntry {
    /// The capability's name.
    pub fn name(&self) -> &str {
        match self {
            CapabilityEntry::Name(name) | CapabilityEntry::Object { name } => name,
        }
    }
}

/// The task an agent names in `identify` as the one it is working on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentTask {
    /// The task.
    pub task_id: String,
    /// The generation of the agent's assignment of it.
    pub generation: u64,
}

/// A message from an agent to the coordinator.
///
/// Unknown fields (such as `protocol_version`) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// Must be the first message of a connection.
    Identify {
        /// Who the agent is.
        agent_id: String,
        /// The agent's secret token.
        token: String,
        /// A display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// What the agent can do.
        #[serde(default)]
        capabilities: Vec<CapabilityEntry>,
        /// The agent's own idea of its state (informational).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// What kind of client this is (informational).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_type: Option<String>,
        /// The task the agent is still working on (after a reconnect or its own
        /// restart), so that it is re-attached instead of run again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current_task: Option<CurrentTask>,
    },
    /// Application-level heartbeat; answered with `pong`.
    Ping {},
    /// The agent took its assigned task.
    TaskAccepted {
        /// The task.
        task_id: String,
    },
    /// A sign of life while working.
    TaskProgress {
        /// The task.
        task_id: String,
        /// Free-form progress (a number or anything else).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<Value>,
    },
    /// The task is done.
    TaskComplete {
        /// The task.
        task_id: String,
        /// The generation given in `task_assign`.
        generation: u64,
        /// The result, any JSON.
        #[serde(default)]
        result: Value,
        /// Tokens used; also read from `result.tokens_used`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokens_used: Option<u64>,
    },
    /// The task failed.
    TaskFailed {
        /// The task.
        task_id: String,
        /// The generation given in `task_assign`.
        generation: u64,
        /// What went wrong.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Accepted in place of `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The agent declines the task (for example because it is busy).
    TaskRejected {
        /// The task.
        task_id: String,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The agent restarted holding this task.
    TaskRecovering {
        /// The task.
        task_id: String,
    },
}

impl AgentMessage {
    /// `tokens_used` of a `task_complete`, from the message or from `result.tokens_used`.
    pub fn tokens_used(&self) -> Option<u64> {
        match self {
            AgentMessage::TaskComplete {
                tokens_used,
                result,
                ..
            } => tokens_used.or_else(|| result.get("tokens_used").and_then(Value::as_u64)),
            _ => None,
        }
    }

    /// The failure text of a `task_failed`: `error`, else `reason`, else a placeholder.
    pub fn failure_text(&self) -> Option<&str> {
        match self {
            AgentMessage::TaskFailed { error, reason, .. } => Some(
                error
                    .as_deref()
                    .or(reason.as_deref())
                    .unwrap_or("no reason given"),
            ),
            _ => None,
        }
    }

    /// The wire name of the message's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            AgentMessage::Identify { .. } => "identify",
            AgentMessage::Ping {} => "ping",
            AgentMessage::TaskAccepted { .. } => "task_accepted",
            AgentMessage::TaskProgress { .. } => "task_progress",
            AgentMessage::TaskComplete { .. } => "task_complete",
            AgentMessage::TaskFailed { .. } => "task_failed",
            AgentMessage::TaskRejected { .. } => "task_rejected",
            AgentMessage::TaskRecovering { .. } => "task_recovering",
        }
    }
}

/// A stable error code sent in `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid JSON (or not a JSON object).
    InvalidJson,
    /// The `type` is missing or unknown.
    UnknownType,
    /// The type is known but a field is missing or of the wrong kind.
    InvalidMessage,
    /// Binary frames are not part of the protocol.
    UnsupportedFrame,
    /// A message other than `identify` came before a successful `identify`.
    NotIdentified,
    /// The token is not valid.
    InvalidToken,
    /// The token is valid but belongs to another agent id.
    TokenAgentMismatch,
    /// The generation is not the task's current one; nothing changed.
    StaleGeneration,
    /// The task is not assigned to this agent.
    NotAssigned,
    /// The task is not in a state that allows this message.
    InvalidState,
}

impl ErrorCode {
    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::NotIdentified => "not_identified",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenAgentMismatch => "token_agent_mismatch",
            ErrorCode::StaleGeneration => "stale_generation",
            ErrorCode::NotAssigned => "not_assigned",
            ErrorCode::InvalidState => "invalid_state",
        }
    }
}

/// A message from the coordinator to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CoordinatorMessage {
    /// `identify` succeeded.
    Identified {
        /// The agent's id.
        agent_id: String,
    },
    /// Answer to `ping`.
    Pong {
        /// Coordinator time, ms since the Unix epoch.
        timestamp: u64,
    },
    /// A lifecycle message was recorded.
    TaskAck {
        /// The task.
        task_id: String,
        /// `accepted`, `complete`, `retried`, `dead_letter`, `rejected`, or
        /// `cancelled` (a report on a task cancelled under the agent).
        status: String,
    },
    /// A task for the agent.
    TaskAssign {
        /// The task.
        task_id: String,
        /// What to do.
        description: String,
        /// The submitter's metadata object.
        metadata: Value,
        /// Echo this in `task_complete` / `task_failed`.
        generation: u64,
        /// When it was assigned, ms since the Unix epoch.
        assigned_at: u64,
    },
    /// Stop working on this task: it was cancelled.
    TaskCancel {
        /// The task.
        task_id: String,
    },
    /// Answer to `task_recovering`: go on.
    TaskContinue {
        /// The task.
        task_id: String,
        /// Its current generation.
        generation: u64,
    },
    /// Answer to `task_recovering`: drop it.
    TaskReassign {
        /// The task.
        task_id: String,
    },
    /// Something was wrong with the agent's message.
    Error {
        /// The stable code.
        error: ErrorCode,
        /// The task concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
        /// Human-readable detail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

impl CoordinatorMessage {
    /// An `error` frame.
    pub fn error(error: ErrorCode, task_id: Option<&str>, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        CoordinatorMessage::Error {
            error,
            task_id: task_id.map(str::to_owned),
            detail: (!detail.is_empty()).then_some(detail),
        }
    }

    /// The JSON text of the message.
    pub fn encode(&self) -> Vec<u8> {
        if let CoordinatorMessage::TaskAck { task_id, status } = self {
            // Two per task: written straight, the same text as serde's.
            let mut out = Vec::with_capacity(48 + task_id.len() + status.len());
            out.extend_from_slice(br#"{"type":"task_ack","task_id":"#);
            write_json(&mut out, task_id);
            out.extend_from_slice(br#","status":"#);
            write_json(&mut out, status);
            out.push(b'}');
            return out;
        }
        serde_json::to_vec(self).expect("coordinator messages always serialize")
    }
}

/// The JSON text of a `task_assign`, with `metadata_json` (the text of a JSON
/// object, as the coordinator stores it) written as it is: no parse and re-encode
/// per assignment. Text that does not look like an object is sent as `{}`.
/// Decodes to the same message as [`CoordinatorMessage::TaskAssign`].
pub fn encode_task_assign(
    task_id: &str,
    description: &str,
    metadata_json: &str,
    generation: u64,
    assigned_at: u64,
) -> Vec<u8> {
    let metadata = metadata_json.trim();
    let metadata = if metadata.starts_with('{') && metadata.ends_with('}') {
        metadata
    } else {
        "{}"
    };
    let mut out = Vec::with_capacity(112 + task_id.len() + description.len() + metadata.len());
    out.extend_from_slice(br#"{"type":"task_assign","task_id":"#);
    write_json(&mut out, task_id);
    out.extend_from_slice(br#","description":"#);
    write_json(&mut out, description);
    out.extend_from_slice(br#","metadata":"#);
    out.extend_from_slice(metadata.as_bytes());
    out.extend_from_slice(br#","generation":"#);
    write_json(&mut out, &generation);
    out.extend_from_slice(br#","assigned_at":"#);
    write_json(&mut out, &assigned_at);
    out.push(b'}');
    out
}

/// Appends the JSON text of a string or a number.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("strings and numbers always serialize");
}

/// The most bytes of a peer's input an error reply quotes.
pub const MAX_QUOTE_BYTES: usize = 256;

/// `text` cut to at most [`MAX_QUOTE_BYTES`] bytes on a character boundary, with a
/// note saying how long it was when it is cut: an error reply never hands a peer's
/// input back at full length.
pub fn clip_quote(text: &str) -> String {
    if text.len() <= MAX_QUOTE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_QUOTE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut; {} bytes in all)", &text[..end], text.len())
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct DecodeError {
    /// The code to send back.
    pub code: ErrorCode,
    /// What was wrong; quotes at most [`MAX_QUOTE_BYTES`] bytes of the input.
    pub detail: String,
}

impl DecodeError {
    /// The `error` frame that answers this.
    pub fn to_message(&self) -> CoordinatorMessage {
        CoordinatorMessage::error(self.code, None, self.detail.clone())
    }
}

const AGENT_TYPES: [&str; 8] = [
    "identify",
    "ping",
    "task_accepted",
    "task_progress",
    "task_complete",
    "task_failed",
    "task_rejected",
    "task_recovering",
];

/// Decodes one text frame from an agent. Never panics, whatever the bytes.
pub fn decode_agent_message(bytes: &[u8]) -> Result<AgentMessage, DecodeError> {
    if let Some(message) = decode_task_frame(bytes) {
        return Ok(message);
    }
    decode_by_enum(bytes)
}

/// [`decode_agent_message`] through [`AgentMessage`]'s own `Deserialize`,
/// which gives every message and every error.
pub(crate) fn decode_by_enum(bytes: &[u8]) -> Result<AgentMessage, DecodeError> {
    match serde_json::from_slice::<AgentMessage>(bytes) {
        Ok(message) => Ok(message),
        Err(err) => Err(classify(bytes, err)),
    }
}

/// True if the text starts as a JSON object. The one-pass decoders read
/// objects only: a tagged enum also reads a JSON array (the type, then the
/// fields in order), which they leave to the enum.
fn is_object_text(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The fields of every message but `identify`, read in one pass: serde's
/// internally tagged enum first copies the whole object into a buffer of its
/// own and then reads the variant from that, which took half of a socket's
/// reading per frame.
#[derive(Deserialize)]
struct TaskFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    task_id: Option<String>,
    generation: Option<u64>,
    result: Option<Value>,
    tokens_used: Option<u64>,
    progress: Option<Value>,
    error: Option<String>,
    reason: Option<String>,
}

/// The message of a frame that is a JSON object [`TaskFrame`] reads and whose
/// type's required fields are there; `None` for anything else (`identify`, a
/// field of a type this message does not have, which the message would
/// ignore, any error), which [`decode_by_enum`] then decodes. Where this gives
/// a message, it is the one `decode_by_enum` gives: a field this message does
/// not have is ignored, `null` is an absent optional field and an absent
/// `result` is `null`, and a duplicate field is an error in both.
pub(crate) fn decode_task_frame(bytes: &[u8]) -> Option<AgentMessage> {
    if !is_object_text(bytes) {
        return None;
    }
    let frame: TaskFrame<'_> = serde_json::from_slice(bytes).ok()?;
    let message = match &*frame.kind {
        "ping" => AgentMessage::Ping {},
        "task_accepted" => AgentMessage::TaskAccepted {
            task_id: frame.task_id?,
        },
        "task_progress" => AgentMessage::TaskProgress {
            task_id: frame.task_id?,
            progress: frame.progress,
        },
        "task_complete" => AgentMessage::TaskComplete {
            task_id: frame.task_id?,
            generation: frame.generation?,
            result: frame.result.unwrap_or(Value::Null),
            tokens_used: frame.tokens_used,
        },
        "task_failed" => AgentMessage::TaskFailed {
            task_id: frame.task_id?,
            generation: frame.generation?,
            error: frame.error,
            reason: frame.reason,
        },
        "task_rejected" => AgentMessage::TaskRejected {
            task_id: frame.task_id?,
            reason: frame.reason,
        },
        "task_recovering" => AgentMessage::TaskRecovering {
            task_id: frame.task_id?,
        },
        _ => return None,
    };
    Some(message)
}

/// Decodes one text frame from the coordinator (for clients).
pub fn decode_coordinator_message(bytes: &[u8]) -> Result<CoordinatorMessage, DecodeError> {
    if let Some(message) = decode_coordinator_frame(bytes) {
        return Ok(message);
    }
    decode_coordinator_by_enum(bytes)
}

/// [`decode_coordinator_message`] through [`CoordinatorMessage`]'s own
/// `Deserialize`, which gives every message and every error.
pub(crate) fn decode_coordinator_by_enum(bytes: &[u8]) -> Result<CoordinatorMessage, DecodeError> {
    serde_json::from_slice(bytes).map_err(|err| DecodeError {
        code: ErrorCode::InvalidMessage,
        detail: clip_quote(&err.to_string()),
    })
}

/// The fields of every coordinator message, read in one pass, for the same
/// reason as [`TaskFrame`]: the tagged enum's buffer was about a quarter of an
/// agent's decoding per frame.
#[derive(Deserialize)]
struct CoordinatorFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    agent_id: Option<String>,
    timestamp: Option<u64>,
    task_id: Option<String>,
    status: Option<String>,
    description: Option<String>,
    metadata: Option<Value>,
    generation: Option<u64>,
    assigned_at: Option<u64>,
    error: Option<ErrorCode>,
    detail: Option<String>,
}

/// The message of a frame that is a JSON object [`CoordinatorFrame`] reads and
/// whose type's required fields are there; `None` for anything else (an
/// unknown type, a `null` or absent required field, a field of a type this
/// message does not have, which the message would ignore, any error), which
/// [`decode_coordinator_by_enum`] then decodes. Where this gives a message, it
/// is the one `decode_coordinator_by_enum` gives: a field this message does not
/// have is ignored, `null` is an absent optional field, and a duplicate field
/// is an error in both. A `null` `metadata`, which the enum reads as
/// `Value::Null`, is left to the enum too, since `Option` cannot tell it from
/// an absent one.
pub(crate) fn decode_coordinator_frame(bytes: &[u8]) -> Option<CoordinatorMessage> {
    if !is_object_text(bytes) {
        return None;
    }
    let frame: CoordinatorFrame<'_> = serde_json::from_slice(bytes).ok()?;
    let message = match &*frame.kind {
        "task_assign" => CoordinatorMessage::TaskAssign {
            task_id: frame.task_id?,
            description: frame.description?,
            metadata: frame.metadata?,
            generation: frame.generation?,
            assigned_at: frame.assigned_at?,
        },
        "task_ack" => CoordinatorMessage::TaskAck {
            task_id: frame.task_id?,
            status: frame.status?,
        },
        "task_cancel" => CoordinatorMessage::TaskCancel {
            task_id: frame.task_id?,
        },
        "task_continue" => CoordinatorMessage::TaskContinue {
            task_id: frame.task_id?,
            generation: frame.generation?,
        },
        "task_reassign" => CoordinatorMessage::TaskReassign {
            task_id: frame.task_id?,
        },
        "pong" => CoordinatorMessage::Pong {
            timestamp: frame.timestamp?,
        },
        "identified" => CoordinatorMessage::Identified {
            agent_id: frame.agent_id?,
        },
        "error" => CoordinatorMessage::Error {
            error: frame.error?,
            task_id: frame.task_id,
            detail: frame.detail,
        },
        _ => return None,
    };
    Some(message)
}

/// The error of an undecodable frame. serde's messages may quote a value of the
/// input (`invalid type: string "…"`), so every detail is clipped.
fn classify(bytes: &[u8], err: serde_json::Error) -> DecodeError {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(parse) => {
            return DecodeError {
                code: ErrorCode::InvalidJson,
                detail: clip_quote(&parse.to_string()),
            }
        }
    };
    let Some(object) = value.as_object() else {
        return DecodeError {
            code: ErrorCode::InvalidJson,
            detail: "a message must be a JSON object".to_owned(),
        };
    };
    match object.get("type").and_then(Value::as_str) {
        Some(t) if AGENT_TYPES.contains(&t) => DecodeError {
            code: ErrorCode::InvalidMessage,
            detail: clip_quote(&err.to_string()),
        },
        Some(t) => DecodeError {
            code: ErrorCode::UnknownType,
            detail: format!("unknown message type `{}`", clip_quote(t)),
        },
        None => DecodeError {
            code: ErrorCode::UnknownType,
            detail: "the message has no string `type` field".to_owned(),
        },
    }
}

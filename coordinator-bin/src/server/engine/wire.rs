//! Agent sockets: identify, lifecycle messages and their answers on the wire.

use agent_fsm::Capabilities;
use queue_core::{AgentId, Completion, FailOutcome, Recovery, TaskError};
use scheduler::SchedulerError;
use transport_ws::protocol::{AgentMessage, CoordinatorMessage, ErrorCode};
use transport_ws::server::{SocketEvent, SocketEventKind, CLOSE_POLICY};

use super::{Command, Conn, Engine, Output};
use crate::server::auth::Identity;
use crate::server::clock::now_ms;

impl Engine {
    pub(super) fn on_socket(&mut self, event: SocketEvent) {
        let connection = event.connection;
        match event.kind {
            SocketEventKind::Opened(handle) => {
                self.connections.insert(
                    connection,
                    Conn {
                        handle,
                        agent: None,
                    },
                );
            }
            SocketEventKind::Closed(cause) => {
                if let Some(conn) = self.connections.remove(&connection) {
                    if let Some(agent) = conn.agent {
                        tracing::info!(agent_id = %agent, ?cause, "agent disconnected");
                        if self.agent_connection.get(&agent) == Some(&connection) {
                            self.agent_connection.remove(&agent);
                        }
                        self.scheduler
                            .handle_disconnect(now_ms(), &agent, connection);
                    }
                }
            }
            SocketEventKind::Message(message) => self.on_message(connection, message),
        }
        self.drain_scheduler();
    }

    fn on_message(&mut self, connection: u64, message: AgentMessage) {
        crate::server::metrics::record_frame(message.type_name());
        let Some(conn) = self.connections.get(&connection) else {
            return;
        };
        let agent = conn.agent.clone();
        let now = now_ms();
        match (message, agent) {
            (AgentMessage::Ping {}, _) => self.emit(Output::Frame(
                connection,
                CoordinatorMessage::Pong { timestamp: now },
            )),
            (
                AgentMessage::Identify {
                    agent_id,
                    token,
                    name,
                    capabilities,
                    ..
                },
                None,
            ) => {
                let auth = self.auth.clone();
                let commands = self.commands.clone();
                let capabilities = capabilities.iter().map(|c| c.name().to_owned()).collect();
                tokio::spawn(async move {
                    let identity = auth.check(&token).await;
                    let _ = commands
                        .send(Command::IdentifyChecked {
                            connection,
                            agent_id,
                            name,
                            capabilities,
                            identity,
                        })
                        .await;
                });
            }
            (AgentMessage::Identify { .. }, Some(_)) => {
                self.protocol_error(
                    connection,
                    ErrorCode::InvalidState,
                    None,
                    "already identified",
                );
            }
            (other, None) => {
                let detail = format!("`{}` before a successful identify", other.type_name());
                self.protocol_error(connection, ErrorCode::NotIdentified, None, &detail);
            }
            (message, Some(agent)) => self.on_lifecycle(connection, &agent, message, now),
        }
    }

    pub(super) fn finish_identify(
        &mut self,
        connection: u64,
        agent_id: String,
        name: Option<String>,
        capabilities: Vec<String>,
        identity: Option<Identity>,
    ) {
        if !self.connections.contains_key(&connection) {
            return;
        }
        let code = match &identity {
            None => Some((ErrorCode::InvalidToken, "the token is unknown or revoked")),
            Some(Identity::Agent(owner)) if owner != &agent_id => Some((
                ErrorCode::TokenAgentMismatch,
                "the token belongs to another agent id",
            )),
            Some(_) => None,
        };
        if let Some((code, detail)) = code {
            tracing::warn!(agent_id, code = code.as_str(), "identify refused");
            self.protocol_error(connection, code, None, detail);
            self.emit(Output::Close(connection, CLOSE_POLICY, "identify refused"));
            return;
        }
        let agent = AgentId::from(agent_id.as_str());
        if let Some(old) = self.agent_connection.insert(agent.clone(), connection) {
            if old != connection {
                if let Some(conn) = self.connections.get_mut(&old) {
                    conn.agent = None;
                    conn.handle
                        .close(CLOSE_POLICY, "replaced by a new connection");
                }
            }
        }
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.agent = Some(agent.clone());
        }
        if let Some(name) = name {
            self.agent_names.insert(agent.clone(), name);
        }
        tracing::info!(agent_id = %agent, capabilities = ?capabilities, "agent identified");
        self.emit(Output::Frame(
            connection,
            CoordinatorMessage::Identified { agent_id },
        ));
        self.scheduler
            .handle_connect(now_ms(), agent, Capabilities::new(capabilities), connection);
    }

    fn on_lifecycle(&mut self, connection: u64, agent: &AgentId, message: AgentMessage, now: u64) {
        let tokens_used = message.tokens_used();
        let failure = message.failure_text().map(str::to_owned);
        let (task_id, result) = match message {
            AgentMessage::TaskAccepted { task_id } => {
                let r = self
                    .scheduler
                    .handle_accepted(now, agent, &task_id)
                    .map(|()| Some("accepted"));
                (task_id, r)
            }
            AgentMessage::TaskProgress { task_id, .. } => {
                let r = self
                    .scheduler
                    .handle_progress(now, agent, &task_id)
                    .map(|()| None);
                (task_id, r)
            }
            AgentMessage::TaskComplete {
                task_id,
                generation,
                result,
                ..
            } => {
                let completion = Completion {
                    result: result.to_string(),
                    tokens_used,
                };
                let r = self
                    .scheduler
                    .handle_complete(now, agent, &task_id, generation, completion)
                    .map(|()| Some("complete"));
                (task_id, r)
            }
            AgentMessage::TaskFailed {
                task_id,
                generation,
                ..
            } => {
                let error = failure.unwrap_or_default();
                let r = self
                    .scheduler
                    .handle_failed(now, agent, &task_id, generation, &error)
                    .map(|outcome| {
                        Some(match outcome {
                            FailOutcome::Retried => "retried",
                            FailOutcome::DeadLettered => "dead_letter",
                        })
                    });
                (task_id, r)
            }
            AgentMessage::TaskRejected { task_id, reason } => {
                let reason = reason.unwrap_or_else(|| "no reason given".to_owned());
                let r = self
                    .scheduler
                    .handle_rejected(now, agent, &task_id, &reason)
                    .map(|()| Some("rejected"));
                (task_id, r)
            }
            AgentMessage::TaskRecovering { task_id } => {
                let reply = match self.scheduler.handle_recovering(now, agent, &task_id) {
                    Ok(Recovery::Continue { generation }) => CoordinatorMessage::TaskContinue {
                        task_id,
                        generation,
                    },
                    Ok(Recovery::Reassign) | Err(_) => CoordinatorMessage::TaskReassign { task_id },
                };
                self.emit(Output::Frame(connection, reply));
                return;
            }
            AgentMessage::Identify { .. } | AgentMessage::Ping {} => return,
        };
        match result {
            Ok(Some(status)) => self.emit(Output::Frame(
                connection,
                CoordinatorMessage::TaskAck {
                    task_id,
                    status: status.to_owned(),
                },
            )),
            Ok(None) => {}
            Err(err) => {
                let (code, detail) = error_code(&err);
                self.protocol_error(connection, code, Some(&task_id), &detail);
            }
        }
    }

    pub(super) fn protocol_error(
        &mut self,
        connection: u64,
        code: ErrorCode,
        task_id: Option<&str>,
        detail: &str,
    ) {
        crate::server::metrics::record_protocol_error(code.as_str());
        self.emit(Output::Frame(
            connection,
            CoordinatorMessage::error(code, task_id, detail),
        ));
    }
}

/// The wire code for a refused lifecycle message.
fn error_code(err: &SchedulerError) -> (ErrorCode, String) {
    let code = match err {
        SchedulerError::Task(TaskError::StaleGeneration { .. }) => ErrorCode::StaleGeneration,
        SchedulerError::Task(TaskError::NotAssigned(_))
        | SchedulerError::Task(TaskError::NotFound(_)) => ErrorCode::NotAssigned,
        SchedulerError::UnknownAgent(_) => ErrorCode::NotIdentified,
        SchedulerError::Submit(_) => ErrorCode::InvalidMessage,
        _ => ErrorCode::InvalidState,
    };
    (code, err.to_string())
}

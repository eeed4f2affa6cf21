//! Agent sockets: identify rules, what each lifecycle message means, and the
//! wire codes of refusals.

use coordinator_agent_fsm::Capabilities;
use coordinator_queue::{AgentId, Completion, FailOutcome, Recovery, TaskError, TaskId};
use coordinator_scheduler::SchedulerError;
use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage, ErrorCode};

use super::{Conn, ConnId, Held, Identity, Notice, Output, PendingIdentify, Session, CLOSE_POLICY};

impl Session {
    /// A socket opened; it must identify before anything else, within
    /// `identify_timeout_ms`, and only `max_unidentified` may wait at once.
    pub fn handle_opened(&mut self, now_ms: u64, conn: ConnId) {
        if self.fatal.is_some() {
            return;
        }
        let waiting = self.identify_deadlines.len();
        let previous = self.conns.insert(conn, Conn::default());
        debug_assert!(previous.is_none(), "{conn} opened twice");
        if waiting >= self.config.max_unidentified {
            self.close_now(conn, "too many connections waiting to identify");
            return;
        }
        let deadline = now_ms.saturating_add(self.config.identify_timeout_ms);
        self.identify_deadlines.insert((deadline, conn));
        if let Some(open) = self.conns.get_mut(&conn) {
            open.identify_by_ms = Some(deadline);
        }
    }

    /// A socket ended (closed by either side, timed out, or broke). Its agent goes
    /// offline and its task is reclaimed, unless a newer connection took over.
    pub fn handle_closed(&mut self, now_ms: u64, conn: ConnId) {
        self.socket_ended(now_ms, conn, false);
    }

    /// The end of a socket: forget it; its agent, if it had one, goes offline.
    fn socket_ended(&mut self, now_ms: u64, conn: ConnId, too_large: bool) {
        if self.fatal.is_some() {
            return;
        }
        self.stop_waiting(conn);
        let Some(agent_id) = self.conns.remove(&conn).and_then(|c| c.agent) else {
            return;
        };
        self.ready
            .push_back(Output::Notice(Notice::AgentDisconnected {
                agent_id: agent_id.clone(),
                conn,
            }));
        self.touch_agent(&agent_id);
        if too_large {
            connection_gone(self.scheduler.handle_oversize(now_ms, &agent_id, conn));
        } else {
            connection_gone(self.scheduler.handle_disconnect(now_ms, &agent_id, conn));
        }
        self.drain_scheduler();
    }

    /// A socket's outbound queue is full: the peer does not read. It is closed and
    /// its task reclaimed, so that one slow reader cannot stall everyone.
    pub fn handle_send_overflow(&mut self, now_ms: u64, conn: ConnId) {
        if self.fatal.is_some() {
            return;
        }
        if self.conns.get(&conn).is_none_or(|c| c.closing) {
            return;
        }
        self.stop_waiting(conn);
        let Some(open) = self.conns.get_mut(&conn) else {
            return;
        };
        open.closing = true;
        let agent_id = open.agent.take();
        self.ready.push_back(Output::Close {
            conn,
            code: CLOSE_POLICY,
            reason: "outbound queue overflow".into(),
        });
        self.ready.push_back(Output::Notice(Notice::SlowConsumer {
            agent_id: agent_id.clone(),
            conn,
        }));
        if let Some(agent_id) = agent_id {
            self.touch_agent(&agent_id);
            connection_gone(self.scheduler.handle_slow_consumer(now_ms, &agent_id, conn));
            self.drain_scheduler();
        }
    }

    /// A socket was closed because its peer sent a frame over the size limit
    /// (1009). As [`Session::handle_closed`], except that the task its agent held
    /// is a counted failure with `last_error` `result_too_large` rather than a
    /// reclaim: a result that can never be delivered must not run again forever.
    pub fn handle_closed_too_large(&mut self, now_ms: u64, conn: ConnId) {
        self.socket_ended(now_ms, conn, true);
    }

    /// A well-formed message from a socket.
    pub fn handle_message(&mut self, now_ms: u64, conn: ConnId, message: AgentMessage) {
        if self.fatal.is_some() {
            return;
        }
        // A connection being closed is not listened to any more.
        let Some(open) = self.conns.get_mut(&conn).filter(|c| !c.closing) else {
            return;
        };
        let agent = open.agent.clone();
        let identifying = open.identifying.is_some();
        match (message, agent) {
            (AgentMessage::Ping {}, _) => {
                self.send(conn, CoordinatorMessage::Pong { timestamp: now_ms })
            }
            (AgentMessage::Identify { .. }, Some(_)) => {
                self.refuse(conn, ErrorCode::InvalidState, None, "already identified");
            }
            (AgentMessage::Identify { .. }, None) if identifying => {
                self.refuse(
                    conn,
                    ErrorCode::InvalidState,
                    None,
                    "an identify is already being checked",
                );
            }
            (
                AgentMessage::Identify {
                    agent_id,
                    token,
                    name,
                    capabilities,
                    current_task,
                    ..
                },
                None,
            ) => {
                if !self.role.is_leader() {
                    self.close_not_leader(conn);
                    return;
                }
                if agent_id.is_empty() {
                    self.refuse(conn, ErrorCode::InvalidMessage, None, "agent_id is empty");
                    return;
                }
                open.identifying = Some(PendingIdentify {
                    agent_id,
                    name,
                    capabilities: capabilities.iter().map(|c| c.name().to_owned()).collect(),
                    current_task: current_task.map(|c| c.task_id),
                });
                self.ready.push_back(Output::Authenticate { conn, token });
            }
            (other, None) => {
                let detail = format!("`{}` before a successful identify", other.type_name());
                self.refuse(conn, ErrorCode::NotIdentified, None, &detail);
            }
            (message, Some(agent_id)) => {
                self.touch_agent(&agent_id);
                self.on_lifecycle(now_ms, conn, &agent_id, message);
                // It has spoken: a freshly identified agent can be offered work.
                self.scheduler.handle_agent_message(now_ms, &agent_id);
            }
        }
        self.drain_scheduler();
    }

    /// The answer to an [`Output::Authenticate`]: who the token speaks for, or
    /// `None` if it is unknown or revoked.
    pub fn handle_identity(&mut self, now_ms: u64, conn: ConnId, identity: Option<Identity>) {
        if self.fatal.is_some() {
            return;
        }
        let Some(pending) = self.conns.get_mut(&conn).and_then(|c| c.identifying.take()) else {
            return;
        };
        let refusal = match &identity {
            None => Some((ErrorCode::InvalidToken, "the token is unknown or revoked")),
            Some(Identity::Agent(owner)) if owner != &pending.agent_id => Some((
                ErrorCode::TokenAgentMismatch,
                "the token belongs to another agent id",
            )),
            Some(_) => None,
        };
        if let Some((code, detail)) = refusal {
            self.ready
                .push_back(Output::Notice(Notice::IdentifyRefused {
                    agent_id: pending.agent_id,
                    code,
                }));
            self.refuse(conn, code, None, detail);
            self.stop_waiting(conn);
            if let Some(open) = self.conns.get_mut(&conn) {
                open.closing = true;
            }
            self.gate.hold(Held::Out(Output::Close {
                conn,
                code: CLOSE_POLICY,
                reason: "identify refused".into(),
            }));
            return;
        }
        let agent_id = AgentId::from(pending.agent_id.as_str());
        let previous = self
            .scheduler
            .agent(&AgentId::from(agent_id.as_str()))
            .and_then(|view| view.connection)
            .filter(|old| *old != conn);
        if let Some(old) = previous {
            if let Some(old_conn) = self.conns.get_mut(&old) {
                old_conn.agent = None;
                old_conn.closing = true;
                // Behind what was promised to it.
                self.gate.hold(Held::Out(Output::Close {
                    conn: old,
                    code: CLOSE_POLICY,
                    reason: "replaced by a new connection".into(),
                }));
            }
        }
        self.stop_waiting(conn);
        if let Some(open) = self.conns.get_mut(&conn) {
            open.agent = Some(agent_id.clone());
            open.identity = identity;
        }
        if let Some(name) = pending.name {
            self.names.insert(agent_id.clone(), name);
        }
        self.ready
            .push_back(Output::Notice(Notice::AgentIdentified {
                agent_id: agent_id.clone(),
                conn,
            }));
        self.send(
            conn,
            CoordinatorMessage::Identified {
                agent_id: pending.agent_id,
            },
        );
        self.touch_agent(&agent_id);
        self.scheduler.handle_connect(
            now_ms,
            agent_id.clone(),
            Capabilities::new(pending.capabilities),
            conn,
        );
        if let Some(task_id) = pending.current_task {
            // As `task_recovering` right after identify.
            self.on_lifecycle(
                now_ms,
                conn,
                &agent_id,
                AgentMessage::TaskRecovering { task_id },
            );
            self.scheduler.handle_agent_message(now_ms, &agent_id);
        }
        self.drain_scheduler();
    }

    fn on_lifecycle(&mut self, now_ms: u64, conn: ConnId, agent: &AgentId, message: AgentMessage) {
        if let AgentMessage::TaskComplete { task_id, .. }
        | AgentMessage::TaskFailed { task_id, .. }
        | AgentMessage::TaskRejected { task_id, .. } = &message
        {
            // The awaited report on a task cancelled under the agent: it changes
            // nothing, and the agent can have work again.
            if self.scheduler.handle_report_after_cancel(
                now_ms,
                agent,
                &TaskId::from(task_id.as_str()),
            ) {
                let ack = CoordinatorMessage::TaskAck {
                    task_id: task_id.clone(),
                    status: "cancelled".to_owned(),
                };
                self.stage_changes();
                self.send(conn, ack);
                self.hold_actions();
                return;
            }
        }
        let tokens_used = message.tokens_used();
        let failure = message.failure_text().map(str::to_owned);
        let (task_id, result) = match message {
            AgentMessage::TaskAccepted { task_id } => {
                let r = self
                    .scheduler
                    .handle_accepted(now_ms, agent, &TaskId::from(task_id.as_str()))
                    .map(|()| Some("accepted"));
                (task_id, r)
            }
            AgentMessage::TaskProgress { task_id, .. } => {
                let r = self
                    .scheduler
                    .handle_progress(now_ms, agent, &TaskId::from(task_id.as_str()))
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
                    .handle_complete(
                        now_ms,
                        agent,
                        &TaskId::from(task_id.as_str()),
                        generation,
                        completion,
                    )
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
                    .handle_failed(
                        now_ms,
                        agent,
                        &TaskId::from(task_id.as_str()),
                        generation,
                        &error,
                    )
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
                    .handle_rejected(now_ms, agent, &TaskId::from(task_id.as_str()), &reason)
                    .map(|()| Some("rejected"));
                (task_id, r)
            }
            AgentMessage::TaskRecovering { task_id } => {
                let reply = match self.scheduler.handle_recovering(
                    now_ms,
                    agent,
                    &TaskId::from(task_id.as_str()),
                ) {
                    Ok(Recovery::Continue { generation }) => CoordinatorMessage::TaskContinue {
                        task_id,
                        generation,
                    },
                    Ok(Recovery::Reassign) | Err(_) => CoordinatorMessage::TaskReassign { task_id },
                };
                self.stage_changes();
                self.send(conn, reply);
                self.hold_actions();
                return;
            }
            AgentMessage::Identify { .. } | AgentMessage::Ping {} => return,
        };
        // The acknowledgement waits for the records of what it acknowledges, and
        // leaves before the messages those records brought (the next assignment).
        self.stage_changes();
        match result {
            Ok(Some(status)) => self.send(
                conn,
                CoordinatorMessage::TaskAck {
                    task_id,
                    status: status.to_owned(),
                },
            ),
            Ok(None) => {}
            Err(err) => {
                let code = error_code(&err);
                self.refuse(conn, code, Some(&task_id), &err.to_string());
            }
        }
        self.hold_actions();
    }

    /// Sends an `error` frame (behind the current changes, like every frame).
    fn refuse(&mut self, conn: ConnId, code: ErrorCode, task_id: Option<&str>, detail: &str) {
        self.ready
            .push_back(Output::Notice(Notice::ProtocolError { code }));
        self.send(conn, CoordinatorMessage::error(code, task_id, detail));
    }
}

/// The wire code for a refused lifecycle message.
pub(crate) fn error_code(err: &SchedulerError) -> ErrorCode {
    match err {
        SchedulerError::Task(task) => match task {
            TaskError::StaleGeneration { .. } => ErrorCode::StaleGeneration,
            TaskError::NotAssigned(_) | TaskError::NotFound(_) => ErrorCode::NotAssigned,
            TaskError::WrongStatus { .. } => ErrorCode::InvalidState,
            // Variants the queue may add later: refused, so the state is invalid.
            _ => ErrorCode::InvalidState,
        },
        SchedulerError::Submit(_) => ErrorCode::InvalidMessage,
        SchedulerError::Agent(_) => ErrorCode::InvalidState,
        SchedulerError::UnknownAgent(_) => ErrorCode::NotIdentified,
        // Variants the scheduler may add later.
        _ => ErrorCode::InvalidState,
    }
}

/// The scheduler's answer to "this agent's connection is gone". A connection
/// that no longer speaks for its agent changed nothing and needs nothing more:
/// the newer connection is the agent's (the session forgets the agent of a
/// replaced connection, so this is not expected, but it is harmless). Any other
/// refusal would mean the session reported an agent the scheduler never saw.
pub(super) fn connection_gone(result: Result<(), SchedulerError>) {
    match result {
        Ok(()) | Err(SchedulerError::StaleConnection { .. }) => {}
        Err(e) => debug_assert!(false, "a connection's agent is known to the scheduler: {e}"),
    }
}

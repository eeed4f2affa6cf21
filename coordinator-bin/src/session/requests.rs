//! Requests from the HTTP side: what each one means, decided here and answered
//! only after the commit of what it changed.

use coordinator_queue::{IdHashState, IdSet, Status, TaskError, TaskId};
use coordinator_scheduler::SchedulerError;

use super::api::{Answer, Receipt, Refusal, RefusalKind, Request};
use super::options::{is_duplicate, receipt_of, Lookup};
use super::views::{agent_flags, AgentInfo, DashboardSnapshot};
use super::{
    ConnId, Held, Identity, LoadFor, Notice, Output, RequestId, Session, TokenWrite, CLOSE_POLICY,
};

/// The longest `Retry-After` a refused submission is told, in seconds.
const MAX_RETRY_AFTER_S: u64 = 60;

impl Session {
    /// A request; its [`Output::Reply`] comes out once what it changed is committed.
    pub fn handle_request(&mut self, now_ms: u64, request: RequestId, body: Request) {
        if self.fatal.is_some() || self.refuse_not_leader(request) {
            return;
        }
        let answer = match body {
            Request::Submit { tasks } => match self.start_submit(now_ms, request, tasks) {
                Some(answer) => answer,
                None => return,
            },
            Request::Cancel { task_id, stored } => {
                let live = self.scheduler.queue().get(&TaskId::from(task_id.as_str()));
                if stored == Some(Status::Scheduled) && live.is_none() {
                    // Left in storage (beyond the window of scheduled tasks
                    // in memory): cancelled from its record, read after the
                    // commits before this request.
                    self.loading
                        .insert(request, (task_id.clone(), LoadFor::Cancel));
                    self.gate.hold(Held::Out(Output::Load { request, task_id }));
                    return;
                }
                self.cancel(now_ms, &task_id, stored)
            }
            Request::Retry { task_id } => match self.start_retry(now_ms, &task_id) {
                Ok(()) => {
                    self.loading
                        .insert(request, (task_id.clone(), LoadFor::Retry));
                    self.gate.hold(Held::Out(Output::Load { request, task_id }));
                    return;
                }
                Err(refusal) => Answer::Refused(refusal),
            },
            Request::CreateToken { identity, hash } => {
                self.gate.stage_token(TokenWrite::Create {
                    identity,
                    hash,
                    created_at_ms: now_ms,
                });
                Answer::TokenCreated
            }
            Request::RevokeTokens {
                identity,
                live_ids,
                live_admins,
            } => self.revoke(now_ms, identity, live_ids, live_admins),
            Request::Drain { agent_id, drained } => {
                self.drain(now_ms, request, &agent_id, drained);
                return;
            }
            // Reads of the live state change nothing: answered at once.
            Request::Agents => {
                let answer = Answer::Agents(self.agent_infos());
                self.ready.push_back(Output::Reply { request, answer });
                return;
            }
            Request::Dashboard => {
                let answer = Answer::Dashboard(Box::new(self.dashboard(now_ms)));
                self.ready.push_back(Output::Reply { request, answer });
                return;
            }
        };
        self.drain_scheduler();
        self.gate.hold(Held::Out(Output::Reply { request, answer }));
    }

    /// Revokes the tokens of one kind and name, and closes the sockets they
    /// authenticated once the revocation is committed.
    fn revoke(
        &mut self,
        now_ms: u64,
        identity: Identity,
        live_ids: Vec<i64>,
        live_admins: usize,
    ) -> Answer {
        if live_ids.is_empty() {
            return refused(
                RefusalKind::NotFound,
                format!(
                    "no live {} token for `{}`",
                    identity.kind(),
                    identity.name()
                ),
            );
        }
        if matches!(identity, Identity::Admin(_)) && live_admins <= live_ids.len() {
            return refused(
                RefusalKind::Conflict,
                "this would revoke the last admin token; use `coordinator token revoke --admin --force` on the database",
            );
        }
        let n = live_ids.len();
        self.gate.stage_token(TokenWrite::Revoke {
            ids: live_ids,
            revoked_at_ms: now_ms,
        });
        let mut revoked: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && c.identity.as_ref() == Some(&identity))
            .map(|(conn, _)| *conn)
            .collect();
        revoked.sort();
        for conn in revoked {
            let Some(open) = self.conns.get_mut(&conn) else {
                continue;
            };
            open.closing = true;
            // Revocation bites at once: the agent is gone as for a disconnect (its
            // task is reclaimed under the usual rules), whatever its socket does.
            if let Some(agent_id) = open.agent.take() {
                super::wire::connection_gone(
                    self.scheduler.handle_disconnect(now_ms, &agent_id, conn),
                );
                self.touch_agent(&agent_id);
            }
            self.gate.hold(Held::Out(Output::Close {
                conn,
                code: CLOSE_POLICY,
                reason: "token_revoked".into(),
            }));
        }
        Answer::TokensRevoked(n)
    }

    /// All tasks or none: every task is checked before the first is queued.
    /// Checked in this order: metadata sizes (413) before anything else, then
    /// each task's fields (422), then room in the queue (429). A task whose
    /// idempotency key its submitter used before is that first task
    /// (`duplicate`), and nothing is created for it.
    pub(crate) fn submit(
        &mut self,
        now_ms: u64,
        tasks: Vec<coordinator_queue::NewTask>,
        lookup: &Lookup,
    ) -> Answer {
        let numbered = tasks.len() > 1;
        let max_metadata_bytes = self.config.max_metadata_bytes;
        let too_large = tasks
            .iter()
            .position(|t| t.metadata.len() > max_metadata_bytes);
        if let Some(i) = too_large {
            let detail = format!(
                "metadata is {} bytes, over the limit of {max_metadata_bytes}",
                tasks[i].metadata.len()
            );
            let detail = if numbered {
                format!("task {i}: {detail}")
            } else {
                detail
            };
            return self.refuse_admission(RefusalKind::MetadataTooLarge, detail);
        }
        let resolved = match self.resolve_options(tasks, lookup) {
            Ok(resolved) => resolved,
            Err(detail) => return refused(RefusalKind::Invalid, detail),
        };
        let mut ids = IdSet::with_capacity_and_hasher(resolved.len(), IdHashState::new());
        for (i, task) in resolved.iter().enumerate() {
            let Ok(task) = task else {
                continue;
            };
            let checked = self
                .scheduler
                .queue()
                .check_submission(now_ms, task)
                .map_err(|e| {
                    debug_assert!(!is_duplicate(&e), "repeats are resolved first");
                    e.to_string()
                })
                .and_then(|()| {
                    if ids.insert(task.id.clone()) {
                        Ok(())
                    } else {
                        Err(format!("the id `{}` appears twice in the batch", task.id))
                    }
                });
            if let Err(detail) = checked {
                let detail = if numbered {
                    format!("task {i}: {detail}")
                } else {
                    detail
                };
                return refused(RefusalKind::Invalid, detail);
            }
        }
        let n_new = resolved.iter().filter(|t| t.is_ok()).count();
        if let Err(refusal) = self.check_room(now_ms, n_new) {
            return refusal;
        }
        let mut receipts = Vec::with_capacity(resolved.len());
        for task in resolved {
            let task = match task {
                Ok(task) => task,
                Err(first) => {
                    receipts.push(first);
                    continue;
                }
            };
            let task_id = task.id.clone();
            if let Err(e) = self.scheduler.handle_submit(now_ms, task) {
                // Checked above; reaching this is a bug in the check.
                debug_assert!(false, "a checked submission was refused: {e}");
                return refused(RefusalKind::Invalid, e.to_string());
            }
            let receipt = match self.scheduler.queue().get(&task_id) {
                Some(live) => receipt_of(live, false),
                None => Receipt {
                    task_id: task_id.to_string(),
                    priority: "normal",
                    created_at_ms: now_ms,
                    status: "queued",
                    duplicate: false,
                },
            };
            receipts.push(Receipt {
                created_at_ms: now_ms,
                ..receipt
            });
        }
        Answer::Submitted(receipts)
    }

    fn cancel(&mut self, now_ms: u64, task_id: &str, stored: Option<Status>) -> Answer {
        match self.scheduler.handle_cancel(now_ms, &TaskId::from(task_id)) {
            Ok(()) => Answer::Cancelled,
            Err(SchedulerError::Task(TaskError::NotFound(_))) => match stored {
                None => refused(RefusalKind::NotFound, "no task with this id"),
                Some(status) if status.is_final() => refused(
                    RefusalKind::Conflict,
                    format!("the task is {status}, which cannot be cancelled"),
                ),
                // Read while live; it has reached its end since.
                Some(_) => refused(
                    RefusalKind::Conflict,
                    "the task has just finished and cannot be cancelled",
                ),
            },
            Err(e) => refused(RefusalKind::Conflict, e.to_string()),
        }
    }

    /// A cancel of a task that was scheduled and only in storage when the
    /// request came, from its `stored` record read since.
    fn cancel_stored(&mut self, now_ms: u64, stored: Option<coordinator_queue::Task>) -> Answer {
        let Some(record) = stored else {
            return refused(RefusalKind::NotFound, "no task with this id");
        };
        if record.status().is_final() {
            return refused(
                RefusalKind::Conflict,
                format!("the task is {}, which cannot be cancelled", record.status()),
            );
        }
        if self.ended_while_loading.contains(record.id()) {
            return refused(
                RefusalKind::Conflict,
                "the task has just finished and cannot be cancelled",
            );
        }
        match self.scheduler.handle_cancel_stored(now_ms, record) {
            Ok(()) => Answer::Cancelled,
            Err(SchedulerError::Task(TaskError::NotFound(_))) => refused(
                RefusalKind::Conflict,
                "the task has just finished and cannot be cancelled",
            ),
            Err(e) => refused(RefusalKind::Conflict, e.to_string()),
        }
    }

    /// The stored record of a retry's task, asked for with [`Output::Load`]
    /// (`Err` if it could not be read).
    pub fn handle_loaded(
        &mut self,
        now_ms: u64,
        request: RequestId,
        stored: Result<Option<coordinator_queue::Task>, String>,
    ) {
        if self.fatal.is_some() {
            return;
        }
        let Some((task_id, why)) = self.loading.remove(&request) else {
            return;
        };
        let answer = match (stored, why) {
            (Ok(stored), LoadFor::Retry) => self.retry(now_ms, &task_id, stored),
            (Ok(stored), LoadFor::Cancel) => self.cancel_stored(now_ms, stored),
            (Err(detail), _) => refused(RefusalKind::Internal, detail),
        };
        if !self
            .loading
            .values()
            .any(|(_, why)| *why == LoadFor::Cancel)
        {
            self.ended_while_loading.clear();
        }
        self.drain_scheduler();
        self.gate.hold(Held::Out(Output::Reply { request, answer }));
    }

    /// Room for `n` more queued tasks under `max_queued`, or the refusal
    /// (429) with how long to wait.
    fn check_room(&mut self, now_ms: u64, n: usize) -> Result<(), Answer> {
        let queued = self.scheduler.queue().queued_len();
        let max_queued = self.config.max_queued;
        let excess = (queued + n).saturating_sub(max_queued);
        if excess == 0 {
            return Ok(());
        }
        let retry_after_s = self.retry_after_s(now_ms, excess);
        let detail = format!(
            "the queue holds {queued} tasks and takes at most {max_queued}; {n} more do not fit, try again in {retry_after_s} s"
        );
        Err(self.refuse_admission(RefusalKind::QueueFull { retry_after_s }, detail))
    }

    /// How long a client refused for a full queue should wait: the time the
    /// completions of the last minute would take to make room for `excess`
    /// tasks, from 1 s to [`MAX_RETRY_AFTER_S`] (the longest when nothing
    /// completed).
    fn retry_after_s(&self, now_ms: u64, excess: usize) -> u64 {
        let per_minute = self.activity.last_minute(now_ms);
        if per_minute == 0 {
            return MAX_RETRY_AFTER_S;
        }
        (excess as u64)
            .saturating_mul(60)
            .div_ceil(per_minute)
            .clamp(1, MAX_RETRY_AFTER_S)
    }

    /// A refusal by admission control, counted.
    fn refuse_admission(&mut self, kind: RefusalKind, detail: String) -> Answer {
        let reason = match kind {
            RefusalKind::QueueFull { .. } => "queue_full",
            _ => "metadata_too_large",
        };
        self.ready
            .push_back(Output::Notice(Notice::SubmitRefused { reason }));
        refused(kind, detail)
    }

    /// A retry may only start for a task that is not live and not being
    /// retried, and while the queue has room for it.
    fn start_retry(&mut self, now_ms: u64, task_id: &str) -> Result<(), Refusal> {
        if let Some(live) = self.scheduler.queue().get(&TaskId::from(task_id)) {
            return Err(Refusal::new(
                RefusalKind::Conflict,
                format!("the task is {}, not in the dead letter", live.status()),
            ));
        }
        if self.loading.values().any(|(id, _)| id == task_id) {
            return Err(Refusal::new(
                RefusalKind::Conflict,
                "a retry of this task is already in progress",
            ));
        }
        match self.check_room(now_ms, 1) {
            Err(Answer::Refused(refusal)) => Err(refusal),
            _ => Ok(()),
        }
    }

    fn retry(
        &mut self,
        now_ms: u64,
        task_id: &str,
        stored: Option<coordinator_queue::Task>,
    ) -> Answer {
        let Some(record) = stored else {
            return refused(RefusalKind::NotFound, "no task with this id");
        };
        // Nothing else can make a final task live again while this retry holds it.
        debug_assert!(self.scheduler.queue().get(&TaskId::from(task_id)).is_none());
        if record.status() != Status::DeadLetter {
            return refused(
                RefusalKind::Conflict,
                format!("the task is {}, not in the dead letter", record.status()),
            );
        }
        match self.scheduler.handle_retry(now_ms, record) {
            Ok(()) => Answer::Retried,
            Err(e) => refused(RefusalKind::Conflict, e.to_string()),
        }
    }

    /// Every known agent, by id.
    pub fn agent_infos(&self) -> Vec<AgentInfo> {
        let mut infos: Vec<AgentInfo> = self
            .scheduler
            .agents()
            .map(|view| {
                let agent = view.agent;
                AgentInfo {
                    agent_id: agent.id().to_string(),
                    name: self.names.get(agent.id()).cloned(),
                    state: agent.state().as_str(),
                    connected: view.connected,
                    current_task: agent.task().map(|h| h.task_id.to_string()),
                    generation: agent.task().map(|h| h.generation),
                    capabilities: agent.capabilities().names().to_vec(),
                    flags: agent_flags(&view),
                    state_since_ms: agent.state_since_ms(),
                    awaiting_recovery: view.awaiting_recovery,
                    drained: view.drained,
                    tally: self.tallies.agent(agent.id().as_str()),
                }
            })
            .collect();
        infos.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        infos
    }

    /// The dashboard's snapshot at `now_ms`.
    pub fn dashboard(&self, now_ms: u64) -> DashboardSnapshot {
        let queue = self.scheduler.queue();
        let stats = queue.stats();
        DashboardSnapshot {
            now_ms,
            uptime_ms: now_ms.saturating_sub(self.started_ms),
            queue_depth: queue.queued_by_lane(),
            queued: stats.status(Status::Queued),
            assigned: stats.status(Status::Assigned),
            working: stats.status(Status::Working),
            agents: self.agent_infos(),
            recent_completions: self.activity.recent(),
            completed_last_minute: self.activity.last_minute(now_ms),
            unroutable: self.scheduler.unroutable(),
            chart: self.tallies.chart(now_ms, queue.queued_by_lane()),
        }
    }
}

fn refused(kind: RefusalKind, detail: impl Into<String>) -> Answer {
    Answer::Refused(Refusal::new(kind, detail))
}

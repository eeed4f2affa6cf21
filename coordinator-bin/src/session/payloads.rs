//! Frames for agents once their changes are committed, and the `task_assign`s
//! that wait for their description and metadata to be read back from storage
//! (the queue keeps long texts out of memory).
//!
//! An assignment whose texts are stored asks for them with
//! [`Output::LoadPayload`]; until they arrive, every later frame for the same
//! agent waits behind it, so an agent never hears `task_cancel` or
//! `task_continue` before the `task_assign` they follow. A dependent task's
//! assignment is read back the same way, with its dependencies' results,
//! which join its metadata under `dependencies`. Texts that cannot be
//! read make the assignment a counted failure of the task; a store that no
//! longer has the task's record at all stops the session.

use std::collections::VecDeque;

use coordinator_queue::{AgentId, Payload, TaskId};
use coordinator_scheduler::Assignment;

use super::options::with_dependency_results;
use super::{Fatal, Frame, LoadedPayload, Notice, Output, Session};

/// A `task_assign` waiting for its texts, and the frames for the same agent
/// released after it.
#[derive(Debug)]
pub(crate) struct AwaitingPayload {
    assignment: Assignment,
    behind: VecDeque<Frame>,
}

impl Session {
    /// A frame for an agent whose changes are committed. Returns its
    /// [`Output::Send`] on the agent's connection now; nothing if it is an
    /// assignment that is history, if the agent has no connection, or if an
    /// earlier assignment for the agent waits for its texts (it then waits
    /// behind it); or, for an assignment whose texts are in storage, the
    /// [`Output::LoadPayload`] that asks for them (none if they are asked for
    /// already).
    pub(crate) fn release_to_agent(&mut self, agent_id: AgentId, frame: Frame) -> Option<Output> {
        if let Some(awaiting) = self.awaiting_payload.get_mut(&agent_id) {
            awaiting.behind.push_back(frame);
            return None;
        }
        if let Frame::Assign(assignment) = frame {
            // Reclaimed (and maybe assigned again) while waiting for its commit
            // or its texts: this assignment is history, not work to start.
            if !self.is_current(&assignment) {
                return None;
            }
            // A dependent's metadata carries its dependencies' results, which
            // only storage has.
            let has_dependencies = self
                .scheduler
                .queue()
                .get(&assignment.task_id)
                .is_some_and(|t| !t.depends_on().is_empty());
            if assignment.texts().is_none() || has_dependencies {
                let task_id = assignment.task_id.clone();
                let asked = self
                    .awaiting_payload
                    .values()
                    .any(|a| a.assignment.task_id == task_id);
                self.awaiting_payload.insert(
                    agent_id,
                    AwaitingPayload {
                        assignment,
                        behind: VecDeque::new(),
                    },
                );
                return (!asked).then_some(Output::LoadPayload { task_id });
            }
            return self.send_to_agent(&agent_id, Frame::Assign(assignment));
        }
        self.send_to_agent(&agent_id, frame)
    }

    /// The stored description and metadata of `task_id`, asked for with
    /// [`Output::LoadPayload`] (`Ok(None)` if no record was found, `Err` if it
    /// could not be read or is damaged). The assignments waiting for them
    /// leave, and the frames behind them. Texts that could not be read make
    /// each assignment still current a counted failure of its task
    /// (`payload_unreadable`: retried or dead-lettered, its agent free again);
    /// a store without the record of a task still assigned stops the session
    /// ([`Fatal::PayloadUnreadable`]).
    pub fn handle_payload_loaded(
        &mut self,
        now_ms: u64,
        task_id: &TaskId,
        loaded: Result<Option<LoadedPayload>, String>,
    ) {
        if self.fatal.is_some() {
            return;
        }
        let mut agents: Vec<AgentId> = self
            .awaiting_payload
            .iter()
            .filter(|(_, a)| a.assignment.task_id == *task_id)
            .map(|(agent_id, _)| agent_id.clone())
            .collect();
        agents.sort();
        let texts = match loaded {
            Ok(Some(texts)) => Some((
                Payload::from(texts.description),
                Payload::from(with_dependency_results(
                    &texts.metadata,
                    &texts.dependencies,
                )),
            )),
            Ok(None) => {
                if self.any_current(&agents) {
                    self.fail(Fatal::PayloadUnreadable {
                        task_id: task_id.clone(),
                        error: "no stored record".into(),
                    });
                }
                None
            }
            Err(error) => {
                self.undeliverable(now_ms, &agents, task_id, &error);
                None
            }
        };
        if self.fatal.is_some() {
            return;
        }
        for agent_id in agents {
            let Some(awaiting) = self.awaiting_payload.remove(&agent_id) else {
                continue;
            };
            // Without texts, what waited is history by now: dropped.
            let assign = texts.as_ref().map(|(description, metadata)| {
                let mut assignment = awaiting.assignment;
                assignment.description = description.clone();
                assignment.metadata = metadata.clone();
                Frame::Assign(assignment)
            });
            // With its texts now: sent as it is (not asked for again), if current.
            if let Some(Frame::Assign(assignment)) = assign {
                if self.is_current(&assignment) {
                    let output = self.send_to_agent(&agent_id, Frame::Assign(assignment));
                    self.ready.extend(output);
                }
            }
            for frame in awaiting.behind {
                if let Some(output) = self.release_to_agent(agent_id.clone(), frame) {
                    self.ready.push_back(output);
                }
            }
        }
        self.drain_scheduler();
    }

    /// True if an assignment still current waits among `agents`.
    fn any_current(&self, agents: &[AgentId]) -> bool {
        agents.iter().any(|agent_id| {
            self.awaiting_payload
                .get(agent_id)
                .is_some_and(|a| self.is_current(&a.assignment))
        })
    }

    /// The texts of `task_id` could not be read: each assignment still current
    /// that waits for them is a counted failure of the task.
    fn undeliverable(&mut self, now_ms: u64, agents: &[AgentId], task_id: &TaskId, error: &str) {
        for agent_id in agents {
            let Some(generation) = self
                .awaiting_payload
                .get(agent_id)
                .filter(|a| self.is_current(&a.assignment))
                .map(|a| a.assignment.generation)
            else {
                continue;
            };
            self.ready
                .push_back(Output::Notice(Notice::AssignUndeliverable {
                    task_id: task_id.clone(),
                    agent_id: agent_id.clone(),
                    error: error.to_owned(),
                }));
            let failed = self.scheduler.handle_undeliverable(
                now_ms,
                agent_id,
                &TaskId::from(task_id.as_str()),
                generation,
            );
            debug_assert!(failed.is_ok(), "a current assignment: {failed:?}");
        }
    }

    /// True while the task is still assigned to that agent at that generation.
    fn is_current(&self, assignment: &Assignment) -> bool {
        self.scheduler
            .queue()
            .get(&TaskId::from(assignment.task_id.as_str()))
            .is_some_and(|t| {
                t.generation() == assignment.generation
                    && t.assigned_to() == Some(&assignment.agent_id)
            })
    }

    /// A frame on the agent's connection now (which may be newer than when the
    /// frame was made), if it has one.
    fn send_to_agent(&self, agent_id: &AgentId, frame: Frame) -> Option<Output> {
        let conn = self
            .scheduler
            .agent(&AgentId::from(agent_id.as_str()))
            .and_then(|view| view.connection)?;
        self.conns
            .contains_key(&conn)
            .then_some(Output::Send { conn, frame })
    }
}

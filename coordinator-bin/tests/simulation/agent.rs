//! Simulated agents: they take one task at a time, report after a while, keep
//! their outcome until it is acknowledged, and misbehave in the ways real agents
//! do: they restart with or without their state, lose their network, send reports
//! twice or late, hang, ignore `task_cancel`, or do not say `task_recovering`
//! after a mere reconnect.

use coordinator_bin::session::Frame;
use coordinator_transport::protocol::{
    AgentMessage, CapabilityEntry, CoordinatorMessage, ErrorCode,
};

use crate::rng::Rng;
use crate::world::{Event, Violation, World};

/// The task an agent is working on.
#[derive(Debug, Clone)]
pub struct Work {
    pub task_id: String,
    pub generation: u64,
    pub done_at: u64,
    pub succeeds: bool,
}

/// An outcome kept until the coordinator acknowledges it.
#[derive(Debug, Clone)]
pub struct Report {
    pub task_id: String,
    pub generation: u64,
    pub succeeds: bool,
}

#[derive(Debug)]
pub struct SimAgent {
    pub id: String,
    pub alive: bool,
    pub conn: Option<coordinator_bin::session::ConnId>,
    pub identified: bool,
    pub work: Option<Work>,
    pub outbox: Option<Report>,
    /// Invalidates older wake-ups.
    pub wake: u64,
    /// Keeps its task across its own restarts (a state file).
    keeps_state: bool,
    /// Keeps working after `task_cancel`.
    ignores_cancel: bool,
    /// Says `task_recovering` after a reconnect too, not only after a restart.
    recovers_on_reconnect: bool,
    /// Restarted since its last identify (with its state).
    restarted: bool,
    gpu: bool,
    /// Its current work does not finish (until faults stop).
    pub hang: bool,
}

impl SimAgent {
    pub fn new(index: usize, rng: &mut Rng) -> SimAgent {
        SimAgent {
            id: format!("agent-{index}"),
            alive: true,
            conn: None,
            identified: false,
            work: None,
            outbox: None,
            wake: 0,
            keeps_state: rng.chance(700),
            ignores_cancel: rng.chance(300),
            recovers_on_reconnect: rng.chance(500),
            restarted: false,
            gpu: index == 0 || rng.chance(300),
            hang: false,
        }
    }

    pub fn token(&self) -> String {
        format!("token-of-{}", self.id)
    }

    pub fn capabilities(&self) -> Vec<CapabilityEntry> {
        let mut caps = vec![CapabilityEntry::Name("linux".into())];
        if self.gpu {
            caps.push(CapabilityEntry::Name("gpu".into()));
        }
        caps
    }

    /// The generation the agent believes it holds `task_id` at.
    pub fn generation_of(&self, task_id: &str) -> Option<u64> {
        self.work
            .as_ref()
            .filter(|w| w.task_id == task_id)
            .map(|w| w.generation)
            .or_else(|| {
                self.outbox
                    .as_ref()
                    .filter(|r| r.task_id == task_id)
                    .map(|r| r.generation)
            })
    }
}

impl World {
    /// The agent's own timer: (re)start, reconnect, report, or show progress.
    pub fn agent_wakes(&mut self, agent: usize) -> Result<(), Violation> {
        if !self.agents[agent].alive {
            self.note(|| format!("agent {agent} restarts"));
            let a = &mut self.agents[agent];
            a.alive = true;
            if a.keeps_state && self.rng.chance(800) {
                a.restarted = a.work.is_some() || a.outbox.is_some();
            } else {
                a.work = None;
                a.outbox = None;
                a.restarted = false;
            }
        }
        if self.agents[agent].conn.is_none() {
            let token = if self.rng.chance(100) {
                crate::world::ADMIN_TOKEN.to_owned()
            } else {
                self.agents[agent].token()
            };
            self.open_connection(agent, token);
            if self.rng.chance(30) {
                // Identify again at once: refused, changes nothing.
                let id = self.agents[agent].id.clone();
                let token = self.agents[agent].token();
                self.agent_sends(
                    agent,
                    AgentMessage::Identify {
                        agent_id: id,
                        token,
                        name: None,
                        capabilities: vec![],
                        status: None,
                        client_type: None,
                        current_task: None,
                    },
                );
            }
            return Ok(());
        }
        if !self.agents[agent].identified {
            return Ok(());
        }
        let now = self.now;
        let Some(work) = self.agents[agent].work.clone() else {
            return Ok(());
        };
        if work.done_at <= now && !self.agents[agent].hang {
            let report = Report {
                task_id: work.task_id,
                generation: work.generation,
                succeeds: work.succeeds,
            };
            self.agents[agent].work = None;
            self.agents[agent].outbox = Some(report.clone());
            self.send_report(agent, &report);
            if self.faults && self.rng.chance(100) {
                // The same report twice in a row.
                self.send_report(agent, &report);
            }
            if self.faults && self.rng.chance(100) {
                // And once more much later, when it may well be stale.
                let delay = self.rng.between(1_000, 15_000);
                self.schedule(delay, Event::LateReport { agent, report });
            }
        } else {
            let task_id = work.task_id;
            self.agent_sends(
                agent,
                AgentMessage::TaskProgress {
                    task_id,
                    progress: None,
                },
            );
            let next = if self.agents[agent].hang {
                self.rng.between(1_000, 3_000)
            } else {
                self.rng
                    .between(200, 2_000)
                    .min(work.done_at.saturating_sub(now).max(1))
            };
            self.wake_agent(agent, next);
        }
        Ok(())
    }

    pub fn send_report(&mut self, agent: usize, report: &Report) {
        self.reports_sent
            .insert((report.task_id.clone(), report.generation, report.succeeds));
        let message = if report.succeeds {
            AgentMessage::TaskComplete {
                task_id: report.task_id.clone(),
                generation: report.generation,
                result: serde_json::json!({"ok": true}),
                tokens_used: Some(7),
            }
        } else {
            AgentMessage::TaskFailed {
                task_id: report.task_id.clone(),
                generation: report.generation,
                error: Some("simulated failure".into()),
                reason: None,
            }
        };
        self.agent_sends(agent, message);
    }

    /// A frame reaches the agent.
    pub fn agent_receives(&mut self, agent: usize, frame: Frame) -> Result<(), Violation> {
        let message = match frame {
            Frame::Assign(a) => {
                let task_id = a.task_id.to_string();
                let busy = self.agents[agent]
                    .work
                    .as_ref()
                    .is_some_and(|w| w.task_id != task_id)
                    || self.agents[agent]
                        .outbox
                        .as_ref()
                        .is_some_and(|r| r.task_id != task_id);
                if busy {
                    self.agent_sends(
                        agent,
                        AgentMessage::TaskRejected {
                            task_id,
                            reason: Some("busy".into()),
                        },
                    );
                    return Ok(());
                }
                let duration = self.rng.between(100, 6_000);
                let succeeds = self.rng.chance(800);
                self.agents[agent].outbox = None;
                self.agents[agent].work = Some(Work {
                    task_id: task_id.clone(),
                    generation: a.generation,
                    done_at: self.now + duration,
                    succeeds,
                });
                self.agent_sends(agent, AgentMessage::TaskAccepted { task_id });
                let first = self.rng.between(50, 1_500).min(duration);
                self.wake_agent(agent, first);
                return Ok(());
            }
            Frame::Message(message) => message,
        };
        match message {
            CoordinatorMessage::Identified { .. } => {
                self.agents[agent].identified = true;
                let a = &self.agents[agent];
                let recover = a.restarted || a.recovers_on_reconnect;
                let held = a
                    .work
                    .as_ref()
                    .map(|w| w.task_id.clone())
                    .or_else(|| a.outbox.as_ref().map(|r| r.task_id.clone()));
                self.agents[agent].restarted = false;
                if let Some(task_id) = held.filter(|_| recover) {
                    self.agent_sends(agent, AgentMessage::TaskRecovering { task_id });
                } else if let Some(report) = self.agents[agent].outbox.clone() {
                    self.send_report(agent, &report);
                }
                let next = self.rng.between(10, 500);
                self.wake_agent(agent, next);
            }
            CoordinatorMessage::TaskContinue {
                task_id,
                generation,
            } => {
                if let Some(w) = self.agents[agent]
                    .work
                    .as_mut()
                    .filter(|w| w.task_id == task_id)
                {
                    w.generation = generation;
                }
                let outbox = self.agents[agent]
                    .outbox
                    .as_mut()
                    .filter(|r| r.task_id == task_id)
                    .map(|r| {
                        r.generation = generation;
                        r.clone()
                    });
                if let Some(report) = outbox {
                    self.send_report(agent, &report);
                }
            }
            CoordinatorMessage::TaskReassign { task_id } => self.forget(agent, &task_id),
            CoordinatorMessage::TaskCancel { task_id } if !self.agents[agent].ignores_cancel => {
                self.forget(agent, &task_id);
            }
            CoordinatorMessage::TaskAck { task_id, status } => {
                if status == "complete" {
                    self.note_complete_ack(&task_id)?;
                }
                if status != "accepted"
                    && self.agents[agent]
                        .outbox
                        .as_ref()
                        .is_some_and(|r| r.task_id == task_id)
                {
                    self.agents[agent].outbox = None;
                }
            }
            CoordinatorMessage::Error {
                error,
                task_id: Some(task_id),
                ..
            } => {
                if matches!(error, ErrorCode::StaleGeneration | ErrorCode::NotAssigned) {
                    // The coordinator will not take it: the task is not ours any more.
                    self.forget(agent, &task_id);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn forget(&mut self, agent: usize, task_id: &str) {
        let a = &mut self.agents[agent];
        if a.work.as_ref().is_some_and(|w| w.task_id == task_id) {
            a.work = None;
        }
        if a.outbox.as_ref().is_some_and(|r| r.task_id == task_id) {
            a.outbox = None;
        }
    }

    /// The agent's connection is gone: it reconnects after a while.
    pub fn agent_lost_connection(&mut self, agent: usize) {
        self.agents[agent].conn = None;
        self.agents[agent].identified = false;
        let delay = self.rng.between(100, 3_000);
        self.wake_agent(agent, delay);
    }

    /// The agent's process dies; it restarts after a while.
    pub fn crash_agent(&mut self, agent: usize) {
        if !self.agents[agent].alive {
            return;
        }
        self.note(|| format!("agent {agent} crashes"));
        self.cut(agent);
        self.agents[agent].alive = false;
        let delay = self.rng.between(200, 4_000);
        self.wake_agent(agent, delay);
    }
}

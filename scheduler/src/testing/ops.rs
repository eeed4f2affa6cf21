//! Operation sequences for a scheduler: the inputs of a coordinator's life
//! (agents coming and going, submissions, reports, cancels, time), as a
//! proptest strategy and as [`Driver::apply`].

use coordinator_agent_fsm::Capabilities;
use coordinator_queue::{AgentId, Completion, NewTask, Priority, TaskId};
use proptest::prelude::*;

use super::{Driver, Violation};

/// The agents the operations speak for: `a0` to `a3`.
pub const OP_AGENTS: usize = 4;

/// The capability sets the operations draw from: none, `gpu`, `linux`, both.
pub fn op_capabilities(idx: usize) -> Capabilities {
    let sets: [&[&str]; 4] = [&[], &["gpu"], &["linux"], &["gpu", "linux"]];
    Capabilities::new(sets[idx % sets.len()].iter().copied())
}

/// One input of a coordinator's life; agents by index (`a{agent}`), task
/// ids by submission order (`t0`, `t1`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedulerOp {
    /// An agent connects (or reconnects) with the capabilities of
    /// [`op_capabilities`]`(caps)`.
    Connect {
        /// The agent.
        agent: usize,
        /// Index of its capability set.
        caps: usize,
    },
    /// An agent's connection drops.
    Disconnect {
        /// The agent.
        agent: usize,
    },
    /// A task is submitted, needing [`op_capabilities`]`(caps)`.
    Submit {
        /// Index of its capability set.
        caps: usize,
        /// Lane index into [`Priority::ALL`].
        priority: usize,
        /// With a deadline 100 ms ahead.
        deadline: bool,
    },
    /// An agent accepts the task it holds (if any).
    Accept {
        /// The agent.
        agent: usize,
    },
    /// An agent completes the task it holds (if any).
    Complete {
        /// The agent.
        agent: usize,
    },
    /// An agent fails the task it holds (if any).
    Fail {
        /// The agent.
        agent: usize,
    },
    /// An agent rejects the task it holds (if any).
    Reject {
        /// The agent.
        agent: usize,
    },
    /// An agent's connection closes over an oversize frame.
    Oversize {
        /// The agent.
        agent: usize,
    },
    /// An operator cancels a task.
    Cancel {
        /// Submission index.
        task: usize,
    },
    /// Time passes (timers and sweeps fire on the way).
    Tick {
        /// How long.
        ms: u64,
    },
    /// The sweep runs now.
    Sweep,
    /// The coordinator crashes and restarts from its store.
    Restart,
}

/// Any [`SchedulerOp`], submissions and completions the most likely. Restarts
/// only when `restarts` is true.
pub fn scheduler_op(restarts: bool) -> impl Strategy<Value = SchedulerOp> {
    let agent = 0usize..OP_AGENTS;
    prop_oneof![
        2 => (agent.clone(), 0usize..4).prop_map(|(agent, caps)| SchedulerOp::Connect { agent, caps }),
        1 => agent.clone().prop_map(|agent| SchedulerOp::Disconnect { agent }),
        4 => (0usize..4, 0usize..Priority::ALL.len(), any::<bool>()).prop_map(|(caps, priority, deadline)| SchedulerOp::Submit { caps, priority, deadline }),
        2 => agent.clone().prop_map(|agent| SchedulerOp::Accept { agent }),
        3 => agent.clone().prop_map(|agent| SchedulerOp::Complete { agent }),
        1 => agent.clone().prop_map(|agent| SchedulerOp::Fail { agent }),
        1 => agent.clone().prop_map(|agent| SchedulerOp::Reject { agent }),
        1 => agent.prop_map(|agent| SchedulerOp::Oversize { agent }),
        1 => (0usize..30).prop_map(|task| SchedulerOp::Cancel { task }),
        1 => (0u64..200).prop_map(|ms| SchedulerOp::Tick { ms }),
        1 => Just(SchedulerOp::Sweep),
        u32::from(restarts) => Just(SchedulerOp::Restart),
    ]
}

/// Sequences of [`scheduler_op`] with a length in `len`.
pub fn scheduler_ops(
    len: std::ops::Range<usize>,
    restarts: bool,
) -> impl Strategy<Value = Vec<SchedulerOp>> {
    proptest::collection::vec(scheduler_op(restarts), len)
}

fn agent_id(agent: usize) -> AgentId {
    AgentId::from(format!("a{agent}"))
}

impl Driver {
    /// Advances the clock by 1 ms (timers fire), then runs `op`, drains and
    /// checks (see [`Driver`]). A report (complete, fail, reject) on the task an
    /// agent holds must be accepted; one of an agent holding nothing is not
    /// sent. Submissions get the ids `t{n}` from [`Driver::n_submitted`].
    pub fn apply(&mut self, op: &SchedulerOp) -> Result<(), Violation> {
        self.advance(1)?;
        match *op {
            SchedulerOp::Connect { agent, caps } => {
                self.connect(agent_id(agent), op_capabilities(caps))?;
            }
            SchedulerOp::Disconnect { agent } => {
                self.disconnect(agent_id(agent).as_str())?;
            }
            SchedulerOp::Oversize { agent } => {
                let agent = agent_id(agent);
                if let Some(connection) = self.forget_connection(&agent) {
                    self.call(|s, now| s.handle_oversize(now, &agent, connection))?
                        .map_err(|e| {
                            Violation(format!("the oversize close of {agent} was refused: {e}"))
                        })?;
                }
            }
            SchedulerOp::Submit {
                caps,
                priority,
                deadline,
            } => {
                let id = format!("t{}", self.n_submitted);
                self.n_submitted += 1;
                let mut task = NewTask::new(id, "x")
                    .with_capabilities(op_capabilities(caps).names().iter().cloned())
                    .with_priority(Priority::ALL[priority % Priority::ALL.len()]);
                task.complete_by_ms = deadline.then_some(self.now_ms() + 100);
                self.call(|s, now| s.handle_submit(now, task))?
                    .map_err(|e| Violation(format!("a valid submission was refused: {e}")))?;
            }
            SchedulerOp::Accept { agent }
            | SchedulerOp::Complete { agent }
            | SchedulerOp::Fail { agent }
            | SchedulerOp::Reject { agent } => {
                let a = agent_id(agent);
                let Some(held) = self
                    .scheduler()
                    .agent(&a)
                    .and_then(|v| v.agent.task().cloned())
                else {
                    return Ok(());
                };
                let (task, generation) = (&held.task_id, held.generation);
                let result = self.call(|s, now| match op {
                    SchedulerOp::Accept { .. } => s.handle_accepted(now, &a, task),
                    SchedulerOp::Complete { .. } => {
                        s.handle_complete(now, &a, task, generation, Completion::default())
                    }
                    SchedulerOp::Fail { .. } => s
                        .handle_failed(now, &a, task, generation, "failed")
                        .map(|_| ()),
                    _ => s.handle_rejected(now, &a, task, "busy"),
                })?;
                if !matches!(op, SchedulerOp::Accept { .. }) {
                    result.map_err(|e| {
                        Violation(format!("{op:?} of its own task {task} was refused: {e}"))
                    })?;
                }
            }
            SchedulerOp::Cancel { task } => {
                let _ =
                    self.call(|s, now| s.handle_cancel(now, &TaskId::from(format!("t{task}"))))?;
            }
            SchedulerOp::Tick { ms } => self.advance(ms)?,
            SchedulerOp::Sweep => self.sweep()?,
            SchedulerOp::Restart => self.restart()?,
        }
        Ok(())
    }
}

//! The test kit of the agent state machine (feature `testing`): proptest
//! strategies for capabilities and for sequences of moves, and
//! [`AgentModel`], which runs a move on an [`Agent`] and checks it against the
//! table of legal moves (SPEC §4).
//!
//! The kit of `coordinator-queue` comes with it
//! (`coordinator_queue::testing`).
//!
//! # Example: a property test of one's own
//!
//! Whatever an agent goes through, it holds a task exactly while it is busy:
//!
//! ```
//! use coordinator_agent_fsm::testing::{agent_ops, AgentModel};
//! use coordinator_agent_fsm::AgentState;
//! use proptest::prelude::*;
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(64))]
//!     // In a test file, this function carries #[test].
//!     fn holds_a_task_exactly_while_busy(ops in agent_ops(1..40)) {
//!         let mut model = AgentModel::new(1_700_000_000_000);
//!         for op in &ops {
//!             model.apply(op)?; // also checks the move against SPEC §4
//!             let busy = !matches!(model.agent().state(), AgentState::Idle | AgentState::Offline);
//!             prop_assert_eq!(model.agent().task().is_some(), busy);
//!         }
//!     }
//! }
//! # fn main() { holds_a_task_exactly_while_busy(); }
//! ```

use proptest::prelude::*;

use crate::{Agent, AgentState, Capabilities, Move};
use coordinator_queue::{AgentId, TaskId};

/// A set of capabilities (up to three names, often none); the strategy of
/// `coordinator_queue::testing::strategies`, for the one capability type.
pub use coordinator_queue::testing::strategies::capabilities;

/// One input to an agent; see [`AgentModel::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentOp {
    /// The agent's call for this [`Move`]: [`Agent::connect`], [`Agent::assign`]
    /// of task `t` with the next generation, [`Agent::accept`],
    /// [`Agent::release`], [`Agent::block`], [`Agent::unblock`], or
    /// [`Agent::resume`] of task `t` with the current generation.
    Move(Move),
    /// [`Agent::disconnect`], legal from every state.
    Disconnect,
    /// Time passes by this many milliseconds, then [`Agent::handle_timeout`].
    Tick(u64),
}

/// Any [`Move`], each as likely.
pub fn agent_move() -> impl Strategy<Value = Move> {
    prop_oneof![
        Just(Move::Connect),
        Just(Move::Assign),
        Just(Move::Accept),
        Just(Move::Release),
        Just(Move::Block),
        Just(Move::Unblock),
        Just(Move::Resume),
    ]
}

/// Any [`AgentOp`], each move, disconnect and tick as likely; ticks up to 80 ms (the model's acceptance
/// deadline is 50 ms).
pub fn agent_op() -> impl Strategy<Value = AgentOp> {
    prop_oneof![
        7 => agent_move().prop_map(AgentOp::Move),
        1 => Just(AgentOp::Disconnect),
        1 => (0u64..80).prop_map(AgentOp::Tick),
    ]
}

/// Sequences of [`agent_op`] with a length in `len`.
pub fn agent_ops(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<AgentOp>> {
    proptest::collection::vec(agent_op(), len)
}

/// The state a legal move leads to, `None` for an illegal one: the table of
/// SPEC §4. Not defined for [`AgentOp::Tick`] (which is never illegal).
pub fn legal_move(from: AgentState, op: &AgentOp) -> Option<AgentState> {
    use AgentState::*;
    match (from, op) {
        (Offline, AgentOp::Move(Move::Connect)) => Some(Idle),
        (Idle, AgentOp::Move(Move::Assign)) => Some(Assigned),
        (Assigned, AgentOp::Move(Move::Accept)) => Some(Working),
        (Assigned | Working | Blocked, AgentOp::Move(Move::Release)) => Some(Idle),
        (Working, AgentOp::Move(Move::Block)) => Some(Blocked),
        (Blocked, AgentOp::Move(Move::Unblock)) => Some(Working),
        (Idle, AgentOp::Move(Move::Resume)) => Some(Working),
        (_, AgentOp::Disconnect) => Some(Offline),
        _ => None,
    }
}

/// What [`AgentModel::apply`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op:?} from {from}: {what}")]
pub struct Mismatch {
    /// The operation.
    pub op: AgentOp,
    /// The state before it.
    pub from: AgentState,
    /// What went wrong.
    pub what: String,
}

/// One agent (`a1`, no capabilities, acceptance deadline
/// [`AgentModel::ACCEPT_TIMEOUT_MS`]) on a virtual clock, checked after every
/// move.
#[derive(Debug, Clone)]
pub struct AgentModel {
    agent: Agent,
    now_ms: u64,
    generation: u64,
}

impl AgentModel {
    /// The acceptance deadline of every assignment.
    pub const ACCEPT_TIMEOUT_MS: u64 = 50;

    /// A new offline agent at `now_ms`.
    pub fn new(now_ms: u64) -> AgentModel {
        AgentModel {
            agent: Agent::new(AgentId::from("a1"), Capabilities::default()),
            now_ms,
            generation: 0,
        }
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The virtual time.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Advances the clock by 1 ms (by `1 + ms` for a tick), runs `op` and
    /// checks: a legal move succeeds and leads where the table says, an illegal
    /// one fails and changes nothing, the deadline expires exactly when due
    /// (the agent goes idle and is flagged unresponsive), the agent holds a task
    /// exactly while assigned, working or blocked, and has a deadline exactly
    /// while assigned.
    pub fn apply(&mut self, op: &AgentOp) -> Result<(), Mismatch> {
        self.now_ms += 1;
        let now = self.now_ms;
        let before = self.agent.clone();
        let fail = |what: String| Mismatch {
            op: op.clone(),
            from: before.state(),
            what,
        };
        let a = &mut self.agent;
        let ok = match op {
            AgentOp::Move(Move::Connect) => a.connect(now).is_ok(),
            AgentOp::Move(Move::Assign) => {
                self.generation += 1;
                let generation = self.generation;
                a.assign(now, TaskId::from("t"), generation, Self::ACCEPT_TIMEOUT_MS)
                    .is_ok()
            }
            AgentOp::Move(Move::Accept) => a.accept(now).is_ok(),
            AgentOp::Move(Move::Release) => a.release(now).is_ok(),
            AgentOp::Move(Move::Block) => a.block(now).is_ok(),
            AgentOp::Move(Move::Unblock) => a.unblock(now).is_ok(),
            AgentOp::Move(Move::Resume) => {
                a.resume(now, TaskId::from("t"), self.generation).is_ok()
            }
            AgentOp::Disconnect => {
                let _ = a.disconnect(now);
                true
            }
            AgentOp::Tick(ms) => {
                self.now_ms += ms;
                let now = self.now_ms;
                let due = before.poll_timeout().is_some_and(|d| now >= d);
                let expired = a.handle_timeout(now);
                if expired.is_some() != due {
                    return Err(fail(format!("due {due}, expired {expired:?}")));
                }
                if due && (a.state() != AgentState::Idle || !a.is_unresponsive()) {
                    return Err(fail("an expiry did not leave it idle and flagged".into()));
                }
                if !due && *a != before {
                    return Err(fail("a tick before the deadline changed it".into()));
                }
                return Ok(());
            }
        };
        match legal_move(before.state(), op) {
            Some(state) if !ok => return Err(fail(format!("refused the move to {state}"))),
            Some(state) if a.state() != state => {
                return Err(fail(format!("went to {} instead of {state}", a.state())))
            }
            None if ok => return Err(fail("an illegal move succeeded".into())),
            None if *a != before => return Err(fail("an illegal move changed it".into())),
            _ => {}
        }
        let busy = matches!(
            a.state(),
            AgentState::Assigned | AgentState::Working | AgentState::Blocked
        );
        if a.task().is_some() != busy {
            return Err(fail(
                "holds a task while not busy, or none while busy".into(),
            ));
        }
        if a.poll_timeout().is_some() != (a.state() == AgentState::Assigned) {
            return Err(fail("a deadline outside `assigned`".into()));
        }
        Ok(())
    }
}

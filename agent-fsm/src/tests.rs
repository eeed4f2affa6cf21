//! Unit tests of every move, and a property test against the transition table.

use coordinator_queue::{AgentId, TaskId};
use proptest::prelude::*;

use crate::*;

const T0: u64 = 5_000;

fn agent() -> Agent {
    Agent::new(AgentId::from("a1"), Capabilities::new(["gpu", "arm"]))
}

fn busy_agent() -> Agent {
    let mut a = agent();
    a.connect(T0).unwrap();
    a.assign(T0, TaskId::from("t"), 3, 100).unwrap();
    a
}

#[test]
fn a_new_agent_is_offline_and_must_connect_first() {
    let mut a = agent();
    assert_eq!(a.state(), AgentState::Offline);
    let err = a.assign(T0, TaskId::from("t"), 1, 10).unwrap_err();
    assert_eq!(
        err,
        IllegalMove {
            agent_id: AgentId::from("a1"),
            from: AgentState::Offline,
            attempted: Move::Assign
        }
    );
    a.connect(T0).unwrap();
    assert_eq!(a.state(), AgentState::Idle);
    assert_eq!(a.state_since_ms(), T0);
}

#[test]
fn assign_accept_release_round_trip() {
    let mut a = busy_agent();
    assert_eq!(a.state(), AgentState::Assigned);
    assert_eq!(a.poll_timeout(), Some(T0 + 100));
    a.accept(T0 + 10).unwrap();
    assert_eq!(a.state(), AgentState::Working);
    assert_eq!(a.poll_timeout(), None);
    let held = a.release(T0 + 20).unwrap();
    assert_eq!(
        held,
        HeldTask {
            task_id: TaskId::from("t"),
            generation: 3
        }
    );
    assert_eq!(a.state(), AgentState::Idle);
    assert_eq!(a.state_since_ms(), T0 + 20);
    assert_eq!(a.task(), None);
}

#[test]
fn block_and_unblock_only_while_working() {
    let mut a = busy_agent();
    assert!(a.block(T0).is_err());
    a.accept(T0).unwrap();
    a.block(T0).unwrap();
    assert_eq!(a.state(), AgentState::Blocked);
    assert!(a.accept(T0).is_err());
    a.unblock(T0).unwrap();
    a.block(T0).unwrap();
    a.release(T0).unwrap();
    assert_eq!(a.state(), AgentState::Idle);
}

#[test]
fn acceptance_deadline_reclaims_and_flags() {
    let mut a = busy_agent();
    assert_eq!(a.handle_timeout(T0 + 99), None);
    assert_eq!(a.state(), AgentState::Assigned);
    let held = a.handle_timeout(T0 + 100).unwrap();
    assert_eq!(held.task_id, TaskId::from("t"));
    assert_eq!(a.state(), AgentState::Idle);
    assert!(a.is_unresponsive());
    assert_eq!(a.poll_timeout(), None);
    // Accepting the next task clears the flag.
    a.assign(T0 + 200, TaskId::from("u"), 1, 100).unwrap();
    a.accept(T0 + 201).unwrap();
    assert!(!a.is_unresponsive());
}

#[test]
fn disconnect_from_any_state_hands_back_the_task() {
    let mut a = busy_agent();
    assert_eq!(a.disconnect(T0).map(|h| h.generation), Some(3));
    assert_eq!(a.state(), AgentState::Offline);
    assert_eq!(a.disconnect(T0), None);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn resume_takes_a_held_task_back_while_idle() {
    let mut a = agent();
    a.connect(T0).unwrap();
    a.resume(T0, TaskId::from("t"), 4).unwrap();
    assert_eq!(a.state(), AgentState::Working);
    assert_eq!(a.poll_timeout(), None);
    assert!(a.resume(T0, TaskId::from("u"), 1).is_err());
}

#[test]
fn capabilities_subset() {
    let gpu = Capabilities::new(["gpu"]);
    let both = Capabilities::new(["gpu", "arm", "gpu"]);
    assert_eq!(both.names(), ["arm", "gpu"]);
    assert!(gpu.is_subset_of(&both));
    assert!(!both.is_subset_of(&gpu));
    assert!(Capabilities::default().is_subset_of(&gpu));
    assert!(!Capabilities::new(["x"]).is_subset_of(&Capabilities::default()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
    ))]

    #[test]
    fn only_legal_moves_happen(ops in testing::agent_ops(1..60)) {
        let mut model = testing::AgentModel::new(T0);
        for op in &ops {
            model.apply(op)?;
        }
    }

    #[test]
    fn capabilities_are_sorted_sets(caps in testing::capabilities(), other in testing::capabilities()) {
        prop_assert!(caps.names().windows(2).all(|w| w[0] < w[1]));
        prop_assert!(Capabilities::default().is_subset_of(&caps));
        prop_assert!(caps.is_subset_of(&caps));
        let both = Capabilities::new(caps.names().iter().chain(other.names()).cloned());
        prop_assert!(caps.is_subset_of(&both) && other.is_subset_of(&both));
    }
}

#[cfg(feature = "serde")]
mod round_trip;

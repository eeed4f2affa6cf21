//! With the `serde` feature: every action the scheduler hands out, and every
//! change, survives a JSON round trip.

use serde_json::json;

use crate::*;

const T0: u64 = 1_000_000;

#[test]
fn every_action_and_change_of_a_run_survives_a_json_round_trip() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    let a1 = AgentId::from("a1");
    s.handle_connect(T0, a1.clone(), Capabilities::new(["linux"]), ConnId::new(1));
    s.handle_submit(T0, NewTask::new("t1", "build").with_capabilities(["linux"]))
        .unwrap();
    s.handle_accepted(T0 + 1, &a1, &TaskId::from("t1")).unwrap();
    s.handle_disconnect(T0 + 2, &a1, ConnId::new(1)).unwrap();
    s.handle_connect(
        T0 + 3,
        a1.clone(),
        Capabilities::new(["linux"]),
        ConnId::new(2),
    );
    // The agent stays silent: once it has settled, its task is its own again.
    let settled_ms = s.poll_timeout().expect("a settle deadline");
    s.handle_timeout(settled_ms);
    s.handle_cancel(settled_ms + 1, &TaskId::from("t1"))
        .unwrap();

    let actions: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            Action::Assign(_) => "assign",
            Action::Cancel { .. } => "cancel",
            Action::Reattach { .. } => "reattach",
            Action::Reclaimed { .. } => "reclaimed",
        })
        .collect();
    assert_eq!(kinds, ["assign", "reclaimed", "reattach", "cancel"]);
    for (action, kind) in actions.iter().zip(kinds) {
        let value = json!(action);
        assert!(value.get(kind).is_some(), "{value}");
        assert_eq!(&serde_json::from_value::<Action>(value).unwrap(), action);
    }

    let changes: Vec<Change> = std::iter::from_fn(|| s.poll_change()).collect();
    assert!(!changes.is_empty());
    for change in &changes {
        assert_eq!(
            &serde_json::from_value::<Change>(json!(change)).unwrap(),
            change
        );
    }
}

#[test]
fn a_reclaim_action_names_its_reason_by_the_stable_name() {
    let action = Action::Reclaimed {
        task_id: TaskId::from("t1"),
        agent_id: AgentId::from("a1"),
        reason: ReclaimReason::AcceptTimeout,
    };
    assert_eq!(
        json!(action),
        json!({"reclaimed": {"task_id": "t1", "agent_id": "a1", "reason": "accept_timeout"}})
    );
    let err = serde_json::from_value::<Action>(json!({"teleport": {}})).unwrap_err();
    assert!(err.to_string().contains("teleport"), "{err}");
}

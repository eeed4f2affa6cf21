//! With the `serde` feature: capabilities travel as a sorted list and come back
//! as the same set, states by their stable names, and bad input is refused.

use serde_json::json;

use crate::*;

#[test]
fn capabilities_survive_a_json_round_trip_as_a_sorted_list() {
    let caps = Capabilities::new(["linux", "gpu"]);
    let value = json!(caps);
    assert_eq!(value, json!(["gpu", "linux"]));
    assert_eq!(serde_json::from_value::<Capabilities>(value).unwrap(), caps);
    let none = Capabilities::default();
    assert_eq!(
        serde_json::from_value::<Capabilities>(json!(none)).unwrap(),
        none
    );
}

#[test]
fn any_list_of_names_reads_as_the_set() {
    let caps: Capabilities = serde_json::from_value(json!(["b", "a", "b", ""])).unwrap();
    assert_eq!(caps, Capabilities::new(["a", "b"]));
    assert_eq!(caps.names(), ["a", "b"]);
}

#[test]
fn states_travel_by_their_stable_names() {
    for state in [
        AgentState::Offline,
        AgentState::Idle,
        AgentState::Assigned,
        AgentState::Working,
        AgentState::Blocked,
    ] {
        assert_eq!(json!(state), json!(state.as_str()));
        assert_eq!(
            serde_json::from_value::<AgentState>(json!(state.as_str())).unwrap(),
            state
        );
    }
}

#[test]
fn bad_input_is_refused_with_an_error() {
    assert!(serde_json::from_value::<Capabilities>(json!("gpu")).is_err());
    assert!(serde_json::from_value::<Capabilities>(json!([1, 2])).is_err());
    let err = serde_json::from_value::<AgentState>(json!("sleeping")).unwrap_err();
    assert!(err.to_string().contains("sleeping"), "{err}");
}

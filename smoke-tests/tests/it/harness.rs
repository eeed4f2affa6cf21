//! The harness itself: how a coordinator that does not come up is reported.

use smoke_tests::harness::Coordinator;

#[test]
fn a_coordinator_that_exits_before_listening_is_reported_with_its_log() {
    let outcome = std::panic::catch_unwind(|| Coordinator::start(&["--no-such-flag"]));
    let Err(payload) = outcome else {
        panic!("a coordinator started with an unknown flag")
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("exited") && message.contains("before listening"),
        "{message}"
    );
    assert!(
        message.contains("--no-such-flag"),
        "the log tail names the problem: {message}"
    );
}

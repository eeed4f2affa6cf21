//! Reading the listening address from the coordinator's log lines.

use super::{serving_address, strip_ansi};

#[test]
fn the_address_is_read_from_the_text_line() {
    let line = "2025-01-01T00:00:00.000000Z  INFO coordinator_bin::server::serve: coordinator serving listen=127.0.0.1:40123";
    assert_eq!(
        serving_address(line),
        Some(Ok("127.0.0.1:40123".parse().unwrap()))
    );
}

#[test]
fn the_address_is_read_from_a_coloured_text_line() {
    let line = "\u{1b}[2m2025-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mcoordinator_bin::server::serve\u{1b}[0m\u{1b}[2m:\u{1b}[0m coordinator serving \u{1b}[3mlisten\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:5000";
    assert_eq!(
        serving_address(line),
        Some(Ok("127.0.0.1:5000".parse().unwrap()))
    );
}

#[test]
fn the_address_is_read_from_the_json_line() {
    let line = r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","fields":{"message":"coordinator serving","listen":"[::1]:7000"},"target":"coordinator_bin::server::serve"}"#;
    assert_eq!(
        serving_address(line),
        Some(Ok("[::1]:7000".parse().unwrap()))
    );
}

#[test]
fn other_lines_are_not_the_serving_line() {
    assert_eq!(
        serving_address("2025  WARN coordinator_bin::server::serve: accept failed"),
        None
    );
}

#[test]
fn a_serving_line_without_an_address_is_reported() {
    let line = "INFO coordinator serving listen=nowhere";
    assert_eq!(serving_address(line), Some(Err(line.to_owned())));
}

#[test]
fn colour_sequences_are_removed_and_text_kept() {
    assert_eq!(strip_ansi("\u{1b}[1;32mok\u{1b}[0m done"), "ok done");
    assert_eq!(strip_ansi("plain"), "plain");
}

//! Reading server frames and the journal's queries.

use serde_json::json;

use super::{parse_server_frame, Journal, Logged, ServerFrame};

#[test]
fn a_short_text_frame_is_read_whole_and_nothing_before() {
    let bytes = [0x81, 2, b'{', b'}', 0x89];
    assert_eq!(parse_server_frame(&bytes[..3]), None);
    let (frame, used) = parse_server_frame(&bytes).unwrap().unwrap();
    assert_eq!(
        frame,
        ServerFrame {
            opcode: 1,
            payload: b"{}".to_vec()
        }
    );
    assert_eq!(used, 4);
}

#[test]
fn lengths_of_16_and_64_bits_are_read() {
    let payload = vec![b'x'; 300];
    let mut bytes = vec![0x81, 126];
    bytes.extend_from_slice(&300u16.to_be_bytes());
    bytes.extend_from_slice(&payload);
    let (frame, used) = parse_server_frame(&bytes).unwrap().unwrap();
    assert_eq!((frame.payload.len(), used), (300, 304));

    let mut bytes = vec![0x89, 127];
    bytes.extend_from_slice(&70_000u64.to_be_bytes());
    bytes.extend_from_slice(&vec![7; 70_000]);
    let (frame, used) = parse_server_frame(&bytes).unwrap().unwrap();
    assert_eq!(
        (frame.opcode, frame.payload.len(), used),
        (9, 70_000, 70_010)
    );
    assert_eq!(parse_server_frame(&bytes[..100]), None);
}

#[test]
fn a_masked_frame_is_unmasked_and_our_own_frames_read_back() {
    let bytes = crate::harness::client_frame(1, br#"{"type":"ping"}"#);
    let (frame, used) = parse_server_frame(&bytes).unwrap().unwrap();
    assert_eq!(frame.payload, br#"{"type":"ping"}"#);
    assert_eq!(used, bytes.len());
}

#[test]
fn fragments_and_huge_frames_are_refused() {
    assert!(parse_server_frame(&[0x01, 1, b'a']).unwrap().is_err());
    let mut huge = vec![0x81, 127];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    assert!(parse_server_frame(&huge).unwrap().is_err());
}

#[test]
fn the_journal_finds_frames_by_type_task_and_direction() {
    let logged = |sent, frame| Logged {
        connection: 1,
        sent,
        frame,
    };
    let journal = Journal {
        log: vec![
            logged(
                false,
                json!({"type": "task_assign", "task_id": "a", "generation": 1}),
            ),
            logged(true, json!({"type": "task_accepted", "task_id": "a"})),
            logged(
                false,
                json!({"type": "task_assign", "task_id": "b", "generation": 4}),
            ),
            logged(
                true,
                json!({"type": "task_rejected", "task_id": "b", "reason": "busy"}),
            ),
            logged(
                false,
                json!({"type": "task_assign", "task_id": "b", "generation": 6}),
            ),
            logged(false, json!({"type": "error", "error": "stale_generation"})),
        ],
        ..Journal::default()
    };
    assert_eq!(journal.received_of("task_assign", None).len(), 3);
    assert_eq!(journal.received_of("task_assign", Some("b")).len(), 2);
    assert_eq!(journal.sent_of("task_rejected", Some("b")).len(), 1);
    assert!(journal.sent_of("task_assign", None).is_empty());
    assert_eq!(journal.assigned_generation("b"), Some(6));
    assert_eq!(journal.assigned_generation("c"), None);
    assert_eq!(journal.errors().len(), 1);
    assert!(journal.summary().contains("#1 -> {"));
}

//! Tests of the task ids the server makes.

use super::*;

#[test]
fn a_uuid_is_written_in_its_canonical_groups() {
    let bytes = [
        0x01, 0x9a, 0x21, 0x52, 0x3a, 0xfb, 0x71, 0xaf, 0x87, 0x57, 0x87, 0x13, 0x3a, 0xfc, 0x56,
        0x32,
    ];
    assert_eq!(&*uuid_text(&bytes), "019a2152-3afb-71af-8757-87133afc5632");
}

#[test]
fn a_new_id_is_a_version_7_uuid_holding_the_time_it_was_made() {
    let before_ms = crate::server::clock::now_ms();
    let id = new_task_id();
    let after_ms = crate::server::clock::now_ms();
    let text = id.as_str();
    assert_eq!(text.len(), 36);
    assert_eq!(&text[14..15], "7");
    assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
    assert!(text
        .chars()
        .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
    let ms = u64::from_str_radix(&text[..13].replace('-', ""), 16).unwrap();
    assert!(
        (before_ms..=after_ms).contains(&ms),
        "{ms} not in {before_ms}..={after_ms}"
    );
}

#[test]
fn ids_made_in_a_row_differ_also_past_a_refill_of_the_randomness() {
    let ids: Vec<TaskId> = (0..2 * POOL_BYTES / 10 + 3)
        .map(|_| new_task_id())
        .collect();
    let distinct: std::collections::HashSet<&str> = ids.iter().map(|id| id.as_str()).collect();
    assert_eq!(distinct.len(), ids.len());
    // The random part (after the time) differs between neighbours.
    for pair in ids.windows(2) {
        assert_ne!(&pair[0].as_str()[15..], &pair[1].as_str()[15..]);
    }
}

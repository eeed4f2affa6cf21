//! Tests of the damaged-row tracker: once per row, bounded.

use super::*;

fn row(table: Table, rowid: i64, id: &str) -> DamagedRow {
    DamagedRow {
        table,
        id: Some(id.into()),
        rowid: Some(rowid),
        reason: "column `history`: not valid JSON".into(),
    }
}

#[test]
fn a_row_is_told_once_whatever_its_reason_says_later() {
    let mut tracker = Tracker::new(10);
    assert_eq!(
        tracker.handle_damaged(&row(Table::Tasks, 1, "t1")),
        Seen::First
    );
    let mut again = row(Table::Tasks, 1, "t1");
    again.reason = "column `status`: unknown".into();
    assert_eq!(tracker.handle_damaged(&again), Seen::Again);
    assert_eq!(
        tracker.handle_damaged(&row(Table::Tasks, 2, "t2")),
        Seen::First
    );
    assert_eq!(
        tracker.handle_damaged(&row(Table::Tokens, 1, "t1")),
        Seen::First,
        "another table is another row"
    );
}

#[test]
fn past_the_bound_rows_are_untracked_and_that_is_told_once() {
    let mut tracker = Tracker::new(2);
    assert_eq!(
        tracker.handle_damaged(&row(Table::Tasks, 1, "a")),
        Seen::First
    );
    assert_eq!(
        tracker.handle_damaged(&row(Table::Tasks, 2, "b")),
        Seen::First
    );
    assert_eq!(
        tracker.handle_damaged(&row(Table::Tasks, 3, "c")),
        Seen::Untracked(true)
    );
    assert_eq!(
        tracker.handle_damaged(&row(Table::Tasks, 4, "d")),
        Seen::Untracked(false)
    );
    assert_eq!(
        tracker.handle_damaged(&row(Table::Tasks, 1, "a")),
        Seen::Again
    );
    assert_eq!(tracker.seen.len(), 2);
}

//! Tests of the writer's folding of a group of batches and of one group's commit.

use std::collections::HashMap;
use std::path::Path;

use coordinator_queue::{AgentId, Completion, NewTask, Queue, QueueConfig, Status, TaskParts};
use proptest::prelude::*;

use super::*;
use crate::server::db::KnownRows;
use crate::server::store::sqlite::write_group;
use rusqlite::Connection;

/// A record of task `id` marked with `version` (in `updated_at_ms`).
fn record(id: &str, version: u64) -> Task {
    let mut queue = Queue::new(QueueConfig::default());
    let _ = queue.submit(1, NewTask::new(id, "x")).unwrap();
    let task = queue.drain_changes().pop().unwrap().into_task();
    edited(task, |p| p.updated_at_ms = version)
}

/// `task` with its parts changed by `change` (and checked again).
fn edited(task: Task, change: impl FnOnce(&mut TaskParts)) -> Task {
    let mut parts = task.into_parts();
    change(&mut parts);
    Task::from_parts(parts).unwrap()
}

fn batch(seq: u64, changes: Vec<Change>) -> Batch {
    Batch {
        seq,
        changes,
        tokens: Vec::new(),
    }
}

fn versions(rows: &[(&Task, db::Texts<'_>)]) -> Vec<(String, u64)> {
    let mut versions: Vec<_> = rows
        .iter()
        .map(|(t, _)| (t.id().to_string(), t.updated_at_ms()))
        .collect();
    versions.sort();
    versions
}

#[test]
fn changes_to_one_task_across_batches_keep_only_the_newest() {
    let batches = vec![
        batch(
            1,
            vec![
                Change::Updated(record("a", 1)),
                Change::Touched(record("a", 2)),
            ],
        ),
        batch(2, vec![Change::Updated(record("a", 3))]),
        batch(3, vec![Change::Finalized(record("a", 4))]),
    ];
    assert_eq!(versions(&newest_per_task(&batches)), [("a".into(), 4)]);
}

#[test]
fn the_newest_change_within_one_batch_wins() {
    let batches = vec![batch(
        1,
        vec![
            Change::Updated(record("a", 2)),
            Change::Updated(record("a", 1)),
        ],
    )];
    // Position decides, not the record's content: the later change is the newer.
    assert_eq!(versions(&newest_per_task(&batches)), [("a".into(), 1)]);
}

#[test]
fn different_tasks_are_all_kept() {
    let batches = vec![
        batch(
            1,
            vec![
                Change::Updated(record("a", 1)),
                Change::Updated(record("b", 2)),
            ],
        ),
        batch(2, vec![Change::Updated(record("c", 3))]),
        batch(3, vec![]),
        batch(4, vec![Change::Updated(record("b", 5))]),
    ];
    assert_eq!(
        versions(&newest_per_task(&batches)),
        [("a".into(), 1), ("b".into(), 5), ("c".into(), 3)]
    );
}

#[test]
fn no_batches_fold_to_nothing() {
    assert!(newest_per_task(&[]).is_empty());
}

proptest! {
    /// Against a reference model (the last occurrence of each id in the flattened
    /// sequence): every task of the group is kept exactly once, with its newest record.
    #[test]
    fn folding_keeps_exactly_the_last_record_of_every_task(
        shape in proptest::collection::vec(proptest::collection::vec(0..5u8, 0..6), 0..8)
    ) {
        let mut version = 0;
        let mut expected = HashMap::new();
        let batches: Vec<Batch> = shape
            .iter()
            .enumerate()
            .map(|(seq, ids)| {
                let changes = ids
                    .iter()
                    .map(|i| {
                        version += 1;
                        let id = format!("t{i}");
                        expected.insert(id.clone(), version);
                        Change::Updated(record(&id, version))
                    })
                    .collect();
                batch(seq as u64, changes)
            })
            .collect();
        let mut expected: Vec<_> = expected.into_iter().collect();
        expected.sort();
        prop_assert_eq!(versions(&newest_per_task(&batches)), expected);
    }
}

#[test]
fn a_written_group_reads_back_as_the_newest_state() {
    let conn = Connection::open_in_memory().unwrap();
    db::migrate(&conn, Path::new(":memory:")).unwrap();
    let agent = AgentId::from("agent-1");
    let mut queue = Queue::new(QueueConfig::default());
    let _ = queue.submit(1, NewTask::new("a", "x")).unwrap();
    let _ = queue.submit(2, NewTask::new("b", "y")).unwrap();
    let first = queue.drain_changes();
    let generation = queue.assign(3, &TaskId::from("a"), &agent).unwrap();
    queue.accept(4, &TaskId::from("a"), &agent).unwrap();
    let second = queue.drain_changes();
    let completion = Completion {
        result: r#"{"ok":true}"#.into(),
        tokens_used: Some(7),
    };
    queue
        .complete(5, &TaskId::from("a"), &agent, generation, completion)
        .unwrap();
    let third = queue.drain_changes();
    let final_a = third.last().unwrap().task().clone();
    let queued_b = queue.get(&TaskId::from("b")).unwrap().clone();

    let rows = write_group(
        &conn,
        &[batch(1, first), batch(2, second), batch(3, third)],
        &[],
        &mut KnownRows::default(),
    )
    .unwrap();

    assert_eq!(rows, 2);
    assert_eq!(final_a.status(), Status::Completed);
    assert_eq!(db::get_task(&conn, "a").unwrap(), Some(final_a));
    assert_eq!(db::get_task(&conn, "b").unwrap(), Some(queued_b));
    let (mut counts, damaged) = db::count_by_status_priority(&conn).unwrap();
    assert_eq!(damaged, []);
    counts.sort();
    assert_eq!(
        counts,
        [
            ("completed".into(), "normal".into(), 1),
            ("queued".into(), "normal".into(), 1)
        ]
    );
}

/// A queue that keeps texts of more than 8 bytes out of memory.
fn forgetful_queue() -> Queue {
    Queue::new(QueueConfig::default().with_max_inline_payload_bytes(8))
}

fn long_task(id: &str) -> NewTask {
    let mut new = NewTask::new(id, "a description too long to keep");
    new.metadata = r#"{"pad":"a metadata object too long to keep"}"#.into();
    new
}

#[test]
fn texts_left_out_of_the_newest_record_come_from_an_older_one_in_the_group() {
    let mut queue = forgetful_queue();
    let _ = queue.submit(1, long_task("a")).unwrap();
    let submitted = queue.drain_changes();
    let _ = queue
        .assign(2, &TaskId::from("a"), &AgentId::from("agent-1"))
        .unwrap();
    let assigned = queue.drain_changes();
    assert!(assigned[0].task().metadata().is_stored());
    let batches = [batch(1, submitted), batch(2, assigned)];
    let newest = newest_per_task(&batches);
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].0.status(), Status::Assigned);
    assert_eq!(
        newest[0].1,
        db::Texts {
            description: Some("a description too long to keep"),
            metadata: Some(r#"{"pad":"a metadata object too long to keep"}"#),
        }
    );
}

#[test]
fn a_record_that_leaves_its_texts_out_keeps_the_stored_ones() {
    let conn = Connection::open_in_memory().unwrap();
    db::migrate(&conn, Path::new(":memory:")).unwrap();
    let mut queue = forgetful_queue();
    let _ = queue.submit(1, long_task("a")).unwrap();
    let submitted = queue.drain_changes();
    let submitted_record = submitted[0].task().clone();
    // Submitted and assigned in one group: inserted with its texts.
    let _ = queue
        .assign(2, &TaskId::from("a"), &AgentId::from("agent-1"))
        .unwrap();
    let assigned = queue.drain_changes();
    let mut known = KnownRows::default();
    write_group(
        &conn,
        &[batch(1, submitted), batch(2, assigned)],
        &[],
        &mut known,
    )
    .unwrap();
    let stored = db::get_task(&conn, "a").unwrap().unwrap();
    assert_eq!(stored.status(), Status::Assigned);
    assert_eq!(stored.description(), submitted_record.description());
    assert_eq!(stored.metadata(), submitted_record.metadata());
    // Reclaimed in a later group: updated in place, texts kept.
    let _ = queue
        .reclaim(
            3,
            &TaskId::from("a"),
            coordinator_queue::ReclaimReason::Disconnected,
        )
        .unwrap();
    let reclaimed = queue.drain_changes();
    assert!(reclaimed[0].task().description().is_stored());
    write_group(&conn, &[batch(3, reclaimed)], &[], &mut known).unwrap();
    let stored = db::get_task(&conn, "a").unwrap().unwrap();
    assert_eq!((stored.status(), stored.generation()), (Status::Queued, 2));
    assert_eq!(stored.metadata(), submitted_record.metadata());
}

#[test]
fn a_record_without_texts_and_without_a_stored_row_fails_the_commit() {
    let conn = Connection::open_in_memory().unwrap();
    db::migrate(&conn, Path::new(":memory:")).unwrap();
    let mut queue = forgetful_queue();
    let _ = queue.submit(1, long_task("a")).unwrap();
    let _ = queue.drain_changes();
    let _ = queue
        .assign(2, &TaskId::from("a"), &AgentId::from("agent-1"))
        .unwrap();
    let assigned = queue.drain_changes();
    let err =
        write_group(&conn, &[batch(1, assigned)], &[], &mut KnownRows::default()).unwrap_err();
    assert!(err.to_string().contains("no stored row"), "{err}");
    assert_eq!(db::get_task(&conn, "a").unwrap(), None, "nothing written");
}

#[test]
fn a_purge_in_the_group_deletes_old_final_tasks() {
    let conn = Connection::open_in_memory().unwrap();
    db::migrate(&conn, Path::new(":memory:")).unwrap();
    let done = edited(record("old", 10), |p| p.status = Status::Completed);
    let batches = vec![batch(1, vec![Change::Finalized(done)])];
    let mut known = KnownRows::default();
    assert_eq!(write_group(&conn, &batches, &[], &mut known).unwrap(), 1);
    assert_eq!(write_group(&conn, &[], &[11], &mut known).unwrap(), 0);
    assert_eq!(db::get_task(&conn, "old").unwrap(), None);
}

#[test]
fn a_group_that_fails_leaves_the_writers_memory_as_it_was() {
    let conn = Connection::open_in_memory().unwrap();
    db::migrate(&conn, Path::new(":memory:")).unwrap();
    let mut known = KnownRows::default();
    // "z" has no stored row and its record no texts: the group fails, after
    // "a" (newest first, so written first) was inserted, held, and learned.
    let mut queue = forgetful_queue();
    let _ = queue.submit(1, long_task("z")).unwrap();
    let _ = queue.drain_changes();
    let _ = queue
        .assign(2, &TaskId::from("z"), &AgentId::from("agent-1"))
        .unwrap();
    let z_assigned = queue.drain_changes();
    let _ = queue.submit(3, NewTask::new("a", "x")).unwrap();
    let _ = queue
        .assign(3, &TaskId::from("a"), &AgentId::from("agent-2"))
        .unwrap();
    let a_held = queue.drain_changes();
    let err = write_group(
        &conn,
        &[batch(1, z_assigned), batch(2, a_held)],
        &[],
        &mut known,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no stored row"), "{err}");
    assert_eq!(db::get_task(&conn, "a").unwrap(), None, "rolled back");
    assert_eq!(known.len(), 0, "the rolled-back insert of a is forgotten");
}

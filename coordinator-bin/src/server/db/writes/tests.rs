//! Tests of the task writes: the counts by status and lane stay exact through
//! every kind of change, within one group and across groups.

use std::collections::HashMap;
use std::path::Path;

use coordinator_queue::{AgentId, Change, Completion, NewTask, Priority, Queue, QueueConfig, Task};
use rusqlite::Connection;

use super::{write_tasks, KnownRows};
use crate::server::db::{count_by_status_priority, delete_expired, migrate, Texts};

fn memory_db() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    migrate(&conn, Path::new(":memory:")).unwrap();
    conn
}

/// Commits `changes` as one group: every record in order, or only the newest
/// of each task (as the writer does), with the texts of its oldest record;
/// `known` learns the group's rows.
fn commit(conn: &Connection, changes: &[Change], newest_only: bool, known: &mut KnownRows) {
    let tasks: Vec<&Task> = changes.iter().map(Change::task).collect();
    let records: Vec<(&Task, Texts<'_>)> = if newest_only {
        let mut first_texts: HashMap<&str, Texts<'_>> = HashMap::new();
        let mut last: HashMap<&str, &Task> = HashMap::new();
        for task in &tasks {
            first_texts
                .entry(task.id().as_str())
                .or_insert_with(|| Texts::of(task));
            last.insert(task.id().as_str(), task);
        }
        let mut records: Vec<_> = last
            .into_iter()
            .map(|(id, task)| (task, first_texts[id]))
            .collect();
        records.sort_by_key(|(task, _)| task.id().as_str().to_owned());
        records
    } else {
        tasks.iter().map(|task| (*task, Texts::of(task))).collect()
    };
    let tx = conn.unchecked_transaction().unwrap();
    write_tasks(&tx, &records, known).unwrap();
    tx.commit().unwrap();
    known.settle(true);
}

/// Counts by status and lane, sorted.
type CountRows = Vec<(String, String, u64)>;

/// The counts as stored, and as a GROUP BY of the table says they must be.
fn counts_and_truth(conn: &Connection) -> (CountRows, CountRows) {
    let (mut counts, damaged) = count_by_status_priority(conn).unwrap();
    assert_eq!(damaged, []);
    counts.sort();
    let truth = conn
        .prepare(
            "SELECT status, priority, count(*) FROM tasks GROUP BY status, priority \
             ORDER BY status, priority",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (counts, truth)
}

fn assert_exact(conn: &Connection) -> CountRows {
    let (counts, truth) = counts_and_truth(conn);
    assert_eq!(counts, truth);
    counts
}

fn count(status: &str, lane: &str, n: u64) -> (String, String, u64) {
    (status.to_owned(), lane.to_owned(), n)
}

fn done() -> Completion {
    Completion {
        result: "{}".to_owned(),
        tokens_used: None,
    }
}

/// Every kind of change (submitted, scheduled, waiting, assigned, accepted,
/// completed, cancelled, dead-lettered, requeued, released, purged) committed
/// in a group per step or all in one group: the counts follow each commit,
/// whether the writer remembers the rows it wrote or starts each group
/// without (as after a restart).
fn run_lifecycle(cut_after_each_step: bool, newest_only: bool) {
    for remember in [true, false] {
        run_lifecycle_remembering(cut_after_each_step, newest_only, remember);
    }
}

fn run_lifecycle_remembering(cut_after_each_step: bool, newest_only: bool, remember: bool) {
    let conn = memory_db();
    let mut known = KnownRows::default();
    let mut queue = Queue::new(QueueConfig::default());
    let agent = AgentId::from("agent");
    let mut pending: Vec<Change> = Vec::new();
    let mut step = |queue: &mut Queue, pending: &mut Vec<Change>, last: bool| {
        pending.extend(queue.drain_changes());
        if cut_after_each_step || last {
            if !remember {
                known = KnownRows::default();
            }
            commit(&conn, pending, newest_only, &mut known);
            pending.clear();
            assert_exact(&conn);
        }
    };
    let lanes = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];
    for (i, id) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        let new = NewTask::new(id, "x")
            .with_priority(lanes[i % 4])
            .with_max_retries(0);
        queue.submit(1, new).unwrap();
    }
    queue
        .submit(1, NewTask::new("after-a", "x").with_depends_on(["a"]))
        .unwrap();
    queue
        .submit(1, NewTask::new("later", "x").with_run_at(50))
        .unwrap();
    step(&mut queue, &mut pending, false);
    // Assigned, accepted, completed (releasing its dependent).
    let generation = queue.assign(2, &"a".into(), &agent).unwrap();
    step(&mut queue, &mut pending, false);
    queue.accept(3, &"a".into(), &agent).unwrap();
    queue
        .complete(4, &"a".into(), &agent, generation, done())
        .unwrap();
    step(&mut queue, &mut pending, false);
    // Cancelled while queued; dead-lettered by a failure; held.
    queue.cancel(5, &"b".into()).unwrap();
    let generation = queue.assign(5, &"c".into(), &agent).unwrap();
    let _ = queue
        .fail(6, &"c".into(), &agent, generation, "broken")
        .unwrap();
    queue.assign(6, &"d".into(), &agent).unwrap();
    step(&mut queue, &mut pending, false);
    // The dead letter requeued; the scheduled task comes due.
    let dead = newest_record(&pending, &conn, "c");
    queue.retry_dead_letter(7, dead).unwrap();
    queue.handle_timeout(60);
    step(&mut queue, &mut pending, true);
    let counts = assert_exact(&conn);
    assert_eq!(
        counts,
        [
            count("assigned", "low", 1),
            count("cancelled", "high", 1),
            count("completed", "urgent", 1),
            count("queued", "normal", 3),
            count("queued", "urgent", 1),
        ]
    );
    // Purged: the completed and cancelled rows go, with their counts.
    assert_eq!(delete_expired(&conn, 1 << 60).unwrap(), 2);
    let counts = assert_exact(&conn);
    assert_eq!(
        counts,
        [
            count("assigned", "low", 1),
            count("queued", "normal", 3),
            count("queued", "urgent", 1),
        ]
    );
    let edges: Vec<(String, String)> = conn
        .prepare("SELECT depends_on, task_id FROM task_dependencies")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(edges, [("a".to_owned(), "after-a".to_owned())]);
}

/// The newest record of `id`: the newest one not yet committed, else the
/// stored one (as the session reads a dead letter back).
fn newest_record(pending: &[Change], conn: &Connection, id: &str) -> Task {
    match pending.iter().rev().find(|c| c.task().id().as_str() == id) {
        Some(change) => change.task().clone(),
        None => crate::server::db::get_task(conn, id).unwrap().unwrap(),
    }
}

#[test]
fn counts_stay_exact_with_each_change_in_a_group_of_its_own() {
    run_lifecycle(true, false);
}

#[test]
fn counts_stay_exact_with_every_change_in_one_group() {
    run_lifecycle(false, false);
}

#[test]
fn counts_stay_exact_with_only_the_newest_record_of_each_task_in_one_group() {
    run_lifecycle(false, true);
}

#[test]
fn counts_stay_exact_with_the_newest_records_over_several_groups() {
    run_lifecycle(true, true);
}

#[test]
fn a_stored_row_of_unknown_status_or_lane_is_not_counted_and_changes_nothing_else() {
    let conn = memory_db();
    let mut queue = Queue::new(QueueConfig::default());
    queue.submit(1, NewTask::new("s", "x")).unwrap();
    queue.submit(1, NewTask::new("l", "x")).unwrap();
    commit(
        &conn,
        &queue.drain_changes(),
        false,
        &mut KnownRows::default(),
    );
    conn.execute_batch(
        "UPDATE tasks SET status = 'queud' WHERE id = 's'; \
         UPDATE tasks SET priority = 'soon' WHERE id = 'l'; \
         UPDATE task_counts SET n = 0;",
    )
    .unwrap();
    let agent = AgentId::from("agent");
    // A new record of each, read back from storage (the writer has no
    // memory of them, as after a restart): the unknown status is not taken
    // off any count; the unknown lane is counted nowhere.
    queue.assign(2, &"s".into(), &agent).unwrap();
    queue.assign(2, &"l".into(), &agent).unwrap();
    commit(
        &conn,
        &queue.drain_changes(),
        false,
        &mut KnownRows::default(),
    );
    let (counts, _) = count_by_status_priority(&conn).unwrap();
    assert_eq!(counts, [count("assigned", "normal", 1)]);
}

#[test]
fn a_record_without_texts_and_no_stored_row_fails_and_writes_nothing() {
    let conn = memory_db();
    let mut queue = Queue::new(QueueConfig::default());
    queue.submit(1, NewTask::new("t", "a description")).unwrap();
    let changes = queue.drain_changes();
    let task = changes[0].task();
    let texts = Texts {
        description: None,
        metadata: Some("{}"),
    };
    let tx = conn.unchecked_transaction().unwrap();
    let err = write_tasks(&tx, &[(task, texts)], &mut KnownRows::default()).unwrap_err();
    drop(tx);
    assert!(
        err.to_string()
            .contains("task t: a record without its description"),
        "{err}"
    );
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(counts_and_truth(&conn).0, []);
}

/// The stored row of `id`: its rowid and status.
fn row_of(conn: &Connection, id: &str) -> (i64, String) {
    conn.query_row("SELECT rowid, status FROM tasks WHERE id = ?1", [id], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

/// A database holding tasks `a` and `b`, queued, the writer that wrote them
/// and the queue they came from.
fn a_and_b_queued() -> (Connection, KnownRows, Queue) {
    let conn = memory_db();
    let mut known = KnownRows::default();
    let mut queue = Queue::new(QueueConfig::default());
    queue.submit(1, NewTask::new("a", "x")).unwrap();
    queue.submit(1, NewTask::new("b", "x")).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    (conn, known, queue)
}

#[test]
fn the_writer_remembers_the_rows_of_held_tasks_only() {
    let (conn, mut known, mut queue) = a_and_b_queued();
    let agent = AgentId::from("agent");
    assert_eq!(known.len(), 0, "queued tasks are not remembered");
    let generation = queue.assign(2, &"a".into(), &agent).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    assert_eq!(known.len(), 1, "the held one is");
    queue.accept(3, &"a".into(), &agent).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    assert_eq!(known.len(), 1);
    queue
        .complete(4, &"a".into(), &agent, generation, done())
        .unwrap();
    queue.cancel(4, &"b".into()).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    assert_eq!(known.len(), 0, "final tasks are forgotten");
    assert_eq!(row_of(&conn, "a").1, "completed");
    assert_eq!(row_of(&conn, "b").1, "cancelled");
    assert_exact(&conn);
}

#[test]
fn a_remembered_rowid_that_no_longer_holds_the_task_is_not_written() {
    let (conn, mut known, mut queue) = a_and_b_queued();
    let agent = AgentId::from("agent");
    queue.assign(2, &"a".into(), &agent).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    assert_eq!(known.len(), 1);
    // Behind the writer's back, the two rows trade places.
    let (a, b) = (row_of(&conn, "a").0, row_of(&conn, "b").0);
    conn.execute_batch(&format!(
        "UPDATE tasks SET rowid = -1 WHERE rowid = {a}; \
         UPDATE tasks SET rowid = {a} WHERE rowid = {b}; \
         UPDATE tasks SET rowid = {b} WHERE rowid = -1;"
    ))
    .unwrap();
    queue.accept(3, &"a".into(), &agent).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    assert_eq!(row_of(&conn, "a"), (b, "working".to_owned()));
    assert_eq!(row_of(&conn, "b"), (a, "queued".to_owned()));
    assert_exact(&conn);
    // And it is remembered where it is now.
    queue.progress(4, &"a".into(), &agent).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    conn.execute(
        &format!("UPDATE tasks SET rowid = {} WHERE rowid = {b}", b + 100),
        [],
    )
    .unwrap();
    let moved = b + 100;
    queue.progress(5, &"a".into(), &agent).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    assert_eq!(row_of(&conn, "a"), (moved, "working".to_owned()));
    let alive: i64 = conn
        .query_row("SELECT last_alive_at FROM tasks WHERE id = 'a'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(alive, 5);
    assert_exact(&conn);
}

#[test]
fn a_submission_record_of_a_stored_row_updates_that_row() {
    let conn = memory_db();
    let mut queue = Queue::new(QueueConfig::default());
    queue.submit(1, NewTask::new("a", "x")).unwrap();
    let submitted = queue.drain_changes();
    commit(&conn, &submitted, true, &mut KnownRows::default());
    // The same record again, to a writer that does not remember the row
    // (as after a restart): no second row, no second count.
    let mut cold = KnownRows::default();
    commit(&conn, &submitted, true, &mut cold);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    assert_eq!(assert_exact(&conn), [count("queued", "normal", 1)]);
    assert_eq!(cold.len(), 0, "a queued task is not remembered");
}

#[test]
fn a_group_that_does_not_commit_teaches_the_writer_nothing() {
    let conn = memory_db();
    let mut known = KnownRows::default();
    let mut queue = Queue::new(QueueConfig::default());
    let agent = AgentId::from("agent");
    // Submitted and assigned in one group, which is rolled back.
    queue.submit(1, NewTask::new("a", "x")).unwrap();
    queue.assign(1, &"a".into(), &agent).unwrap();
    let a_changes = queue.drain_changes();
    let tx = conn.unchecked_transaction().unwrap();
    let newest = a_changes.last().unwrap().task();
    let texts = Texts::of(a_changes[0].task());
    write_tasks(&tx, &[(newest, texts)], &mut known).unwrap();
    assert_eq!(known.len(), 1, "learned within the group");
    drop(tx);
    known.settle(false);
    assert_eq!(known.len(), 0, "and forgotten with it");
    // Another task takes the rowid the rolled-back insert had; the first is
    // then written for real, and both rows are updated where they are.
    queue.submit(2, NewTask::new("b", "x")).unwrap();
    queue.assign(2, &"b".into(), &agent).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    commit(&conn, &a_changes, true, &mut known);
    queue.accept(3, &"a".into(), &agent).unwrap();
    queue.accept(3, &"b".into(), &agent).unwrap();
    commit(&conn, &queue.drain_changes(), true, &mut known);
    assert_eq!(row_of(&conn, "a").1, "working");
    assert_eq!(row_of(&conn, "b").1, "working");
    assert_exact(&conn);
}

#[test]
fn rows_beyond_what_the_writer_remembers_are_looked_up() {
    let conn = memory_db();
    let mut known = KnownRows::with_max(2);
    let mut queue = Queue::new(QueueConfig::default());
    let ids = ["a", "b", "c", "d"];
    for id in ids {
        queue.submit(1, NewTask::new(id, "x")).unwrap();
    }
    commit(&conn, &queue.drain_changes(), true, &mut known);
    let mut generations = Vec::new();
    for id in ids {
        let agent = AgentId::from(format!("agent-{id}"));
        generations.push(queue.assign(2, &id.into(), &agent).unwrap());
    }
    commit(&conn, &queue.drain_changes(), true, &mut known);
    assert_eq!(known.len(), 2, "four held, two remembered");
    for (i, (id, generation)) in ids.into_iter().zip(generations).enumerate() {
        let agent = AgentId::from(format!("agent-{id}"));
        queue
            .complete(3 + i as u64, &id.into(), &agent, generation, done())
            .unwrap();
        commit(&conn, &queue.drain_changes(), true, &mut known);
        assert_eq!(row_of(&conn, id).1, "completed");
        assert!(known.len() <= 2);
    }
    assert_eq!(known.len(), 0);
    assert_eq!(assert_exact(&conn), [count("completed", "normal", 4)]);
}

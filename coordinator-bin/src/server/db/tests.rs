//! Tests of the storage: counts kept by triggers, migrations, the task row codec.

use std::sync::Arc;

use proptest::prelude::*;
use queue_core::{
    Completion, HistoryEntry, HistoryEvent, Holder, Priority, Status, Task, TaskId, HISTORY_CAP,
};

use super::schema::{APPLICATION_ID, MIGRATIONS};
use super::*;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coordinator-db-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("c.db")
}

fn record(id: &str, status: Status) -> Task {
    let mut queue = queue_core::Queue::new(queue_core::QueueConfig::default());
    queue.submit(1, queue_core::NewTask::new(id, "x")).unwrap();
    let mut task = queue.drain_changes().pop().unwrap().into_task();
    task.status = status;
    task
}

fn counts(conn: &Connection) -> Vec<(String, String, u64)> {
    let mut counts = count_by_status_priority(conn).unwrap();
    counts.sort();
    counts
}

#[test]
fn counts_follow_inserts_updates_and_deletes() {
    let path = temp_db("counts");
    let conn = open(&path).unwrap();
    upsert_task(&conn, &record("a", Status::Queued)).unwrap();
    upsert_task(&conn, &record("b", Status::Queued)).unwrap();
    upsert_task(&conn, &record("a", Status::Completed)).unwrap();
    upsert_task(&conn, &record("b", Status::Queued)).unwrap();
    assert_eq!(
        counts(&conn),
        [
            ("completed".into(), "normal".into(), 1),
            ("queued".into(), "normal".into(), 1)
        ]
    );
    assert_eq!(delete_expired(&conn, 1 << 60).unwrap(), 1);
    assert_eq!(counts(&conn), [("queued".into(), "normal".into(), 1)]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A row as versions 1 and 2 wrote it: without the columns added since.
fn insert_old_row(conn: &Connection, id: &str, status: &str) {
    conn.execute(
        "INSERT INTO tasks (id, description, metadata, priority, status, generation, \
         retry_count, max_retries, needed_capabilities, created_at, updated_at, queue_seq, \
         history) VALUES (?1, 'x', '{}', 'normal', ?2, 0, 0, 3, '[]', 1, 1, 0, '[]')",
        [id, status],
    )
    .unwrap();
}

#[test]
fn a_version_1_database_is_migrated_with_its_counts() {
    let path = temp_db("migrate");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        insert_old_row(&conn, "old", "dead_letter");
    }
    let conn = open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(counts(&conn), [("dead_letter".into(), "normal".into(), 1)]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_version_2_database_gains_reclaim_counts_of_zero() {
    let path = temp_db("migrate-3");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        insert_old_row(&conn, "old", "queued");
    }
    let conn = open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!((version, SCHEMA_VERSION), (3, 3));
    let back = get_task(&conn, "old").unwrap().unwrap();
    assert_eq!((back.status, back.reclaim_count), (Status::Queued, 0));
    let mut bumped = back.clone();
    bumped.reclaim_count = 4;
    upsert_task(&conn, &bumped).unwrap();
    assert_eq!(get_task(&conn, "old").unwrap().unwrap().reclaim_count, 4);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn memory_db() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    migrate(&conn, Path::new(":memory:")).unwrap();
    conn
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, NUL and quotes included, mostly short.
    prop_oneof![
        3 => "\\PC{0,12}",
        1 => any::<String>(),
        1 => Just(String::new()),
    ]
}

fn holder() -> impl Strategy<Value = Option<Box<Holder>>> {
    proptest::option::of((text(), any::<u64>(), any::<u64>()).prop_map(
        |(agent, assigned_at_ms, last_alive_at_ms)| {
            Box::new(Holder {
                agent_id: agent.as_str().into(),
                assigned_at_ms,
                last_alive_at_ms,
            })
        },
    ))
}

fn outcome() -> impl Strategy<Value = Option<Box<Completion>>> {
    proptest::option::of((text(), proptest::option::of(any::<u64>())).prop_map(
        |(result, tokens_used)| {
            Box::new(Completion {
                result,
                tokens_used,
            })
        },
    ))
}

fn history() -> impl Strategy<Value = Vec<HistoryEntry>> {
    proptest::collection::vec(
        (
            proptest::sample::select(HistoryEvent::ALL.to_vec()),
            any::<u64>(),
            text(),
        )
            .prop_map(|(event, timestamp_ms, details)| HistoryEntry {
                event,
                timestamp_ms,
                details: details.into(),
            }),
        0..=HISTORY_CAP,
    )
}

/// Any task record with the given id: every status with or without a holder, an
/// outcome, a last error, any history, any counters, including values past
/// `i64::MAX` that SQLite stores as negative integers.
fn task_with_id(id: String) -> impl Strategy<Value = Task> {
    let kind = (
        proptest::sample::select(Priority::ALL.to_vec()),
        proptest::sample::select(Status::ALL.to_vec()),
        holder(),
        outcome(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    );
    let counters = (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    );
    let texts = (
        text(),
        text(),
        proptest::collection::vec(text(), 0..4),
        history(),
    );
    (kind, counters, texts).prop_map(
        move |(
            (priority, status, holder, outcome, last_error, submitted_by),
            (
                generation,
                retry_count,
                max_retries,
                complete_by_ms,
                created,
                updated,
                queue_seq,
                reclaim_count,
            ),
            (description, metadata, capabilities, history),
        )| Task {
            id: TaskId::from(id.as_str()),
            description: description.into(),
            metadata: metadata.into(),
            priority,
            status,
            holder,
            generation,
            retry_count,
            reclaim_count,
            max_retries,
            complete_by_ms,
            needed_capabilities: capabilities.into(),
            outcome,
            last_error: last_error.map(Into::into),
            submitted_by: submitted_by.map(|s| Arc::from(s.as_str())),
            created_at_ms: created,
            updated_at_ms: updated,
            queue_seq,
            history,
        },
    )
}

/// Two records of one task: the first is inserted, the second updates it in place.
fn two_records() -> impl Strategy<Value = (Task, Task)> {
    text().prop_flat_map(|id| (task_with_id(id.clone()), task_with_id(id)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A record read back equals the record written, field for field (`Task`'s
    /// `PartialEq` compares all of them), both when inserted and when it replaces
    /// an older record of the same task.
    #[test]
    fn a_task_survives_the_row_codec((first, second) in two_records()) {
        let conn = memory_db();
        upsert_task(&conn, &first).unwrap();
        let back = get_task(&conn, first.id.as_str()).unwrap();
        prop_assert_eq!(back.as_ref(), Some(&first));
        upsert_task(&conn, &second).unwrap();
        let back = get_task(&conn, second.id.as_str()).unwrap();
        prop_assert_eq!(back.as_ref(), Some(&second));
        let listed = list_tasks(&conn, &TaskFilter { limit: 10, ..TaskFilter::default() }).unwrap();
        prop_assert_eq!(listed, vec![second.clone()]);
        let live = load_live_tasks(&conn).unwrap();
        let expected_live = if second.status.is_final() { vec![] } else { vec![second] };
        prop_assert_eq!(live, expected_live);
    }
}

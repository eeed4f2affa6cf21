//! Tests of the storage: counts kept by triggers, migrations.

use queue_core::{Status, Task};

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

#[test]
fn a_version_1_database_is_migrated_with_its_counts() {
    let path = temp_db("migrate");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        upsert_task(&conn, &record("old", Status::DeadLetter)).unwrap();
    }
    let conn = open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(counts(&conn), [("dead_letter".into(), "normal".into(), 1)]);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

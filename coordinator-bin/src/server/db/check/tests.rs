//! Tests of `coordinator check`'s findings on real files.

use std::path::PathBuf;

use coordinator_queue::{NewTask, Queue, QueueConfig};

use super::*;
use crate::server::db::{open, upsert_task};

struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> TempDb {
        let dir =
            std::env::temp_dir().join(format!("coordinator-check-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDb(dir.join("c.db"))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A coordinator database with `n` queued tasks `t0`, `t1`, ... and one
/// token; the connection that wrote it stays open (as a running service's).
fn filled(db: &TempDb, n: usize) -> Connection {
    let conn = open(&db.0).unwrap();
    let mut queue = Queue::new(QueueConfig::default());
    for i in 0..n {
        queue
            .submit(1, NewTask::new(format!("t{i}"), "work"))
            .unwrap();
    }
    for change in queue.drain_changes() {
        upsert_task(&conn, change.task()).unwrap();
    }
    let token = crate::server::auth::generate_token();
    crate::server::db::insert_token(
        &conn,
        &crate::session::Identity::Agent("a1".into()),
        &crate::server::auth::hash(&token),
        1,
    )
    .unwrap();
    conn
}

fn rows_checked(report: &CheckReport) -> Vec<(&'static str, u64, usize)> {
    report
        .tables
        .iter()
        .map(|t| (t.table.name(), t.n_rows, t.damaged.len()))
        .collect()
}

#[test]
fn a_clean_file_is_clean_and_left_byte_for_byte_as_it_was() {
    let db = TempDb::new("clean");
    let writer = filled(&db, 3);
    writer
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let before = std::fs::read(&db.0).unwrap();
    let report = check(&db.0).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        rows_checked(&report),
        [
            ("tasks", 3, 0),
            ("tokens", 1, 0),
            ("meta", 0, 0),
            ("task_counts", 32, 0)
        ]
    );
    assert_eq!(report.unknown_tables, Vec::<String>::new());
    assert_eq!(std::fs::read(&db.0).unwrap(), before);
}

#[test]
fn it_reads_one_snapshot_beside_a_writer_that_holds_a_transaction_open() {
    let db = TempDb::new("beside");
    let writer = filled(&db, 2);
    writer
        .execute_batch("BEGIN IMMEDIATE; UPDATE tasks SET history = 'x' WHERE id = 't0';")
        .unwrap();
    let report = check(&db.0).unwrap();
    assert!(
        report.is_clean(),
        "an uncommitted change is not seen: {report:?}"
    );
    writer.execute_batch("COMMIT").unwrap();
    let report = check(&db.0).unwrap();
    assert_eq!(report.n_damaged(), 1);
}

#[test]
fn damaged_rows_of_every_table_are_named_with_their_reason() {
    let db = TempDb::new("damaged");
    let writer = filled(&db, 3);
    writer
        .execute_batch(
            "UPDATE tasks SET needed_capabilities = 'gpu' WHERE id = 't1'; \
             UPDATE tokens SET kind = 'admin', hash = x'00' WHERE name = 'a1'; \
             INSERT INTO meta (key, value) VALUES ('k', x'01'); \
             UPDATE task_counts SET n = n + 2 WHERE status = 'queued' AND priority = 'normal'; \
             CREATE TABLE notes (x);",
        )
        .unwrap();
    let report = check(&db.0).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.integrity, Vec::<String>::new());
    assert_eq!(
        rows_checked(&report),
        [
            ("tasks", 3, 1),
            ("tokens", 1, 1),
            ("meta", 1, 1),
            ("task_counts", 32, 1)
        ]
    );
    let damaged: Vec<String> = report
        .tables
        .iter()
        .flat_map(|t| t.damaged.iter().map(ToString::to_string))
        .collect();
    assert_eq!(
        damaged,
        [
            "task \"t1\" (row 2): column `needed_capabilities`: not a JSON list of strings (expected value at line 1 column 1)",
            "token \"a1\" (row 1): column `hash`: 1 bytes where a SHA-256 digest has 32",
            "meta key \"k\" (row 1): column `value`: expected text, found a blob",
            "count \"queued/normal\": counts 5 tasks where the tasks table holds 3",
        ]
    );
    assert_eq!(report.unknown_tables, ["notes"]);
}

#[test]
fn pages_overwritten_in_the_middle_of_the_file_fail_the_integrity_check() {
    let db = TempDb::new("pages");
    let writer = filled(&db, 1200);
    writer
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(writer);
    let mut bytes = std::fs::read(&db.0).unwrap();
    assert!(bytes.len() > 16 * 4096, "{} bytes", bytes.len());
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 8192] {
        *b = 0x5a;
    }
    std::fs::write(&db.0, &bytes).unwrap();
    let report = check(&db.0).unwrap();
    assert!(!report.is_clean());
    assert!(!report.integrity.is_empty(), "{report:?}");
}

#[test]
fn files_that_cannot_be_checked_are_told_apart_and_not_created() {
    let db = TempDb::new("uncheckable");
    let missing = db.0.with_file_name("missing.db");
    assert!(matches!(check(&missing), Err(CheckError::Unreadable(..))));
    assert!(!missing.exists(), "check does not create a file");

    let text = db.0.with_file_name("text.db");
    std::fs::write(&text, vec![b'x'; 4096]).unwrap();
    assert!(matches!(check(&text), Err(CheckError::Unreadable(..))));

    let foreign = db.0.with_file_name("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
        .unwrap();
    assert_eq!(
        check(&foreign),
        Err(CheckError::NotOurs(foreign.clone(), 0))
    );

    drop(filled(&db, 1));
    Connection::open(&db.0)
        .unwrap()
        .pragma_update(None, "user_version", 2)
        .unwrap();
    assert_eq!(
        check(&db.0),
        Err(CheckError::OtherVersion {
            path: db.0.clone(),
            found: 2
        })
    );
}

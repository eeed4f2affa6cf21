//! Tests of the SQLite store's group commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coordinator_queue::{AgentId, NewTask, Queue, QueueConfig};

use super::write_group;
use crate::server::db;
use crate::session::Batch;

/// Set by [`note_busy`] when the writer's connection found the lock held.
static BUSY_SEEN: AtomicBool = AtomicBool::new(false);

/// A busy handler that notes the wait and asks SQLite to try again (a bounded
/// number of times).
fn note_busy(attempt: i32) -> bool {
    BUSY_SEEN.store(true, Ordering::SeqCst);
    std::thread::yield_now();
    attempt < 1_000_000
}

#[test]
fn a_group_waits_for_another_writer_instead_of_failing() {
    let dir = std::env::temp_dir().join(format!("coordinator-group-busy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.db");
    let mut writer = db::open(&path).unwrap();
    let mut queue = Queue::new(QueueConfig::default());
    queue.submit(1, NewTask::new("t", "x")).unwrap();
    let batch = |seq, changes| Batch {
        seq,
        changes,
        tokens: Vec::new(),
    };
    let mut known = db::KnownRows::default();
    write_group(&writer, &[batch(1, queue.drain_changes())], &[], &mut known).unwrap();
    // The next group reads the stored row before it updates it (a writer that
    // does not remember it, as after a restart), while another connection
    // (say `coordinator token`) holds the write lock.
    queue
        .assign(2, &"t".into(), &AgentId::from("agent"))
        .unwrap();
    let other = db::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    writer.busy_handler(Some(note_busy)).unwrap();
    let holder = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !BUSY_SEEN.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        other.execute_batch("COMMIT").unwrap();
    });
    let mut cold = db::KnownRows::default();
    let written = write_group(&writer, &[batch(2, queue.drain_changes())], &[], &mut cold);
    holder.join().unwrap();
    assert_eq!(written.unwrap(), 1);
    assert!(BUSY_SEEN.load(Ordering::SeqCst));
    let status: String = writer
        .query_row("SELECT status FROM tasks WHERE id = 't'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "assigned");
    let _ = std::fs::remove_dir_all(&dir);
}

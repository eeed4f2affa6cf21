//! The single writer: owns the read-write connection and commits in groups.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::thread;

use queue_core::Change;
use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::server::db;

/// Work for the writer.
pub enum WriteJob {
    /// Persist these records; report `seq` as committed afterwards.
    Batch {
        /// Increasing batch number.
        seq: u64,
        /// The records, oldest first.
        changes: Vec<Change>,
    },
    /// Delete final tasks older than this (retention).
    Cleanup {
        /// The cut-off time.
        before_ms: u64,
    },
}

/// The sending side of the writer thread.
pub struct Writer {
    jobs: std_mpsc::Sender<WriteJob>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What the writer reports back.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// Every batch up to this number is durable.
    pub seq: u64,
    /// Rows written in the transaction.
    pub rows: usize,
    /// Time the commit took.
    pub commit_micros: u64,
}

impl Writer {
    /// Starts the writer thread on `conn`. Committed batch numbers come out of
    /// `committed`. A failed commit stops the process: a state that is not on disk
    /// must never be served.
    pub fn start(
        conn: Connection,
        db_path: PathBuf,
        committed: mpsc::UnboundedSender<Committed>,
    ) -> Writer {
        let (jobs, rx) = std_mpsc::channel();
        let thread = thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, rx, committed, db_path))
            .expect("can spawn the writer thread");
        Writer {
            jobs,
            thread: Some(thread),
        }
    }

    /// Queues a job; false once the writer has stopped.
    pub fn submit(&self, job: WriteJob) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// Lets the writer finish what is queued and waits for it.
    pub fn shutdown(mut self) {
        let (dummy, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, dummy));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Largest number of batches folded into one transaction.
const MAX_GROUP: usize = 512;

fn run(
    conn: Connection,
    rx: std_mpsc::Receiver<WriteJob>,
    committed: mpsc::UnboundedSender<Committed>,
    db_path: PathBuf,
) {
    while let Ok(first) = rx.recv() {
        let mut batches = Vec::new();
        let mut cleanups = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                WriteJob::Batch { seq, changes } => batches.push((seq, changes)),
                WriteJob::Cleanup { before_ms } => cleanups.push(before_ms),
            }
            if batches.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        let started = std::time::Instant::now();
        match write_group(&conn, &batches, &cleanups) {
            Ok(rows) => {
                if let Some((seq, _)) = batches.last() {
                    let _ = committed.send(Committed {
                        seq: *seq,
                        rows,
                        commit_micros: started.elapsed().as_micros() as u64,
                    });
                }
            }
            Err(err) => {
                tracing::error!(error = %err, db = %db_path.display(), "commit failed; stopping so that nothing is acknowledged that is not on disk");
                eprintln!(
                    "coordinator: commit to {} failed: {err}; stopping",
                    db_path.display()
                );
                std::process::exit(3);
            }
        }
    }
}

fn write_group(
    conn: &Connection,
    batches: &[(u64, Vec<Change>)],
    cleanups: &[u64],
) -> Result<usize, rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    // Only the newest record of each task needs writing.
    let mut seen = HashSet::new();
    let mut rows = 0;
    for change in batches
        .iter()
        .rev()
        .flat_map(|(_, changes)| changes.iter().rev())
    {
        let task = change.task();
        if seen.insert(task.id.clone()) {
            db::upsert_task(&tx, task)?;
            rows += 1;
        }
    }
    for before_ms in cleanups {
        let deleted = db::delete_expired(&tx, *before_ms)?;
        if deleted > 0 {
            tracing::info!(deleted, "retention: deleted old final tasks");
        }
    }
    tx.commit()?;
    Ok(rows)
}

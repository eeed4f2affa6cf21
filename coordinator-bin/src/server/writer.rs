//! The single writer: owns the read-write connection and commits in groups.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::thread;

use coordinator_queue::{Change, Task, TaskId};
use rusqlite::Connection;
use tokio::sync::{mpsc, watch};

use super::{auth, db};
use crate::session::{Batch, TokenWrite};

/// Work for the writer.
pub enum WriteJob {
    /// Persist this batch; report its `seq` as committed afterwards.
    Batch(Batch),
    /// Delete final tasks older than this (retention).
    Purge {
        /// The cut-off time.
        before_ms: u64,
    },
}

/// What the writer reports: the newest batch committed, or why it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterReport {
    /// Every batch up to this number is durable.
    Committed {
        /// The batch number.
        seq: u64,
    },
    /// A commit failed; the writer has stopped and nothing more will be committed.
    Failed(String),
}

/// Batches that may wait for the writer before the driver waits in turn.
const QUEUE_DEPTH: usize = 1024;

/// The sending side of the writer thread.
pub struct Writer {
    jobs: Option<mpsc::Sender<WriteJob>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `conn`; its progress comes out of the returned
    /// receiver (only the newest report matters, so a watch channel carries it and
    /// nothing queues up). A failed commit stops the writer and is reported.
    pub fn start(conn: Connection, db_path: PathBuf) -> (Writer, watch::Receiver<WriterReport>) {
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let (report, reports) = watch::channel(WriterReport::Committed { seq: 0 });
        let thread = thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, rx, report, db_path))
            .expect("can spawn the writer thread");
        let writer = Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        (writer, reports)
    }

    /// Queues a job, waiting while the writer is `QUEUE_DEPTH` jobs behind;
    /// false once the writer has stopped.
    pub async fn submit(&self, job: WriteJob) -> bool {
        match &self.jobs {
            Some(jobs) => jobs.send(job).await.is_ok(),
            None => false,
        }
    }

    /// Lets the writer finish what is queued and waits for it.
    pub fn shutdown(mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Largest number of batches folded into one transaction.
const MAX_GROUP: usize = 512;

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<WriteJob>,
    report: watch::Sender<WriterReport>,
    db_path: PathBuf,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batches = Vec::new();
        let mut purges = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                WriteJob::Batch(batch) => batches.push(batch),
                WriteJob::Purge { before_ms } => purges.push(before_ms),
            }
            if batches.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        let started = std::time::Instant::now();
        match write_group(&conn, &batches, &purges) {
            Ok(rows) => {
                super::metrics::record_commit(rows, started.elapsed().as_micros() as u64);
                if let Some(batch) = batches.last() {
                    report.send_replace(WriterReport::Committed { seq: batch.seq });
                }
            }
            Err(err) => {
                tracing::error!(error = %err, db = %db_path.display(), "commit failed");
                report.send_replace(WriterReport::Failed(format!(
                    "commit to {} failed: {err}",
                    db_path.display()
                )));
                return;
            }
        }
    }
}

fn write_group(
    conn: &Connection,
    batches: &[Batch],
    purges: &[u64],
) -> Result<usize, rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    let newest = newest_per_task(batches);
    for (task, texts) in &newest {
        db::write_task(&tx, task, *texts)?;
    }
    let mut rows = newest.len();
    for write in batches.iter().flat_map(|batch| &batch.tokens) {
        match write {
            TokenWrite::Create {
                identity,
                hash,
                created_at_ms,
            } => auth::insert_token(&tx, identity, hash, *created_at_ms)?,
            TokenWrite::Revoke { ids, revoked_at_ms } => {
                auth::revoke_token_rows(&tx, ids, *revoked_at_ms)?
            }
        }
        rows += 1;
    }
    for before_ms in purges {
        let deleted = db::delete_expired(&tx, *before_ms)?;
        if deleted > 0 {
            tracing::info!(deleted, "retention: deleted old final tasks");
        }
    }
    tx.commit()?;
    Ok(rows)
}

/// The newest record of each task in `batches` (oldest batch first, oldest change
/// first within a batch): only those need writing. Newest first. Each comes
/// with its description and metadata, taken from an older record of the group
/// when the newest leaves them out (a task submitted and assigned within one
/// group is inserted with the texts its submission carried).
fn newest_per_task(batches: &[Batch]) -> Vec<(&Task, db::Texts<'_>)> {
    let mut at: HashMap<&TaskId, usize> = HashMap::new();
    let mut newest: Vec<(&Task, db::Texts<'_>)> = Vec::new();
    for task in batches
        .iter()
        .rev()
        .flat_map(|batch| batch.changes.iter().rev())
        .map(Change::task)
    {
        match at.entry(task.id()) {
            Entry::Vacant(slot) => {
                slot.insert(newest.len());
                newest.push((task, db::Texts::of(task)));
            }
            Entry::Occupied(slot) => {
                let texts = &mut newest[*slot.get()].1;
                let older = db::Texts::of(task);
                texts.description = texts.description.or(older.description);
                texts.metadata = texts.metadata.or(older.metadata);
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests;

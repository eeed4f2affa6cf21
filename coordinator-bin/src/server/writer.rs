//! The single writer: group commit on the store's one write connection. Jobs
//! queue on a bounded channel; each wake folds every job waiting (up to
//! [`MAX_GROUP`] batches) into one [`Group`], which the store commits in one
//! transaction; the newest batch committed is reported, and a failed commit
//! stops the writer for good. The SQL is the store's (`store/`), not this file's.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::thread;

use async_trait::async_trait;
use coordinator_queue::{Change, Task, TaskId};
use tokio::sync::{mpsc, watch};

use super::db;
use crate::session::Batch;

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

/// The jobs committed together in one transaction.
#[derive(Default)]
pub struct Group {
    /// The batches, oldest first.
    pub batches: Vec<Batch>,
    /// The retention cut-offs to apply.
    pub purges: Vec<u64>,
}

/// A store's commit of one [`Group`] on an async connection: the number of
/// rows written, or why the transaction failed (it is then not committed).
#[async_trait]
pub trait GroupCommit: Send + 'static {
    /// Commits `group` in one transaction.
    async fn commit(&mut self, group: &Group) -> Result<usize, String>;
}

/// Batches that may wait for the writer before the driver waits in turn.
const QUEUE_DEPTH: usize = 1024;

/// How the writer runs: a thread of its own (a blocking connection) or a task.
enum Running {
    Thread(thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

/// The sending side of the writer.
pub struct Writer {
    jobs: Option<mpsc::Sender<WriteJob>>,
    running: Option<Running>,
}

impl Writer {
    /// Starts the writer on a thread of its own, committing each group with
    /// `commit` (a blocking connection); its progress comes out of the
    /// returned receiver (only the newest report matters, so a watch channel
    /// carries it and nothing queues up). `describe` names the database in the
    /// report of a failed commit.
    pub fn start_blocking<F>(
        describe: String,
        mut commit: F,
    ) -> (Writer, watch::Receiver<WriterReport>)
    where
        F: FnMut(&Group) -> Result<usize, String> + Send + 'static,
    {
        let (jobs, mut rx) = mpsc::channel(QUEUE_DEPTH);
        let (report, reports) = watch::channel(WriterReport::Committed { seq: 0 });
        let thread = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let group = take_group(first, &mut rx);
                    let started = std::time::Instant::now();
                    let outcome = commit(&group);
                    if !report_outcome(&report, &group, outcome, started, &describe) {
                        return;
                    }
                }
            })
            .expect("can spawn the writer thread");
        let writer = Writer {
            jobs: Some(jobs),
            running: Some(Running::Thread(thread)),
        };
        (writer, reports)
    }

    /// Starts the writer as a task committing each group with `commit` (an
    /// async connection), reporting as [`Writer::start_blocking`] does.
    pub fn start_async<C: GroupCommit>(
        describe: String,
        mut commit: C,
    ) -> (Writer, watch::Receiver<WriterReport>) {
        let (jobs, mut rx) = mpsc::channel(QUEUE_DEPTH);
        let (report, reports) = watch::channel(WriterReport::Committed { seq: 0 });
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let group = take_group(first, &mut rx);
                let started = std::time::Instant::now();
                let outcome = commit.commit(&group).await;
                if !report_outcome(&report, &group, outcome, started, &describe) {
                    return;
                }
            }
        });
        let writer = Writer {
            jobs: Some(jobs),
            running: Some(Running::Task(task)),
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
    pub async fn shutdown(mut self) {
        self.jobs = None;
        match self.running.take() {
            Some(Running::Thread(thread)) => {
                let _ = thread.join();
            }
            Some(Running::Task(task)) => {
                let _ = task.await;
            }
            None => {}
        }
    }
}

/// Largest number of batches folded into one transaction.
const MAX_GROUP: usize = 512;

/// `first` and every job already waiting behind it, up to [`MAX_GROUP`] batches.
fn take_group(first: WriteJob, rx: &mut mpsc::Receiver<WriteJob>) -> Group {
    let mut group = Group::default();
    let mut next = Some(first);
    while let Some(job) = next.take() {
        match job {
            WriteJob::Batch(batch) => group.batches.push(batch),
            WriteJob::Purge { before_ms } => group.purges.push(before_ms),
        }
        if group.batches.len() < MAX_GROUP {
            next = rx.try_recv().ok();
        }
    }
    group
}

/// Reports the outcome of one group's commit; false if it failed (the writer
/// then stops).
fn report_outcome(
    report: &watch::Sender<WriterReport>,
    group: &Group,
    outcome: Result<usize, String>,
    started: std::time::Instant,
    describe: &str,
) -> bool {
    match outcome {
        Ok(rows) => {
            super::metrics::record_commit(rows, started.elapsed().as_micros() as u64);
            if let Some(batch) = group.batches.last() {
                report.send_replace(WriterReport::Committed { seq: batch.seq });
            }
            true
        }
        Err(err) => {
            tracing::error!(error = %err, db = %describe, "commit failed");
            report.send_replace(WriterReport::Failed(format!(
                "commit to {describe} failed: {err}"
            )));
            false
        }
    }
}

/// The newest record of each task in `batches` (oldest batch first, oldest change
/// first within a batch): only those need writing. Newest first. Each comes
/// with its description and metadata, taken from an older record of the group
/// when the newest leaves them out (a task submitted and assigned within one
/// group is inserted with the texts its submission carried).
pub fn newest_per_task(batches: &[Batch]) -> Vec<(&Task, db::Texts<'_>)> {
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

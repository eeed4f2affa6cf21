//! The SQLite store: one file, locked by one service, written by one writer
//! thread (WAL, `synchronous=FULL`, group commit) and read through a small
//! pool of read-only connections. The SQL itself is in `server/db/`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use coordinator_queue::{ScheduledLoad, ScheduledPage, Status, Task, TaskId};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::watch;

use super::{KeyedTask, LiveTokens, PayloadResult, Store};
use crate::server::auth::TokenList;
use crate::server::db::{
    self, Counts, DamagedRow, DbError, LiveTasks, ReadPool, TaskFilter, TaskPage,
};
use crate::server::writer::{newest_per_task, Group, Writer, WriterReport};
use crate::session::{Batch, Identity, LoadedPayload, TokenWrite};

/// A coordinator database in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    /// The read-write connection until the writer takes it.
    write: Mutex<Option<Connection>>,
    reads: ReadPool,
    /// The advisory lock of a service on the file, held while the store lives.
    _lock: Option<File>,
}

impl SqliteStore {
    /// Locks the file at `path` for this process (creating it, mode 0600),
    /// then opens and migrates it: one service per file.
    pub fn open_locked(path: &Path) -> Result<SqliteStore, DbError> {
        let lock = db::lock_exclusive(path)?;
        let mut store = SqliteStore::open(path)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Opens (creating and migrating if needed) the file at `path` without
    /// locking it, for `coordinator token` and tests.
    pub fn open(path: &Path) -> Result<SqliteStore, DbError> {
        let conn = db::open(path)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            write: Mutex::new(Some(conn)),
            reads: ReadPool::new(path),
            _lock: None,
        })
    }

    /// Runs `f` on the read-write connection, as long as the writer has not
    /// taken it.
    fn direct<T>(&self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        match write.as_ref() {
            Some(conn) => f(conn),
            None => Err(DbError::Unavailable(
                "the writer holds the write connection".to_owned(),
            )),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn load_live_tasks(&self, max_inline_bytes: usize) -> Result<LiveTasks, DbError> {
        self.reads
            .run(move |c| db::load_restore_set(c, max_inline_bytes))
            .await
    }

    async fn load_scheduled(
        &self,
        load: ScheduledLoad,
        max_inline_bytes: usize,
    ) -> Result<(ScheduledPage, Vec<DamagedRow>), DbError> {
        self.reads
            .run(move |c| db::load_scheduled(c, &load, max_inline_bytes))
            .await
    }

    async fn get_task(&self, id: String) -> Result<Option<Task>, DbError> {
        self.reads.run(move |c| db::get_task(c, &id)).await
    }

    async fn get_payloads(&self, ids: Vec<TaskId>) -> Result<Vec<PayloadResult>, DbError> {
        self.reads
            .run(move |c| {
                Ok(ids
                    .into_iter()
                    .map(|id| {
                        let texts = db::get_payload(c, id.as_str()).and_then(|found| {
                            let Some((description, metadata)) = found else {
                                return Ok(None);
                            };
                            let dependencies = db::dependency_results(c, id.as_str())?;
                            Ok(Some(LoadedPayload {
                                description,
                                metadata,
                                dependencies,
                            }))
                        });
                        (id, texts)
                    })
                    .collect())
            })
            .await
    }

    async fn dependents(&self, id: String) -> Result<Vec<String>, DbError> {
        self.reads.run(move |c| db::dependents(c, &id)).await
    }

    async fn task_statuses(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, Option<Status>)>, DbError> {
        self.reads.run(move |c| db::task_statuses(c, &ids)).await
    }

    async fn tasks_by_key(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<((String, String), Option<KeyedTask>)>, DbError> {
        self.reads
            .run(move |c| {
                let mut out = Vec::with_capacity(keys.len());
                for (submitter, key) in keys {
                    let stored = db::task_by_key(c, &submitter, &key)?;
                    out.push(((submitter, key), stored));
                }
                Ok(out)
            })
            .await
    }

    async fn list_tasks(
        &self,
        mut filter: TaskFilter,
        after: Option<String>,
    ) -> Result<Option<TaskPage>, DbError> {
        self.reads
            .run(move |c| {
                if let Some(after) = after {
                    match db::task_seq(c, &after)? {
                        Some(seq) => filter.after_seq = Some(seq),
                        None => return Ok(None),
                    }
                }
                Ok(Some(db::list_tasks(c, &filter)?))
            })
            .await
    }

    async fn count_by_status_priority(&self) -> Result<Counts, DbError> {
        self.reads.run(db::count_by_status_priority).await
    }

    async fn description_heads(
        &self,
        ids: Vec<String>,
        chars: u32,
    ) -> Result<Vec<(String, String)>, DbError> {
        self.reads
            .run(move |c| db::description_heads(c, &ids, chars))
            .await
    }

    async fn list_tokens(&self) -> Result<TokenList, DbError> {
        self.reads.run(db::list_tokens).await
    }

    async fn live_tokens(&self) -> Result<LiveTokens, DbError> {
        self.reads.run(db::load_live).await
    }

    async fn revocation_facts(&self, identity: Identity) -> Result<(Vec<i64>, usize), DbError> {
        self.reads
            .run(move |c| Ok((db::live_token_ids(c, &identity)?, db::live_admin_count(c)?)))
            .await
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>, DbError> {
        self.direct(|c| db::meta_get(c, key))
    }

    async fn meta_set(&self, key: &str, value: &str) -> Result<(), DbError> {
        self.direct(|c| db::meta_set(c, key, value))
    }

    async fn insert_token(
        &self,
        identity: &Identity,
        hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<(), DbError> {
        self.direct(|c| Ok(db::insert_token(c, identity, hash, now_ms)?))
    }

    async fn revoke_tokens(&self, identity: &Identity, now_ms: u64) -> Result<usize, DbError> {
        self.direct(|c| db::revoke_tokens(c, identity, now_ms))
    }

    async fn start_writer(&self) -> Result<(Writer, watch::Receiver<WriterReport>), DbError> {
        let conn = self
            .write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| DbError::Unavailable("the writer was started already".to_owned()))?;
        let mut known = db::KnownRows::default();
        Ok(Writer::start_blocking(
            self.describe(),
            move |group: &Group| {
                write_group(&conn, &group.batches, &group.purges, &mut known)
                    .map_err(|e| e.to_string())
            },
        ))
    }
}

/// Commits `batches` (their newest record of each task, and their token
/// writes) and `purges` in one transaction; the number of rows written.
/// `known` (the rows of the tasks agents hold) keeps what the group
/// taught it only if the group committed.
pub(crate) fn write_group(
    conn: &Connection,
    batches: &[Batch],
    purges: &[u64],
    known: &mut db::KnownRows,
) -> Result<usize, rusqlite::Error> {
    let written = commit_group(conn, batches, purges, known);
    known.settle(written.is_ok());
    written
}

/// The transaction of [`write_group`].
fn commit_group(
    conn: &Connection,
    batches: &[Batch],
    purges: &[u64],
    known: &mut db::KnownRows,
) -> Result<usize, rusqlite::Error> {
    // Immediate: the write lock is taken (waiting out another writer, such as
    // `coordinator token`, within the busy timeout) before the first read of
    // the group. A deferred transaction would begin as a read, and its first
    // write would fail at once, without waiting, had another connection
    // committed since that read.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let newest = newest_per_task(batches);
    db::write_tasks(&tx, &newest, known)?;
    let mut rows = newest.len();
    for write in batches.iter().flat_map(|batch| &batch.tokens) {
        match write {
            TokenWrite::Create {
                identity,
                hash,
                created_at_ms,
            } => db::insert_token(&tx, identity, hash, *created_at_ms)?,
            TokenWrite::Revoke { ids, revoked_at_ms } => {
                db::revoke_token_rows(&tx, ids, *revoked_at_ms)?
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

#[cfg(test)]
mod tests;

//! The storage seam: everything `coordinator serve` (and `coordinator token`)
//! does with the database goes through a [`Store`], so that this folder is the
//! only place that knows SQL. Two implementations: [`sqlite::SqliteStore`]
//! (the default, one file) and [`postgres::PgStore`] (`--db postgres://...`).
//!
//! Writes of the running service go through the group-commit [`Writer`] that
//! [`Store::start_writer`] starts on the store's one write connection; the
//! other writes here ([`Store::meta_set`], [`Store::insert_token`],
//! [`Store::revoke_tokens`]) are for the start-up before the writer runs and
//! for `coordinator token`.

pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use coordinator_queue::{Priority, ScheduledLoad, ScheduledPage, Status, Task, TaskId};
use tokio::sync::watch;

use super::auth::TokenList;
use super::db::{Counts, DamagedRow, DbError, LiveTasks, TaskFilter, TaskPage};
use super::writer::{Writer, WriterReport};
use crate::session::lease::Observation;
use crate::session::{Identity, LoadedPayload};

/// The live tokens by digest, and the rows of live tokens that cannot be
/// decoded (they authenticate nobody).
pub type LiveTokens = (HashMap<[u8; 32], Identity>, Vec<DamagedRow>);

/// The stored texts of one task read for an assignment, with the stored
/// results of its dependencies (in its order; `None` for one storage no
/// longer has) if the task exists, or why they cannot be read.
pub type PayloadResult = (TaskId, Result<Option<LoadedPayload>, DbError>);

/// The task a submitter stored with an idempotency key: its id, lane,
/// status and submission time.
pub type KeyedTask = (String, Priority, Status, u64);

/// What the service needs from its database. Reads may run concurrently; every
/// write of the running service goes through the one [`Writer`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Where the data lives, for logs and messages (never a password).
    fn describe(&self) -> String;

    /// The live tasks to rebuild the scheduler at start (every non-final
    /// task but the scheduled ones no waiting task depends on: those are read
    /// with [`Store::load_scheduled`] as their time nears) and the place
    /// after every stored one; texts longer than `max_inline_bytes` come as
    /// their lengths only. Refuses ([`DbError::DamagedLive`]) if a row that
    /// may be live cannot be decoded.
    async fn load_live_tasks(&self, max_inline_bytes: usize) -> Result<LiveTasks, DbError>;

    /// The scheduled tasks a [`ScheduledLoad`] asks for, with the key of the
    /// next one (texts longer than `max_inline_bytes` as their lengths), and
    /// the rows among them that cannot be decoded (left out of the page).
    async fn load_scheduled(
        &self,
        load: ScheduledLoad,
        max_inline_bytes: usize,
    ) -> Result<(ScheduledPage, Vec<DamagedRow>), DbError>;

    /// One task; [`DbError::Damaged`] if its row cannot be decoded.
    async fn get_task(&self, id: String) -> Result<Option<Task>, DbError>;

    /// The stored description and metadata of each of `ids`, read together
    /// (the outer error: the read as a whole failed).
    async fn get_payloads(&self, ids: Vec<TaskId>) -> Result<Vec<PayloadResult>, DbError>;

    /// The ids of the tasks that depend on `id`, oldest first.
    async fn dependents(&self, id: String) -> Result<Vec<String>, DbError>;

    /// The stored status of each of `ids` (`None`: no such task, or a status
    /// this binary does not know), in their order.
    async fn task_statuses(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, Option<Status>)>, DbError>;

    /// The stored task of each `(submitter, idempotency key)`, in their order.
    async fn tasks_by_key(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<((String, String), Option<KeyedTask>)>, DbError>;

    /// One page of tasks in submission order, after the task named `after`;
    /// `None` if `after` names no task.
    async fn list_tasks(
        &self,
        filter: TaskFilter,
        after: Option<String>,
    ) -> Result<Option<TaskPage>, DbError>;

    /// Task counts by status and lane (zeros left out) and the count rows
    /// that cannot be decoded.
    async fn count_by_status_priority(&self) -> Result<Counts, DbError>;

    /// The first `chars` characters of the descriptions of `ids`, by id.
    async fn description_heads(
        &self,
        ids: Vec<String>,
        chars: u32,
    ) -> Result<Vec<(String, String)>, DbError>;

    /// Every token, oldest first, without secrets.
    async fn list_tokens(&self) -> Result<TokenList, DbError>;

    /// The live tokens by digest.
    async fn live_tokens(&self) -> Result<LiveTokens, DbError>;

    /// The row ids of the live tokens of `identity`, and how many admin tokens
    /// are live: what the session needs to decide a revocation.
    async fn revocation_facts(&self, identity: Identity) -> Result<(Vec<i64>, usize), DbError>;

    /// A value of the `meta` table.
    async fn meta_get(&self, key: &str) -> Result<Option<String>, DbError>;

    /// Sets a value of the `meta` table (a direct write: before the writer
    /// starts, or from `coordinator token`).
    async fn meta_set(&self, key: &str, value: &str) -> Result<(), DbError>;

    /// Stores a token row (a direct write, as for [`Store::meta_set`]).
    async fn insert_token(
        &self,
        identity: &Identity,
        hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<(), DbError>;

    /// Revokes every live token of `identity`; how many (a direct write, as
    /// for [`Store::meta_set`]).
    async fn revoke_tokens(&self, identity: &Identity, now_ms: u64) -> Result<usize, DbError>;

    /// Starts the group-commit writer on the store's one write connection,
    /// which it takes for good (direct writes fail afterwards). A failed
    /// commit stops it and is reported on the returned channel.
    async fn start_writer(&self) -> Result<(Writer, watch::Receiver<WriterReport>), DbError>;

    /// The leadership lease on the write connection, for a store several
    /// coordinators may share (PostgreSQL); `None`: this coordinator always
    /// leads (SQLite: nobody else can open its file).
    fn lease(&self) -> Option<Arc<dyn LeaseStore>> {
        None
    }
}

/// The statements of the leadership lease (SPEC 13), each run on the store's
/// write connection between the writer's groups, as
/// [`crate::session::lease`] asks for them. No decision here.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// [`Decision::Observe`](crate::session::lease::Decision::Observe): the
    /// database's clock, the lease row, and whether this connection holds
    /// (or just took) the advisory lock.
    async fn observe(&self) -> Result<Observation, DbError>;

    /// [`Decision::Renew`](crate::session::lease::Decision::Renew): true if
    /// the row of `node_id` and `epoch` was renewed.
    async fn renew(&self, node_id: &str, epoch: u64) -> Result<bool, DbError>;

    /// [`Decision::TakeOver`](crate::session::lease::Decision::TakeOver): true
    /// if the lock was taken and the row written, in one transaction.
    async fn take_over(&self, take: &TakeOver<'_>) -> Result<bool, DbError>;

    /// [`Decision::Reconnect`](crate::session::lease::Decision::Reconnect):
    /// replaces the write connection (lost already) with a new one, on which
    /// the writer prepares its statements again; refused after
    /// [`LeaseStore::close`].
    async fn reconnect(&self) -> Result<(), DbError>;

    /// Resolves when the current write connection ends by itself (the server
    /// restarted or went away), so that a leader stops at once rather than at
    /// its next statement.
    async fn connection_ended(&self);

    /// Closes the write connection for good: its lock goes with it, and every
    /// later write (of the writer too) fails.
    async fn close(&self);
}

/// What a takeover writes, and the row it expects to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOver<'a> {
    /// This coordinator's `leader_id`.
    pub node_id: &'a str,
    /// Its `advertise_url`.
    pub advertise_url: &'a str,
    /// The old leader's backend to terminate first.
    pub terminate_backend: Option<i32>,
    /// The row's `(epoch, renewed_at_ms)` as observed; `None`: no row.
    pub expected: Option<(u64, u64)>,
    /// The epoch to write.
    pub epoch: u64,
    /// The lease timeout: a backend is terminated only if the row is still
    /// older than this by the database's clock.
    pub timeout_ms: u64,
}

/// The database named by `--db`: a PostgreSQL URL, or a SQLite file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `postgres://...` or `postgresql://...`.
    Postgres(String),
    /// Any other value: the path of a SQLite file.
    Sqlite(std::path::PathBuf),
}

impl Location {
    /// Reads a `--db` value.
    pub fn of(db: &Path) -> Location {
        match db.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Location::Postgres(url.to_owned())
            }
            _ => Location::Sqlite(db.to_owned()),
        }
    }
}

/// Opens the store `db` names, for `coordinator serve`: a SQLite file is
/// locked (one service per file) before it is migrated; a PostgreSQL database
/// is migrated on the write connection.
pub async fn open_for_service(db: &Path) -> Result<Arc<dyn Store>, DbError> {
    Ok(match Location::of(db) {
        Location::Sqlite(path) => Arc::new(sqlite::SqliteStore::open_locked(&path)?),
        Location::Postgres(url) => Arc::new(postgres::PgStore::connect(&url).await?),
    })
}

/// Opens the store `db` names for `coordinator token` (while a service may
/// be running on it).
pub async fn open_for_tool(db: &Path) -> Result<Arc<dyn Store>, DbError> {
    Ok(match Location::of(db) {
        Location::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(&path)?),
        Location::Postgres(url) => Arc::new(postgres::PgStore::connect(&url).await?),
    })
}

#[cfg(test)]
mod tests;

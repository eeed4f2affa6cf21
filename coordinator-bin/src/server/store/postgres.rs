//! The PostgreSQL store (`--db postgres://user@host:port/dbname`): the same
//! tables and meaning as the SQLite store, written by one dedicated connection
//! (group commit, one transaction per group, `synchronous_commit` as the
//! server has it, on by default) and read through a few other connections.
//! A task row is inserted whole once, by the group that holds its submission,
//! and then only its changing columns are updated, with the history in the
//! compact form of `db/rows.rs` (schema version 5 on).
//! The counts by status and lane are kept by the writer in each group's
//! transaction (SQLite keeps them by triggers): a new row counts once for its
//! record's status and lane, and the update statement itself adds the
//! difference between the status and lane each row had and has; the service
//! is the only writer of task rows. A group's statements go out together with
//! its `BEGIN`, so a commit usually takes two round trips.
//!
//! Rows come back as the same cells SQLite's codec reads (`rusqlite`'s
//! `Value`, used here only as a neutral cell type), so a row is decoded, and
//! found damaged, by exactly the code the SQLite store uses. Columns are typed
//! here, so what can be damaged is the content of text columns (an unknown
//! status, a history or metadata that does not parse), not their types.

mod lease;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use std::str::FromStr;

use coordinator_queue::{Change, Priority, ScheduledLoad, ScheduledPage, Status, Task, TaskId};
use rusqlite::types::{Value, ValueRef};
use tokio::sync::watch;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::{KeyedTask, LeaseStore, LiveTokens, PayloadResult, Store};
use crate::server::auth::TokenList;
use crate::server::db::{
    self, CountChanges, Counts, DamagedRow, DbError, LiveTasks, Table, TaskFilter, TaskPage,
    TextColumns, Texts,
};
use crate::server::writer::{newest_per_task, Group, GroupCommit, Writer, WriterReport};
use crate::session::{Identity, LoadedPayload, TokenWrite};

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> DbError {
        DbError::Postgres(match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        })
    }
}

/// Read connections kept open between reads.
const IDLE_READERS: usize = 8;

/// A coordinator database in PostgreSQL.
pub struct PgStore {
    config: Config,
    describe: String,
    /// The one connection that writes: direct writes until the writer
    /// starts, then the writer's groups and the lease's statements, one at a
    /// time. The lease holds its session advisory lock on exactly this
    /// connection, so every write dies with the lock; `None` once closed
    /// (leadership lost), after which nothing more is written.
    write: WriteSlot,
    /// True once the writer runs (direct writes are refused then).
    writer_started: AtomicBool,
    /// Idle read connections.
    readers: Mutex<Vec<Client>>,
}

impl PgStore {
    /// Connects the write connection to the database `url` names and migrates
    /// it (TLS is not supported: give `sslmode=disable` or leave it out).
    pub async fn connect(url: &str) -> Result<PgStore, DbError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| DbError::Unavailable(format!("--db is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("coordinator");
        let describe = describe(&config);
        let (ended, _) = watch::channel(0);
        let mut write = open(&config, &describe, Some((ended.clone(), 1))).await?;
        schema::migrate(&mut write, &describe).await?;
        Ok(PgStore {
            write: Arc::new(WriteConn::new(
                write,
                ended,
                config.clone(),
                describe.clone(),
            )),
            config,
            describe,
            writer_started: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// An idle read connection, or a new one.
    async fn reader(&self) -> Result<Client, DbError> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(client) if !client.is_closed() => Ok(client),
            _ => open(&self.config, &self.describe, None).await,
        }
    }

    /// Gives a read connection back to be used again.
    fn give_back(&self, client: Client) {
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_READERS && !client.is_closed() {
            idle.push(client);
        }
    }

    /// Runs `f` on a read connection.
    async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: for<'c> FnOnce(
            &'c Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, DbError>> + Send + 'c>,
        >,
    {
        let client = self.reader().await?;
        let result = f(&client).await;
        self.give_back(client);
        result
    }

    /// Runs `f` on the write connection, as long as the writer has not taken it.
    async fn direct<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: for<'c> FnOnce(
            &'c Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, DbError>> + Send + 'c>,
        >,
    {
        let write = self.write.client.lock().await;
        if self.writer_started.load(Ordering::SeqCst) {
            return Err(DbError::Unavailable(
                "the writer holds the write connection".to_owned(),
            ));
        }
        match write.as_ref() {
            Some((client, _)) => f(client).await,
            None => Err(DbError::Unavailable(
                "the write connection is closed".to_owned(),
            )),
        }
    }
}

/// The write connection, shared by the writer and the lease.
type WriteSlot = Arc<WriteConn>;

/// The one write connection and whether it was closed for good.
struct WriteConn {
    /// The connection and its number (the first is 1, each reconnection
    /// takes the next); `None` once closed.
    client: tokio::sync::Mutex<Option<(Client, u64)>>,
    /// Set (without waiting for the connection) when leadership is lost: no
    /// transaction begins or commits afterwards, and no new connection opens.
    closed: AtomicBool,
    /// The number of the last connection whose I/O ended (by itself: the
    /// server went away, or it was dropped).
    ended: watch::Sender<u64>,
    /// The number of the last connection opened (or being opened).
    opened: std::sync::atomic::AtomicU64,
    /// How to open another.
    config: Config,
    describe: String,
}

impl WriteConn {
    fn new(
        client: Client,
        ended: watch::Sender<u64>,
        config: Config,
        describe: String,
    ) -> WriteConn {
        WriteConn {
            client: tokio::sync::Mutex::new(Some((client, 1))),
            closed: AtomicBool::new(false),
            ended,
            opened: std::sync::atomic::AtomicU64::new(1),
            config,
            describe,
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Replaces the connection with a new one (the old one, and any lock it
    /// held, is dropped); refused once closed for good.
    async fn reconnect(&self) -> Result<(), DbError> {
        let mut slot = self.client.lock().await;
        if self.is_closed() {
            return Err(DbError::Unavailable(
                "the write connection is closed".to_owned(),
            ));
        }
        // Numbers never repeat, so an ended one is never taken for this one.
        let number = self.opened.fetch_add(1, Ordering::SeqCst) + 1;
        // Dropped first: its lock must not outlive it while the new one opens.
        slot.take();
        let client = open(
            &self.config,
            &self.describe,
            Some((self.ended.clone(), number)),
        )
        .await?;
        *slot = Some((client, number));
        Ok(())
    }

    /// Resolves once the current connection's I/O has ended (at once if there
    /// is none).
    async fn ended(&self) {
        let current = match self.client.lock().await.as_ref() {
            Some((_, n)) => *n,
            None => return,
        };
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|n| *n >= current).await;
    }
}

/// "PostgreSQL database D on H:P as U" (never the password).
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "PostgreSQL database {} on {host}:{port}",
        config.get_dbname().unwrap_or("(default)")
    )
}

/// Opens one connection; its I/O runs on a task of its own until it closes,
/// then `ended` (if given) learns the connection's number.
async fn open(
    config: &Config,
    describe: &str,
    ended: Option<(watch::Sender<u64>, u64)>,
) -> Result<Client, DbError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| DbError::Postgres(format!("cannot connect to {describe}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
        if let Some((ended, number)) = ended {
            ended.send_modify(|n| *n = (*n).max(number));
        }
    });
    Ok(client)
}

/// The task columns for the codec, with no rowid (PostgreSQL has none: a
/// damaged row is named by its id).
fn columns() -> String {
    db::COLUMNS.replace(", rowid", ", NULL::bigint")
}

/// [`columns`] with the texts longer than `$1` bytes left out (NULL), and
/// their lengths as two more columns.
fn short_columns() -> String {
    columns().replacen(
        "description, metadata,",
        "CASE WHEN octet_length(description) > $1 THEN NULL ELSE description END, CASE WHEN octet_length(metadata) > $1 THEN NULL ELSE metadata END,",
        1,
    ) + ", octet_length(description), octet_length(metadata)"
}

/// The cells of `row` as SQLite's codec reads them.
fn cells(row: &Row) -> Result<Vec<Value>, DbError> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            Ok(if *ty == Type::INT8 {
                row.try_get::<_, Option<i64>>(i)?
                    .map_or(Value::Null, Value::Integer)
            } else if *ty == Type::INT4 {
                row.try_get::<_, Option<i32>>(i)?
                    .map_or(Value::Null, |v| Value::Integer(v.into()))
            } else if *ty == Type::BYTEA {
                row.try_get::<_, Option<Vec<u8>>>(i)?
                    .map_or(Value::Null, Value::Blob)
            } else {
                row.try_get::<_, Option<String>>(i)?
                    .map_or(Value::Null, Value::Text)
            })
        })
        .collect()
}

/// Decodes a task row selected with [`columns`] (or the short-texts select,
/// whose two extra cells are the lengths of texts left in storage).
fn task_from_row(row: &Row, texts: TextColumns) -> Result<Result<Task, DamagedRow>, DbError> {
    decode_cells(cells(row)?, texts)
}

/// [`task_from_row`] on cells already read.
fn decode_cells(
    mut cells: Vec<Value>,
    texts: TextColumns,
) -> Result<Result<Task, DamagedRow>, DbError> {
    if texts == TextColumns::ShortOrLength {
        // The texts not selected are their lengths, as SQLite's select gives them.
        let lengths = cells.split_off(db::N_COLUMNS);
        for (at, length) in [(1, &lengths[0]), (2, &lengths[1])] {
            if cells[at] == Value::Null {
                cells[at] = length.clone();
            }
        }
    }
    let values: Vec<ValueRef<'_>> = cells.iter().map(ValueRef::from).collect();
    let values: &[ValueRef<'_>; db::N_COLUMNS] = values
        .as_slice()
        .try_into()
        .map_err(|_| DbError::Unavailable("a task row of the wrong width".to_owned()))?;
    Ok(db::decode_task(values, texts))
}

/// Decodes a token row selected with [`db::TOKEN_COLUMNS`].
fn token_from_row(row: &Row) -> Result<Result<db::StoredToken, DamagedRow>, DbError> {
    let cells = cells(row)?;
    let values: Vec<ValueRef<'_>> = cells.iter().map(ValueRef::from).collect();
    let values: &[ValueRef<'_>; 6] = values
        .as_slice()
        .try_into()
        .map_err(|_| DbError::Unavailable("a token row of the wrong width".to_owned()))?;
    Ok(db::decode_token(values))
}

#[async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn load_live_tasks(&self, max_inline_bytes: usize) -> Result<LiveTasks, DbError> {
        let max = i32::try_from(max_inline_bytes).unwrap_or(i32::MAX);
        let kept: Vec<&str> = Status::ALL
            .iter()
            .filter(|s| !s.is_final() && **s != Status::Scheduled)
            .map(|s| s.as_str())
            .collect();
        let short = short_columns();
        let select = format!(
            "SELECT {short} FROM tasks WHERE status IN ('{}') ORDER BY queue_seq",
            kept.join("', '")
        );
        let scheduled =
            format!("SELECT {short} FROM tasks WHERE status = 'scheduled' ORDER BY queue_seq");
        let unknown: Vec<String> = db::unknown_status_ranges()
            .into_iter()
            .map(|range| format!("SELECT {} FROM tasks WHERE {range}", columns()))
            .collect();
        self.read(move |c| {
            Box::pin(async move {
                let mut tasks = Vec::new();
                let mut damaged = Vec::new();
                for row in c.query(&select, &[&max]).await? {
                    match task_from_row(&row, TextColumns::ShortOrLength)? {
                        Ok(task) => tasks.push(task),
                        Err(row) => damaged.push(row),
                    }
                }
                // Scheduled rows are decoded one at a time (a damaged one
                // refuses the start) and kept only if a waiting task awaits
                // them; the others are read back in run_at order later.
                let awaited: std::collections::HashSet<String> = tasks
                    .iter()
                    .filter(|t| t.status() == Status::Waiting)
                    .flat_map(|t| t.depends_on().iter().map(|d| d.to_string()))
                    .collect();
                let stream = c
                    .query_raw(&scheduled, [&max as &(dyn ToSql + Sync)])
                    .await?;
                futures_util::pin_mut!(stream);
                while let Some(row) = futures_util::TryStreamExt::try_next(&mut stream).await? {
                    match task_from_row(&row, TextColumns::ShortOrLength)? {
                        Ok(task) if awaited.contains(task.id().as_str()) => tasks.push(task),
                        Ok(_) => {}
                        Err(row) => damaged.push(row),
                    }
                }
                for select in &unknown {
                    for row in c.query(select, &[]).await? {
                        if let Err(row) = task_from_row(&row, TextColumns::Whole)? {
                            damaged.push(row);
                        }
                    }
                }
                if !damaged.is_empty() {
                    return Err(DbError::DamagedLive(damaged));
                }
                let max_seq: Option<i64> = c
                    .query_one("SELECT MAX(queue_seq) FROM tasks", &[])
                    .await?
                    .get(0);
                let next_queue_seq =
                    max_seq.map_or(0, |n| u64::try_from(n).unwrap_or(0).saturating_add(1));
                Ok(LiveTasks {
                    tasks,
                    next_queue_seq,
                })
            })
        })
        .await
    }

    async fn load_scheduled(
        &self,
        load: ScheduledLoad,
        max_inline_bytes: usize,
    ) -> Result<(ScheduledPage, Vec<DamagedRow>), DbError> {
        let max = i32::try_from(max_inline_bytes).unwrap_or(i32::MAX);
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let (from_at, from_seq, until) = (int(load.from.0), int(load.from.1), int(load.until_ms));
        let limit = i64::try_from(load.limit).unwrap_or(i64::MAX);
        let select = format!(
            "SELECT {}, run_at, queue_seq FROM tasks \
             WHERE status = 'scheduled' AND (run_at, queue_seq) >= ($2, $3) AND run_at <= $4 \
             ORDER BY run_at, queue_seq LIMIT $5",
            short_columns()
        );
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(&select, &[&max, &from_at, &from_seq, &until, &limit])
                    .await?;
                let mut tasks = Vec::new();
                let mut damaged = Vec::new();
                let mut last: Option<(i64, i64)> = None;
                for row in rows {
                    let n = row.len();
                    let key: (Option<i64>, Option<i64>) = (row.get(n - 2), row.get(n - 1));
                    if let (Some(at), Some(seq)) = key {
                        last = Some((at, seq));
                    }
                    let mut cells = cells(&row)?;
                    cells.truncate(n - 2);
                    match decode_cells(cells, TextColumns::ShortOrLength)? {
                        Ok(task) => tasks.push(task),
                        Err(row) => damaged.push(row),
                    }
                }
                let next_row = match last {
                    Some((at, seq)) => {
                        c.query_opt(
                            "SELECT run_at, queue_seq FROM tasks WHERE status = 'scheduled' \
                             AND (run_at, queue_seq) > ($1, $2) ORDER BY run_at, queue_seq LIMIT 1",
                            &[&at, &seq],
                        )
                        .await?
                    }
                    None => {
                        c.query_opt(
                            "SELECT run_at, queue_seq FROM tasks WHERE status = 'scheduled' \
                             AND (run_at, queue_seq) >= ($1, $2) ORDER BY run_at, queue_seq LIMIT 1",
                            &[&from_at, &from_seq],
                        )
                        .await?
                    }
                };
                let next = next_row.and_then(|row| {
                    let at: Option<i64> = row.get(0);
                    let seq: Option<i64> = row.get(1);
                    Some((u64::try_from(at?).ok()?, u64::try_from(seq?).ok()?))
                });
                Ok((ScheduledPage { tasks, next }, damaged))
            })
        })
        .await
    }

    async fn get_task(&self, id: String) -> Result<Option<Task>, DbError> {
        let select = format!("SELECT {} FROM tasks WHERE id = $1", columns());
        self.read(move |c| {
            Box::pin(async move {
                match c.query_opt(&select, &[&id]).await? {
                    None => Ok(None),
                    Some(row) => match task_from_row(&row, TextColumns::Whole)? {
                        Ok(task) => Ok(Some(task)),
                        Err(row) => Err(DbError::Damaged(row)),
                    },
                }
            })
        })
        .await
    }

    async fn get_payloads(&self, ids: Vec<TaskId>) -> Result<Vec<PayloadResult>, DbError> {
        let names: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let (rows, results) = self
            .read(move |c| {
                Box::pin(async move {
                    let rows = c
                        .query(
                            "SELECT id, description, metadata, depends_on FROM tasks WHERE id = ANY($1)",
                            &[&names],
                        )
                        .await?;
                    // The results of every dependency of the tasks read, by id.
                    let mut wanted: Vec<String> = Vec::new();
                    for row in &rows {
                        if let Ok(Some(text)) = row.try_get::<_, Option<String>>(3) {
                            wanted.extend(serde_json::from_str::<Vec<String>>(&text).unwrap_or_default());
                        }
                    }
                    let mut results: HashMap<String, Option<String>> = HashMap::new();
                    if !wanted.is_empty() {
                        for row in c
                            .query("SELECT id, result FROM tasks WHERE id = ANY($1)", &[&wanted])
                            .await?
                        {
                            results.insert(row.try_get(0)?, row.try_get(1)?);
                        }
                    }
                    Ok((rows, results))
                })
            })
            .await?;
        let mut found: HashMap<String, Result<LoadedPayload, String>> = HashMap::new();
        for row in rows {
            let cells = cells(&row)?;
            let id = match &cells[0] {
                Value::Text(id) => id.clone(),
                _ => continue,
            };
            let texts = db::decode_texts(ValueRef::from(&cells[1]), ValueRef::from(&cells[2]));
            let dependencies: Vec<String> = match &cells[3] {
                Value::Text(text) => serde_json::from_str(text).unwrap_or_default(),
                _ => Vec::new(),
            };
            let loaded = texts.map(|(description, metadata)| LoadedPayload {
                description,
                metadata,
                dependencies: dependencies
                    .into_iter()
                    .map(|dep| {
                        let result = results.get(&dep).cloned().flatten();
                        (dep, result)
                    })
                    .collect(),
            });
            found.insert(id, loaded);
        }
        Ok(ids
            .into_iter()
            .map(|id| {
                let texts = match found.remove(id.as_str()) {
                    None => Ok(None),
                    Some(Ok(texts)) => Ok(Some(texts)),
                    Some(Err(reason)) => Err(DbError::Damaged(DamagedRow {
                        table: Table::Tasks,
                        id: Some(id.to_string()),
                        rowid: None,
                        reason,
                    })),
                };
                (id, texts)
            })
            .collect())
    }

    async fn dependents(&self, id: String) -> Result<Vec<String>, DbError> {
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT d.task_id FROM task_dependencies d LEFT JOIN tasks t ON t.id = d.task_id WHERE d.depends_on = $1 ORDER BY t.created_at, d.task_id",
                        &[&id],
                    )
                    .await?;
                rows.iter()
                    .map(|row| Ok(row.try_get::<_, String>(0)?))
                    .collect()
            })
        })
        .await
    }

    async fn task_statuses(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, Option<Status>)>, DbError> {
        self.read(move |c| {
            Box::pin(async move {
                let mut stored: HashMap<String, String> = HashMap::new();
                for row in c
                    .query("SELECT id, status FROM tasks WHERE id = ANY($1)", &[&ids])
                    .await?
                {
                    stored.insert(row.try_get(0)?, row.try_get(1)?);
                }
                // A status this binary does not know is no dependency it can wait for.
                Ok(ids
                    .into_iter()
                    .map(|id| {
                        let status = stored.get(&id).and_then(|s| Status::from_str(s).ok());
                        (id, status)
                    })
                    .collect())
            })
        })
        .await
    }

    async fn tasks_by_key(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<((String, String), Option<KeyedTask>)>, DbError> {
        self.read(move |c| {
            Box::pin(async move {
                // One query for every key (a batch may carry hundreds).
                let (submitters, names): (Vec<&str>, Vec<&str>) = keys
                    .iter()
                    .map(|(submitter, key)| (submitter.as_str(), key.as_str()))
                    .unzip();
                let rows = c
                    .query(
                        "SELECT t.submitted_by, t.idempotency_key, t.id, t.priority, t.status, t.created_at \
                         FROM unnest($1::text[], $2::text[]) AS k(submitted_by, idempotency_key) \
                         JOIN tasks t ON t.submitted_by = k.submitted_by AND t.idempotency_key = k.idempotency_key",
                        &[&submitters, &names],
                    )
                    .await?;
                let mut found = HashMap::with_capacity(rows.len());
                for row in rows {
                    let submitter: String = row.try_get(0)?;
                    let key: String = row.try_get(1)?;
                    let id: String = row.try_get(2)?;
                    let priority: String = row.try_get(3)?;
                    let status: String = row.try_get(4)?;
                    let created: i64 = row.try_get(5)?;
                    let stored = (|| {
                        Some((
                            id,
                            Priority::from_str(&priority).ok()?,
                            Status::from_str(&status).ok()?,
                            u64::try_from(created).ok()?,
                        ))
                    })();
                    found.insert((submitter, key), stored);
                }
                let out = keys
                    .into_iter()
                    .map(|k| {
                        // A key may stand twice in one batch: each gets the row.
                        let stored = found.get(&k).cloned().flatten();
                        (k, stored)
                    })
                    .collect();
                Ok(out)
            })
        })
        .await
    }

    async fn list_tasks(
        &self,
        filter: TaskFilter,
        after: Option<String>,
    ) -> Result<Option<TaskPage>, DbError> {
        self.read(move |c| {
            Box::pin(async move {
                let after_seq: Option<i64> = match after {
                    None => None,
                    Some(after) => {
                        match c
                            .query_opt("SELECT queue_seq FROM tasks WHERE id = $1", &[&after])
                            .await?
                        {
                            Some(row) => Some(row.try_get(0)?),
                            None => return Ok(None),
                        }
                    }
                };
                let mut sql = format!("SELECT {} FROM tasks WHERE true", columns());
                let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
                if let Some(status) = filter.status {
                    args.push(Box::new(status.as_str().to_owned()));
                    sql += &format!(" AND status = ${}", args.len());
                }
                if let Some(priority) = filter.priority {
                    args.push(Box::new(priority.as_str().to_owned()));
                    sql += &format!(" AND priority = ${}", args.len());
                }
                if let Some(agent) = filter.assigned_to {
                    args.push(Box::new(agent));
                    sql += &format!(" AND assigned_to = ${}", args.len());
                }
                if let Some(capability) = filter.capability {
                    args.push(Box::new(capability));
                    sql += &format!(
                        " AND coordinator_caps_contain(needed_capabilities, ${})",
                        args.len()
                    );
                }
                if let Some(search) = &filter.search {
                    args.push(Box::new(db::like_prefix(search)));
                    let n = args.len();
                    sql += &format!(
                        " AND (id ILIKE ${n} ESCAPE '\\' OR description ILIKE ${n} ESCAPE '\\')"
                    );
                }
                if let Some(after_seq) = after_seq {
                    args.push(Box::new(after_seq));
                    sql += &format!(" AND queue_seq > ${}", args.len());
                }
                args.push(Box::new(i64::from(filter.limit)));
                sql += &format!(" ORDER BY queue_seq LIMIT ${}", args.len());
                let params: Vec<&(dyn ToSql + Sync)> =
                    args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
                let mut page = TaskPage::default();
                for row in c.query(&sql, &params).await? {
                    page.push(task_from_row(&row, TextColumns::Whole)?);
                }
                Ok(Some(page))
            })
        })
        .await
    }

    async fn count_by_status_priority(&self) -> Result<Counts, DbError> {
        self.read(|c| {
            Box::pin(async move {
                let mut counts = Vec::new();
                let mut damaged = Vec::new();
                for row in c
                    .query("SELECT status, priority, n FROM task_counts", &[])
                    .await?
                {
                    let cells = cells(&row)?;
                    let values = [
                        ValueRef::from(&cells[0]),
                        ValueRef::from(&cells[1]),
                        ValueRef::from(&cells[2]),
                    ];
                    match db::decode_count(values) {
                        Ok(Some(count)) => counts.push(count),
                        Ok(None) => {}
                        Err(row) => damaged.push(row),
                    }
                }
                Ok((counts, damaged))
            })
        })
        .await
    }

    async fn description_heads(
        &self,
        ids: Vec<String>,
        chars: u32,
    ) -> Result<Vec<(String, String)>, DbError> {
        let chars = i32::try_from(chars).unwrap_or(i32::MAX);
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT id, substr(description, 1, $2) FROM tasks WHERE id = ANY($1)",
                        &[&ids, &chars],
                    )
                    .await?;
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                    .collect()
            })
        })
        .await
    }

    async fn list_tokens(&self) -> Result<TokenList, DbError> {
        let select = format!("SELECT {} FROM tokens ORDER BY id", db::TOKEN_COLUMNS);
        self.read(move |c| {
            Box::pin(async move {
                let mut list = TokenList::default();
                for row in c.query(&select, &[]).await? {
                    match token_from_row(&row)? {
                        Ok(token) => list.tokens.push(db::token_info(&token)),
                        Err(row) => list.damaged.push(row),
                    }
                }
                Ok(list)
            })
        })
        .await
    }

    async fn live_tokens(&self) -> Result<LiveTokens, DbError> {
        let select = format!(
            "SELECT {} FROM tokens WHERE revoked_at IS NULL",
            db::TOKEN_COLUMNS
        );
        self.read(move |c| {
            Box::pin(async move {
                let mut map = HashMap::new();
                let mut damaged = Vec::new();
                for row in c.query(&select, &[]).await? {
                    match token_from_row(&row)? {
                        Ok(token) => {
                            map.insert(token.hash, token.identity);
                        }
                        Err(row) => damaged.push(row),
                    }
                }
                Ok((map, damaged))
            })
        })
        .await
    }

    async fn revocation_facts(&self, identity: Identity) -> Result<(Vec<i64>, usize), DbError> {
        self.read(move |c| {
            Box::pin(async move {
                let ids = c
                    .query(
                        "SELECT id FROM tokens WHERE kind = $1 AND name = $2 AND revoked_at IS NULL ORDER BY id",
                        &[&identity.kind(), &identity.name()],
                    )
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<Vec<i64>, _>>()?;
                let admins: i64 = c
                    .query_one(
                        "SELECT count(*) FROM tokens WHERE kind = 'admin' AND revoked_at IS NULL",
                        &[],
                    )
                    .await?
                    .try_get(0)?;
                Ok((ids, usize::try_from(admins).unwrap_or(0)))
            })
        })
        .await
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>, DbError> {
        let key = key.to_owned();
        self.direct(move |c| {
            Box::pin(async move {
                Ok(
                    c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                        .await?
                        .map(|row| row.try_get(0))
                        .transpose()?,
                )
            })
        })
        .await
    }

    async fn meta_set(&self, key: &str, value: &str) -> Result<(), DbError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.direct(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&key, &value],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn insert_token(
        &self,
        identity: &Identity,
        hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<(), DbError> {
        let (kind, name) = (identity.kind().to_owned(), identity.name().to_owned());
        let hash = hash.to_vec();
        let now = now_ms as i64;
        self.direct(move |c| {
            Box::pin(async move {
                c.execute(INSERT_TOKEN, &[&kind, &name, &hash, &now])
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn revoke_tokens(&self, identity: &Identity, now_ms: u64) -> Result<usize, DbError> {
        let (kind, name) = (identity.kind().to_owned(), identity.name().to_owned());
        let now = now_ms as i64;
        self.direct(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "UPDATE tokens SET revoked_at = $3 WHERE kind = $1 AND name = $2 AND revoked_at IS NULL",
                        &[&kind, &name, &now],
                    )
                    .await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })
        })
        .await
    }

    async fn start_writer(&self) -> Result<(Writer, watch::Receiver<WriterReport>), DbError> {
        if self.writer_started.swap(true, Ordering::SeqCst) {
            return Err(DbError::Unavailable(
                "the writer was started already".to_owned(),
            ));
        }
        let commit = PgCommit::prepare(self.write.clone()).await?;
        Ok(Writer::start_async(self.describe(), commit))
    }

    fn lease(&self) -> Option<Arc<dyn LeaseStore>> {
        Some(Arc::new(lease::PgLease::new(self.write.clone())))
    }
}

/// The task columns, in the order of [`TaskColumns::params`].
const TASK_COLUMNS: [(&str, &str); 25] = [
    ("id", "text"),
    ("description", "text"),
    ("metadata", "text"),
    ("priority", "text"),
    ("status", "text"),
    ("assigned_to", "text"),
    ("assigned_at", "int8"),
    ("generation", "int8"),
    ("retry_count", "int8"),
    ("max_retries", "int8"),
    ("complete_by", "int8"),
    ("needed_capabilities", "text"),
    ("result", "text"),
    ("tokens_used", "int8"),
    ("last_error", "text"),
    ("submitted_by", "text"),
    ("created_at", "int8"),
    ("updated_at", "int8"),
    ("last_alive_at", "int8"),
    ("queue_seq", "int8"),
    ("history", "text"),
    ("reclaim_count", "int8"),
    ("run_at", "int8"),
    ("depends_on", "text"),
    ("idempotency_key", "text"),
];

/// The columns an update of a stored row writes after the id, in the order
/// of [`TaskColumns::update_params`]: those that change after submission (the
/// same ones SQLite's update writes, `db/rows.rs`), the queue position among
/// them. What was fixed at submission (texts, lane, capabilities, submitter,
/// options) is written once, by the insert.
const UPDATE_COLUMNS: [&str; 13] = [
    "status",
    "assigned_to",
    "assigned_at",
    "generation",
    "retry_count",
    "result",
    "tokens_used",
    "last_error",
    "updated_at",
    "last_alive_at",
    "queue_seq",
    "history",
    "reclaim_count",
];

/// The SQL type of the task column `name`.
fn column_type(name: &str) -> &'static str {
    TASK_COLUMNS
        .iter()
        .find(|(column, _)| *column == name)
        .map_or("text", |(_, ty)| ty)
}

/// `unnest` of one array parameter per column of `names`, as `r(names)`.
fn unnest_rows(names: &[&str]) -> String {
    let arrays: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("${}::{}[]", i + 1, column_type(name)))
        .collect();
    format!("unnest({}) AS r({})", arrays.join(", "), names.join(", "))
}

/// Inserts new rows whole: a plain insert (no conflict handling), since the
/// group holds their submission; a row that exists fails the commit.
fn insert_sql() -> String {
    let names: Vec<&str> = TASK_COLUMNS.iter().map(|(name, _)| *name).collect();
    format!(
        "INSERT INTO tasks ({}) SELECT * FROM {}",
        names.join(", "),
        unnest_rows(&names)
    )
}

/// Updates stored rows in place, only [`UPDATE_COLUMNS`], and adds to the
/// counts the difference between the status and lane each row had (`o`, the
/// row as the statement found it, looked up by id; the row updated is that
/// one, found by its `ctid` without a second look in the index) and the ones
/// it has now; returns how many rows it updated (a record whose row is
/// missing updates none).
fn update_sql() -> String {
    let mut names = vec!["id"];
    names.extend(UPDATE_COLUMNS);
    let set: Vec<String> = UPDATE_COLUMNS
        .iter()
        .map(|name| format!("{name} = r.{name}"))
        .collect();
    format!(
        "WITH up AS (UPDATE tasks t SET {} FROM {} JOIN tasks o ON o.id = r.id WHERE t.ctid = o.ctid \
         RETURNING o.status AS old_status, o.priority AS old_lane, t.status AS new_status, t.priority AS new_lane), \
         d AS (SELECT status, priority, sum(delta) AS delta \
         FROM (SELECT old_status, old_lane, -1 FROM up UNION ALL SELECT new_status, new_lane, 1 FROM up) AS c(status, priority, delta) \
         GROUP BY status, priority), \
         counted AS (UPDATE task_counts SET n = n + d.delta FROM d \
         WHERE task_counts.status = d.status AND task_counts.priority = d.priority AND d.delta <> 0) \
         SELECT count(*) FROM up",
        set.join(", "),
        unnest_rows(&names)
    )
}

/// The ids among `$1` that have a row.
const STORED_IDS: &str = "SELECT id FROM tasks WHERE id = ANY($1)";

const INSERT_TOKEN: &str =
    "INSERT INTO tokens (kind, name, hash, created_at) VALUES ($1, $2, $3, $4)";

const REVOKE_TOKEN_ROW: &str =
    "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

/// Deletes old final tasks (except dead letters), returning how many of each
/// status and lane.
const PURGE: &str = "WITH gone AS (DELETE FROM tasks WHERE status IN ('completed', 'cancelled') AND updated_at < $1 RETURNING status, priority) SELECT status, priority, count(*) FROM gone GROUP BY status, priority";

/// Adds the changes of a group to the counts.
const ADD_COUNTS: &str = "UPDATE task_counts SET n = n + d.delta FROM unnest($1::text[], $2::text[], $3::bigint[]) AS d(status, priority, delta) WHERE task_counts.status = d.status AND task_counts.priority = d.priority";

/// The writer's statements, prepared on one connection.
struct Prepared {
    /// The number of the connection they belong to.
    connection: u64,
    insert: Statement,
    update: Statement,
    stored_ids: Statement,
    insert_token: Statement,
    revoke_token: Statement,
    purge: Statement,
    add_counts: Statement,
}

impl Prepared {
    async fn on(client: &Client, connection: u64) -> Result<Prepared, tokio_postgres::Error> {
        Ok(Prepared {
            connection,
            insert: client.prepare(&insert_sql()).await?,
            update: client.prepare(&update_sql()).await?,
            stored_ids: client.prepare(STORED_IDS).await?,
            insert_token: client.prepare(INSERT_TOKEN).await?,
            revoke_token: client.prepare(REVOKE_TOKEN_ROW).await?,
            purge: client.prepare(PURGE).await?,
            add_counts: client.prepare(ADD_COUNTS).await?,
        })
    }
}

/// The writer's connection and its prepared statements (prepared again on a
/// new connection, which a standby opens when it lost its own).
struct PgCommit {
    client: WriteSlot,
    prepared: Prepared,
}

impl PgCommit {
    async fn prepare(slot: WriteSlot) -> Result<PgCommit, DbError> {
        let guard = slot.client.lock().await;
        let (client, connection) = guard
            .as_ref()
            .ok_or_else(|| DbError::Unavailable("the write connection is closed".to_owned()))?;
        let prepared = Prepared::on(client, *connection).await?;
        drop(guard);
        Ok(PgCommit {
            prepared,
            client: slot,
        })
    }

    /// The group in one transaction: the new rows (those whose submission the
    /// group holds) inserted whole and counted, the stored ones updated in
    /// place (the statement adds their count changes), all sent at once with
    /// the `BEGIN`; then the rare writes (rows gone from under the writer,
    /// tokens, purges) and the `COMMIT`. Two round trips in the usual case.
    async fn write(&mut self, group: &Group) -> Result<usize, String> {
        let newest = newest_per_task(&group.batches);
        let submitted: HashSet<&TaskId> = group
            .batches
            .iter()
            .flat_map(|batch| &batch.changes)
            .map(Change::task)
            .filter(|task| task.is_submission_record())
            .map(Task::id)
            .collect();
        let mut new_counts = CountChanges::default();
        let mut new_rows = TaskColumns::default();
        let mut stored = TaskColumns::default();
        for (task, texts) in &newest {
            if submitted.contains(task.id()) {
                if texts.description.is_none() || texts.metadata.is_none() {
                    return Err(format!(
                        "task {}: a new record without its description or metadata",
                        task.id()
                    ));
                }
                new_rows.push(task, *texts);
                new_counts.add(task.status(), task.priority(), 1);
            } else {
                // An update leaves the texts as stored.
                let texts = Texts {
                    description: None,
                    metadata: None,
                };
                stored.push(task, texts);
            }
        }
        let mut slot = self.client.client.lock().await;
        // Closed when leadership was lost: nothing more may be written.
        let (client, connection) = slot
            .as_mut()
            .filter(|_| !self.client.is_closed())
            .ok_or_else(|| CLOSED.to_owned())?;
        if self.prepared.connection != *connection {
            self.prepared = Prepared::on(client, *connection).await.map_err(pg_error)?;
        }
        let client: &Client = client;
        let written = GroupWrite {
            client,
            prepared: &self.prepared,
            slot: &self.client,
        }
        .run(group, &newest, &submitted, (new_rows, new_counts), stored)
        .await;
        if written.is_err() {
            // Ends the transaction (if the connection still works) so that the
            // lease's statements on this connection are not refused.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        written
    }
}

/// Why nothing more is written once leadership was lost.
const CLOSED: &str = "the write connection is closed (this coordinator lost the lease)";

/// One group's transaction on the write connection, begun, written and
/// committed by [`GroupWrite::run`]; the caller rolls it back if that fails.
struct GroupWrite<'a> {
    client: &'a Client,
    prepared: &'a Prepared,
    slot: &'a WriteConn,
}

impl GroupWrite<'_> {
    /// Writes the group: `new` rows with their counts, `stored` rows; the
    /// number of rows written.
    async fn run(
        &self,
        group: &Group,
        newest: &[(&Task, Texts<'_>)],
        submitted: &HashSet<&TaskId>,
        new: (TaskColumns, CountChanges),
        stored: TaskColumns,
    ) -> Result<usize, String> {
        let (client, prepared) = (self.client, self.prepared);
        let (new_rows, new_counts) = new;
        let (statuses, priorities, deltas) = count_columns(&new_counts);
        // Sent together: the server runs them in this order.
        let ((), (), (), n_updated) = futures_util::future::try_join4(
            client.batch_execute("BEGIN"),
            async {
                if !new_rows.id.is_empty() {
                    client.execute(&prepared.insert, &new_rows.params()).await?;
                }
                Ok(())
            },
            async {
                if !deltas.is_empty() {
                    client
                        .execute(&prepared.add_counts, &[&statuses, &priorities, &deltas])
                        .await?;
                }
                Ok(())
            },
            async {
                if stored.id.is_empty() {
                    return Ok(0);
                }
                let row = client
                    .query_one(&prepared.update, &stored.update_params())
                    .await?;
                row.try_get::<_, i64>(0)
            },
        )
        .await
        .map_err(pg_error)?;
        if usize::try_from(n_updated).map_or(true, |n| n < stored.id.len()) {
            self.write_missing(newest, submitted, &stored).await?;
        }
        let mut n_rows = newest.len();
        for write in group.batches.iter().flat_map(|batch| &batch.tokens) {
            self.write_token(write).await?;
            n_rows += 1;
        }
        for before_ms in &group.purges {
            self.purge(*before_ms).await?;
        }
        if self.slot.is_closed() {
            return Err(CLOSED.to_owned());
        }
        client.batch_execute("COMMIT").await.map_err(pg_error)?;
        Ok(n_rows)
    }

    /// Rows gone from under the writer (the update found fewer than
    /// `stored`): a record that carries its texts writes its row anew, any
    /// other fails the commit.
    async fn write_missing(
        &self,
        newest: &[(&Task, Texts<'_>)],
        submitted: &HashSet<&TaskId>,
        stored: &TaskColumns,
    ) -> Result<(), String> {
        let (client, prepared) = (self.client, self.prepared);
        let found: HashSet<String> = client
            .query(&prepared.stored_ids, &[&stored.id])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(pg_error)?;
        let mut missing = TaskColumns::default();
        let mut counts = CountChanges::default();
        for (task, texts) in newest.iter().filter(|(task, _)| {
            !submitted.contains(task.id()) && !found.contains(task.id().as_str())
        }) {
            if texts.description.is_none() || texts.metadata.is_none() {
                return Err(format!(
                    "task {}: a record without its description or metadata, and no stored row to keep them from",
                    task.id()
                ));
            }
            missing.push(task, *texts);
            counts.add(task.status(), task.priority(), 1);
        }
        client
            .execute(&prepared.insert, &missing.params())
            .await
            .map_err(pg_error)?;
        self.add_counts(counts).await
    }

    /// Writes one token row.
    async fn write_token(&self, write: &TokenWrite) -> Result<(), String> {
        let (client, prepared) = (self.client, self.prepared);
        match write {
            TokenWrite::Create {
                identity,
                hash,
                created_at_ms,
            } => {
                let hash = hash.to_vec();
                client
                    .execute(
                        &prepared.insert_token,
                        &[
                            &identity.kind(),
                            &identity.name(),
                            &hash,
                            &(*created_at_ms as i64),
                        ],
                    )
                    .await
                    .map_err(pg_error)?;
            }
            TokenWrite::Revoke { ids, revoked_at_ms } => {
                for id in ids {
                    client
                        .execute(&prepared.revoke_token, &[id, &(*revoked_at_ms as i64)])
                        .await
                        .map_err(pg_error)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the final tasks older than `before_ms` and takes them off the
    /// counts.
    async fn purge(&self, before_ms: u64) -> Result<(), String> {
        let mut counts = CountChanges::default();
        let mut deleted = 0;
        for row in self
            .client
            .query(&self.prepared.purge, &[&(before_ms as i64)])
            .await
            .map_err(pg_error)?
        {
            let n: i64 = row.try_get(2).map_err(pg_error)?;
            deleted += n;
            let status: &str = row.try_get(0).map_err(pg_error)?;
            let priority: &str = row.try_get(1).map_err(pg_error)?;
            // A name this binary does not know has no count to take from.
            if let (Ok(status), Ok(lane)) = (status.parse(), priority.parse()) {
                counts.add(status, lane, -n);
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "retention: deleted old final tasks");
        }
        self.add_counts(counts).await
    }

    /// Adds `counts` to the stored counts.
    async fn add_counts(&self, counts: CountChanges) -> Result<(), String> {
        let (statuses, priorities, deltas) = count_columns(&counts);
        if !deltas.is_empty() {
            self.client
                .execute(
                    &self.prepared.add_counts,
                    &[&statuses, &priorities, &deltas],
                )
                .await
                .map_err(pg_error)?;
        }
        Ok(())
    }
}

#[async_trait]
impl GroupCommit for PgCommit {
    async fn commit(&mut self, group: &Group) -> Result<usize, String> {
        self.write(group).await
    }
}

/// The counts that moved, as the three columns of [`ADD_COUNTS`].
fn count_columns(counts: &CountChanges) -> (Vec<&'static str>, Vec<&'static str>, Vec<i64>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for (status, lane, n) in counts.moved() {
        columns.0.push(status.as_str());
        columns.1.push(lane.as_str());
        columns.2.push(n);
    }
    columns
}

fn pg_error(e: tokio_postgres::Error) -> String {
    DbError::from(e).to_string()
}

/// Task records as one array per column, for [`insert_sql`] or [`update_sql`].
#[derive(Default)]
struct TaskColumns {
    id: Vec<String>,
    description: Vec<Option<String>>,
    metadata: Vec<Option<String>>,
    priority: Vec<&'static str>,
    status: Vec<&'static str>,
    assigned_to: Vec<Option<String>>,
    assigned_at: Vec<Option<i64>>,
    generation: Vec<i64>,
    retry_count: Vec<i64>,
    max_retries: Vec<i64>,
    complete_by: Vec<Option<i64>>,
    capabilities: Vec<String>,
    result: Vec<Option<String>>,
    tokens_used: Vec<Option<i64>>,
    last_error: Vec<Option<String>>,
    submitted_by: Vec<Option<String>>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    last_alive_at: Vec<Option<i64>>,
    queue_seq: Vec<i64>,
    history: Vec<String>,
    reclaim_count: Vec<i64>,
    run_at: Vec<Option<i64>>,
    depends_on: Vec<Option<String>>,
    idempotency_key: Vec<Option<String>>,
}

impl TaskColumns {
    fn push(&mut self, task: &Task, texts: Texts<'_>) {
        self.id.push(task.id().to_string());
        self.description.push(texts.description.map(str::to_owned));
        self.metadata.push(texts.metadata.map(str::to_owned));
        self.priority.push(task.priority().as_str());
        self.status.push(task.status().as_str());
        self.assigned_to
            .push(task.assigned_to().map(|a| a.as_str().to_owned()));
        self.assigned_at
            .push(task.assigned_at_ms().map(|v| v as i64));
        self.generation.push(task.generation() as i64);
        self.retry_count.push(task.retry_count().into());
        self.max_retries.push(task.max_retries().into());
        self.complete_by
            .push(task.complete_by_ms().map(|v| v as i64));
        self.capabilities.push(db::capabilities_json(task));
        self.result.push(task.result().map(str::to_owned));
        self.tokens_used.push(task.tokens_used().map(|v| v as i64));
        self.last_error.push(task.last_error().map(str::to_owned));
        self.submitted_by
            .push(task.submitted_by().map(str::to_owned));
        self.created_at.push(task.created_at_ms() as i64);
        self.updated_at.push(task.updated_at_ms() as i64);
        self.last_alive_at
            .push(task.last_alive_at_ms().map(|v| v as i64));
        self.queue_seq.push(task.queue_seq() as i64);
        self.history.push(db::history_text(task.history()));
        self.reclaim_count.push(task.reclaim_count().into());
        self.run_at.push(task.run_at_ms().map(|v| v as i64));
        self.depends_on.push(db::depends_on_json(task.depends_on()));
        self.idempotency_key
            .push(task.idempotency_key().map(str::to_owned));
    }

    /// The id and the columns of [`UPDATE_COLUMNS`], in that order.
    fn update_params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.id,
            &self.status,
            &self.assigned_to,
            &self.assigned_at,
            &self.generation,
            &self.retry_count,
            &self.result,
            &self.tokens_used,
            &self.last_error,
            &self.updated_at,
            &self.last_alive_at,
            &self.queue_seq,
            &self.history,
            &self.reclaim_count,
        ]
    }

    /// The columns in the order of [`TASK_COLUMNS`].
    fn params(&self) -> [&(dyn ToSql + Sync); 25] {
        [
            &self.id,
            &self.description,
            &self.metadata,
            &self.priority,
            &self.status,
            &self.assigned_to,
            &self.assigned_at,
            &self.generation,
            &self.retry_count,
            &self.max_retries,
            &self.complete_by,
            &self.capabilities,
            &self.result,
            &self.tokens_used,
            &self.last_error,
            &self.submitted_by,
            &self.created_at,
            &self.updated_at,
            &self.last_alive_at,
            &self.queue_seq,
            &self.history,
            &self.reclaim_count,
            &self.run_at,
            &self.depends_on,
            &self.idempotency_key,
        ]
    }
}

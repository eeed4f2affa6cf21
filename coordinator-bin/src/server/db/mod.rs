//! SQLite storage (the SQLite store of `server/store/` is built on it): opening, locking and migrating the database, the `meta` table
//! and the pool of read connections. The schema, the task row codec and the reads
//! live in the submodules; their public items are re-exported here.

pub mod check;
mod counts;
mod damaged;
mod reads;
mod rows;
mod schema;
mod tokens;
mod window;
mod writes;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use counts::CountChanges;
pub use damaged::{DamagedRow, Table};
/// Every live task as one read (the start reads [`load_restore_set`]
/// instead); kept for the row decoder's tests and fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub use reads::load_live_tasks;
pub use reads::{
    count_by_status_priority, dependency_results, dependents, description_heads, get_payload,
    get_task, list_tasks, task_by_key, task_seq, task_statuses, Counts, TaskFilter, TaskPage,
};
pub(crate) use reads::{decode_count, like_prefix, unknown_status_ranges};
#[cfg(test)]
pub(crate) use rows::history_json;
pub(crate) use rows::{
    capabilities_json, decode_task, decode_texts, depends_on_json, history_text, TextColumns,
    COLUMNS, N_COLUMNS,
};
pub use rows::{delete_expired, Texts};
pub(crate) use schema::migrate;
pub use schema::SCHEMA_VERSION;
pub use tokens::{
    decode_token, insert_token, list_tokens, live_admin_count, live_token_ids, load_live,
    revoke_token_rows, revoke_tokens, token_info, StoredToken, TOKEN_COLUMNS,
};
pub use window::{load_restore_set, load_scheduled, LiveTasks};
#[cfg(test)]
pub use writes::upsert_task;
/// One record's write (the fuzz target's and the tests').
#[cfg(any(test, feature = "fuzzing"))]
pub use writes::write_task;
pub use writes::{write_tasks, KnownRows};

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The file is a SQLite database of some other program.
    #[error(
        "{0} is not a coordinator database (its application id is {1:#x}); refusing to touch it"
    )]
    NotOurs(PathBuf, i64),
    /// The file was written by a newer coordinator.
    #[error("{0} has schema version {1}, newer than this coordinator understands ({SCHEMA_VERSION}); upgrade the coordinator")]
    TooNew(PathBuf, i64),
    /// Another coordinator serves this database.
    #[error("{0} is in use by another coordinator process (it holds the lock); stop it first or use another --db")]
    Locked(PathBuf),
    /// A stored row cannot be decoded (it is left as it is).
    #[error("the stored row of {0}")]
    Damaged(DamagedRow),
    /// Rows that are, or may be, live tasks cannot be decoded, so the queue
    /// cannot be rebuilt without leaving them out.
    #[error("{} stored task row(s) that may be live cannot be decoded, so the queue cannot be restored without losing them: {}", .0.len(), list_damaged(.0))]
    DamagedLive(Vec<DamagedRow>),
    /// SQLite said no.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no (or its connection failed).
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The store cannot do this now (for example a direct write after the
    /// writer took the write connection).
    #[error("{0}")]
    Unavailable(String),
    /// The file system said no.
    #[error("cannot open {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The first few damaged rows, `; `-separated, and how many more there are.
fn list_damaged(rows: &[DamagedRow]) -> String {
    const SHOWN: usize = 5;
    let mut text = rows
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if rows.len() > SHOWN {
        text += &format!("; and {} more", rows.len() - SHOWN);
    }
    text
}

/// The page size of a new database file. A commit writes every page it
/// touched in full to the WAL, and most pages a commit touches hold one or
/// two rows it changed: smaller pages write less (measured in BENCHMARKS.md:
/// 1 KiB against SQLite's default of 4 KiB). A file made with another page
/// size keeps it.
pub const PAGE_SIZE: i64 = 1024;

/// How much WAL the writer lets grow before it copies the pages back into
/// the database file (SQLite's automatic checkpoint, counted in pages). A
/// checkpoint writes each page changed since the last one once, however
/// often the WAL holds it, so a longer WAL writes the hot pages (the tail of
/// each index, the counts) fewer times. The WAL file is cut back to twice
/// this after a checkpoint that let it grow beyond.
pub const WAL_CHECKPOINT_BYTES: i64 = 16 << 20;

/// Opens (creating if needed, mode 0600) and migrates the database at `path`.
/// The file and its `-wal` and `-shm` companions are made private to the owner.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    create_private(path)?;
    make_private(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Only a new file takes a page size (before its first page is written).
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        WAL_CHECKPOINT_BYTES / page_size.max(512),
    )?;
    conn.pragma_update(None, "journal_size_limit", 2 * WAL_CHECKPOINT_BYTES)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn, path)?;
    // SQLite gives its companion files the mode of the database; older ones may
    // have been made before the database was private.
    make_private(path)?;
    Ok(conn)
}

/// Creates the database file at `path` if it does not exist, readable and
/// writable by the owner only (SQLite would make it 0644).
fn create_private(path: &Path) -> Result<(), DbError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(DbError::Io(path.to_owned(), e)),
    }
}

/// Takes group and world permissions off the database and its `-wal` and
/// `-shm` files where they exist.
fn make_private(path: &Path) -> Result<(), DbError> {
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = PathBuf::from(file);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(|e| DbError::Io(file.clone(), e))?;
            tracing::warn!(
                file = %file.display(),
                mode = %format_args!("{mode:o}"),
                "database file was open to group or others; made private to its owner"
            );
        }
    }
    Ok(())
}

/// Opens a read-only connection to a database `open` already prepared.
pub fn open_reader(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Holds an exclusive advisory lock on the database file for the life of the
/// service, creating the file (mode 0600) if needed. Taken before [`open`], so
/// that a second process never migrates a database another one serves.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File, DbError> {
    create_private(path)?;
    let file = std::fs::File::open(path).map_err(|e| DbError::Io(path.to_owned(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DbError::Locked(path.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(DbError::Io(path.to_owned(), e)),
    }
}

/// A value of the `meta` table.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Sets a value of the `meta` table.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

/// A few read-only connections shared by the HTTP handlers.
#[derive(Clone)]
pub struct ReadPool {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl ReadPool {
    /// A pool over the database at `path`.
    pub fn new(path: &Path) -> ReadPool {
        ReadPool {
            path: Arc::new(path.to_owned()),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs `f` on a pooled connection in a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match conn {
                Some(conn) => conn,
                None => open_reader(&pool.path)?,
            };
            let result = f(&conn);
            if let Ok(mut idle) = pool.idle.lock() {
                if idle.len() < 8 {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| DbError::Io(PathBuf::new(), std::io::Error::other(e.to_string())))?
    }
}

//! Tokens: generation, hashing, constant-time checks and a short-lived cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::server::db::{self, DbError};

/// How long the in-memory copy of the token table is trusted.
const CACHE_TTL: Duration = Duration::from_secs(1);

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An operator: every route.
    Admin(String),
    /// One agent: the WebSocket as that agent id, and the task routes.
    Agent(String),
}

impl Identity {
    /// The name recorded as `submitted_by`.
    pub fn name(&self) -> &str {
        match self {
            Identity::Admin(name) | Identity::Agent(name) => name,
        }
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    /// `agent` or `admin`.
    pub kind: String,
    /// The agent id or admin name.
    pub name: String,
    /// Creation time.
    pub created_at: u64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<u64>,
}

/// A new random token: 192 bits from the operating system, hex-encoded.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the operating system provides randomness");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("cdt_{hex}")
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates a token for `identity` and returns its secret (shown once).
pub fn create_token(
    conn: &Connection,
    identity: &Identity,
    now_ms: u64,
) -> Result<String, DbError> {
    let token = generate_token();
    let (kind, name) = match identity {
        Identity::Admin(name) => ("admin", name),
        Identity::Agent(name) => ("agent", name),
    };
    conn.execute(
        "INSERT INTO tokens (kind, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![kind, name, &hash(&token)[..], now_ms as i64],
    )?;
    Ok(token)
}

/// Revokes every live token of an agent id (or admin name); returns how many.
pub fn revoke_tokens(conn: &Connection, name: &str, now_ms: u64) -> Result<usize, DbError> {
    Ok(conn.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        rusqlite::params![name, now_ms as i64],
    )?)
}

/// Every token, oldest first.
pub fn list_tokens(conn: &Connection) -> Result<Vec<TokenInfo>, DbError> {
    let mut stmt =
        conn.prepare("SELECT kind, name, created_at, revoked_at FROM tokens ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(TokenInfo {
            kind: r.get(0)?,
            name: r.get(1)?,
            created_at: r.get::<_, i64>(2)? as u64,
            revoked_at: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn load_live(conn: &Connection) -> Result<HashMap<[u8; 32], Identity>, DbError> {
    let mut stmt = conn.prepare("SELECT kind, name, hash FROM tokens WHERE revoked_at IS NULL")?;
    let rows = stmt.query_map([], |r| {
        let kind: String = r.get(0)?;
        let name: String = r.get(1)?;
        let hash: Vec<u8> = r.get(2)?;
        Ok((kind, name, hash))
    })?;
    let mut map = HashMap::new();
    for row in rows {
        let (kind, name, hash) = row?;
        let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
            continue;
        };
        let identity = if kind == "admin" {
            Identity::Admin(name)
        } else {
            Identity::Agent(name)
        };
        map.insert(hash, identity);
    }
    Ok(map)
}

struct Snapshot {
    loaded_at: Instant,
    tokens: HashMap<[u8; 32], Identity>,
}

/// Checks tokens against the database, through a cache that is at most one second
/// old, so tokens created or revoked with the CLI take effect at once.
#[derive(Clone)]
pub struct Authenticator {
    pool: db::ReadPool,
    snapshot: Arc<RwLock<Snapshot>>,
}

impl Authenticator {
    /// Loads the token table once.
    pub fn new(path: &Path) -> Result<Authenticator, DbError> {
        let conn = db::open_reader(path)?;
        let tokens = load_live(&conn)?;
        Ok(Authenticator {
            pool: db::ReadPool::new(path),
            snapshot: Arc::new(RwLock::new(Snapshot {
                loaded_at: Instant::now(),
                tokens,
            })),
        })
    }

    /// The identity of `token`, or `None` if it is unknown or revoked.
    pub async fn check(&self, token: &str) -> Option<Identity> {
        let digest = hash(token);
        if let Some(found) = self.lookup_fresh(&digest) {
            return found;
        }
        let tokens = self.pool.run(load_live).await.ok()?;
        let found = find(&tokens, &digest);
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = Snapshot {
                loaded_at: Instant::now(),
                tokens,
            };
        }
        found
    }

    /// Forgets the cached token table (after a revoke through the API).
    pub fn invalidate(&self) {
        if let Ok(mut snapshot) = self.snapshot.write() {
            if let Some(stale) = Instant::now().checked_sub(CACHE_TTL * 2) {
                snapshot.loaded_at = stale;
            }
        }
    }

    /// `Some(answer)` when the cache is fresh enough to answer.
    fn lookup_fresh(&self, digest: &[u8; 32]) -> Option<Option<Identity>> {
        let snapshot = self.snapshot.read().ok()?;
        if snapshot.loaded_at.elapsed() > CACHE_TTL {
            return None;
        }
        let found = find(&snapshot.tokens, digest);
        // A miss may be a token created a moment ago: ask the database.
        found.map(Some)
    }
}

fn find(tokens: &HashMap<[u8; 32], Identity>, digest: &[u8; 32]) -> Option<Identity> {
    let (stored, identity) = tokens.get_key_value(digest)?;
    constant_time_eq(stored, digest).then(|| identity.clone())
}

//! The token rows: the codec of a `tokens` row to a [`StoredToken`] (a row that
//! cannot be decoded is a [`DamagedRow`]) and the SQLite reads and writes of
//! tokens.

use std::collections::HashMap;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};

use super::damaged::{self, DamagedRow, Table};
use super::DbError;
use crate::server::auth::{TokenInfo, TokenList};
use crate::server::store::LiveTokens;
use crate::session::Identity;

/// The columns of a `tokens` row, in the order [`token_from_row`] reads them.
pub const TOKEN_COLUMNS: &str = "id, kind, name, hash, created_at, revoked_at";

/// A token row: whom it authenticates and the digest of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// The row id.
    pub id: i64,
    /// The agent id or admin name, with its kind.
    pub identity: Identity,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// Creation time.
    pub created_at_ms: u64,
    /// Revocation time, if revoked.
    pub revoked_at_ms: Option<u64>,
}

/// Decodes a row selected with [`TOKEN_COLUMNS`]: the outer error is SQLite's,
/// the inner one a row whose stored values the schema does not allow.
pub fn token_from_row(row: &Row<'_>) -> Result<Result<StoredToken, DamagedRow>, rusqlite::Error> {
    let mut values = [ValueRef::Null; 6];
    for (i, value) in values.iter_mut().enumerate() {
        *value = row.get_ref(i)?;
    }
    Ok(decode_token(&values))
}

/// A token from the values of a row selected with [`TOKEN_COLUMNS`], or what is
/// wrong with them.
pub fn decode_token(v: &[ValueRef<'_>; 6]) -> Result<StoredToken, DamagedRow> {
    let fields = || -> Result<StoredToken, String> {
        let id = damaged::int("id", v[0])?;
        let name = damaged::text("name", v[2])?.to_owned();
        let identity = match damaged::text("kind", v[1])? {
            "agent" => Identity::Agent(name),
            "admin" => Identity::Admin(name),
            other => {
                return Err(format!(
                    "column `kind`: `{other}` is neither agent nor admin"
                ))
            }
        };
        let hash = damaged::blob("hash", v[3])?;
        let hash = <[u8; 32]>::try_from(hash).map_err(|_| {
            format!(
                "column `hash`: {} bytes where a SHA-256 digest has 32",
                hash.len()
            )
        })?;
        Ok(StoredToken {
            id,
            identity,
            hash,
            created_at_ms: damaged::u64_col("created_at", v[4])?,
            revoked_at_ms: damaged::opt_u64("revoked_at", v[5])?,
        })
    };
    fields().map_err(|reason| DamagedRow {
        table: Table::Tokens,
        id: damaged::text("name", v[2]).ok().map(str::to_owned),
        rowid: damaged::int("id", v[0]).ok(),
        reason,
    })
}

/// Stores a token row (only the digest of its secret).
pub fn insert_token(
    conn: &Connection,
    identity: &Identity,
    hash: &[u8; 32],
    now_ms: u64,
) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO tokens (kind, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![identity.kind(), identity.name(), &hash[..], now_ms as i64],
    )?;
    Ok(())
}

/// Marks these token rows revoked (those not revoked already).
pub fn revoke_token_rows(
    conn: &Connection,
    ids: &[i64],
    now_ms: u64,
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn
        .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?;
    for id in ids {
        stmt.execute(rusqlite::params![id, now_ms as i64])?;
    }
    Ok(())
}

/// The row ids of the live tokens of an agent id (or admin name).
pub fn live_token_ids(conn: &Connection, identity: &Identity) -> Result<Vec<i64>, DbError> {
    let mut stmt =
        conn.prepare("SELECT id FROM tokens WHERE kind = ?1 AND name = ?2 AND revoked_at IS NULL")?;
    let rows = stmt.query_map([identity.kind(), identity.name()], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many admin tokens are live.
pub fn live_admin_count(conn: &Connection) -> Result<usize, DbError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM tokens WHERE kind = 'admin' AND revoked_at IS NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Revokes every live token of one agent id or one admin name; returns how many.
pub fn revoke_tokens(
    conn: &Connection,
    identity: &Identity,
    now_ms: u64,
) -> Result<usize, DbError> {
    Ok(conn.execute(
        "UPDATE tokens SET revoked_at = ?3 WHERE kind = ?1 AND name = ?2 AND revoked_at IS NULL",
        rusqlite::params![identity.kind(), identity.name(), now_ms as i64],
    )?)
}

/// A decoded token as listed (never its secret).
pub fn token_info(token: &StoredToken) -> TokenInfo {
    TokenInfo {
        kind: token.identity.kind().to_owned(),
        name: token.identity.name().to_owned(),
        created_at: token.created_at_ms,
        revoked_at: token.revoked_at_ms,
    }
}

/// Every token, oldest first (a row that cannot be decoded is left out and
/// named in [`TokenList::damaged`]).
pub fn list_tokens(conn: &Connection) -> Result<TokenList, DbError> {
    let mut stmt = conn.prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))?;
    let mut list = TokenList::default();
    for row in stmt.query_map([], token_from_row)? {
        match row? {
            Ok(token) => list.tokens.push(token_info(&token)),
            Err(row) => list.damaged.push(row),
        }
    }
    Ok(list)
}

/// The live tokens by digest, and the rows of live tokens that cannot be
/// decoded (they authenticate nobody).
pub fn load_live(conn: &Connection) -> Result<LiveTokens, DbError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL"
    ))?;
    let mut map = HashMap::new();
    let mut damaged = Vec::new();
    for row in stmt.query_map([], token_from_row)? {
        match row? {
            Ok(token) => {
                map.insert(token.hash, token.identity);
            }
            Err(row) => damaged.push(row),
        }
    }
    Ok((map, damaged))
}

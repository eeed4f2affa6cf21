//! The token row codec: a `tokens` row to a [`StoredToken`] (a row that cannot
//! be decoded is a [`DamagedRow`]).

use rusqlite::types::ValueRef;
use rusqlite::Row;

use super::damaged::{self, DamagedRow, Table};
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

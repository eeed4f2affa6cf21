//! The leadership lease's statements on the PostgreSQL write connection: a
//! session advisory lock and the one `coordinator_lease` row, read and written
//! by the database's clock (`now()`). What to run when is decided by
//! [`crate::session::lease`]; this file only runs it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::Client;

use super::WriteSlot;
use crate::server::db::DbError;
use crate::server::store::{LeaseStore, TakeOver};
use crate::session::lease::{LeaseRow, Observation};

/// The key of the lease's session advisory lock ("COOR" + 2).
const LEASE_LOCK: i64 = 0x434F_4F52_0002;

/// How long a takeover waits for a terminated backend to be gone.
const TERMINATE_WAIT_MS: i64 = 5_000;

/// How long closing waits for a statement in flight on the connection before
/// leaving the connection to the writer's failure (the flag is set at once).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The database's clock, the lock (held already, or taken now) and the row.
/// A bigint advisory key shows in `pg_locks` as its high half in `classid`,
/// its low half in `objid`, and `objsubid` 1.
const OBSERVE: &str = "SELECT (extract(epoch FROM now()) * 1000)::int8, \
     CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() \
         AND granted AND classid::text::int8 = $2 AND objid::text::int8 = $3 AND objsubid = 1) \
     THEN true ELSE pg_try_advisory_lock($1) END, \
     l.leader_id, l.advertise_url, l.backend_pid, l.epoch, (extract(epoch FROM l.renewed_at) * 1000)::int8 \
     FROM (SELECT 1) AS one LEFT JOIN coordinator_lease l ON l.id = 1";

const RENEW: &str =
    "UPDATE coordinator_lease SET renewed_at = now() WHERE id = 1 AND leader_id = $1 AND epoch = $2";

const LOCK_ROW: &str = "SELECT epoch, (extract(epoch FROM renewed_at) * 1000)::int8, \
     (extract(epoch FROM now()) * 1000)::int8 FROM coordinator_lease WHERE id = 1 FOR UPDATE";

const WRITE_ROW: &str =
    "INSERT INTO coordinator_lease (id, leader_id, advertise_url, backend_pid, epoch, renewed_at) \
     VALUES (1, $1, $2, pg_backend_pid(), $3, now()) ON CONFLICT (id) DO UPDATE SET \
     leader_id = excluded.leader_id, advertise_url = excluded.advertise_url, \
     backend_pid = excluded.backend_pid, epoch = excluded.epoch, renewed_at = excluded.renewed_at";

/// The lease on the store's write connection.
pub struct PgLease {
    write: WriteSlot,
}

impl PgLease {
    /// The lease on `write`, the connection the writer commits on.
    pub(super) fn new(write: WriteSlot) -> PgLease {
        PgLease { write }
    }
}

fn closed() -> DbError {
    DbError::Unavailable("the write connection is closed".to_owned())
}

fn ms(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[async_trait]
impl LeaseStore for PgLease {
    async fn observe(&self) -> Result<Observation, DbError> {
        let slot = self.write.client.lock().await;
        let (client, _) = slot.as_ref().ok_or_else(closed)?;
        let high = LEASE_LOCK >> 32;
        let low = LEASE_LOCK & 0xFFFF_FFFF;
        let row = client
            .query_one(OBSERVE, &[&LEASE_LOCK, &high, &low])
            .await?;
        let db_now: i64 = row.try_get(0)?;
        let lock_held: bool = row.try_get(1)?;
        let leader_id: Option<String> = row.try_get(2)?;
        let lease = match leader_id {
            Some(leader_id) => Some(LeaseRow {
                leader_id,
                advertise_url: row.try_get(3)?,
                backend_pid: row.try_get(4)?,
                epoch: ms(row.try_get(5)?),
                renewed_at_ms: ms(row.try_get(6)?),
            }),
            None => None,
        };
        Ok(Observation {
            db_now_ms: ms(db_now),
            row: lease,
            lock_held,
        })
    }

    async fn renew(&self, node_id: &str, epoch: u64) -> Result<bool, DbError> {
        let slot = self.write.client.lock().await;
        let (client, _) = slot.as_ref().ok_or_else(closed)?;
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        Ok(client.execute(RENEW, &[&node_id, &epoch]).await? == 1)
    }

    async fn take_over(&self, take: &TakeOver<'_>) -> Result<bool, DbError> {
        let mut slot = self.write.client.lock().await;
        let (client, _): &mut (Client, u64) = slot.as_mut().ok_or_else(closed)?;
        let tx = client.transaction().await?;
        let found = tx.query_opt(LOCK_ROW, &[]).await?;
        let found = match found {
            Some(row) => Some((
                ms(row.try_get(0)?),
                ms(row.try_get(1)?),
                ms(row.try_get(2)?),
            )),
            None => None,
        };
        match (found, take.expected) {
            (None, None) => {}
            (Some((epoch, renewed_at, _)), Some(expected)) if (epoch, renewed_at) == expected => {}
            _ => return Ok(false),
        }
        if let Some(pid) = take.terminate_backend {
            let still_stale = found.is_some_and(|(_, renewed_at, db_now)| {
                db_now > renewed_at.saturating_add(take.timeout_ms)
            });
            if !still_stale {
                return Ok(false);
            }
            tx.query_one(
                "SELECT CASE WHEN $1 = pg_backend_pid() THEN false ELSE pg_terminate_backend($1, $2) END",
                &[&pid, &TERMINATE_WAIT_MS],
            )
            .await?;
            tracing::warn!(
                backend_pid = pid,
                "terminated the stale leader's database backend"
            );
        }
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEASE_LOCK])
            .await?
            .try_get(0)?;
        if !locked {
            return Ok(false);
        }
        let epoch = i64::try_from(take.epoch).unwrap_or(i64::MAX);
        tx.execute(WRITE_ROW, &[&take.node_id, &take.advertise_url, &epoch])
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn reconnect(&self) -> Result<(), DbError> {
        self.write.reconnect().await
    }

    async fn connection_ended(&self) {
        self.write.ended().await
    }

    async fn close(&self) {
        self.write.closed.store(true, Ordering::SeqCst);
        let write = self.write.clone();
        tokio::spawn(async move {
            if let Ok(mut slot) = tokio::time::timeout(CLOSE_WAIT, write.client.lock()).await {
                // Dropping the client ends the connection, and the lock with it.
                slot.take();
            }
        });
    }
}

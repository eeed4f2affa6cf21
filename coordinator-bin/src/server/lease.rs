//! The driver of the [`Lease`] core: it runs the lease's statements on the
//! store's write connection and its timers, feeds the results in, and tells the
//! session driver what the lease decided (who leads, that this coordinator
//! leads now with the live state read from the store, or that it must stop at
//! once). It decides nothing itself.

use std::sync::Arc;
use std::time::Duration;

use super::db::LiveTasks;
use tokio::sync::{mpsc, watch};

use super::clock::now_ms;
use super::driver::Command;
use super::store::{LeaseStore, Store, TakeOver};
use crate::session::lease::{Decision, Lease, LeaseState};

/// What the lease tells the session driver.
pub enum Leadership {
    /// Someone else leads (or nobody, as far as known).
    LeaderIs(Option<String>),
    /// This coordinator took the lease for `epoch`; `records` is the live
    /// state read after the takeover committed.
    BecameLeader {
        /// The epoch taken.
        epoch: u64,
        /// The live tasks to restore (see [`Store::load_live_tasks`]).
        live: LiveTasks,
    },
    /// Leadership is lost (or the lease's connection is): the write
    /// connection is closed already; stop serving and stop.
    Lost {
        /// Who leads now, if known.
        leader_url: Option<String>,
        /// Why, for the log.
        why: String,
    },
}

/// Runs the lease until leadership is lost or the service stops.
pub async fn run(
    mut lease: Lease,
    sql: Arc<dyn LeaseStore>,
    store: Arc<dyn Store>,
    max_inline_bytes: usize,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let runner = Runner {
        sql,
        store,
        max_inline_bytes,
        commands,
    };
    loop {
        let mut decision = lease.handle_timeout(now_ms());
        while let Some(d) = decision.take() {
            match runner.carry_out(&mut lease, d).await {
                Step::Next(next) => decision = next,
                Step::Stop => return,
            }
        }
        let wait_ms = lease
            .poll_timeout()
            .map_or(1_000, |at| at.saturating_sub(now_ms()));
        // Watched only while there is a connection to lose.
        let connected = !matches!(lease.state(), LeaseState::Disconnected { .. });
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            () = runner.sql.connection_ended(), if connected => {
                tracing::warn!(state = %lease.state(), "the lease's database connection ended");
                let mut decision = lease.handle_connection_lost(now_ms());
                while let Some(d) = decision.take() {
                    match runner.carry_out(&mut lease, d).await {
                        Step::Next(next) => decision = next,
                        Step::Stop => return,
                    }
                }
            }
        }
    }
}

enum Step {
    Next(Option<Decision>),
    Stop,
}

struct Runner {
    sql: Arc<dyn LeaseStore>,
    store: Arc<dyn Store>,
    max_inline_bytes: usize,
    commands: mpsc::Sender<Command>,
}

impl Runner {
    /// Runs `work` unless the lease's fence comes first (a leader must stop
    /// serving then, even with a statement outstanding): `Err` with the
    /// decision of the timeout.
    async fn or_fence<T>(
        lease: &mut Lease,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Option<Decision>> {
        let wait_ms = lease.poll_timeout().map(|at| at.saturating_sub(now_ms()));
        tokio::select! {
            done = work => Ok(done),
            () = async {
                match wait_ms {
                    Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    None => std::future::pending().await,
                }
            } => Err(lease.handle_timeout(now_ms())),
        }
    }

    async fn carry_out(&self, lease: &mut Lease, decision: Decision) -> Step {
        match decision {
            Decision::Observe { tick } => {
                match Self::or_fence(lease, self.sql.observe()).await {
                    Ok(Ok(observation)) => Step::Next(lease.handle_observation(tick, &observation)),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot look at the lease");
                        // A leader steps down; a standby reconnects later.
                        Step::Next(lease.handle_connection_lost(now_ms()))
                    }
                    Err(fence) => Step::Next(fence),
                }
            }
            Decision::Renew { tick, epoch } => {
                let node_id = lease.config().node_id.clone();
                match Self::or_fence(lease, self.sql.renew(&node_id, epoch)).await {
                    Ok(renewed) => {
                        if let Err(e) = &renewed {
                            tracing::warn!(error = %e, "cannot renew the lease");
                        }
                        let committed = renewed.unwrap_or(false);
                        Step::Next(lease.handle_renewed(now_ms(), tick, committed))
                    }
                    Err(fence) => Step::Next(fence),
                }
            }
            Decision::TakeOver {
                tick,
                terminate_backend,
                expected,
                epoch,
            } => {
                let config = lease.config().clone();
                let take = TakeOver {
                    node_id: &config.node_id,
                    advertise_url: &config.advertise_url,
                    terminate_backend,
                    expected,
                    epoch,
                    timeout_ms: config.timeout_ms,
                };
                match self.sql.take_over(&take).await {
                    Ok(taken) => Step::Next(lease.handle_takeover(now_ms(), tick, taken)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take the lease over");
                        // Whatever the connection did, a new one starts clean.
                        Step::Next(lease.handle_connection_lost(now_ms()))
                    }
                }
            }
            Decision::Reconnect { failures } => {
                let connected = match self.sql.reconnect().await {
                    Ok(()) => {
                        tracing::warn!(failures, "reconnected to the database; standing by");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, failures, "cannot reconnect to the database");
                        false
                    }
                };
                Step::Next(lease.handle_reconnected(now_ms(), connected))
            }
            Decision::Follow { leader_url } => {
                self.send(Leadership::LeaderIs(leader_url)).await;
                Step::Next(None)
            }
            Decision::Lead { epoch } => {
                let read =
                    Self::or_fence(lease, self.store.load_live_tasks(self.max_inline_bytes)).await;
                match read {
                    Ok(Ok(live)) => {
                        tracing::warn!(
                            epoch,
                            live_tasks = live.tasks.len(),
                            "took the lease; serving"
                        );
                        self.send(Leadership::BecameLeader { epoch, live }).await;
                        Step::Next(None)
                    }
                    Ok(Err(e)) => {
                        self.lost(
                            None,
                            format!("took the lease but cannot restore the live state: {e}"),
                        )
                        .await
                    }
                    Err(fence) => Step::Next(fence),
                }
            }
            Decision::StepDown { leader_url } => {
                self.lost(
                    leader_url,
                    "the lease could not be renewed or was taken".to_owned(),
                )
                .await
            }
        }
    }

    /// Closes the write connection (nothing more is committed), then tells
    /// the session driver.
    async fn lost(&self, leader_url: Option<String>, why: String) -> Step {
        self.sql.close().await;
        self.send(Leadership::Lost { leader_url, why }).await;
        Step::Stop
    }

    async fn send(&self, leadership: Leadership) {
        let _ = self.commands.send(Command::Leadership(leadership)).await;
    }
}

//! The leadership lease's decisions as a pure state machine (SPEC §13): from
//! what the driver read of the lease row and the advisory lock, decide to renew,
//! to stay a standby and point at the leader, to take over (terminating the old
//! leader's backend) with the next epoch, or to step down.
//!
//! No SQL and no clock here. Two times come in, never mixed:
//! - `now_ms`, the process's own monotonic milliseconds, for the timers (when to
//!   look at the lease again, and when a leader that could not renew must have
//!   stopped serving);
//! - `db_now_ms` inside an [`Observation`], the database's clock, the only one
//!   that judges whether the leader's `renewed_at` is too old.
//!
//! # The contract
//!
//! The driver calls [`Lease::handle_timeout`] when [`Lease::poll_timeout`] is
//! due and carries out the [`Decision`] it returns:
//! - [`Decision::Observe`]: on the connection that performs every write, in one
//!   transaction, read the database's `now()`, the lease row, and try the
//!   advisory lock; hand them to [`Lease::handle_observation`] and carry out its
//!   decision in the same transaction;
//! - [`Decision::Renew`]: set `renewed_at = now()` where `leader_id` is ours and
//!   `epoch` is the one given; report with [`Lease::handle_renewed`] (committed
//!   and one row changed, or not);
//! - [`Decision::TakeOver`]: in one transaction, only while the row still has
//!   the `expected` epoch and `renewed_at` (and, when there is a backend to
//!   terminate, `renewed_at` is still older than the timeout by `now()`):
//!   terminate `terminate_backend`, take the advisory lock, write the row
//!   (ours, our backend pid, `epoch`, `renewed_at = now()`), or insert it when
//!   there was none; report with [`Lease::handle_takeover`];
//! - [`Decision::Follow`]: tell the session who leads
//!   ([`super::Session::handle_leader_is`]);
//! - [`Decision::Lead`]: restore the live state from storage and call
//!   [`super::Session::handle_became_leader`] with the epoch;
//! - [`Decision::StepDown`]: call [`super::Session::handle_leader_is`] (or
//!   [`super::Session::handle_lost_leadership`]) at once, before anything else
//!   is served;
//! - [`Decision::Reconnect`]: open a new connection to write on (the old one
//!   is gone, and any lock with it); report with [`Lease::handle_reconnected`].
//!
//! When the connection the lease runs on fails (a statement's error, or the
//! connection ending by itself, as when the server restarts), the driver calls
//! [`Lease::handle_connection_lost`] at once. A leader steps down (its lock
//! went with the connection, and nothing it has not committed can be answered);
//! a standby keeps standing by without a connection and asks for a new one
//! after a back-off that doubles from [`RECONNECT_FIRST_MS`] up to the lease
//! timeout, so it comes back soon after a short outage and does not hammer a
//! database that stays down. A leader never reconnects: a coordinator that led
//! and lost its connection stops (fail-stop) and is restarted as a standby.
//!
//! # Why a leader steps down before anyone can take over
//!
//! A standby takes over only when the database's `now()` is past
//! `renewed_at + timeout_ms`, and `renewed_at` is the database's time of the
//! renewal's transaction, which began after the leader's tick that asked for it.
//! The leader counts its fence from the start of that tick on its own clock and
//! stops serving at `tick start + timeout_ms - timeout_ms / 10` (the tenth
//! covers clocks that run at slightly different rates). So a leader that keeps
//! running stops before a takeover can happen; one that is frozen cannot stop
//! itself, which is why the takeover terminates its backend: its lock and its
//! connection die, and every later write of it fails.

use std::fmt;

/// Default period of lease renewals (`--lease-renew-ms`).
pub const DEFAULT_RENEW_MS: u64 = 1_000;
/// Default age of `renewed_at` past which a standby takes over
/// (`--lease-timeout-ms`), by the database's clock.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The wait before the first attempt to reconnect after the lease's connection
/// was lost; each failed attempt doubles it, up to the lease timeout.
pub const RECONNECT_FIRST_MS: u64 = 100;

/// Settings of a [`Lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// This coordinator's `leader_id` (unique among the processes sharing the
    /// database).
    pub node_id: String,
    /// How clients reach this coordinator (`--advertise-url`).
    pub advertise_url: String,
    /// How often the leader renews the lease (and looks at it). A standby
    /// looks four times as often ([`LeaseConfig::standby_look_ms`]).
    pub renew_ms: u64,
    /// Age of `renewed_at` (database clock) past which the lease is free.
    pub timeout_ms: u64,
}

/// Why lease settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseConfigError {
    /// A renewal period of zero.
    #[error("--lease-renew-ms must be at least 1")]
    ZeroRenew,
    /// A timeout that leaves no room for a failed renewal.
    #[error(
        "--lease-timeout-ms ({timeout_ms}) must be at least twice --lease-renew-ms ({renew_ms}), so that one failed renewal does not lose the lease"
    )]
    TimeoutTooShort {
        /// The timeout given.
        timeout_ms: u64,
        /// The renewal period given.
        renew_ms: u64,
    },
}

impl LeaseConfig {
    /// Checked settings.
    pub fn new(
        node_id: impl Into<String>,
        advertise_url: impl Into<String>,
        renew_ms: u64,
        timeout_ms: u64,
    ) -> Result<LeaseConfig, LeaseConfigError> {
        check_timing(renew_ms, timeout_ms)?;
        Ok(LeaseConfig {
            node_id: node_id.into(),
            advertise_url: advertise_url.into(),
            renew_ms,
            timeout_ms,
        })
    }

    /// How often a coordinator that does not lead looks at the lease: a
    /// quarter of the renewal period (at least 1 ms). A leader whose process is
    /// gone frees its lock at once, so this bounds how long its standbys take
    /// to notice; one look is one short query.
    pub fn standby_look_ms(&self) -> u64 {
        (self.renew_ms / 4).max(1)
    }

    /// How long after the start of its last successful renewal a leader stops
    /// serving, on its own clock.
    pub fn fence_after_ms(&self) -> u64 {
        self.timeout_ms - self.timeout_ms / 10
    }
}

/// Checks a renewal period and a timeout together.
pub fn check_timing(renew_ms: u64, timeout_ms: u64) -> Result<(), LeaseConfigError> {
    if renew_ms == 0 {
        return Err(LeaseConfigError::ZeroRenew);
    }
    if timeout_ms < renew_ms.saturating_mul(2) {
        return Err(LeaseConfigError::TimeoutTooShort {
            timeout_ms,
            renew_ms,
        });
    }
    Ok(())
}

/// The lease row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// Who holds (or held) the lease.
    pub leader_id: String,
    /// How clients reach it.
    pub advertise_url: String,
    /// Its database backend (connection) process id.
    pub backend_pid: i32,
    /// The takeover count.
    pub epoch: u64,
    /// When it last renewed, by the database's clock.
    pub renewed_at_ms: u64,
}

/// What one look at the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The database's `now()`.
    pub db_now_ms: u64,
    /// The lease row; `None` before anyone ever led.
    pub row: Option<LeaseRow>,
    /// True when this connection holds the advisory lock (it just took it, or
    /// held it already).
    pub lock_held: bool,
}

/// The number of one look at the lease: its reports name it, so that a late
/// report of an earlier look is never taken for the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(u64);

impl Tick {
    /// The look with this number (for drivers that keep it elsewhere).
    pub const fn new(n: u64) -> Tick {
        Tick(n)
    }
}

/// The look (and its write) being awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    tick: Tick,
    /// When it began, on the process's clock: a renewal or takeover it leads
    /// to counts from here.
    started_ms: u64,
}

/// What the driver must do next; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Look at the lease: `now()`, the row, the lock; report with `tick`.
    Observe {
        /// The look's number.
        tick: Tick,
    },
    /// Renew the row of `epoch`.
    Renew {
        /// The look it follows (report with it).
        tick: Tick,
        /// The epoch led.
        epoch: u64,
    },
    /// Stay a standby; the leader is there (if known).
    Follow {
        /// How clients reach the leader.
        leader_url: Option<String>,
    },
    /// Take the lease over.
    TakeOver {
        /// The look it follows (report with it).
        tick: Tick,
        /// The backend of the old leader to terminate first (its lock and its
        /// connection die with it).
        terminate_backend: Option<i32>,
        /// The row's `(epoch, renewed_at_ms)` as read: the backend is
        /// terminated and the row written only if they are unchanged (and, with
        /// a backend to terminate, still older than the timeout by the
        /// database's clock at the write); `None`: there was no row.
        expected: Option<(u64, u64)>,
        /// The epoch to write.
        epoch: u64,
    },
    /// The takeover is committed: restore and serve in `epoch`.
    Lead {
        /// The new epoch.
        epoch: u64,
    },
    /// Stop serving now ([`super::Session::handle_leader_is`] with
    /// `leader_url`, which steps a leader down).
    StepDown {
        /// Who leads now, if the lease says.
        leader_url: Option<String>,
    },
    /// Open a new connection for the lease and the writer (a standby's was
    /// lost); report with [`Lease::handle_reconnected`].
    Reconnect {
        /// Failed attempts since the connection was lost.
        failures: u32,
    },
}

/// Where this coordinator stands with the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Not leading.
    Standby,
    /// Not leading, and without a database connection: a new one is asked for
    /// at `reconnect_at_ms` (own clock), or is being opened (`None`).
    Disconnected {
        /// Failed attempts to reconnect so far.
        failures: u32,
        /// When to try next; `None` while an attempt is under way.
        reconnect_at_ms: Option<u64>,
    },
    /// A takeover of `epoch` is being written.
    TakingOver {
        /// The epoch being written.
        epoch: u64,
    },
    /// Leading in `epoch` until `fence_at_ms` (own clock) unless renewed.
    Leader {
        /// The epoch led.
        epoch: u64,
        /// When it must have stopped serving if no renewal succeeds.
        fence_at_ms: u64,
    },
}

/// The lease's state machine. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Lease {
    config: LeaseConfig,
    state: LeaseState,
    /// When to look at the lease next (own clock).
    next_tick_ms: u64,
    /// The look whose observation or write is awaited.
    pending: Option<Pending>,
    /// The number of the next look.
    next_tick: u64,
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseState::Standby => f.write_str("standby"),
            LeaseState::Disconnected { failures, .. } => {
                write!(
                    f,
                    "standby without a connection ({failures} failed attempts)"
                )
            }
            LeaseState::TakingOver { epoch } => write!(f, "taking over epoch {epoch}"),
            LeaseState::Leader { epoch, .. } => write!(f, "leader of epoch {epoch}"),
        }
    }
}

impl Lease {
    /// A standby that looks at the lease first at `now_ms`.
    pub fn new(config: LeaseConfig, now_ms: u64) -> Lease {
        Lease {
            config,
            state: LeaseState::Standby,
            next_tick_ms: now_ms,
            pending: None,
            next_tick: 1,
        }
    }

    /// Where it stands.
    pub fn state(&self) -> &LeaseState {
        &self.state
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// When [`Lease::handle_timeout`] must be called next: the next look at the
    /// lease, or a leader's fence, whichever comes first, or without a
    /// connection the next attempt to reconnect; `None` while a look, a write
    /// or a reconnection is awaited (and no fence runs).
    pub fn poll_timeout(&self) -> Option<u64> {
        let fence = match self.state {
            LeaseState::Leader { fence_at_ms, .. } => Some(fence_at_ms),
            LeaseState::Disconnected {
                reconnect_at_ms, ..
            } => return reconnect_at_ms,
            _ => None,
        };
        let tick = self.pending.is_none().then_some(self.next_tick_ms);
        [fence, tick].into_iter().flatten().min()
    }

    /// Timers: a leader past its fence steps down (even with a look or a
    /// renewal outstanding); without a connection, when due, it is time to
    /// reconnect; otherwise, when due, it is time to look.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<Decision> {
        match self.state {
            LeaseState::Leader { fence_at_ms, .. } if now_ms >= fence_at_ms => {
                return Some(self.step_down(now_ms));
            }
            LeaseState::Disconnected {
                failures,
                reconnect_at_ms,
            } => {
                if reconnect_at_ms.is_some_and(|at| now_ms >= at) {
                    self.state = LeaseState::Disconnected {
                        failures,
                        reconnect_at_ms: None,
                    };
                    return Some(Decision::Reconnect { failures });
                }
                return None;
            }
            _ => {}
        }
        if self.pending.is_none() && now_ms >= self.next_tick_ms {
            let tick = Tick(self.next_tick);
            self.next_tick += 1;
            self.pending = Some(Pending {
                tick,
                started_ms: now_ms,
            });
            let period = match self.state {
                LeaseState::Leader { .. } => self.config.renew_ms,
                _ => self.config.standby_look_ms(),
            };
            self.next_tick_ms = now_ms.saturating_add(period);
            return Some(Decision::Observe { tick });
        }
        None
    }

    /// What the look `tick` found (asked for by [`Decision::Observe`]); `None`
    /// for a look that is not the one awaited (late, after a step-down).
    pub fn handle_observation(
        &mut self,
        tick: Tick,
        observation: &Observation,
    ) -> Option<Decision> {
        if self.pending.map(|p| p.tick) != Some(tick) {
            return None;
        }
        Some(self.decide(tick, observation))
    }

    fn decide(&mut self, tick: Tick, observation: &Observation) -> Decision {
        match self.state.clone() {
            // A look is never awaited without a connection (it was forgotten).
            LeaseState::Disconnected { .. } => self.follow(observation),
            LeaseState::Leader { epoch, .. } => {
                let ours = observation.lock_held
                    && observation
                        .row
                        .as_ref()
                        .is_some_and(|r| r.leader_id == self.config.node_id && r.epoch == epoch);
                if ours {
                    Decision::Renew { tick, epoch }
                } else {
                    self.state = LeaseState::Standby;
                    self.pending = None;
                    Decision::StepDown {
                        leader_url: self.leader_url(observation),
                    }
                }
            }
            LeaseState::TakingOver { .. } | LeaseState::Standby => {
                let free = match &observation.row {
                    None => observation.lock_held.then_some((None, None, 1)),
                    Some(row) => {
                        let expired = observation.db_now_ms
                            > row.renewed_at_ms.saturating_add(self.config.timeout_ms);
                        let expected = Some((row.epoch, row.renewed_at_ms));
                        if observation.lock_held {
                            // Whoever held the lock is gone (its session ended).
                            Some((None, expected, row.epoch + 1))
                        } else if expired {
                            Some((Some(row.backend_pid), expected, row.epoch + 1))
                        } else {
                            None
                        }
                    }
                };
                match free {
                    Some((terminate_backend, expected, epoch)) => {
                        self.state = LeaseState::TakingOver { epoch };
                        Decision::TakeOver {
                            tick,
                            terminate_backend,
                            expected,
                            epoch,
                        }
                    }
                    None => self.follow(observation),
                }
            }
        }
    }

    /// The renewal asked for by [`Decision::Renew`] of `tick`: `committed`
    /// when it changed our row. A failed renewal steps down; a renewal reported
    /// after the fence is too late to count; a report of another look is
    /// ignored.
    pub fn handle_renewed(&mut self, now_ms: u64, tick: Tick, committed: bool) -> Option<Decision> {
        let started = self.take_pending(tick)?;
        let LeaseState::Leader { epoch, .. } = self.state else {
            return None;
        };
        let fence_at_ms = started.saturating_add(self.config.fence_after_ms());
        if !committed || now_ms >= fence_at_ms {
            return Some(self.step_down(now_ms));
        }
        self.state = LeaseState::Leader { epoch, fence_at_ms };
        None
    }

    /// The takeover asked for by [`Decision::TakeOver`] of `tick`:
    /// `committed` when the lock was taken and the row written. Then serve
    /// ([`Decision::Lead`]), unless reported past the fence it would have
    /// had; else stay a standby. A report of another look is ignored (`None`).
    pub fn handle_takeover(
        &mut self,
        now_ms: u64,
        tick: Tick,
        committed: bool,
    ) -> Option<Decision> {
        let started = self.take_pending(tick)?;
        let LeaseState::TakingOver { epoch } = self.state else {
            return None;
        };
        let fence_at_ms = started.saturating_add(self.config.fence_after_ms());
        if !committed || now_ms >= fence_at_ms {
            // The row may say ours while we do not lead: the next look takes
            // it over anew, with the next epoch.
            self.state = LeaseState::Standby;
            return Some(Decision::Follow { leader_url: None });
        }
        self.state = LeaseState::Leader { epoch, fence_at_ms };
        // A leader renews every `renew_ms` from the look that won the lease.
        self.next_tick_ms = started.saturating_add(self.config.renew_ms);
        Some(Decision::Lead { epoch })
    }

    /// The start of the awaited look `tick`, which ends now; `None` if another
    /// look is awaited (or none).
    fn take_pending(&mut self, tick: Tick) -> Option<u64> {
        let pending = self.pending.filter(|p| p.tick == tick)?;
        self.pending = None;
        Some(pending.started_ms)
    }

    /// The connection that holds the lock was lost: a leader stops at once (its
    /// lock went with the connection); anything awaited is forgotten, and a new
    /// connection is asked for after [`RECONNECT_FIRST_MS`]. Reported again
    /// while disconnected (a late error of the old connection), it changes
    /// nothing.
    pub fn handle_connection_lost(&mut self, now_ms: u64) -> Option<Decision> {
        if matches!(self.state, LeaseState::Disconnected { .. }) {
            return None;
        }
        let stepped_down = match self.state {
            LeaseState::Leader { .. } => Some(self.step_down(now_ms)),
            _ => None,
        };
        self.pending = None;
        self.state = LeaseState::Disconnected {
            failures: 0,
            reconnect_at_ms: Some(now_ms.saturating_add(self.reconnect_delay_ms(0))),
        };
        stepped_down
    }

    /// The reconnection asked for by [`Decision::Reconnect`]: `connected` when
    /// a new connection is open. Then look at the lease at once; else try again
    /// after twice the last wait (at most the lease timeout). Ignored unless a
    /// reconnection is awaited.
    pub fn handle_reconnected(&mut self, now_ms: u64, connected: bool) -> Option<Decision> {
        let LeaseState::Disconnected {
            failures,
            reconnect_at_ms: None,
        } = self.state
        else {
            return None;
        };
        if connected {
            self.state = LeaseState::Standby;
            self.next_tick_ms = now_ms;
            return self.handle_timeout(now_ms);
        }
        let failures = failures.saturating_add(1);
        self.state = LeaseState::Disconnected {
            failures,
            reconnect_at_ms: Some(now_ms.saturating_add(self.reconnect_delay_ms(failures))),
        };
        None
    }

    /// The wait before the attempt that follows `failures` failed ones.
    pub fn reconnect_delay_ms(&self, failures: u32) -> u64 {
        let cap = self.config.timeout_ms.max(RECONNECT_FIRST_MS);
        RECONNECT_FIRST_MS
            .saturating_mul(1u64.checked_shl(failures.min(32)).unwrap_or(u64::MAX))
            .min(cap)
    }

    fn step_down(&mut self, now_ms: u64) -> Decision {
        self.state = LeaseState::Standby;
        self.pending = None;
        self.next_tick_ms = self
            .next_tick_ms
            .min(now_ms.saturating_add(self.config.standby_look_ms()));
        Decision::StepDown { leader_url: None }
    }

    fn leader_url(&self, observation: &Observation) -> Option<String> {
        observation
            .row
            .as_ref()
            .filter(|r| r.leader_id != self.config.node_id)
            .map(|r| r.advertise_url.clone())
    }

    fn follow(&mut self, observation: &Observation) -> Decision {
        self.pending = None;
        if matches!(self.state, LeaseState::TakingOver { .. }) {
            self.state = LeaseState::Standby;
        }
        Decision::Follow {
            leader_url: self.leader_url(observation),
        }
    }
}

#[cfg(test)]
mod tests;

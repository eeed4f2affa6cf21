//! Leadership: whether this coordinator serves (the leader of an epoch) or
//! points its clients at the one that does (a standby), and what changes the
//! moment that changes.
//!
//! The driver learns the role from the lease (SPEC §13) and feeds it in with
//! [`Session::handle_became_leader`], [`Session::handle_leader_is`] and
//! [`Session::handle_lost_leadership`]; every change comes out as
//! [`Output::Role`] so that the HTTP side answers by it. A session made with
//! [`Session::new`] is the leader of [`FIRST_EPOCH`] (a SQLite coordinator is
//! always that: nobody else can open its database).
//!
//! A standby serves nothing: every request is answered [`Answer::NotLeader`],
//! every `identify` closes its socket with [`CLOSE_TRY_AGAIN_LATER`] and the
//! leader's URL as the reason, and it keeps no live state (no tasks, agents or
//! timers), so it never purges, sweeps or answers from a state it cannot
//! commit.

use std::borrow::Cow;

use coordinator_queue::{RestoreError, Task};
use coordinator_scheduler::Scheduler;

use super::operators::Tallies;
use super::views::Activity;
use super::{Answer, ConnId, Held, Output, Session};

/// WebSocket close code "try again later": this coordinator is not the leader.
/// The close reason is the leader's URL when it is known.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// The close reason of [`CLOSE_TRY_AGAIN_LATER`] when the leader is unknown (or
/// its URL does not fit in a close frame).
pub const NOT_LEADER_REASON: &str = "not_leader";

/// The longest close reason a WebSocket close frame carries, in bytes.
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// The `Retry-After` of a [`NotLeader`] answer, in seconds: a standby learns of a
/// new leader within a lease renewal, so a client comes back soon.
pub const NOT_LEADER_RETRY_AFTER_S: u64 = 1;

/// The epoch of a coordinator that leads from its start (always, with SQLite).
pub const FIRST_EPOCH: u64 = 1;

/// What this coordinator is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It serves; `epoch` grows with every takeover.
    Leader {
        /// The lease's epoch this coordinator leads in.
        epoch: u64,
    },
    /// It does not serve, and points clients at the leader.
    Standby {
        /// How clients reach the leader (its `--advertise-url`), if known.
        leader_url: Option<String>,
    },
}

impl Role {
    /// True for [`Role::Leader`].
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }

    /// `leader` or `standby` (the `role` of `/health`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Leader { .. } => "leader",
            Role::Standby { .. } => "standby",
        }
    }

    /// The epoch led, for a leader.
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Role::Leader { epoch } => Some(*epoch),
            Role::Standby { .. } => None,
        }
    }

    /// The refusal of every API call, for a standby; `None` for the leader.
    pub fn not_leader(&self) -> Option<NotLeader> {
        match self {
            Role::Leader { .. } => None,
            Role::Standby { leader_url } => Some(NotLeader {
                leader_url: leader_url.clone(),
                retry_after_s: NOT_LEADER_RETRY_AFTER_S,
            }),
        }
    }

    /// The reason of the [`CLOSE_TRY_AGAIN_LATER`] close of a socket: the
    /// leader's URL, or [`NOT_LEADER_REASON`] when it is unknown or too long
    /// for a close frame (a cut URL would send clients somewhere wrong).
    pub fn close_reason(&self) -> Cow<'static, str> {
        match self {
            Role::Standby {
                leader_url: Some(url),
            } if url.len() <= MAX_CLOSE_REASON_BYTES => Cow::Owned(url.clone()),
            _ => Cow::Borrowed(NOT_LEADER_REASON),
        }
    }
}

/// A request refused because this coordinator is not the leader (HTTP 503
/// `not_leader`, with the leader's URL and `Retry-After`). Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLeader {
    /// How clients reach the leader, if known.
    pub leader_url: Option<String>,
    /// When to try again, in seconds.
    pub retry_after_s: u64,
}

/// Why a leadership input was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeadershipError {
    /// Became leader while leading already.
    #[error("already the leader (epoch {epoch})")]
    AlreadyLeader {
        /// The epoch led.
        epoch: u64,
    },
    /// An epoch that is not newer than one this session has led or seen.
    #[error("epoch {offered} is not newer than epoch {seen}")]
    StaleEpoch {
        /// The epoch offered.
        offered: u64,
        /// The newest epoch known.
        seen: u64,
    },
    /// The records restored for the takeover are inconsistent.
    #[error("cannot restore the live state: {0}")]
    Restore(#[from] RestoreError),
}

impl Session {
    /// A standby: it serves nothing and points clients at `leader_url`.
    pub fn new_standby(
        config: super::SessionConfig,
        now_ms: u64,
        leader_url: Option<String>,
    ) -> Result<Session, RestoreError> {
        let mut session = Session::new(config, now_ms, Vec::new())?;
        session.role = Role::Standby { leader_url };
        session.highest_epoch = 0;
        Ok(session)
    }

    /// What this coordinator is now.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// This standby took the lease for `epoch`: it serves from the live state
    /// restored from `records` (read after taking the lease). `epoch` must be
    /// newer than every epoch this session knows.
    pub fn handle_became_leader(
        &mut self,
        now_ms: u64,
        epoch: u64,
        records: Vec<Task>,
    ) -> Result<(), LeadershipError> {
        if let Role::Leader { epoch } = self.role {
            return Err(LeadershipError::AlreadyLeader { epoch });
        }
        if epoch <= self.highest_epoch {
            return Err(LeadershipError::StaleEpoch {
                offered: epoch,
                seen: self.highest_epoch,
            });
        }
        self.scheduler = Scheduler::restore(self.config.scheduler.clone(), now_ms, records)?;
        self.scheduled_read = None;
        self.highest_epoch = epoch;
        self.next_sweep_ms = now_ms.saturating_add(self.config.sweep_interval_ms.max(1));
        self.set_role(Role::Leader { epoch });
        Ok(())
    }

    /// The lease says who leads (`None`: nobody, or not known). For a standby
    /// this updates where clients are sent; a leader told so has lost the lease
    /// and steps down as in [`Session::handle_lost_leadership`].
    pub fn handle_leader_is(&mut self, now_ms: u64, leader_url: Option<String>) {
        if self.fatal.is_some() {
            return;
        }
        match &self.role {
            Role::Leader { .. } => self.step_down(now_ms, leader_url),
            Role::Standby { leader_url: known } if *known == leader_url => {}
            Role::Standby { .. } => self.set_role(Role::Standby { leader_url }),
        }
    }

    /// The leader could not renew its lease, or found it taken: it stops
    /// serving at once. What is committed still leaves (answers, events, acks);
    /// every answer waiting for a commit that has not been reported is given as
    /// [`Answer::NotLeader`] (the client asks the new leader), frames waiting
    /// for a commit are dropped, every socket is closed with
    /// [`CLOSE_TRY_AGAIN_LATER`] (its agent reconnects elsewhere and names its
    /// task), and the live state is forgotten (a later takeover restores it from
    /// storage). Nothing for a standby.
    pub fn handle_lost_leadership(&mut self, now_ms: u64) {
        if self.fatal.is_some() || !self.role.is_leader() {
            return;
        }
        self.step_down(now_ms, None);
    }

    fn set_role(&mut self, role: Role) {
        self.role = role.clone();
        self.ready.push_back(Output::Role(role));
    }

    fn step_down(&mut self, now_ms: u64, leader_url: Option<String>) {
        let role = Role::Standby { leader_url };
        let refusal = role.not_leader().unwrap_or(NotLeader {
            leader_url: None,
            retry_after_s: NOT_LEADER_RETRY_AFTER_S,
        });
        // Committed: it may leave, except what needs the live state (a retry
        // about to read its record) or an agent's connection (closed below).
        let mut committed = Vec::new();
        while let Some(held) = self.gate.poll_released() {
            committed.push(held);
        }
        let uncommitted = self.gate.take_uncommitted();
        for (held, is_committed) in committed
            .into_iter()
            .map(|h| (h, true))
            .chain(uncommitted.into_iter().map(|h| (h, false)))
        {
            match held {
                Held::Out(Output::Load { request, .. }) => {
                    self.loading.remove(&request);
                    self.ready.push_back(Output::Reply {
                        request,
                        answer: Answer::NotLeader(refusal.clone()),
                    });
                }
                Held::Out(Output::Reply { request, .. }) if !is_committed => {
                    self.ready.push_back(Output::Reply {
                        request,
                        answer: Answer::NotLeader(refusal.clone()),
                    });
                }
                // The live state goes: so do its reads.
                Held::Out(Output::LoadScheduled { .. }) => {}
                Held::Out(output) if is_committed => self.ready.push_back(output),
                Held::Out(_) | Held::ToAgent { .. } => {}
            }
        }
        // Retries and cancels whose record is being read: they will not be
        // carried out here.
        self.ended_while_loading.clear();
        self.scheduled_read = None;
        let mut loading: Vec<_> = self.loading.drain().map(|(request, _)| request).collect();
        loading.sort();
        for request in loading {
            self.ready.push_back(Output::Reply {
                request,
                answer: Answer::NotLeader(refusal.clone()),
            });
        }
        self.awaiting_payload.clear();
        let reason = role.close_reason();
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort();
        for conn in conns {
            self.stop_waiting(conn);
            let Some(open) = self.conns.get_mut(&conn) else {
                continue;
            };
            open.agent = None;
            open.identifying = None;
            open.identity = None;
            if !open.closing {
                open.closing = true;
                self.ready.push_back(Output::Close {
                    conn,
                    code: CLOSE_TRY_AGAIN_LATER,
                    reason: reason.clone(),
                });
            }
        }
        // The live state is the leader's; a standby keeps none.
        if let Ok(empty) = Scheduler::restore(self.config.scheduler.clone(), now_ms, Vec::new()) {
            self.scheduler = empty;
        }
        self.names.clear();
        self.activity = Activity::new();
        self.tallies = Tallies::default();
        self.set_role(role);
    }

    /// A standby's answer to a request: refused at once, nothing changed.
    pub(super) fn refuse_not_leader(&mut self, request: super::RequestId) -> bool {
        let Some(refusal) = self.role.not_leader() else {
            return false;
        };
        self.ready.push_back(Output::Reply {
            request,
            answer: Answer::NotLeader(refusal),
        });
        true
    }

    /// A standby's answer to `identify`: the socket is closed with
    /// [`CLOSE_TRY_AGAIN_LATER`] and the leader's URL.
    pub(super) fn close_not_leader(&mut self, conn: ConnId) {
        self.stop_waiting(conn);
        let reason = self.role.close_reason();
        if let Some(open) = self.conns.get_mut(&conn) {
            open.closing = true;
            self.ready.push_back(Output::Close {
                conn,
                code: CLOSE_TRY_AGAIN_LATER,
                reason,
            });
        }
    }
}

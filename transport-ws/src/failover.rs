//! Which coordinator a client tries next, when several share one database and
//! only the leader serves: a pure decision (no I/O), shared by every client (the
//! agent SDK here; the CLI and the load generator of the `coordinator` program).
//!
//! A client is given a list of coordinators. After a refusal it asks
//! [`Failover::handle_refused`] where to go: to the leader a standby named (a
//! 503 `not_leader` with `leader`, or a WebSocket close 1013 whose reason is the
//! leader's URL), else to the next one in the list. A leader not in the list is
//! added to it (at most [`MAX_LEARNED`] of them, the oldest forgotten first).
//! Moves are bounded: once every coordinator known has refused in a row without
//! naming a leader (a round), or after [`Failover::max_moves`] refusals without
//! a success (standbys sending the client around), it says [`Next::GiveUp`],
//! and the client backs off or reports the failure.
//!
//! ```
//! use coordinator_transport::failover::{Failover, Next, Refused};
//!
//! let mut to = Failover::new(vec!["a:4000", "b:4000"]).unwrap();
//! assert_eq!(*to.current(), "a:4000");
//! // a is down: next.
//! assert_eq!(to.handle_refused(Refused::Unreachable), Next::Try);
//! assert_eq!(*to.current(), "b:4000");
//! // b is a standby and names c as the leader: c, though it was not given.
//! assert_eq!(to.handle_refused(Refused::NotLeader { leader: Some("c:4000") }), Next::Try);
//! assert_eq!(*to.current(), "c:4000");
//! to.handle_success();
//! ```

/// The most leaders learnt from refusals that are kept besides the given list.
pub const MAX_LEARNED: usize = 4;

/// Why a coordinator did not serve the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused<T> {
    /// It could not be reached (connection refused, reset, timed out).
    Unreachable,
    /// It is a standby; the leader is there, if it said.
    NotLeader {
        /// The leader, in the client's own form (a URL that does not parse
        /// into it is given as `None`).
        leader: Option<T>,
    },
}

/// What to do after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Next {
    /// Try [`Failover::current`] now.
    Try,
    /// Too many moves without a success: back off or report; the next try
    /// starts at [`Failover::current`] again with a fresh budget.
    GiveUp,
}

/// The coordinators a client knows and the one it is at. See the [module
/// documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover<T> {
    targets: Vec<T>,
    /// How many of `targets` were given (the rest were learnt, oldest first).
    given: usize,
    current: usize,
    /// Refusals since the last success (or give-up).
    moves: usize,
    /// Refusals in a row that named no leader.
    blind: usize,
}

impl<T: PartialEq> Failover<T> {
    /// Starts at the first of `targets`; `None` if there are none.
    pub fn new(targets: Vec<T>) -> Option<Failover<T>> {
        if targets.is_empty() {
            return None;
        }
        Some(Failover {
            given: targets.len(),
            targets,
            current: 0,
            moves: 0,
            blind: 0,
        })
    }

    /// Where to connect now.
    pub fn current(&self) -> &T {
        &self.targets[self.current]
    }

    /// Every coordinator known, the given ones first.
    pub fn targets(&self) -> &[T] {
        &self.targets
    }

    /// Refusals allowed between two successes: enough to visit every
    /// coordinator known twice, following a leader each time.
    pub fn max_moves(&self) -> usize {
        2 * (self.given + MAX_LEARNED) + 1
    }

    /// The current coordinator served: the budget of moves is full again.
    pub fn handle_success(&mut self) {
        self.moves = 0;
        self.blind = 0;
    }

    /// The current coordinator refused: move to the leader it named, else to
    /// the next one (a leader naming itself counts as naming none).
    pub fn handle_refused(&mut self, refused: Refused<T>) -> Next {
        let leader = match refused {
            Refused::NotLeader {
                leader: Some(leader),
            } if leader != *self.current() => Some(leader),
            _ => None,
        };
        self.moves += 1;
        self.blind = if leader.is_some() { 0 } else { self.blind + 1 };
        if self.moves > self.max_moves() || self.blind >= self.targets.len() {
            self.moves = 0;
            self.blind = 0;
            // The round ended where it began: the next one starts after it.
            self.current = (self.current + 1) % self.targets.len();
            return Next::GiveUp;
        }
        self.current = match leader {
            Some(leader) => match self.targets.iter().position(|t| *t == leader) {
                Some(known) => known,
                None => self.learn(leader),
            },
            None => (self.current + 1) % self.targets.len(),
        };
        Next::Try
    }

    /// Adds a leader not known yet; its index.
    fn learn(&mut self, leader: T) -> usize {
        if self.targets.len() - self.given >= MAX_LEARNED {
            let oldest = self.given;
            self.targets.remove(oldest);
            if self.current > oldest {
                self.current -= 1;
            }
        }
        self.targets.push(leader);
        self.targets.len() - 1
    }
}

#[cfg(test)]
mod tests;

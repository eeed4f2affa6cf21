//! The shell's name for one agent connection.

use std::fmt;

/// The shell's id of one agent connection, chosen by the shell and given to
/// [`Scheduler::handle_connect`](crate::Scheduler::handle_connect). It tells a
/// connection that still speaks for its agent from one that was replaced by a
/// newer connection of the same agent: a report about the old one is refused
/// with [`SchedulerError::StaleConnection`](crate::SchedulerError::StaleConnection).
/// The shell must not reuse an id while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct ConnId(u64);

impl ConnId {
    /// The connection with this number.
    pub const fn new(n: u64) -> ConnId {
        ConnId(n)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for ConnId {
    fn from(n: u64) -> ConnId {
        ConnId(n)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

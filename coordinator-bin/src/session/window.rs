//! The window of scheduled tasks kept in memory, as the session drives it: a
//! start restores every live task but the scheduled ones, and the queue asks
//! for the scheduled tasks as their time nears ([`Output::LoadScheduled`],
//! handed out after the commits before it, so the read sees every record the
//! queue emitted before asking). A cancel of a scheduled task that only
//! storage holds is decided on its stored record (see `requests.rs`).

use coordinator_queue::ScheduledPage;

use super::{Held, Notice, Output, Session};

impl Session {
    /// Storage may hold scheduled tasks that were not restored (a start
    /// reads every live task but those; they are read back as their time
    /// nears), all with a `queue_seq` below `next_queue_seq`. Call it right
    /// after [`Session::new`] or [`Session::handle_became_leader`].
    pub fn handle_stored_scheduled(&mut self, next_queue_seq: u64) {
        if self.fatal.is_none() && self.role.is_leader() {
            self.scheduler.handle_stored_scheduled(next_queue_seq);
        }
    }

    /// Hands out the read of scheduled tasks the queue asks for at `now_ms`,
    /// if any (one at a time).
    pub(super) fn poll_scheduled_load(&mut self, now_ms: u64) {
        if self.scheduled_read.is_some() || !self.role.is_leader() {
            return;
        }
        if let Some(load) = self.scheduler.poll_load(now_ms) {
            // Behind every record emitted so far: the read must see them.
            self.stage_changes();
            self.reads_asked += 1;
            let read = self.reads_asked;
            self.scheduled_read = Some(read);
            self.gate
                .hold(Held::Out(Output::LoadScheduled { read, load }));
        }
    }

    /// The answer to [`Output::LoadScheduled`] number `read` (`Err` if it
    /// could not be read: it is asked again a second later). The tasks read
    /// enter memory; those due already are released at once (see
    /// [`Session::poll_timeout`]).
    pub fn handle_scheduled_loaded(
        &mut self,
        now_ms: u64,
        read: u64,
        page: Result<ScheduledPage, String>,
    ) {
        if self.fatal.is_some() || self.scheduled_read != Some(read) {
            return;
        }
        self.scheduled_read = None;
        match page {
            Ok(page) => self.scheduler.handle_scheduled_loaded(now_ms, page),
            Err(error) => {
                self.scheduler.handle_scheduled_load_failed(now_ms);
                self.ready
                    .push_back(Output::Notice(Notice::ScheduledLoadFailed { error }));
            }
        }
        self.drain_scheduler();
    }
}

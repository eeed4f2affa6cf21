//! A virtual-clock driver: a [`Scheduler`] with a [`MemoryStore`], a fake
//! clock, the timer of `poll_timeout` and the periodic sweep, the way a shell
//! drives it, with the invariants checked after every input.

use std::collections::{HashMap, VecDeque};

use coordinator_agent_fsm::Capabilities;
use coordinator_queue::testing::MemoryStore;
use coordinator_queue::{AgentId, Change};

use super::{check_action, InvariantChecker, Violation};
use crate::{Action, ConnId, Scheduler, SchedulerConfig};

/// The sweep period of a new [`Driver`], as in the coordinator's default.
pub const DEFAULT_SWEEP_EVERY_MS: u64 = 30_000;

/// Drives a [`Scheduler`] on a virtual clock, the way a shell does.
///
/// After every input ([`Driver::call`], a timer, a sweep) the driver drains
/// the changes into its [`MemoryStore`] first and only then queues the
/// actions (persist before acknowledge), and checks the scheduler with an
/// [`InvariantChecker`] and every assignment with [`check_action`]. Time moves
/// only through [`Driver::advance`], [`Driver::advance_to`] and
/// [`Driver::run_until_idle`], which fire `handle_timeout` at each deadline of
/// `poll_timeout` and `handle_sweep` every sweep period, in time order.
///
/// The driver remembers the connection id of each agent connected through
/// [`Driver::connect`], so [`Driver::disconnect`] needs only the agent, and
/// [`Driver::restart`] plays a crash: the scheduler is rebuilt from the store
/// and every connection is gone.
#[derive(Debug)]
pub struct Driver {
    scheduler: Scheduler,
    store: MemoryStore,
    checker: Option<InvariantChecker>,
    now_ms: u64,
    sweep_every_ms: Option<u64>,
    next_sweep_ms: u64,
    next_connection: u64,
    connections: HashMap<AgentId, ConnId>,
    outbox: VecDeque<Action>,
    persisted: Vec<Change>,
    /// Submissions made through [`Driver::apply`].
    pub(super) n_submitted: usize,
}

impl Driver {
    /// A new scheduler at `now_ms`, sweeping every [`DEFAULT_SWEEP_EVERY_MS`].
    pub fn new(config: SchedulerConfig, now_ms: u64) -> Driver {
        Driver {
            scheduler: Scheduler::new(config),
            store: MemoryStore::new(),
            checker: Some(InvariantChecker::new()),
            now_ms,
            sweep_every_ms: Some(DEFAULT_SWEEP_EVERY_MS),
            next_sweep_ms: now_ms + DEFAULT_SWEEP_EVERY_MS,
            next_connection: 0,
            connections: HashMap::new(),
            outbox: VecDeque::new(),
            persisted: Vec::new(),
            n_submitted: 0,
        }
    }

    /// Sweeps every `every_ms` from now on (`None`: only when asked, with
    /// [`Driver::sweep`]).
    pub fn with_sweep_every(mut self, every_ms: Option<u64>) -> Driver {
        self.sweep_every_ms = every_ms.map(|ms| ms.max(1));
        self.next_sweep_ms = self.now_ms.saturating_add(self.sweep_every_ms.unwrap_or(0));
        self
    }

    /// Skips the invariant checks (for long runs where only the end matters).
    pub fn without_checks(mut self) -> Driver {
        self.checker = None;
        self
    }

    /// The virtual time.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The scheduler, for reads.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// What was persisted so far.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// The connection id of a connected agent.
    pub fn connection(&self, agent_id: &str) -> Option<ConnId> {
        self.connections.get(agent_id).copied()
    }

    /// How many tasks [`Driver::apply`] submitted (`t0` to `t{n-1}`).
    pub fn n_submitted(&self) -> usize {
        self.n_submitted
    }

    /// Forgets an agent's connection without telling the scheduler, and
    /// returns it (for the caller to close it with another input).
    pub fn forget_connection(&mut self, agent_id: &str) -> Option<ConnId> {
        self.connections.remove(agent_id)
    }

    /// Runs one input at the current time, then drains and checks.
    pub fn call<T>(
        &mut self,
        input: impl FnOnce(&mut Scheduler, u64) -> T,
    ) -> Result<T, Violation> {
        let out = input(&mut self.scheduler, self.now_ms);
        self.drain()?;
        Ok(out)
    }

    /// Connects an agent on a fresh connection id (replacing its previous
    /// connection, as a reconnect does).
    pub fn connect(
        &mut self,
        agent_id: impl Into<AgentId>,
        capabilities: Capabilities,
    ) -> Result<ConnId, Violation> {
        let agent_id = agent_id.into();
        self.next_connection += 1;
        let connection = ConnId::new(self.next_connection);
        self.connections.insert(agent_id.clone(), connection);
        self.call(|s, now| s.handle_connect(now, agent_id, capabilities, connection))?;
        Ok(connection)
    }

    /// Drops an agent's connection; `false` if it had none.
    pub fn disconnect(&mut self, agent_id: &str) -> Result<bool, Violation> {
        let Some((agent_id, connection)) = self.connections.remove_entry(agent_id) else {
            return Ok(false);
        };
        self.call(|s, now| s.handle_disconnect(now, &agent_id, connection))?
            .map_err(|e| Violation(format!("the disconnect of {agent_id} was refused: {e}")))?;
        Ok(true)
    }

    /// The actions emitted so far (each after its changes were persisted),
    /// oldest first.
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.outbox.drain(..).collect()
    }

    /// The changes persisted since the last call, oldest first.
    pub fn take_persisted(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.persisted)
    }

    /// Persists the pending changes, queues the pending actions, checks.
    pub fn drain(&mut self) -> Result<(), Violation> {
        while let Some(change) = self.scheduler.poll_change() {
            if let Some(checker) = &mut self.checker {
                checker.check_change(&change)?;
            }
            self.store
                .apply(&change)
                .map_err(|e| Violation(e.to_string()))?;
            self.persisted.push(change);
        }
        while let Some(action) = self.scheduler.poll_action() {
            if self.checker.is_some() {
                check_action(&self.scheduler, &action)?;
            }
            self.outbox.push_back(action);
        }
        match &mut self.checker {
            Some(checker) => checker.check(&self.scheduler),
            None => Ok(()),
        }
    }

    /// Runs the sweep now.
    pub fn sweep(&mut self) -> Result<(), Violation> {
        self.call(|s, now| s.handle_sweep(now))
    }

    /// The time of the next timer or sweep, if any.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let sweep = self.sweep_every_ms.map(|_| self.next_sweep_ms);
        match (self.scheduler.poll_timeout(), sweep) {
            (Some(t), Some(s)) => Some(t.min(s)),
            (t, s) => t.or(s),
        }
    }

    /// Moves the clock to `until_ms` (never back), firing every timer and
    /// sweep due on the way at its own time.
    pub fn advance_to(&mut self, until_ms: u64) -> Result<(), Violation> {
        while let Some(next) = self.next_deadline_ms().filter(|t| *t <= until_ms) {
            self.step(next)?;
        }
        self.now_ms = self.now_ms.max(until_ms);
        Ok(())
    }

    /// Moves the clock forward by `ms`; see [`Driver::advance_to`].
    pub fn advance(&mut self, ms: u64) -> Result<(), Violation> {
        self.advance_to(self.now_ms.saturating_add(ms))
    }

    /// Fires timers (and the sweeps due before them) until the scheduler has
    /// no deadline left, and returns the time reached. A scheduler that keeps
    /// arming deadlines for more than `max_steps` timers is a violation.
    pub fn run_until_idle(&mut self, max_steps: usize) -> Result<u64, Violation> {
        for _ in 0..max_steps {
            let Some(timer) = self.scheduler.poll_timeout() else {
                return Ok(self.now_ms);
            };
            let next = self
                .sweep_every_ms
                .map_or(timer, |_| timer.min(self.next_sweep_ms));
            self.step(next)?;
        }
        Err(Violation(format!(
            "still not idle after {max_steps} timers (next at {:?})",
            self.scheduler.poll_timeout()
        )))
    }

    /// A crash and restart of the coordinator: the scheduler is rebuilt from
    /// the store at the current time (held tasks wait `recovery_grace_ms` for
    /// their agents), every connection is gone and unsent actions are lost.
    pub fn restart(&mut self) -> Result<(), Violation> {
        let config = self.scheduler.config().clone();
        self.scheduler = Scheduler::restore(config, self.now_ms, self.store.records().cloned())
            .map_err(|e| Violation(format!("the stored records do not restore: {e}")))?;
        self.connections.clear();
        self.outbox.clear();
        self.drain()
    }

    /// One timer or sweep at `at_ms`.
    fn step(&mut self, at_ms: u64) -> Result<(), Violation> {
        self.now_ms = self.now_ms.max(at_ms);
        let now = self.now_ms;
        if self.scheduler.poll_timeout().is_some_and(|t| t <= now) {
            self.call(|s, now| s.handle_timeout(now))?;
            if let Some(due) = self.scheduler.poll_timeout().filter(|t| *t <= now) {
                return Err(Violation(format!(
                    "handle_timeout({now}) left the deadline {due} due"
                )));
            }
        }
        if let Some(every) = self.sweep_every_ms {
            if self.next_sweep_ms <= now {
                self.next_sweep_ms = now.saturating_add(every);
                self.sweep()?;
            }
        }
        Ok(())
    }
}

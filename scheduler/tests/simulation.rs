//! Deterministic simulation: the scheduler as the coordinator, simulated agents,
//! a virtual clock and a lossy in-memory network with crashes of agents and of
//! the coordinator itself (rebuilt from the persisted records). One seed replays
//! one run. Checked: every task ends completed exactly once, every accepted
//! completion came from the holder of the current generation, and the
//! scheduler's invariants hold after every input. The coordinator, its store,
//! clock, timers and sweeps are the test kit's `Driver`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use coordinator_agent_fsm::Capabilities;
use coordinator_queue::{
    AgentId, Change, Completion, HistoryEvent, NewTask, QueueConfig, Status, TaskId,
};
use coordinator_scheduler::testing::Driver;
use coordinator_scheduler::{Action, ConnId, SchedulerConfig};
use proptest::prelude::*;

/// A small deterministic random number generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
enum Event {
    /// A task assignment reaches the agent (if its connection still stands).
    Assign {
        agent: usize,
        conn: ConnId,
        task: String,
        generation: u64,
    },
    /// The agent's report reaches the coordinator.
    Report {
        agent: usize,
        conn: ConnId,
        task: String,
        generation: u64,
        ok: bool,
    },
    /// The agent's acceptance reaches the coordinator.
    Accept {
        agent: usize,
        conn: ConnId,
        task: String,
    },
    /// The agent's process dies.
    Crash { agent: usize },
    /// The agent comes back.
    Connect { agent: usize },
    /// The coordinator dies and restarts from its records.
    Restart,
}

struct Sim {
    rng: Rng,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, usize)>>,
    bodies: Vec<Event>,
    /// The coordinator: scheduler, store, timers and sweeps.
    driver: Driver,
    /// Current connection of each agent (None: down).
    conns: Vec<Option<ConnId>>,
    completions: HashMap<String, usize>,
}

const CONFIG: fn() -> SchedulerConfig = || {
    SchedulerConfig::default()
        .with_accept_timeout_ms(300)
        .with_recovery_grace_ms(400)
        .with_reject_backoff_ms(50)
        .with_cancel_grace_ms(500)
        .with_identify_settle_ms(0)
        .with_queue(
            QueueConfig::default()
                .with_default_max_retries(100)
                .with_stuck_after_ms(2_000)
                // Budgets out of reach: this run checks fencing, every task must complete.
                .with_max_reclaims(100),
        )
};

impl Sim {
    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.bodies.push(event);
        self.events
            .push(Reverse((self.now + delay, self.seq, self.bodies.len() - 1)));
    }

    /// Counts the completions persisted, then delivers the actions (the driver
    /// persisted their changes first).
    fn drain(&mut self) {
        for change in self.driver.take_persisted() {
            if let Change::Finalized(task) = &change {
                if task.status() == Status::Completed {
                    *self.completions.entry(task.id().to_string()).or_default() += 1;
                }
            }
        }
        for action in self.driver.take_actions() {
            if let Action::Assign(a) = action {
                let agent: usize = a.agent_id.as_str()[1..].parse().unwrap();
                if let Some(conn) = self.conns[agent] {
                    let delay = 1 + self.rng.below(20);
                    self.at(
                        delay,
                        Event::Assign {
                            agent,
                            conn,
                            task: a.task_id.to_string(),
                            generation: a.generation,
                        },
                    );
                }
            }
        }
    }

    fn connected(&self, agent: usize, conn: ConnId) -> bool {
        self.conns[agent] == Some(conn)
    }

    fn step(&mut self, event: Event) -> Result<(), TestCaseError> {
        match event {
            Event::Assign {
                agent,
                conn,
                task,
                generation,
            } => {
                if !self.connected(agent, conn) {
                    return Ok(());
                }
                // Accept most of the time, sometimes too late (the deadline reclaims and
                // the late report must be fenced out), sometimes never.
                if self.rng.chance(92) {
                    let d = if self.rng.chance(85) {
                        1 + self.rng.below(20)
                    } else {
                        250 + self.rng.below(400)
                    };
                    self.at(
                        d,
                        Event::Accept {
                            agent,
                            conn,
                            task: task.clone(),
                        },
                    );
                    let ok = self.rng.chance(85);
                    let d = d + 20 + self.rng.below(400);
                    self.at(
                        d,
                        Event::Report {
                            agent,
                            conn,
                            task,
                            generation,
                            ok,
                        },
                    );
                }
            }
            Event::Accept { agent, conn, task } => {
                if self.connected(agent, conn) {
                    let _ = self.driver.call(|s, now| {
                        s.handle_accepted(now, &id(agent), &TaskId::from(task.as_str()))
                    })?;
                }
            }
            Event::Report {
                agent,
                conn,
                task,
                generation,
                ok,
            } => {
                if !self.connected(agent, conn) {
                    return Ok(());
                }
                let holder_before = self
                    .driver
                    .scheduler()
                    .queue()
                    .get(&TaskId::from(task.as_str()))
                    .map(|t| (t.assigned_to().cloned(), t.generation(), t.status()));
                let result = self.driver.call(|s, now| {
                    if ok {
                        s.handle_complete(
                            now,
                            &id(agent),
                            &TaskId::from(task.as_str()),
                            generation,
                            Completion::default(),
                        )
                    } else {
                        s.handle_failed(
                            now,
                            &id(agent),
                            &TaskId::from(task.as_str()),
                            generation,
                            "sim failure",
                        )
                        .map(|_| ())
                    }
                })?;
                if result.is_ok() {
                    let (holder, current, status) =
                        holder_before.expect("accepted reports are about live tasks");
                    assert_eq!(
                        holder,
                        Some(id(agent)),
                        "a report was accepted from an agent that did not hold the task"
                    );
                    assert_eq!(
                        current, generation,
                        "a report with an old generation was accepted"
                    );
                    assert!(status.is_held());
                }
            }
            Event::Crash { agent } => {
                if self.conns[agent].take().is_some() {
                    self.driver.disconnect(id(agent).as_str())?;
                }
                let d = 50 + self.rng.below(500);
                self.at(d, Event::Connect { agent });
            }
            Event::Connect { agent } => {
                if self.conns[agent].is_none() {
                    let conn = self.driver.connect(id(agent), Capabilities::default())?;
                    self.conns[agent] = Some(conn);
                }
            }
            Event::Restart => {
                self.driver.restart()?;
                // Every connection drops; agents come back after a while.
                for agent in 0..self.conns.len() {
                    if self.conns[agent].take().is_some() {
                        let d = 10 + self.rng.below(600);
                        self.at(d, Event::Connect { agent });
                    }
                }
            }
        }
        Ok(())
    }
}

fn id(agent: usize) -> AgentId {
    AgentId::from(format!("a{agent}"))
}

fn run(seed: u64, n_agents: usize, n_tasks: usize, faults: bool) -> Result<(), TestCaseError> {
    let now = 1_000_000;
    let mut sim = Sim {
        rng: Rng(seed | 1),
        now,
        seq: 0,
        events: BinaryHeap::new(),
        bodies: Vec::new(),
        driver: Driver::new(CONFIG(), now).with_sweep_every(Some(500)),
        conns: vec![None; n_agents],
        completions: HashMap::new(),
    };
    for agent in 0..n_agents {
        let d = sim.rng.below(50);
        sim.at(d, Event::Connect { agent });
    }
    for i in 0..n_tasks {
        sim.driver
            .call(|s, now| s.handle_submit(now, NewTask::new(format!("t{i}"), "work")))??;
    }
    sim.drain();
    if faults {
        for _ in 0..6 {
            let d = sim.rng.below(2_000);
            let agent = sim.rng.below(n_agents as u64) as usize;
            sim.at(d, Event::Crash { agent });
        }
        for _ in 0..2 {
            let d = sim.rng.below(2_000);
            sim.at(d, Event::Restart);
        }
    }
    let horizon = sim.now + 120_000;
    while sim.completions.len() < n_tasks && sim.now < horizon {
        match sim.events.pop() {
            Some(Reverse((t, _, idx))) => {
                // Timers and sweeps due before the event fire first.
                sim.driver.advance_to(t)?;
                sim.drain();
                sim.now = sim.driver.now_ms();
                let event = sim.bodies[idx].clone();
                sim.step(event)?;
            }
            None => {
                sim.driver.advance(500)?;
                sim.now = sim.driver.now_ms();
            }
        }
        sim.drain();
    }
    for i in 0..n_tasks {
        let task = format!("t{i}");
        assert_eq!(
            sim.completions.get(&task).copied(),
            Some(1),
            "seed {seed}: {task} completed {:?} times",
            sim.completions.get(&task)
        );
        let record = sim
            .driver
            .store()
            .get(&TaskId::from(task.as_str()))
            .expect("every task is stored");
        let completed = record
            .history()
            .iter()
            .filter(|h| h.event == HistoryEvent::Completed)
            .count();
        assert_eq!(
            completed, 1,
            "seed {seed}: {task} history shows {completed} completions"
        );
    }
    assert!(
        sim.driver.scheduler().queue().is_empty(),
        "seed {seed}: live tasks left"
    );
    Ok(())
}

#[test]
fn a_quiet_run_completes_everything_once() -> Result<(), TestCaseError> {
    run(7, 3, 20, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
    ))]

    #[test]
    fn crashes_restarts_and_lost_messages_never_lose_or_duplicate_a_completion(
        seed in any::<u64>(),
        n_agents in 1usize..5,
        n_tasks in 1usize..25,
    ) {
        run(seed, n_agents, n_tasks, true)?;
    }
}

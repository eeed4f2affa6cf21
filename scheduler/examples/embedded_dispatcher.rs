//! An embedded dispatcher: the scheduler inside a program of one's own, on a
//! virtual clock, dispatching 1,000 tasks to eight simulated agents.
//!
//! The program is the shell the crate docs describe: after every input it
//! persists the changes (into a map), then sends the actions (into an event
//! queue with a delay), and it arms one timer from `poll_timeout` plus a
//! periodic sweep. On the way:
//!
//! - agent `a7` ignores its first five assignments: each time its acceptance
//!   deadline reclaims the task, flags `a7` unresponsive (offered work last)
//!   and hands the task on;
//! - agent `a0`'s connection drops after each of its first twenty acceptances;
//!   the task is reclaimed and runs elsewhere, and when `a0`'s report of the
//!   old run arrives after it reconnects, its old generation is refused
//!   (fencing) unless nobody took the task in between (then `a0` has it back).
//!
//! Run with `cargo run --release -p coordinator-scheduler --example embedded_dispatcher`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

// The scheduler re-exports the queue and agent types its API uses.
use coordinator_scheduler::{
    Action, AgentId, Capabilities, Change, Completion, ConnId, NewTask, QueueConfig, Scheduler,
    SchedulerConfig, Status, Task, TaskId,
};

const N_TASKS: usize = 1_000;
const N_AGENTS: usize = 8;
const SWEEP_EVERY_MS: u64 = 30_000;

/// Something that reaches the dispatcher (or an agent) at a given time.
#[derive(Debug, Clone)]
enum Event {
    /// The assignment reaches the agent over connection `conn`.
    Deliver {
        agent: usize,
        conn: ConnId,
        task: TaskId,
        generation: u64,
    },
    /// The agent's `task_accepted`.
    Accepted {
        agent: usize,
        conn: ConnId,
        task: TaskId,
    },
    /// The agent's `task_complete`, with the generation it was given.
    Completed {
        agent: usize,
        task: TaskId,
        generation: u64,
    },
    /// The agent's connection drops.
    Dropped { agent: usize },
    /// The agent reconnects.
    Reconnect { agent: usize },
}

struct Dispatcher {
    scheduler: Scheduler,
    now_ms: u64,
    /// What a database would hold: the newest record of every task.
    store: HashMap<TaskId, Task>,
    events: BinaryHeap<Reverse<(u64, u64, usize)>>,
    bodies: Vec<Event>,
    conns: Vec<Option<ConnId>>,
    next_conn: u64,
    drops_left: u32,
    ignores_left: u32,
    completed: usize,
    reclaimed: usize,
    reattached: usize,
    fenced: usize,
}

fn agent_id(agent: usize) -> AgentId {
    AgentId::from(format!("a{agent}"))
}

impl Dispatcher {
    fn at(&mut self, delay_ms: u64, event: Event) {
        self.bodies.push(event);
        let seq = self.bodies.len() as u64;
        self.events.push(Reverse((
            self.now_ms + delay_ms,
            seq,
            self.bodies.len() - 1,
        )));
    }

    /// The shell's one rule: persist first, then send.
    fn drain(&mut self) {
        while let Some(change) = self.scheduler.poll_change() {
            if let Change::Finalized(task) = &change {
                if task.status() == Status::Completed {
                    self.completed += 1;
                }
            }
            let task = change.into_task();
            self.store.insert(task.id().clone(), task);
        }
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::Assign(a) => {
                    let agent: usize = a.agent_id.as_str()[1..].parse().expect("our own ids");
                    if let Some(conn) = self.conns[agent] {
                        let task = a.task_id.clone();
                        self.at(
                            1,
                            Event::Deliver {
                                agent,
                                conn,
                                task,
                                generation: a.generation,
                            },
                        );
                    }
                }
                // Nothing to send: the agent's connection is gone or its
                // acceptance deadline passed; a stale report will be refused.
                Action::Reclaimed { .. } => self.reclaimed += 1,
                // A dropped agent's late report, accepted because nobody took
                // the task in between: the shell would send `task_continue`.
                Action::Reattach { .. } => self.reattached += 1,
                Action::Cancel { .. } => {}
            }
        }
    }

    /// What the simulated agent does with a delivered assignment.
    fn on_deliver(&mut self, agent: usize, conn: ConnId, task: TaskId, generation: u64) {
        if self.conns[agent] != Some(conn) {
            return;
        }
        if agent == N_AGENTS - 1 && self.ignores_left > 0 {
            self.ignores_left -= 1;
            return; // a7, not answering yet
        }
        self.at(
            2,
            Event::Accepted {
                agent,
                conn,
                task: task.clone(),
            },
        );
        let work_ms = 20 + (generation * 7 + task.len() as u64 * 13) % 80;
        self.at(
            2 + work_ms,
            Event::Completed {
                agent,
                task,
                generation,
            },
        );
        if agent == 0 && self.drops_left > 0 {
            self.drops_left -= 1;
            self.at(3, Event::Dropped { agent });
        }
    }

    fn step(&mut self, event: Event) {
        let now = self.now_ms;
        match event {
            Event::Deliver {
                agent,
                conn,
                task,
                generation,
            } => self.on_deliver(agent, conn, task, generation),
            Event::Accepted { agent, conn, task } => {
                if self.conns[agent] == Some(conn) {
                    // Refused if the deadline already reclaimed it: fine.
                    let _ = self.scheduler.handle_accepted(now, &agent_id(agent), &task);
                }
            }
            Event::Completed {
                agent,
                task,
                generation,
            } => {
                if self.conns[agent].is_none() {
                    // Kept by the agent and sent once it is back (as an agent SDK does).
                    self.at(
                        50,
                        Event::Completed {
                            agent,
                            task,
                            generation,
                        },
                    );
                    return;
                }
                let done = Completion {
                    result: r#"{"ok":true}"#.into(),
                    tokens_used: None,
                };
                if let Err(e) =
                    self.scheduler
                        .handle_complete(now, &agent_id(agent), &task, generation, done)
                {
                    println!(
                        "refused: {} on {task} (generation {generation}): {e}",
                        agent_id(agent)
                    );
                    self.fenced += 1;
                }
            }
            Event::Dropped { agent } => {
                if let Some(conn) = self.conns[agent].take() {
                    if let Err(e) = self
                        .scheduler
                        .handle_disconnect(now, &agent_id(agent), conn)
                    {
                        println!("refused: the disconnect of {}: {e}", agent_id(agent));
                    }
                    self.at(30, Event::Reconnect { agent });
                }
            }
            Event::Reconnect { agent } => self.connect(agent),
        }
    }

    fn connect(&mut self, agent: usize) {
        self.next_conn += 1;
        let conn = ConnId::new(self.next_conn);
        self.conns[agent] = Some(conn);
        let now = self.now_ms;
        self.scheduler
            .handle_connect(now, agent_id(agent), Capabilities::default(), conn);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = SchedulerConfig::default()
        .with_accept_timeout_ms(500)
        .with_identify_settle_ms(0)
        .with_queue(QueueConfig::default().with_max_reclaims(10));
    let start_ms = 1_700_000_000_000;
    let mut d = Dispatcher {
        scheduler: Scheduler::new(config),
        now_ms: start_ms,
        store: HashMap::new(),
        events: BinaryHeap::new(),
        bodies: Vec::new(),
        conns: vec![None; N_AGENTS],
        next_conn: 0,
        drops_left: 20,
        ignores_left: 5,
        completed: 0,
        reclaimed: 0,
        reattached: 0,
        fenced: 0,
    };
    for agent in 0..N_AGENTS {
        d.connect(agent);
    }
    for i in 0..N_TASKS {
        d.scheduler
            .handle_submit(d.now_ms, NewTask::new(format!("t{i}"), "work"))?;
    }
    d.drain();
    let mut next_sweep_ms = start_ms + SWEEP_EVERY_MS;
    let horizon_ms = start_ms + 3_600_000;
    while d.completed < N_TASKS && d.now_ms < horizon_ms {
        // The one timer: the earliest of the core's deadline, the sweep and the
        // next message.
        let timer = d.scheduler.poll_timeout().unwrap_or(u64::MAX);
        let message = d.events.peek().map_or(u64::MAX, |Reverse((t, _, _))| *t);
        let next = timer.min(message).min(next_sweep_ms);
        d.now_ms = d.now_ms.max(next);
        if next == timer {
            d.scheduler.handle_timeout(d.now_ms);
        } else if next == next_sweep_ms {
            d.scheduler.handle_sweep(d.now_ms);
            next_sweep_ms += SWEEP_EVERY_MS;
        } else if let Some(Reverse((_, _, idx))) = d.events.pop() {
            let event = d.bodies[idx].clone();
            d.step(event);
        }
        d.drain();
    }
    let once = d
        .store
        .values()
        .filter(|t| t.status() == Status::Completed)
        .count();
    assert_eq!(once, N_TASKS, "every task completed");
    assert!(d.scheduler.queue().is_empty());
    println!(
        "{N_TASKS} tasks completed once each in {} virtual ms; {} reclaims, \
         {} late reports re-attached, {} stale reports refused",
        d.now_ms - start_ms,
        d.reclaimed,
        d.reattached,
        d.fenced
    );
    Ok(())
}

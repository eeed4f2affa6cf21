//! Benchmark of the pure cores (release build):
//! `cargo run --release -p coordinator-scheduler --example core_bench`
//!
//! 1. 1,000,000 tasks through submit → assign → accept → complete in queue-core;
//! 2. matching with 100,000 queued tasks over 10 capability sets and 1,000 agents.
//!
//! Memory per queued task is measured exactly by `examples/core_memory.rs`.

use std::time::Instant;

use coordinator_scheduler::{
    Action, AgentId, Capabilities, Completion, ConnId, NewTask, Queue, QueueConfig, Scheduler,
    SchedulerConfig, TaskId,
};

fn transitions() {
    const N: usize = 1_000_000;
    let mut queue = Queue::new(QueueConfig::default());
    let agent = AgentId::from("bench-agent");
    let ids: Vec<TaskId> = (0..N)
        .map(|i| TaskId::from(format!("task-{i:08}")))
        .collect();
    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let now = i as u64;
        queue
            .submit(now, NewTask::new(id.clone(), "x"))
            .expect("submit");
        let generation = queue.assign(now, id, &agent).expect("assign");
        queue.accept(now, id, &agent).expect("accept");
        queue
            .complete(now, id, &agent, generation, Completion::default())
            .expect("complete");
        while queue.poll_change().is_some() {}
    }
    let secs = started.elapsed().as_secs_f64();
    let transitions = (N * 4) as f64;
    println!(
        "queue-core: {N} tasks x 4 transitions in {secs:.3} s = {:.0} transitions/s (changes drained)",
        transitions / secs
    );
}

fn matching() {
    const TASKS: usize = 100_000;
    const AGENTS: usize = 1_000;
    let sets: Vec<Vec<String>> = (0..10).map(|i| vec![format!("cap-{i}")]).collect();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..TASKS {
        let task = NewTask::new(format!("t{i}"), "x").with_capabilities(sets[i % 10].clone());
        s.handle_submit(0, task).expect("submit");
    }
    while s.poll_change().is_some() {}
    let started = Instant::now();
    let mut assigned = 0;
    for i in 0..AGENTS {
        let caps = Capabilities::new(sets[i % 10].clone());
        s.handle_connect(
            1,
            AgentId::from(format!("a{i}")),
            caps,
            ConnId::new(i as u64),
        );
        while s.poll_change().is_some() {}
        while let Some(action) = s.poll_action() {
            if matches!(action, Action::Assign(_)) {
                assigned += 1;
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Steady state: every agent completes and immediately gets the next task.
    let started = Instant::now();
    let mut rounds = 0;
    for round in 0..20 {
        for i in 0..AGENTS {
            let agent = AgentId::from(format!("a{i}"));
            let Some(held) = s.agent(&agent).and_then(|v| v.agent.task().cloned()) else {
                continue;
            };
            s.handle_complete(
                2 + round,
                &agent,
                &held.task_id,
                held.generation,
                Completion::default(),
            )
            .expect("complete");
            rounds += 1;
            while s.poll_change().is_some() {}
            while s.poll_action().is_some() {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "scheduler: {TASKS} queued over 10 capability sets, {AGENTS} agents: {assigned} assignments on connect in {:.1} µs each; {rounds} complete+reassign cycles at {:.2} µs each",
        connect_secs * 1e6 / assigned.max(1) as f64,
        secs * 1e6 / rounds.max(1) as f64
    );
}

fn main() {
    transitions();
    matching();
}

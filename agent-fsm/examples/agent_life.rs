//! An agent's life through its state machine: it connects, misses an
//! acceptance deadline (and is flagged unresponsive), takes the next task,
//! blocks and unblocks, finishes, tries an illegal move, and disconnects in the
//! middle of a task, which it then resumes after reconnecting.
//!
//! Run with `cargo run -p coordinator-agent-fsm --example agent_life`.

use coordinator_agent_fsm::{Agent, AgentState, Capabilities, IllegalMove};
use coordinator_queue::{AgentId, TaskId};

fn show(agent: &Agent, what: &str) {
    println!(
        "{what:38} -> {:8} task {:?} deadline {:?} unresponsive {}",
        agent.state().to_string(),
        agent.task().map(|t| (t.task_id.as_str(), t.generation)),
        agent.poll_timeout(),
        agent.is_unresponsive()
    );
}

fn main() -> Result<(), IllegalMove> {
    let mut now_ms = 1_700_000_000_000;
    let accept_timeout_ms = 30_000;
    let mut agent = Agent::new(
        AgentId::from("builder-1"),
        Capabilities::new(["linux", "gpu"]),
    );
    show(&agent, "new");

    agent.connect(now_ms)?;
    show(&agent, "connect");

    agent.assign(now_ms, TaskId::from("t1"), 1, accept_timeout_ms)?;
    show(&agent, "assign t1");
    // The shell arms a timer for poll_timeout; nothing comes back in time.
    now_ms = agent
        .poll_timeout()
        .expect("an assigned agent has a deadline");
    let expired = agent.handle_timeout(now_ms);
    assert_eq!(expired.map(|held| held.task_id), Some(TaskId::from("t1")));
    show(&agent, "acceptance deadline passed");

    now_ms += 1_000;
    agent.assign(now_ms, TaskId::from("t2"), 1, accept_timeout_ms)?;
    agent.accept(now_ms + 5)?;
    show(&agent, "assign and accept t2");
    agent.block(now_ms + 10)?;
    show(&agent, "blocked (waiting on a human)");
    agent.unblock(now_ms + 20)?;
    let done = agent.release(now_ms + 30)?;
    show(&agent, &format!("finished {}", done.task_id));

    let refused = agent.accept(now_ms + 40).unwrap_err();
    println!("illegal: {refused}");
    assert_eq!(
        agent.state(),
        AgentState::Idle,
        "an illegal move changes nothing"
    );

    agent.assign(now_ms + 50, TaskId::from("t3"), 4, accept_timeout_ms)?;
    agent.accept(now_ms + 55)?;
    let held = agent.disconnect(now_ms + 60);
    show(&agent, "connection dropped while working");
    agent.connect(now_ms + 70)?;
    let held = held.expect("it was working on t3");
    agent.resume(now_ms + 70, held.task_id, held.generation)?;
    show(&agent, "reconnected and resumed t3");
    Ok(())
}

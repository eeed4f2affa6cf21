//! A complete agent on the client library: it connects, identifies, answers every
//! task with its description reversed, and reconnects with backoff when the
//! coordinator goes away. An answer is kept until the coordinator acknowledges
//! it; a reconnect in between names the task in `identify` (`current_task`) and
//! sends `task_recovering`, so the task is re-attached rather than run again.
//!
//! ```sh
//! TOKEN=$(coordinator token create echo-1)
//! cargo run -p coordinator-transport --features client --example echo_agent -- ws://127.0.0.1:4000/ws echo-1 "$TOKEN"
//! ```

use std::time::{Duration, Instant};

use coordinator_transport::client::{connect_with_retry, Backoff, ClientConfig, Connection};
use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage, CurrentTask, ErrorCode};
use serde_json::{json, Value};

/// The task this agent holds: its answer, kept until acknowledged.
struct Held {
    /// The task and the generation its report carries.
    task: CurrentTask,
    result: Value,
    /// `task_recovering` went out on this connection and was not answered yet.
    recovering: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(agent_id), Some(token)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: echo_agent WS_URL AGENT_ID TOKEN");
        std::process::exit(2);
    };
    let mut config = ClientConfig::new(url, agent_id, token);
    config.capabilities = vec!["echo".into()];
    let mut backoff = Backoff::default(); // 1 s doubling to 60 s, with jitter
    let mut held: Option<Held> = None;
    loop {
        // Every identify names the task still held, if any.
        config.current_task = held.as_ref().map(|h| h.task.clone());
        // Retries until the coordinator answers; a refused token is final.
        let mut conn = connect_with_retry(&config, &mut backoff).await?;
        let connected_at = Instant::now();
        eprintln!("connected as {}", config.agent_id);
        if let Some(h) = held.as_mut() {
            // What became of it? The answer is task_continue or task_reassign; the
            // answer waits until then.
            h.recovering = true;
            let task_id = h.task.task_id.clone();
            send(&conn, AgentMessage::TaskRecovering { task_id }).await;
        }
        while let Some(message) = conn.recv().await {
            handle(&conn, &mut held, message).await;
        }
        // A connection that lasted a while means the coordinator is healthy again:
        // start the next wait from the initial delay.
        if connected_at.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        eprintln!("connection lost; reconnecting");
    }
}

async fn handle(conn: &Connection, held: &mut Option<Held>, message: CoordinatorMessage) {
    let holds = |task_id: &str| held.as_ref().is_some_and(|h| h.task.task_id == task_id);
    match message {
        CoordinatorMessage::TaskAssign {
            task_id,
            description,
            generation,
            ..
        } => {
            if held.is_some() && !holds(&task_id) {
                let reason = Some("busy".to_owned());
                send(conn, AgentMessage::TaskRejected { task_id, reason }).await;
                return;
            }
            let task = CurrentTask {
                task_id: task_id.clone(),
                generation,
            };
            let reversed: String = description.chars().rev().collect();
            let h = held.insert(Held {
                task,
                result: json!({ "echo": reversed }),
                recovering: false,
            });
            send(conn, AgentMessage::TaskAccepted { task_id }).await;
            report(conn, h).await;
        }
        CoordinatorMessage::TaskContinue {
            task_id,
            generation,
        } => {
            if let Some(h) = held.as_mut().filter(|h| h.task.task_id == task_id) {
                // A repeated answer with the same generation changes nothing.
                if h.recovering || h.task.generation != generation {
                    h.recovering = false;
                    h.task.generation = generation;
                    report(conn, h).await;
                }
            }
        }
        CoordinatorMessage::TaskAck { task_id, status }
            if status != "accepted" && holds(&task_id) =>
        {
            *held = None;
        }
        CoordinatorMessage::TaskReassign { task_id }
        | CoordinatorMessage::TaskCancel { task_id }
            if holds(&task_id) =>
        {
            eprintln!("{task_id} is no longer ours; dropping it");
            *held = None;
        }
        CoordinatorMessage::Error {
            error,
            task_id,
            detail,
        } => {
            eprintln!("coordinator says {error:?}: {detail:?}");
            let gone = matches!(error, ErrorCode::StaleGeneration | ErrorCode::NotAssigned);
            if gone && task_id.as_deref().is_some_and(holds) {
                *held = None;
            }
        }
        _ => {}
    }
}

/// Reports the answer with the generation of the agent's assignment: it fences
/// out stale reports.
async fn report(conn: &Connection, held: &Held) {
    send(
        conn,
        AgentMessage::TaskComplete {
            task_id: held.task.task_id.clone(),
            generation: held.task.generation,
            result: held.result.clone(),
            tokens_used: None,
        },
    )
    .await;
}

/// A failed send means the connection is gone; `recv` sees that too.
async fn send(conn: &Connection, message: AgentMessage) {
    let _ = conn.send(&message).await;
}

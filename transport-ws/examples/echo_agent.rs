//! A complete agent on the client library: it connects, identifies, answers every
//! task with its description reversed, and reconnects with backoff when the
//! coordinator goes away.
//!
//! ```sh
//! TOKEN=$(coordinator token create echo-1)
//! cargo run -p transport-ws --example echo_agent -- ws://127.0.0.1:4000/ws echo-1 "$TOKEN"
//! ```

use std::time::{Duration, Instant};

use serde_json::json;
use transport_ws::client::{connect_with_retry, Backoff, ClientConfig};
use transport_ws::protocol::{AgentMessage, CoordinatorMessage};

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
    loop {
        // Retries until the coordinator answers; a refused token is final.
        let mut conn = connect_with_retry(&config, &mut backoff).await?;
        let connected_at = Instant::now();
        eprintln!("connected as {}", config.agent_id);
        while let Some(message) = conn.recv().await {
            match message {
                CoordinatorMessage::TaskAssign {
                    task_id,
                    description,
                    generation,
                    ..
                } => {
                    conn.send(&AgentMessage::TaskAccepted {
                        task_id: task_id.clone(),
                    })
                    .await?;
                    let reversed: String = description.chars().rev().collect();
                    let result = json!({ "echo": reversed });
                    // Echo the generation: it fences out stale reports.
                    conn.send(&AgentMessage::TaskComplete {
                        task_id,
                        generation,
                        result,
                        tokens_used: None,
                    })
                    .await?;
                }
                CoordinatorMessage::TaskCancel { task_id } => eprintln!("{task_id} cancelled"),
                CoordinatorMessage::Error { error, detail, .. } => {
                    eprintln!("coordinator says {error:?}: {detail:?}")
                }
                _ => {}
            }
        }
        // A connection that lasted a while means the coordinator is healthy again:
        // start the next wait from the initial delay.
        if connected_at.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        eprintln!("connection lost; reconnecting");
    }
}

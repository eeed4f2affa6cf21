//! A simulated agent on the transport-ws client, with scripted behaviours.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordinator_transport::client::ClientConfig;
use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage};
use serde_json::json;
use smoke_tests::harness::Coordinator;
use tokio::task::JoinHandle;

/// What the simulated agent does with each task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Accept and complete at once.
    Complete,
    /// Accept, wait, complete.
    Delay(u64),
    /// Never accept.
    Ignore,
    /// Accept and fail.
    Fail,
    /// Accept and never finish (until killed).
    Hold,
}

/// A completed task as the agent saw it.
#[derive(Debug, Clone)]
pub struct Done {
    pub task_id: String,
}

pub struct SimAgent {
    pub done: Arc<Mutex<Vec<Done>>>,
    task: JoinHandle<()>,
}

impl SimAgent {
    pub async fn start(
        c: &Coordinator,
        id: &str,
        capabilities: &[&str],
        behaviour: Behaviour,
    ) -> SimAgent {
        let token = c.agent_token(id);
        let mut config = ClientConfig::new(c.ws_url(), id, token);
        config.capabilities = capabilities.iter().map(|s| s.to_string()).collect();
        let mut conn = crate::agents::connect(&config).await;
        let done = Arc::new(Mutex::new(Vec::new()));
        let record = done.clone();
        let agent_id = id.to_owned();
        let task = tokio::spawn(async move {
            while let Some(message) = conn.recv().await {
                let CoordinatorMessage::TaskAssign {
                    task_id,
                    generation,
                    ..
                } = message
                else {
                    continue;
                };
                if behaviour == Behaviour::Ignore {
                    continue;
                }
                if conn
                    .send(&AgentMessage::TaskAccepted {
                        task_id: task_id.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                match behaviour {
                    Behaviour::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    // Keep reading (and so answering the connection) without finishing.
                    Behaviour::Hold => continue,
                    _ => {}
                }
                let reply = if behaviour == Behaviour::Fail {
                    AgentMessage::TaskFailed {
                        task_id: task_id.clone(),
                        generation,
                        error: Some("simulated failure".into()),
                        reason: None,
                    }
                } else {
                    AgentMessage::TaskComplete {
                        task_id: task_id.clone(),
                        generation,
                        result: json!({"by": agent_id}),
                        tokens_used: Some(1),
                    }
                };
                if conn.send(&reply).await.is_err() {
                    return;
                }
                record.lock().unwrap().push(Done { task_id });
            }
        });
        SimAgent { done, task }
    }

    pub fn completed(&self) -> Vec<Done> {
        self.done.lock().unwrap().clone()
    }

    /// Drops the connection abruptly.
    pub fn kill(self) {
        self.task.abort();
    }
}

impl Drop for SimAgent {
    /// The agent's loop ends with it (it would otherwise read until the
    /// coordinator goes away).
    fn drop(&mut self) {
        self.task.abort();
    }
}

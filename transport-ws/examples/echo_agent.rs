//! A complete agent on the agent SDK: it answers every task with its description
//! reversed. The SDK connects (trying each hub URL in turn), reconnects with
//! backoff, and keeps each answer until the coordinator acknowledges it, sending
//! it again after a reconnect; a task held across a reconnect is re-attached
//! rather than run again. Ctrl-C stops it gracefully.
//!
//! ```sh
//! TOKEN=$(coordinator token create echo-1)
//! cargo run -p coordinator-transport --features client --example echo_agent -- ws://127.0.0.1:4000/ws echo-1 "$TOKEN"
//! # several coordinators: a comma-separated list, tried in turn
//! cargo run -p coordinator-transport --features client --example echo_agent -- ws://a:4000/ws,ws://b:4000/ws echo-1 "$TOKEN"
//! ```

use coordinator_transport::client::agent::AgentClient;
use serde_json::json;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(hubs), Some(agent_id), Some(token)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: echo_agent WS_URL[,WS_URL...] AGENT_ID TOKEN");
        std::process::exit(2);
    };
    // Waits until a coordinator identifies the agent; a refused token is final.
    let mut agent = match AgentClient::builder(hubs.split(','), agent_id, token)
        .capabilities(["echo"])
        .connect()
        .await
    {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("echo_agent: {e}");
            std::process::exit(1);
        }
    };
    let stopper = agent.stopper();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stopper.stop();
        }
    });
    while let Some(job) = agent.next().await {
        let reversed: String = job.description().chars().rev().collect();
        // Once this returns Ok the answer will be delivered, whatever happens to
        // the connection; an error says why it is not wanted (cancelled, say).
        if let Err(e) = job.handle().complete(json!({ "echo": reversed })).await {
            eprintln!("{}: {e}", job.task_id());
        }
    }
    if let Err(e) = agent.join().await {
        eprintln!("echo_agent: {e}");
        std::process::exit(1);
    }
}

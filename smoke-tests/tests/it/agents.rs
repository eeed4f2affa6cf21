//! Scenarios with simulated agents: basic flow, failure, fencing, deadlines, routing.

use std::time::{Duration, Instant};

use coordinator_transport::client::{ClientConfig, Connection};
use coordinator_transport::protocol::{AgentMessage, CoordinatorMessage, ErrorCode};
use serde_json::{json, Value};
use smoke_tests::harness::{Backend, Coordinator};
use smoke_tests::http::Client;

use crate::sim::{Behaviour, SimAgent};

on_both_backends!(
    ten_tasks_two_agents_all_complete,
    failures_retry_then_dead_letter_then_retry_from_the_dead_letter,
    a_dead_agents_task_goes_to_the_survivor_and_the_old_generation_is_fenced
);

pub async fn submit(client: &mut Client, body: Value) -> String {
    let r = client.post("/api/tasks", &body).await.unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["task_id"].as_str().unwrap().to_owned()
}

/// POSTs `tasks` to `/api/tasks/batch`; their ids in order.
pub async fn submit_batch(client: &mut Client, tasks: Vec<Value>) -> Vec<String> {
    let r = client
        .post("/api/tasks/batch", &json!({ "tasks": tasks }))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

/// POSTs `/api/tasks/{id}/{verb}` (cancel, retry) and returns the status code.
pub async fn task_action(client: &mut Client, id: &str, verb: &str) -> u16 {
    client
        .post(&format!("/api/tasks/{id}/{verb}"), &json!({}))
        .await
        .unwrap()
        .status
}

pub async fn task(client: &mut Client, id: &str) -> Value {
    client.get(&format!("/api/tasks/{id}")).await.unwrap().body
}

pub async fn wait_status(client: &mut Client, id: &str, status: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let t = task(client, id).await;
        if t["status"] == status {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for task {id} to be {status}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a test waits for a frame or a connection it expects.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects and identifies as an agent, within [`REPLY_TIMEOUT`].
pub async fn connect(config: &ClientConfig) -> Connection {
    tokio::time::timeout(REPLY_TIMEOUT, Connection::connect(config))
        .await
        .unwrap_or_else(|_| panic!("{} not identified in time", config.agent_id))
        .expect("agent connects")
}

/// Skips messages until `pick` takes one, all within [`REPLY_TIMEOUT`]; fails the
/// test if the socket closes first.
pub async fn next_matching<T>(
    conn: &mut Connection,
    what: &str,
    mut pick: impl FnMut(CoordinatorMessage) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline, conn.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {REPLY_TIMEOUT:?}"))
            .unwrap_or_else(|| panic!("the socket closed before {what}"));
        if let Some(value) = pick(message) {
            return value;
        }
    }
}

/// The next message, within [`REPLY_TIMEOUT`].
pub async fn next_message(conn: &mut Connection) -> CoordinatorMessage {
    next_matching(conn, "a message", Some).await
}

pub fn completions(task: &Value) -> usize {
    task["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == "completed")
        .count()
}

async fn ten_tasks_two_agents_all_complete(backend: Backend) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let a = SimAgent::start(&c, "a", &[], Behaviour::Delay(20)).await;
    let b = SimAgent::start(&c, "b", &[], Behaviour::Delay(20)).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(submit(&mut admin, json!({"description": format!("task {i}")})).await);
    }
    for id in &ids {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(30)).await;
        assert_eq!(completions(&t), 1);
        let events: Vec<&str> = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["event"].as_str())
            .collect();
        let order = ["submitted", "assigned", "completed"]
            .map(|event| events.iter().position(|e| *e == event));
        assert!(
            order.iter().all(Option::is_some) && order.windows(2).all(|w| w[0] < w[1]),
            "submitted, then assigned, then completed: {events:?}"
        );
    }
    assert!(
        !a.completed().is_empty() && !b.completed().is_empty(),
        "both agents worked"
    );
    let mut seen: Vec<String> = a
        .completed()
        .into_iter()
        .chain(b.completed())
        .map(|d| d.task_id)
        .collect();
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        seen, expected,
        "each task completed by exactly one agent, once"
    );
}

async fn a_dead_agents_task_goes_to_the_survivor_and_the_old_generation_is_fenced(
    backend: Backend,
) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("holder");
    let mut holder = connect(&ClientConfig::new(c.ws_url(), "holder", token.clone())).await;
    let id = submit(&mut admin, json!({"description": "survive me"})).await;
    let old = next_matching(&mut holder, "task_assign", |m| match m {
        CoordinatorMessage::TaskAssign { generation, .. } => Some(generation),
        _ => None,
    })
    .await;
    holder
        .send(&AgentMessage::TaskAccepted {
            task_id: id.clone(),
        })
        .await
        .unwrap();
    let survivor = SimAgent::start(&c, "survivor", &[], Behaviour::Complete).await;
    // Cut the holder's connection.
    let cut = Instant::now();
    drop(holder);
    let t = wait_status(&mut admin, &id, "completed", Duration::from_secs(10)).await;
    eprintln!("disconnect → completed elsewhere in {:?}", cut.elapsed());
    assert_eq!(t["assigned_to"], "survivor");
    assert!(t["generation"].as_u64().unwrap() > old);
    assert_eq!(completions(&t), 1);
    assert_eq!(survivor.completed().len(), 1);

    // The old holder comes back and reports with its old generation: stale, nothing changes.
    let mut back = connect(&ClientConfig::new(c.ws_url(), "holder", token)).await;
    back.send(&AgentMessage::TaskComplete {
        task_id: id.clone(),
        generation: old,
        result: json!({"by": "holder"}),
        tokens_used: None,
    })
    .await
    .unwrap();
    let reply = next_message(&mut back).await;
    assert!(
        matches!(
            reply,
            CoordinatorMessage::Error {
                error: ErrorCode::StaleGeneration | ErrorCode::NotAssigned,
                ..
            }
        ),
        "{reply:?}"
    );
    let t = task(&mut admin, &id).await;
    assert_eq!(t["result"]["by"], "survivor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_rejects_the_old_generation_while_the_new_assignee_works() {
    let c = Coordinator::start(&["--accept-timeout-ms", "300"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("slow");
    let mut slow = connect(&ClientConfig::new(c.ws_url(), "slow", token)).await;
    let id = submit(&mut admin, json!({"description": "fence me"})).await;
    let old = next_matching(&mut slow, "task_assign", |m| match m {
        CoordinatorMessage::TaskAssign { generation, .. } => Some(generation),
        _ => None,
    })
    .await;
    // `slow` never accepts; after the deadline the task goes to `fast`.
    let fast = SimAgent::start(&c, "fast", &[], Behaviour::Delay(300)).await;
    let t = wait_status(&mut admin, &id, "completed", Duration::from_secs(10)).await;
    slow.send(&AgentMessage::TaskComplete {
        task_id: id.clone(),
        generation: old,
        result: json!({"by": "slow"}),
        tokens_used: None,
    })
    .await
    .unwrap();
    let error = next_matching(&mut slow, "an error", |m| match m {
        CoordinatorMessage::Error { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert!(
        matches!(error, ErrorCode::StaleGeneration | ErrorCode::NotAssigned),
        "{error:?}"
    );
    assert_eq!(t["result"]["by"], "fast");
    assert_eq!(fast.completed().len(), 1);
    let agents = admin.get("/api/agents/slow").await.unwrap().body;
    assert_eq!(agents["flags"], json!(["unresponsive"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_routing_without_head_of_line_blocking() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let cpu = SimAgent::start(&c, "cpu", &["linux"], Behaviour::Complete).await;
    let gpu_task = submit(
        &mut admin,
        json!({"description": "needs gpu", "needed_capabilities": ["gpu"]}),
    )
    .await;
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(submit(&mut admin, json!({"description": format!("any {i}")})).await);
    }
    for id in &others {
        wait_status(&mut admin, id, "completed", Duration::from_secs(10)).await;
    }
    assert_eq!(task(&mut admin, &gpu_task).await["status"], "queued");
    let gpu = SimAgent::start(&c, "gpu", &["gpu", "linux"], Behaviour::Complete).await;
    let t = wait_status(&mut admin, &gpu_task, "completed", Duration::from_secs(10)).await;
    assert_eq!(t["assigned_to"], "gpu");
    assert_eq!(gpu.completed().len(), 1);
    assert_eq!(cpu.completed().len(), 5);
}

async fn failures_retry_then_dead_letter_then_retry_from_the_dead_letter(backend: Backend) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let failing = SimAgent::start(&c, "failing", &[], Behaviour::Fail).await;
    let id = submit(
        &mut admin,
        json!({"description": "doomed", "max_retries": 1}),
    )
    .await;
    let t = wait_status(&mut admin, &id, "dead_letter", Duration::from_secs(10)).await;
    assert_eq!(t["retry_count"], 2);
    assert_eq!(t["last_error"], "simulated failure");
    assert_eq!(failing.completed().len(), 2);
    let dead = admin.get("/api/tasks/dead-letter").await.unwrap();
    assert_eq!(dead.body["count"], 1);
    failing.kill();
    let ok = SimAgent::start(&c, "ok", &[], Behaviour::Complete).await;
    assert_eq!(task_action(&mut admin, &id, "retry").await, 200);
    wait_status(&mut admin, &id, "completed", Duration::from_secs(10)).await;
    assert_eq!(ok.completed().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_tells_the_agent() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("w");
    let mut w = connect(&ClientConfig::new(c.ws_url(), "w", token)).await;
    let id = submit(&mut admin, json!({"description": "cancel me"})).await;
    next_matching(&mut w, "task_assign", |m| {
        matches!(m, CoordinatorMessage::TaskAssign { .. }).then_some(())
    })
    .await;
    assert_eq!(task_action(&mut admin, &id, "cancel").await, 200);
    let cancelled = next_matching(&mut w, "task_cancel", |m| match m {
        CoordinatorMessage::TaskCancel { task_id } => Some(task_id),
        _ => None,
    })
    .await;
    assert_eq!(cancelled, id);
}

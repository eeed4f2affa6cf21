//! Scenarios with simulated agents: basic flow, failure, fencing, deadlines, routing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smoke_tests::harness::Coordinator;
use smoke_tests::http::Client;
use transport_ws::client::{ClientConfig, Connection};
use transport_ws::protocol::{AgentMessage, CoordinatorMessage, ErrorCode};

use crate::sim::{Behaviour, SimAgent};

pub async fn submit(client: &mut Client, body: Value) -> String {
    let r = client.post("/api/tasks", &body).await.unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["task_id"].as_str().unwrap().to_owned()
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

pub fn completions(task: &Value) -> usize {
    task["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == "completed")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tasks_two_agents_all_complete() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let a = SimAgent::start(&c, "a", &[], Behaviour::Delay(20)).await;
    let b = SimAgent::start(&c, "b", &[], Behaviour::Delay(20)).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(submit(&mut admin, json!({"description": format!("task {i}")})).await);
    }
    let mut latencies = Vec::new();
    for id in &ids {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(30)).await;
        assert_eq!(completions(&t), 1);
        let assigned = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["event"] == "assigned")
            .unwrap()["timestamp"]
            .as_u64()
            .unwrap();
        latencies.push(assigned - t["created_at"].as_u64().unwrap());
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
    assert!(
        latencies.iter().all(|l| *l < 5_000),
        "submit→assign latencies {latencies:?}"
    );
    eprintln!("submit→assign latency ms: {latencies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_task_goes_to_the_survivor_and_the_old_generation_is_fenced() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("holder");
    let mut holder = Connection::connect(&ClientConfig::new(c.ws_url(), "holder", token.clone()))
        .await
        .unwrap();
    let id = submit(&mut admin, json!({"description": "survive me"})).await;
    let Some(CoordinatorMessage::TaskAssign {
        generation: old, ..
    }) = holder.recv().await
    else {
        panic!("no assignment")
    };
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
    let mut back = Connection::connect(&ClientConfig::new(c.ws_url(), "holder", token))
        .await
        .unwrap();
    back.send(&AgentMessage::TaskComplete {
        task_id: id.clone(),
        generation: old,
        result: json!({"by": "holder"}),
        tokens_used: None,
    })
    .await
    .unwrap();
    let reply = back.recv().await.unwrap();
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
    let mut slow = Connection::connect(&ClientConfig::new(c.ws_url(), "slow", token))
        .await
        .unwrap();
    let id = submit(&mut admin, json!({"description": "fence me"})).await;
    let Some(CoordinatorMessage::TaskAssign {
        generation: old, ..
    }) = slow.recv().await
    else {
        panic!()
    };
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
    loop {
        match slow.recv().await.unwrap() {
            CoordinatorMessage::Error { error, .. } => {
                assert!(matches!(
                    error,
                    ErrorCode::StaleGeneration | ErrorCode::NotAssigned
                ));
                break;
            }
            _ => continue,
        }
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_then_dead_letter_then_retry_from_the_dead_letter() {
    let c = Coordinator::start(&[]);
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
    let mut w = Connection::connect(&ClientConfig::new(c.ws_url(), "w", token))
        .await
        .unwrap();
    let id = submit(&mut admin, json!({"description": "cancel me"})).await;
    let Some(CoordinatorMessage::TaskAssign { .. }) = w.recv().await else {
        panic!()
    };
    assert_eq!(task_action(&mut admin, &id, "cancel").await, 200);
    loop {
        match w.recv().await.unwrap() {
            CoordinatorMessage::TaskCancel { task_id } => {
                assert_eq!(task_id, id);
                break;
            }
            _ => continue,
        }
    }
}

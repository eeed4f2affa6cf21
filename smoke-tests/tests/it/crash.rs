//! Durability: kill -9 and look.

use std::time::Duration;

use serde_json::json;
use smoke_tests::harness::Coordinator;
use smoke_tests::http::Client;

use crate::agents::{submit, task, wait_status};
use crate::sim::{Behaviour, SimAgent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_task_survives_kill_9() {
    let mut c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let id = submit(
        &mut admin,
        json!({"description": "durable", "priority": "urgent"}),
    )
    .await;
    c.kill();
    c.restart();
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let t = task(&mut admin, &id).await;
    assert_eq!(t["id"], id.as_str());
    assert_eq!(t["status"], "queued");
    assert_eq!(t["priority"], "urgent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_cycles_lose_nothing_and_complete_everything_once() {
    let mut c = Coordinator::start(&["--recovery-grace-ms", "500", "--sweep-interval-ms", "200"]);
    let mut acknowledged: Vec<String> = Vec::new();
    for cycle in 0..10 {
        let mut admin = Client::new(&c.addr, Some(&c.admin_token));
        let agent = SimAgent::start(&c, &format!("agent-{cycle}"), &[], Behaviour::Complete).await;
        for i in 0..5 {
            if let Ok(r) = admin
                .post(
                    "/api/tasks",
                    &json!({"description": format!("c{cycle} t{i}")}),
                )
                .await
            {
                if r.status == 201 {
                    acknowledged.push(r.body["task_id"].as_str().unwrap().to_owned());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10 + (cycle as u64 * 7) % 40)).await;
        c.kill();
        agent.kill();
        c.restart();
        let mut admin = Client::new(&c.addr, Some(&c.admin_token));
        for id in &acknowledged {
            let t = task(&mut admin, id).await;
            assert_eq!(
                t["id"],
                id.as_str(),
                "task {id} lost after kill -9 #{cycle}"
            );
        }
    }
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let _finisher = SimAgent::start(&c, "finisher", &[], Behaviour::Complete).await;
    for id in &acknowledged {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(30)).await;
        let completions = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["event"] == "completed")
            .count();
        assert_eq!(completions, 1, "task {id} completed {completions} times");
    }
    assert_eq!(acknowledged.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly() {
    let mut c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    submit(&mut admin, json!({"description": "before shutdown"})).await;
    let status = c.terminate().expect("exit status");
    assert!(status.success(), "exit status {status:?}; log: {}", c.log());
}

//! Durability: kill -9 and look.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use smoke_tests::harness::{wait_for, Backend, Coordinator};
use smoke_tests::http::Client;

use crate::agents::{submit, task, wait_status};
use crate::sim::{Behaviour, SimAgent};

on_both_backends!(
    an_acknowledged_task_survives_kill_9,
    kill_9_cycles_lose_nothing_and_complete_everything_once,
    retention_deletes_old_final_tasks_but_keeps_the_dead_letter
);

async fn an_acknowledged_task_survives_kill_9(backend: Backend) {
    let mut c = Coordinator::start_on(backend, &[]);
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

async fn kill_9_cycles_lose_nothing_and_complete_everything_once(backend: Backend) {
    let mut c = Coordinator::start_on(
        backend,
        &["--recovery-grace-ms", "300", "--sweep-interval-ms", "200"],
    );
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for cycle in 0..10 {
        let before = acknowledged.lock().unwrap().len();
        let a = SimAgent::start(&c, &format!("a{cycle}"), &[], Behaviour::Delay(5)).await;
        let b = SimAgent::start(&c, &format!("b{cycle}"), &[], Behaviour::Complete).await;
        // Two producers submit until the coordinator dies under them.
        let mut producers = Vec::new();
        for p in 0..2 {
            let addr = c.addr.clone();
            let token = c.admin_token.clone();
            let acknowledged = acknowledged.clone();
            producers.push(tokio::spawn(async move {
                let mut client = Client::new(&addr, Some(&token));
                for i in 0.. {
                    match client
                        .post(
                            "/api/tasks",
                            &json!({"description": format!("c{cycle} p{p} t{i}")}),
                        )
                        .await
                    {
                        Ok(r) if r.status == 201 => acknowledged
                            .lock()
                            .unwrap()
                            .push(r.body["task_id"].as_str().unwrap().to_owned()),
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }));
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Kill once a varying number of further submissions were acknowledged,
        // while the producers keep submitting.
        let target = before + 1 + ((seed >> 33) % 40) as usize;
        wait_for(
            Duration::from_secs(30),
            &format!("{target} acknowledged submissions in cycle {cycle}"),
            || {
                let n = acknowledged.lock().unwrap().len();
                async move { (n >= target).then_some(()) }
            },
        )
        .await;
        c.kill();
        for p in producers {
            let _ = p.await;
        }
        a.kill();
        b.kill();
        c.restart();
        let mut admin = Client::new(&c.addr, Some(&c.admin_token));
        let ids = acknowledged.lock().unwrap().clone();
        for id in &ids {
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
    let ids = acknowledged.lock().unwrap().clone();
    assert!(
        ids.len() >= 10,
        "only {} tasks were acknowledged",
        ids.len()
    );
    for id in &ids {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(60)).await;
        let n = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["event"] == "completed")
            .count();
        assert_eq!(n, 1, "task {id} completed {n} times");
    }
    // Tasks committed in the instant before a kill exist without their 201 having
    // left: there may be more than were acknowledged, and none may be stuck (the
    // finisher may still be running the last of them when the acknowledged ones
    // are done).
    let addr = c.addr.clone();
    let token = c.admin_token.clone();
    let (stats, completed) = wait_for(
        Duration::from_secs(30),
        "every stored task completed",
        || {
            let (addr, token) = (addr.clone(), token.clone());
            async move {
                let mut admin = Client::new(&addr, Some(&token));
                let stats = admin.get("/api/tasks/stats").await.ok()?.body;
                let completed = stats["by_status"]["completed"].as_u64()?;
                (completed == stats["total"].as_u64()?).then_some((stats, completed))
            }
        },
    )
    .await;
    assert!(completed as usize >= ids.len(), "{stats}");
    eprintln!(
        "kill -9 cycles: {} acknowledged tasks, all completed exactly once",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly() {
    let mut c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let id = submit(&mut admin, json!({"description": "before shutdown"})).await;
    let mut agent = smoke_tests::harness::RawSocket::connect(&c.addr).await;
    let token = c.agent_token("closing");
    agent
        .send_frame(
            1,
            json!({"type": "identify", "agent_id": "closing", "token": token})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert!(
        agent
            .read_until(Duration::from_secs(5), |b| b
                .windows(11)
                .any(|w| w == b"task_assign"))
            .await
    );
    let status = c.terminate().expect("exit status");
    assert!(status.success(), "exit status {status:?}; log: {}", c.log());
    assert!(
        agent.read_until_close(1001, Duration::from_secs(5)).await,
        "agents are told the coordinator is going away (1001)"
    );
    // What was acknowledged before the signal is there after a restart.
    c.restart();
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    assert_eq!(task(&mut admin, &id).await["id"], id.as_str());
}

async fn retention_deletes_old_final_tasks_but_keeps_the_dead_letter(backend: Backend) {
    let c = Coordinator::start_on(
        backend,
        &["--retention-hours", "0", "--sweep-interval-ms", "100"],
    );
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let failing = SimAgent::start(&c, "fails", &[], Behaviour::Fail).await;
    let dead = submit(
        &mut admin,
        json!({"description": "to the dead letter", "max_retries": 0}),
    )
    .await;
    wait_status(&mut admin, &dead, "dead_letter", Duration::from_secs(10)).await;
    failing.kill();
    let _ok = SimAgent::start(&c, "works", &[], Behaviour::Complete).await;
    let done = submit(&mut admin, json!({"description": "done and forgotten"})).await;
    // With a retention of 0 the sweep may delete the task between two reads, so
    // it is watched until it is gone, and it must have been seen only live or
    // completed before (only final tasks are ever deleted).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = admin.get(&format!("/api/tasks/{done}")).await.unwrap();
        if r.status == 404 {
            break;
        }
        assert_ne!(r.body["status"], "dead_letter", "{}", r.body);
        assert!(
            std::time::Instant::now() < deadline,
            "the completed task was never cleaned up: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task(&mut admin, &dead).await["status"], "dead_letter");
}

//! Scale, fairness, agent loss and bad input while work goes on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use coordinator_transport::client::Connection;
use serde_json::json;
use smoke_tests::harness::Coordinator;
use smoke_tests::http::Client;

use crate::agents::{completions, submit, task, wait_status};
use crate::sim::{Behaviour, SimAgent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_agents_share_mixed_priority_work_fairly_and_urgent_goes_first() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(SimAgent::start(&c, &format!("f{i}"), &[], Behaviour::Delay(30)).await);
    }
    let priorities = ["low", "urgent", "normal", "high"];
    let mut ids = Vec::new();
    // Submit as one batch so that lanes, not arrival, decide the order.
    let tasks: Vec<_> = (0..20)
        .map(|i| json!({"description": format!("p{i}"), "priority": priorities[i % 4]}))
        .collect();
    let r = admin
        .post("/api/tasks/batch", &json!({"tasks": tasks}))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    for (i, id) in r.body["task_ids"].as_array().unwrap().iter().enumerate() {
        ids.push((id.as_str().unwrap().to_owned(), priorities[i % 4]));
    }
    let mut finished: HashMap<&str, Vec<u64>> = HashMap::new();
    for (id, priority) in &ids {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(30)).await;
        assert_eq!(completions(&t), 1);
        finished
            .entry(priority)
            .or_default()
            .push(t["updated_at"].as_u64().unwrap());
    }
    let mean = |p: &str| finished[p].iter().sum::<u64>() as f64 / finished[p].len() as f64;
    assert!(
        mean("urgent") < mean("low"),
        "urgent tasks finish before low ones on average"
    );
    for a in &agents {
        let n = a.completed().len();
        assert!((3..=7).contains(&n), "an agent completed {n} of 20");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_work_runs_while_urgent_work_comes_and_goes() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let _a = SimAgent::start(&c, "only", &[], Behaviour::Delay(10)).await;
    let mut lows = Vec::new();
    for i in 0..10 {
        let urgent = submit(
            &mut admin,
            json!({"description": format!("urgent {i}"), "priority": "urgent"}),
        )
        .await;
        lows.push(
            submit(
                &mut admin,
                json!({"description": format!("low {i}"), "priority": "low"}),
            )
            .await,
        );
        // The next urgent task comes once this one has gone.
        wait_status(&mut admin, &urgent, "completed", Duration::from_secs(30)).await;
    }
    for id in &lows {
        wait_status(&mut admin, id, "completed", Duration::from_secs(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_an_agent_midway_still_completes_every_task_once() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let a = SimAgent::start(&c, "stays", &[], Behaviour::Delay(150)).await;
    let b = SimAgent::start(&c, "dies", &[], Behaviour::Hold).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(submit(&mut admin, json!({"description": format!("job {i}")})).await);
    }
    // `dies` accepts a task and never finishes it; it dies while working on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = 'found: loop {
        for id in &ids {
            let t = task(&mut admin, id).await;
            if t["assigned_to"] == "dies" && t["status"] == "working" {
                break 'found id.clone();
            }
        }
        assert!(Instant::now() < deadline, "`dies` never worked on a task");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    b.kill();
    for id in &ids {
        let t = wait_status(&mut admin, id, "completed", Duration::from_secs(30)).await;
        assert_eq!(completions(&t), 1, "{t}");
        assert_eq!(t["assigned_to"], "stays", "{t}");
    }
    let t = task(&mut admin, &held).await;
    let reclaimed = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["event"] == "reclaimed");
    assert!(reclaimed, "the held task was taken back from `dies`: {t}");
    assert_eq!(a.completed().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_input_storm_does_not_stop_the_work() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let a = SimAgent::start(&c, "w1", &[], Behaviour::Complete).await;
    let b = SimAgent::start(&c, "w2", &[], Behaviour::Complete).await;
    let addr = c.addr.clone();
    let url = c.ws_url();
    let token = c.admin_token.clone();
    let storm = tokio::spawn(async move {
        let garbage: [&[u8]; 6] = [
            b"{",
            b"[]",
            br#"{"type":"nope"}"#,
            br#"{"type":"task_complete"}"#,
            b"\xff\xfe",
            br#"{"type":"task_accepted","task_id":"x"}"#,
        ];
        let mut http = Client::new(&addr, Some(&token));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut sent = 0u64;
        while Instant::now() < deadline {
            if let Ok(conn) = Connection::open(&url).await {
                for g in garbage {
                    let _ = conn.sender().send_raw(g.to_vec()).await;
                    sent += 1;
                }
            }
            for body in [
                &b"{"[..],
                b"null",
                br#"{"description": 5}"#,
                br#"{"tasks": "x"}"#,
            ] {
                let _ = http.raw("POST", "/api/tasks", body.to_vec()).await;
                let _ = http.raw("POST", "/api/tasks/batch", body.to_vec()).await;
                sent += 2;
            }
            // Pacing of the storm (so it does not take all the CPU), not a wait.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent
    });
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(submit(&mut admin, json!({"description": format!("work {i}")})).await);
    }
    for id in &ids {
        wait_status(&mut admin, id, "completed", Duration::from_secs(30)).await;
    }
    assert_eq!(a.completed().len() + b.completed().len(), 50);
    storm.abort();
}

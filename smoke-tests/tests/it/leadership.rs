//! Several coordinators on one PostgreSQL database (SPEC §13): exactly one
//! leads; a standby points at it (`/health`, 503 `not_leader`); when the
//! leader is killed, the standby takes the lease over and serves every task
//! that was acknowledged, none completed twice.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smoke_tests::harness::{wait_for, Backend, Coordinator, RunnerProcess, TempDir};
use smoke_tests::http::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agents::{completions, submit, wait_status};

/// Short lease timing, so that the tests do not wait for the defaults.
const LEASE: [&str; 4] = ["--lease-renew-ms", "200", "--lease-timeout-ms", "1000"];

/// `GET /health` of one coordinator (no failover).
async fn health(addr: &str) -> Option<Value> {
    let (status, _, body) = raw_http(addr, "GET", "/health", None, "").await?;
    (status == 200).then_some(body)
}

/// One HTTP/1.1 request to exactly `addr`: status, head and JSON body.
async fn raw_http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String, Value)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((
        status,
        head.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

async fn wait_role(c: &Coordinator, role: &'static str) -> Value {
    let addr = c.addr.clone();
    wait_for(Duration::from_secs(20), role, || {
        let addr = addr.clone();
        async move { health(&addr).await.filter(|h| h["role"] == role) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_the_standby_points_at_it_and_takes_over_after_a_kill() {
    let mut a = Coordinator::start_on(Backend::Postgres, &LEASE);
    let led = wait_role(&a, "leader").await;
    assert_eq!(led["epoch"], 1, "{led}");
    let b = Coordinator::start_beside(&a, &LEASE);
    let leader_url = format!("http://{}", a.addr);
    let standby = wait_for(
        Duration::from_secs(20),
        "the standby to name the leader",
        || {
            let addr = b.addr.clone();
            let url = leader_url.clone();
            async move {
                health(&addr)
                    .await
                    .filter(|h| h["role"] == "standby" && h["leader"] == url.as_str())
            }
        },
    )
    .await;
    assert_eq!(standby["leader"], leader_url.as_str(), "{standby}");
    assert_eq!(
        health(&a.addr).await.expect("the leader answers")["role"],
        "leader"
    );

    // A submit to the standby is refused, naming the leader; nothing is stored.
    let (status, head, body) = raw_http(
        &b.addr,
        "POST",
        "/api/tasks",
        Some(&b.admin_token),
        &json!({"description": "to the standby"}).to_string(),
    )
    .await
    .expect("the standby answers");
    assert_eq!(status, 503, "{head}\n{body}");
    assert_eq!(body["error"], "not_leader", "{body}");
    assert_eq!(body["leader"], leader_url.as_str(), "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");

    // An agent that knows both, and tasks acknowledged by the leader.
    let dir = TempDir::new("leadership");
    let hubs = format!("{},{}", a.ws_url(), b.ws_url());
    let _agent = RunnerProcess::start_at(
        &a,
        &hubs,
        "r1",
        "sh -c 'cat >/dev/null; echo done'",
        dir.path(),
        &[],
    );
    let both = format!("{},{}", a.addr, b.addr);
    let mut client = Client::new(&both, Some(&a.admin_token));
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(submit(&mut client, json!({"description": format!("before {i}")})).await);
    }
    assert_eq!(
        raw_http(&b.addr, "GET", "/api/tasks", Some(&b.admin_token), "")
            .await
            .expect("the standby answers")
            .0,
        503
    );

    // kill -9 of the leader: the standby leads and accepts within the timing.
    a.kill();
    let killed = Instant::now();
    let mut on_b = Client::new(&b.addr, Some(&b.admin_token));
    let deadline = killed + Duration::from_secs(20);
    let first = loop {
        let r = on_b
            .post("/api/tasks", &json!({"description": "after the kill"}))
            .await;
        if let Ok(r) = r {
            if r.status == 201 {
                break r.body["task_id"].as_str().expect("a task id").to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no 201 from the standby within 20 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let takeover_ms = killed.elapsed().as_millis();
    println!("takeover after kill -9: {takeover_ms} ms to the first 201 on the new leader (renew 200 ms, timeout 1000 ms)");
    ids.push(first);
    let now_leads = wait_role(&b, "leader").await;
    assert_eq!(now_leads["epoch"], 2, "{now_leads}");
    for i in 0..10 {
        ids.push(submit(&mut on_b, json!({"description": format!("after {i}")})).await);
    }

    // Every acknowledged task is there and completes exactly once.
    for id in &ids {
        let t = wait_status(&mut on_b, id, "completed", Duration::from_secs(60)).await;
        assert_eq!(completions(&t), 1, "{t}");
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_after_it_thaws_it_commits_nothing_and_stops() {
    let a = Coordinator::start_on(Backend::Postgres, &LEASE);
    let b = Coordinator::start_beside(&a, &LEASE);
    let leader_url = format!("http://{}", a.addr);
    wait_for(
        Duration::from_secs(20),
        "the standby to name the leader",
        || {
            let addr = b.addr.clone();
            let url = leader_url.clone();
            async move {
                health(&addr)
                    .await
                    .filter(|h| h["role"] == "standby" && h["leader"] == url.as_str())
            }
        },
    )
    .await;
    let mut on_a = Client::new(&a.addr, Some(&a.admin_token));
    let before = submit(&mut on_a, json!({"description": "before the freeze"})).await;

    let pid = a.pid().expect("the leader runs");
    signal(pid, "-STOP");
    let frozen = Instant::now();
    let leads = wait_role(&b, "leader").await;
    println!(
        "takeover after SIGSTOP: {} ms until the standby leads (lease timeout 1000 ms)",
        frozen.elapsed().as_millis()
    );
    assert_eq!(leads["epoch"], 2, "{leads}");
    let mut on_b = Client::new(&b.addr, Some(&b.admin_token));
    let after = submit(&mut on_b, json!({"description": "after the freeze"})).await;

    // Thawed, the old leader answers no submit with 201 and stops.
    signal(pid, "-CONT");
    let body = json!({"description": "to the thawed leader"}).to_string();
    let thawed = raw_http(&a.addr, "POST", "/api/tasks", Some(&a.admin_token), &body).await;
    if let Some((status, _, body)) = &thawed {
        assert_ne!(
            *status, 201,
            "the thawed leader acknowledged a task: {body}"
        );
    }
    let addr = a.addr.clone();
    wait_for(Duration::from_secs(20), "the thawed leader to stop", || {
        let addr = addr.clone();
        async move { health(&addr).await.is_none().then_some(()) }
    })
    .await;
    assert!(
        a.log().contains("leadership lost") || a.log().contains("lost the leadership lease"),
        "{}",
        a.log()
    );

    // The new leader has both tasks, and nothing the thawed one took.
    for id in [&before, &after] {
        wait_status(&mut on_b, id, "queued", Duration::from_secs(10)).await;
    }
    let stats = on_b.get("/api/tasks/stats").await.expect("the stats").body;
    assert_eq!(stats["total"], 2, "{stats}");
}

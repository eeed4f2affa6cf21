//! `GET /api/events` against the real binary: order, filters, resumes, resets,
//! slow watchers, and that nothing a watcher sees is lost to a kill -9.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordinator_bin::client::event_stream::{EventStream, SseEvent};
use serde_json::{json, Value};
use smoke_tests::harness::{wait_for, Coordinator};
use smoke_tests::http::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agents::{submit, task, wait_status};
use crate::sim::{Behaviour, SimAgent};

const WAIT: Duration = Duration::from_secs(15);

/// The next event, within [`WAIT`].
async fn next(stream: &mut EventStream) -> SseEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the wait")
        .expect("the stream reads")
        .expect("the stream goes on")
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

/// Events until one for which `done` holds (included).
async fn until(stream: &mut EventStream, done: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next(stream).await;
        let stop = done(&event);
        seen.push(event);
        if stop {
            return seen;
        }
    }
}

fn is_task(event: &SseEvent, id: &str, status: &str) -> bool {
    let d = data(event);
    event.event == "task" && d["task_id"] == id && d["status"] == status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_committed_changes_in_order_filter_and_resume() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let mut all = EventStream::open(&c.addr, &c.admin_token, "", None)
        .await
        .unwrap();
    let _agent = SimAgent::start(&c, "e1", &[], Behaviour::Complete).await;
    let id = submit(&mut admin, json!({"description": "watched"})).await;
    let seen = until(&mut all, |e| is_task(e, &id, "completed")).await;
    let ids: Vec<u64> = seen
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let task_events: Vec<String> = seen
        .iter()
        .filter(|e| e.event == "task")
        .map(|e| data(e)["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        task_events,
        ["submitted", "assigned", "accepted", "completed"]
    );
    // The agent's own change comes after the task's.
    let idle = next(&mut all).await;
    assert_eq!(
        (idle.event.as_str(), &data(&idle)["state"]),
        ("agent", &json!("idle"))
    );
    let agent_states: Vec<String> = seen
        .iter()
        .chain([&idle])
        .filter(|e| e.event == "agent")
        .map(|e| data(e)["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(agent_states, ["idle", "assigned", "working", "idle"]);

    // Resume after the first: the rest again, in order.
    let first = seen[0].id.clone();
    let mut resumed = EventStream::open(&c.addr, &c.admin_token, "", first.as_deref())
        .await
        .unwrap();
    let again = until(&mut resumed, |e| is_task(e, &id, "completed")).await;
    assert_eq!(again, seen[1..].to_vec());

    // An id older than the window (or from another run): a reset, then live.
    let mut stale = EventStream::open(&c.addr, &c.admin_token, "", Some("5"))
        .await
        .unwrap();
    assert_eq!(next(&mut stale).await.event, "reset");

    // Filters: one task; one status; and the token in the query (EventSource).
    let submitted = seen
        .iter()
        .find(|e| is_task(e, &id, "queued"))
        .and_then(|e| e.id.clone())
        .unwrap();
    let query = format!("task_id={id}&last_event_id={submitted}");
    let mut one = EventStream::open(&c.addr, &c.admin_token, &query, None)
        .await
        .unwrap();
    let mine = until(&mut one, |e| is_task(e, &id, "completed")).await;
    assert_eq!(mine.len(), 3, "assigned, accepted, completed: {mine:?}");
    let query = format!("status=completed&token={}", c.admin_token);
    let mut done = EventStream::open(&c.addr, "", &query, None).await.unwrap();
    let other = submit(&mut admin, json!({"description": "second"})).await;
    let event = next(&mut done).await;
    assert!(is_task(&event, &other, "completed"), "{event:?}");

    // Refusals.
    let anonymous = EventStream::open(&c.addr, "", "", None).await;
    assert!(anonymous.err().unwrap().to_string().contains("HTTP 401"));
    let bad = EventStream::open(&c.addr, &c.admin_token, "status=nope", None).await;
    assert!(bad.err().unwrap().to_string().contains("HTTP 422"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_dropped_with_a_final_event() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    // A watcher with a small receive buffer that reads nothing for now.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut watcher = socket.connect(c.addr.parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /api/events HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\r\n",
        c.addr, c.admin_token
    );
    watcher.write_all(request.as_bytes()).await.unwrap();
    // Far more events than the window, the lag limit and socket buffers hold.
    for batch in 0..30 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| json!({"description": format!("flood {batch}-{i}")}))
            .collect();
        let r = admin
            .post("/api/tasks/batch", &json!({ "tasks": tasks }))
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    // Now it reads: what was sent, then the final event, then the end.
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match watcher.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
            if received.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the dropped stream ends");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains("event: dropped"),
        "a final dropped event: ...{}",
        &text[text.len().saturating_sub(500)..]
    );
    assert!(text.contains("slow_consumer"));
    let events = text.matches("\nevent: task").count();
    assert!(events < 30_000, "it was not sent everything: {events}");
    // The coordinator is fine and others can watch.
    let mut fresh = EventStream::open(&c.addr, &c.admin_token, "", None)
        .await
        .unwrap();
    let id = submit(&mut admin, json!({"description": "after the flood"})).await;
    let event = next(&mut fresh).await;
    assert!(is_task(&event, &id, "queued"), "{event:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_watcher_saw_is_lost_to_kill_9() {
    let mut c = Coordinator::start(&["--recovery-grace-ms", "300", "--sweep-interval-ms", "200"]);
    // Per task, the newest (generation, status) a watcher saw.
    let seen: Arc<Mutex<BTreeMap<String, (u64, String)>>> = Arc::default();
    for cycle in 0..5 {
        let mut stream = EventStream::open(&c.addr, &c.admin_token, "", None)
            .await
            .unwrap();
        let watcher = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok(Some(event)) = stream.next().await {
                    if event.event != "task" {
                        continue;
                    }
                    let d = data(&event);
                    let id = d["task_id"].as_str().unwrap_or_default().to_owned();
                    let state = (
                        d["generation"].as_u64().unwrap_or(0),
                        d["status"].as_str().unwrap_or_default().to_owned(),
                    );
                    seen.lock().unwrap().insert(id, state);
                }
            })
        };
        let agent = SimAgent::start(&c, &format!("k{cycle}"), &[], Behaviour::Delay(3)).await;
        let producer = {
            let (addr, token) = (c.addr.clone(), c.admin_token.clone());
            tokio::spawn(async move {
                let mut client = Client::new(&addr, Some(&token));
                for i in 0.. {
                    let body = json!({"description": format!("k{cycle} t{i}")});
                    if client.post("/api/tasks", &body).await.is_err() {
                        return;
                    }
                }
            })
        };
        // Kill -9 while events flow: the freshest ones are the ones at risk.
        let target = seen.lock().unwrap().len() + 20 + cycle * 7;
        wait_for(
            WAIT,
            &format!("{target} tasks seen in cycle {cycle}"),
            || {
                let n = seen.lock().unwrap().len();
                async move { (n >= target).then_some(()) }
            },
        )
        .await;
        c.kill();
        let _ = tokio::time::timeout(WAIT, producer).await;
        let _ = tokio::time::timeout(WAIT, watcher).await;
        drop(agent);
        c.restart();
        let mut admin = Client::new(&c.addr, Some(&c.admin_token));
        let snapshot = seen.lock().unwrap().clone();
        for (id, (generation, status)) in snapshot {
            let stored = task(&mut admin, &id).await;
            assert_eq!(
                stored["id"], id,
                "task {id} was seen {status} at generation {generation}, then lost"
            );
            let stored_generation = stored["generation"].as_u64().unwrap();
            assert!(
                stored_generation >= generation,
                "task {id} was seen at generation {generation}, stored at {stored_generation}"
            );
            if status == "completed" {
                assert_eq!(stored["status"], "completed", "{stored}");
            }
        }
    }
    // And everything seen still ends.
    let _agent = SimAgent::start(&c, "finisher", &[], Behaviour::Complete).await;
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let last = seen.lock().unwrap().keys().last().cloned().unwrap();
    wait_status(&mut admin, &last, "completed", Duration::from_secs(30)).await;
}

//! Tests of the agent SDK against a scripted hub on a real socket: the hub plays
//! the coordinator frame by frame, so each test can drop a connection at the
//! exact point it wants.

use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::client::Connection;

const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket hub on a free port that hands each connection to the test.
struct Hub {
    url: String,
    conns: mpsc::Receiver<HubConn>,
}

/// One connection to the [`Hub`]: the agent's frames, and a way to answer.
/// Dropping it closes the connection.
struct HubConn {
    from_agent: mpsc::Receiver<Value>,
    to_agent: mpsc::Sender<Value>,
    /// Closes the connection with this code and reason.
    closer: tokio::sync::oneshot::Sender<(u16, String)>,
}

impl Hub {
    async fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/ws", listener.local_addr().expect("address"));
        let (conns_tx, conns) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conns_tx = conns_tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |mut request| {
                        let conns_tx = conns_tx.clone();
                        async move {
                            let (response, upgrade) =
                                fastwebsockets::upgrade::upgrade(&mut request)?;
                            tokio::spawn(async move {
                                if let Ok(ws) = upgrade.await {
                                    serve(ws, conns_tx).await;
                                }
                            });
                            Ok::<_, WebSocketError>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Hub { url, conns }
    }

    /// The next connection, identified: its `identify` frame is returned and
    /// answered with `identified`.
    async fn accept(&mut self) -> (HubConn, Value) {
        let mut conn = timeout(WAIT, self.conns.recv())
            .await
            .expect("a connection in time")
            .expect("the hub runs");
        let identify = conn.next().await;
        assert_eq!(identify["type"], "identify", "{identify}");
        conn.send(json!({"type": "identified", "agent_id": identify["agent_id"]}))
            .await;
        (conn, identify)
    }
}

impl HubConn {
    /// The agent's next frame.
    async fn next(&mut self) -> Value {
        timeout(WAIT, self.from_agent.recv())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
    }

    /// Closes the connection with `code` and `reason`, as a standby does.
    fn close_with(self, code: u16, reason: &str) {
        let _ = self.closer.send((code, reason.to_owned()));
    }

    async fn send(&self, frame: Value) {
        self.to_agent
            .send(frame)
            .await
            .expect("the connection is open");
    }
}

/// Moves frames between the socket and the test until either side is done.
async fn serve(
    ws: fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
    conns: mpsc::Sender<HubConn>,
) {
    let (mut read, mut write) = ws.split(tokio::io::split);
    let (from_tx, from_agent) = mpsc::channel(64);
    let (to_agent, mut to_rx) = mpsc::channel::<Value>(64);
    let (closer, mut close_rx) = tokio::sync::oneshot::channel::<(u16, String)>();
    if conns
        .send(HubConn {
            from_agent,
            to_agent,
            closer,
        })
        .await
        .is_err()
    {
        return;
    }
    let reader = async move {
        let mut ignore = |_: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
        while let Ok(frame) = read.read_frame(&mut ignore).await {
            match frame.opcode {
                OpCode::Text => {
                    let value =
                        serde_json::from_slice(&frame.payload).expect("JSON from the agent");
                    if from_tx.send(value).await.is_err() {
                        return;
                    }
                }
                OpCode::Close => return,
                _ => {}
            }
        }
    };
    let writer = async move {
        loop {
            let value = tokio::select! {
                // A close asked for wins over the end of the frames.
                biased;
                close = &mut close_rx => {
                    if let Ok((code, reason)) = close {
                        let _ = write.write_frame(Frame::close(code, reason.as_bytes())).await;
                        return;
                    }
                    to_rx.recv().await
                }
                value = to_rx.recv() => value,
            };
            let Some(value) = value else {
                break;
            };
            let text = serde_json::to_vec(&value).expect("JSON");
            if write
                .write_frame(Frame::text(Payload::Owned(text)))
                .await
                .is_err()
            {
                return;
            }
        }
        // The test dropped the connection: close it.
        let _ = write.write_frame(Frame::close(1000, b"")).await;
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}

fn agent(hub: &Hub) -> AgentBuilder {
    AgentClient::builder([hub.url.as_str()], "a1", "secret")
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .ping_interval(None)
        .identify_timeout(Duration::from_secs(5))
        .connect_timeout(WAIT)
}

fn assign(task_id: &str, generation: u64) -> Value {
    json!({
        "type": "task_assign",
        "task_id": task_id,
        "description": format!("do {task_id}"),
        "metadata": {"k": 1},
        "generation": generation,
        "assigned_at": 5,
    })
}

async fn next_job(agent: &mut AgentClient) -> Job {
    timeout(WAIT, agent.next())
        .await
        .expect("a job in time")
        .expect("the agent runs")
}

/// A [`StateHook`] the test can look into.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Option<HeldTask>>>);

impl StateHook for Shared {
    fn load(&mut self) -> Result<Option<HeldTask>, String> {
        Ok(self.0.lock().unwrap().clone())
    }

    fn save(&mut self, task: Option<&HeldTask>) -> Result<(), String> {
        *self.0.lock().unwrap() = task.cloned();
        Ok(())
    }
}

#[tokio::test]
async fn an_outcome_given_while_disconnected_is_sent_after_the_reconnect_until_acknowledged() {
    let mut hub = Hub::start().await;
    let state = Shared::default();
    let connecting = tokio::spawn(agent(&hub).state_hook(state.clone()).connect());
    let (conn, identify) = hub.accept().await;
    assert!(identify.get("current_task").is_none(), "{identify}");
    let mut agent = connecting.await.expect("joined").expect("connected");
    assert_eq!(agent.connected_hub(), Some(hub.url.clone()));
    conn.send(assign("t1", 3)).await;
    let mut conn = conn;
    assert_eq!(
        conn.next().await,
        json!({"type": "task_accepted", "task_id": "t1"})
    );
    let job = next_job(&mut agent).await;
    assert_eq!(
        (
            job.task_id(),
            job.generation(),
            job.description(),
            job.metadata()
        ),
        ("t1", 3, "do t1", &json!({"k": 1}))
    );
    assert!(!job.is_restored());
    assert_eq!(
        state.0.lock().unwrap().as_ref().map(|t| t.generation),
        Some(3)
    );

    // The connection goes away; the job ends meanwhile.
    drop(conn);
    job.handle()
        .complete(json!({"ok": 1}))
        .await
        .expect("taken while disconnected");
    assert!(state
        .0
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|t| t.outcome.is_some()));

    // The reconnect names the task, recovers it, and reports after the answer.
    let (mut conn, identify) = hub.accept().await;
    assert_eq!(
        identify["current_task"],
        json!({"task_id": "t1", "generation": 3})
    );
    assert_eq!(
        conn.next().await,
        json!({"type": "task_recovering", "task_id": "t1"})
    );
    conn.send(json!({"type": "task_continue", "task_id": "t1", "generation": 4}))
        .await;
    assert_eq!(
        conn.next().await,
        json!({"type": "task_complete", "task_id": "t1", "generation": 4, "result": {"ok": 1}})
    );
    // The acknowledgement is lost with this connection too: sent again.
    drop(conn);
    let (mut conn, _) = hub.accept().await;
    assert_eq!(conn.next().await["type"], "task_recovering");
    conn.send(json!({"type": "task_continue", "task_id": "t1", "generation": 4}))
        .await;
    assert_eq!(conn.next().await["type"], "task_complete");
    conn.send(json!({"type": "task_ack", "task_id": "t1", "status": "complete"}))
        .await;
    // Free again: the state is cleared and the next task is taken.
    conn.send(assign("t2", 1)).await;
    assert_eq!(conn.next().await["task_id"], "t2");
    assert_eq!(next_job(&mut agent).await.task_id(), "t2");
    assert_eq!(
        state.0.lock().unwrap().as_ref().map(|t| t.task_id.clone()),
        Some("t2".to_owned())
    );
}

#[tokio::test]
async fn a_job_dropped_without_an_outcome_fails_so_the_agent_is_not_stuck() {
    let mut hub = Hub::start().await;
    let connecting = tokio::spawn(agent(&hub).connect());
    let (mut conn, _) = hub.accept().await;
    let mut agent = connecting.await.expect("joined").expect("connected");
    conn.send(assign("t1", 1)).await;
    assert_eq!(conn.next().await["type"], "task_accepted");
    let job = next_job(&mut agent).await;
    let handle = job.handle();
    drop(job);
    handle
        .progress(0.5)
        .await
        .expect("still running: a clone lives");
    assert_eq!(
        conn.next().await,
        json!({"type": "task_progress", "task_id": "t1", "progress": 0.5})
    );
    drop(handle);
    assert_eq!(
        conn.next().await,
        json!({
            "type": "task_failed",
            "task_id": "t1",
            "generation": 1,
            "error": crate::client::session::JOB_DROPPED,
        })
    );
}

#[tokio::test]
async fn stop_gives_a_running_job_its_grace_then_cancels_it_and_keeps_the_task() {
    let mut hub = Hub::start().await;
    let state = Shared::default();
    let connecting = tokio::spawn(
        agent(&hub)
            .state_hook(state.clone())
            .shutdown_grace(Duration::from_millis(200))
            .connect(),
    );
    let (mut conn, _) = hub.accept().await;
    let mut agent = connecting.await.expect("joined").expect("connected");
    conn.send(assign("t1", 1)).await;
    assert_eq!(conn.next().await["type"], "task_accepted");
    let job = next_job(&mut agent).await;
    agent.stop();
    // No new work while stopping.
    conn.send(assign("t2", 1)).await;
    assert_eq!(
        conn.next().await,
        json!({"type": "task_rejected", "task_id": "t2", "reason": "shutting_down"})
    );
    timeout(WAIT, job.cancelled())
        .await
        .expect("cancelled after the grace");
    assert!(timeout(WAIT, agent.next()).await.expect("ends").is_none());
    assert_eq!(
        job.handle().complete(json!(1)).await,
        Err(ReportError::Stopped)
    );
    assert_eq!(timeout(WAIT, agent.join()).await.expect("ends"), Ok(()));
    assert_eq!(
        state.0.lock().unwrap().as_ref().map(|t| t.task_id.clone()),
        Some("t1".to_owned()),
        "the task stays for the next start"
    );
}

#[tokio::test]
async fn a_task_kept_by_the_state_hook_is_recovered_and_run_again_as_restored() {
    let mut hub = Hub::start().await;
    let state = Shared::default();
    *state.0.lock().unwrap() = Some(HeldTask {
        task_id: "t1".into(),
        generation: 2,
        description: "do t1".into(),
        metadata: json!({}),
        assigned_at: 5,
        outcome: None,
    });
    let connecting = tokio::spawn(agent(&hub).state_hook(state.clone()).connect());
    let (mut conn, identify) = hub.accept().await;
    assert_eq!(
        identify["current_task"],
        json!({"task_id": "t1", "generation": 2})
    );
    let mut agent = connecting.await.expect("joined").expect("connected");
    assert_eq!(conn.next().await["type"], "task_recovering");
    conn.send(json!({"type": "task_continue", "task_id": "t1", "generation": 3}))
        .await;
    let job = next_job(&mut agent).await;
    assert!(job.is_restored());
    assert_eq!(job.generation(), 3);
    job.handle().fail("no luck").await.expect("taken");
    assert_eq!(
        conn.next().await,
        json!({"type": "task_failed", "task_id": "t1", "generation": 3, "error": "no luck"})
    );
}

#[tokio::test]
async fn a_refused_identify_ends_the_agent_with_the_hub_s_reason() {
    let mut hub = Hub::start().await;
    let connecting = tokio::spawn(agent(&hub).connect());
    let mut conn = timeout(WAIT, hub.conns.recv())
        .await
        .expect("a connection")
        .expect("the hub runs");
    assert_eq!(conn.next().await["type"], "identify");
    conn.send(json!({"type": "error", "error": "invalid_token", "detail": "no such token"}))
        .await;
    let error = connecting.await.expect("joined").expect_err("refused");
    assert_eq!(
        error,
        AgentError::Refused {
            hub: hub.url.clone(),
            code: ErrorCode::InvalidToken,
            detail: "no such token".into(),
        }
    );
}

#[tokio::test]
async fn a_hub_that_upgrades_but_never_answers_identify_times_out_at_that_stage() {
    let mut hub = Hub::start().await;
    let mut config = ClientConfig::new(&hub.url, "a1", "secret");
    config.identify_timeout = Duration::from_millis(200);
    let connecting = tokio::spawn(async move { Connection::connect(&config).await });
    let mut conn = timeout(WAIT, hub.conns.recv())
        .await
        .expect("a connection")
        .expect("the hub runs");
    assert_eq!(conn.next().await["type"], "identify");
    let error = timeout(WAIT, connecting)
        .await
        .expect("ends by itself")
        .expect("joined")
        .expect_err("no answer");
    assert!(
        matches!(
            error,
            crate::client::ClientError::Timeout {
                stage: crate::client::Stage::Identify,
                after_ms: 200
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn bad_settings_are_refused_before_anything_runs() {
    let error = AgentClient::builder(Vec::<String>::new(), "a1", "t")
        .connect()
        .await
        .expect_err("no hubs");
    assert_eq!(error, AgentError::NoHubs);
    let error = AgentClient::builder(["ws://ok:1/ws", "tcp://x"], "a1", "t")
        .connect()
        .await
        .expect_err("bad URL");
    assert!(error.to_string().contains("tcp://x"), "{error}");
    struct Broken;
    impl StateHook for Broken {
        fn load(&mut self) -> Result<Option<HeldTask>, String> {
            Err("corrupt".into())
        }
        fn save(&mut self, _: Option<&HeldTask>) -> Result<(), String> {
            Ok(())
        }
    }
    let error = AgentClient::builder(["ws://127.0.0.1:1/ws"], "a1", "t")
        .state_hook(Broken)
        .connect()
        .await
        .expect_err("cannot load");
    assert_eq!(error, AgentError::StateLoad("corrupt".into()));
    #[cfg(not(feature = "rustls"))]
    {
        let error = AgentClient::builder(["wss://h/ws"], "a1", "t")
            .connect()
            .await
            .expect_err("no TLS in this build");
        assert!(error.to_string().contains("rustls"), "{error}");
    }
}

#[tokio::test]
async fn stop_while_idle_ends_the_agent_at_once_and_dropping_it_stops_it_too() {
    let mut hub = Hub::start().await;
    let connecting = tokio::spawn(agent(&hub).connect());
    let (mut conn, _) = hub.accept().await;
    let mut client = connecting.await.expect("joined").expect("connected");
    let stopper = client.stopper();
    stopper.stop();
    stopper.stop();
    assert!(timeout(WAIT, client.next()).await.expect("ends").is_none());
    assert_eq!(timeout(WAIT, client.join()).await.expect("ends"), Ok(()));
    assert!(
        timeout(WAIT, conn.from_agent.recv())
            .await
            .expect("the connection closes")
            .is_none(),
        "nothing more is sent"
    );

    let connecting = tokio::spawn(agent(&hub).connect());
    let (mut conn, _) = hub.accept().await;
    drop(connecting.await.expect("joined").expect("connected"));
    assert!(timeout(WAIT, conn.from_agent.recv())
        .await
        .expect("the connection closes")
        .is_none());
}

/// The hub's URL as a coordinator advertises itself (`http://HOST:PORT`).
fn advertised(hub: &Hub) -> String {
    hub.url
        .replace("ws://", "http://")
        .trim_end_matches("/ws")
        .to_owned()
}

#[tokio::test]
async fn a_standby_s_close_sends_the_agent_to_the_leader_it_names() {
    let mut standby = Hub::start().await;
    let mut leader = Hub::start().await;
    // Only the standby is given; the leader is learnt from its close.
    let connecting = tokio::spawn(agent(&standby).connect());
    let conn = timeout(WAIT, standby.conns.recv())
        .await
        .expect("a connection in time")
        .expect("the hub runs");
    let mut conn = conn;
    assert_eq!(conn.next().await["type"], "identify");
    conn.close_with(1013, &advertised(&leader));
    let (_conn, identify) = leader.accept().await;
    assert_eq!(identify["agent_id"], "a1");
    let agent = connecting.await.expect("joined").expect("connected");
    assert_eq!(agent.connected_hub().as_deref(), Some(leader.url.as_str()));
}

#[tokio::test]
async fn an_agent_whose_leader_steps_down_goes_to_the_leader_named_and_keeps_its_task() {
    let mut old = Hub::start().await;
    let mut new = Hub::start().await;
    let connecting = tokio::spawn(agent(&old).connect());
    let (conn, _) = old.accept().await;
    let mut agent = connecting.await.expect("joined").expect("connected");
    conn.send(assign("t1", 4)).await;
    let _job = next_job(&mut agent).await;
    let mut conn = conn;
    assert_eq!(conn.next().await["type"], "task_accepted");
    // Leadership lost: 1013 naming the new leader.
    conn.close_with(1013, &advertised(&new));
    let (mut conn, identify) = new.accept().await;
    assert_eq!(
        identify["current_task"],
        json!({"task_id": "t1", "generation": 4}),
        "{identify}"
    );
    assert_eq!(conn.next().await["type"], "task_recovering");
}

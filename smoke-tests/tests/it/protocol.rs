//! Protocol v1 spoken with hand-written raw JSON frames, and bad input.

use std::time::Duration;

use coordinator_transport::client::Connection;
use serde_json::{json, Value};
use smoke_tests::harness::{Coordinator, RawSocket};
use smoke_tests::http::Client;

use crate::agents::{submit, wait_status};

async fn raw(conn: &Connection, frame: Value) {
    conn.sender()
        .send_raw(frame.to_string().into_bytes())
        .await
        .unwrap();
}

/// How long a test waits for the next frame it expects.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

async fn next(conn: &mut Connection) -> Value {
    let m = tokio::time::timeout(REPLY_TIMEOUT, conn.recv())
        .await
        .expect("a reply in time")
        .expect("open");
    serde_json::to_value(m).unwrap()
}

/// Skips frames until one of type `kind`, all within [`REPLY_TIMEOUT`].
async fn next_of(conn: &mut Connection, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let m = tokio::time::timeout_at(deadline, conn.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} frame within {REPLY_TIMEOUT:?}"))
            .expect("open");
        let m = serde_json::to_value(m).unwrap();
        if m["type"] == kind {
            return m;
        }
    }
}

/// Opens a WebSocket without identifying, within [`REPLY_TIMEOUT`].
async fn open(url: &str) -> Connection {
    tokio::time::timeout(REPLY_TIMEOUT, Connection::open(url))
        .await
        .expect("the upgrade in time")
        .expect("the upgrade")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_v1_frames_complete_fail_reject_and_recover() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("raw");
    let mut conn = open(&c.ws_url()).await;

    // Before identify: not_identified. Garbage: invalid_json. Unknown type: unknown_type.
    raw(&conn, json!({"type": "task_accepted", "task_id": "x"})).await;
    assert_eq!(next(&mut conn).await["error"], "not_identified");
    conn.sender().send_raw(b"{oops".to_vec()).await.unwrap();
    assert_eq!(next(&mut conn).await["error"], "invalid_json");
    raw(&conn, json!({"type": "dance"})).await;
    assert_eq!(next(&mut conn).await["error"], "unknown_type");

    raw(&conn, json!({"type": "identify", "agent_id": "raw", "token": token, "capabilities": [{"name": "gpu"}, "linux"], "client_type": "hub-v1", "protocol_version": 1})).await;
    assert_eq!(
        next(&mut conn).await,
        json!({"type": "identified", "agent_id": "raw"})
    );
    raw(&conn, json!({"type": "ping", "protocol_version": 1})).await;
    assert_eq!(next(&mut conn).await["type"], "pong");

    // Complete.
    let t1 = submit(
        &mut admin,
        json!({"description": "one", "needed_capabilities": ["gpu"]}),
    )
    .await;
    let assign = next_of(&mut conn, "task_assign").await;
    assert_eq!(assign["task_id"], t1.as_str());
    let generation = assign["generation"].as_u64().unwrap();
    raw(
        &conn,
        json!({"type": "task_accepted", "task_id": t1, "protocol_version": 1}),
    )
    .await;
    assert_eq!(
        next(&mut conn).await,
        json!({"type": "task_ack", "task_id": t1, "status": "accepted"})
    );
    raw(
        &conn,
        json!({"type": "task_progress", "task_id": t1, "progress": 50}),
    )
    .await;
    raw(
        &conn,
        json!({"type": "task_complete", "task_id": t1, "generation": generation + 7, "result": {}}),
    )
    .await;
    assert_eq!(next(&mut conn).await["error"], "stale_generation");
    raw(&conn, json!({"type": "task_complete", "task_id": t1, "generation": generation, "result": {"ok": true, "tokens_used": 12}})).await;
    assert_eq!(next(&mut conn).await["status"], "complete");
    let done = wait_status(&mut admin, &t1, "completed", Duration::from_secs(5)).await;
    assert_eq!(done["tokens_used"], 12);

    // Fail with `reason`, max_retries 0: dead letter.
    let t2 = submit(&mut admin, json!({"description": "two", "max_retries": 0})).await;
    let assign = next_of(&mut conn, "task_assign").await;
    raw(&conn, json!({"type": "task_failed", "task_id": t2, "generation": assign["generation"], "reason": "it broke"})).await;
    assert_eq!(next(&mut conn).await["status"], "dead_letter");
    let dead = wait_status(&mut admin, &t2, "dead_letter", Duration::from_secs(5)).await;
    assert_eq!(dead["last_error"], "it broke");

    // A task not assigned to this agent.
    raw(&conn, json!({"type": "task_accepted", "task_id": t2})).await;
    assert_eq!(next(&mut conn).await["error"], "not_assigned");

    // Reject: requeued without a retry; after the backoff it comes back.
    let t3 = submit(&mut admin, json!({"description": "three"})).await;
    let assign = next_of(&mut conn, "task_assign").await;
    raw(
        &conn,
        json!({"type": "task_rejected", "task_id": t3, "reason": "busy"}),
    )
    .await;
    assert_eq!(next(&mut conn).await["status"], "rejected");
    let again = next_of(&mut conn, "task_assign").await;
    assert_eq!(again["task_id"], t3.as_str());
    assert!(again["generation"].as_u64() > assign["generation"].as_u64());
    let t = crate::agents::task(&mut admin, &t3).await;
    assert_eq!(t["retry_count"], 0);

    // Recover on a new connection that replaces this one.
    raw(&conn, json!({"type": "task_accepted", "task_id": t3})).await;
    let mut second = open(&c.ws_url()).await;
    raw(
        &second,
        json!({"type": "identify", "agent_id": "raw", "token": token}),
    )
    .await;
    assert_eq!(next(&mut second).await["type"], "identified");
    raw(&second, json!({"type": "task_recovering", "task_id": t3})).await;
    let cont = next(&mut second).await;
    assert_eq!(cont["type"], "task_continue");
    // Taken back from the replaced connection and re-attached: fenced anew.
    assert!(cont["generation"].as_u64() > again["generation"].as_u64());
    raw(
        &second,
        json!({"type": "task_recovering", "task_id": "not-mine"}),
    )
    .await;
    assert_eq!(next(&mut second).await["type"], "task_reassign");
    raw(&second, json!({"type": "task_complete", "task_id": t3, "generation": cont["generation"], "result": "done"})).await;
    assert_eq!(next(&mut second).await["status"], "complete");
    assert_eq!(
        wait_status(&mut admin, &t3, "completed", Duration::from_secs(5)).await["result"],
        "done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_refused_and_the_socket_closed() {
    let c = Coordinator::start(&[]);
    let token = c.agent_token("a1");
    let mut conn = open(&c.ws_url()).await;
    raw(
        &conn,
        json!({"type": "identify", "agent_id": "a1", "token": "cdt_wrong"}),
    )
    .await;
    assert_eq!(next(&mut conn).await["error"], "invalid_token");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), conn.recv())
            .await
            .unwrap()
            .is_none(),
        "closed after refusal"
    );

    let mut conn = open(&c.ws_url()).await;
    raw(
        &conn,
        json!({"type": "identify", "agent_id": "someone-else", "token": token}),
    )
    .await;
    assert_eq!(next(&mut conn).await["error"], "token_agent_mismatch");
    assert!(tokio::time::timeout(Duration::from_secs(5), conn.recv())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_binary_frames_and_cut_connections_do_not_hurt_others() {
    let c = Coordinator::start(&["--max-frame-bytes", "4096"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let worker =
        crate::sim::SimAgent::start(&c, "worker", &[], crate::sim::Behaviour::Complete).await;

    // A binary frame gets an error frame and the socket stays open.
    let mut raw_client = RawSocket::connect(&c.addr).await;
    raw_client.send_frame(2, b"\x00\x01binary").await;
    let error_seen = raw_client
        .read_until(Duration::from_secs(5), |b| {
            b.windows(17).any(|w| w == b"unsupported_frame")
        })
        .await;
    assert!(
        error_seen,
        "{:?}",
        String::from_utf8_lossy(raw_client.received())
    );
    raw_client.send_frame(1, br#"{"type":"ping"}"#).await;
    let pong = raw_client
        .read_until(Duration::from_secs(5), |b| {
            b.windows(4).any(|w| w == b"pong")
        })
        .await;
    assert!(pong, "still serving after a binary frame");

    // Oversize: the client sees close code 1009.
    let mut big = RawSocket::connect(&c.addr).await;
    big.send_frame(1, &vec![b'x'; 10_000]).await;
    assert!(
        big.read_until_close(1009, Duration::from_secs(5)).await,
        "no 1009 close: {:?}",
        big.received()
    );

    // A TCP connection cut in the middle of a frame: a masked text frame header
    // announcing 100 bytes, then only 3.
    let mut cut = RawSocket::connect(&c.addr).await;
    cut.send_bytes(&[0x81, 0x80 | 100, 1, 2, 3, 4, b'a', b'b', b'c'])
        .await;
    drop(cut);

    for i in 0..5 {
        let id = submit(
            &mut admin,
            json!({"description": format!("still serving {i}")}),
        )
        .await;
        wait_status(&mut admin, &id, "completed", Duration::from_secs(10)).await;
    }
    assert_eq!(worker.completed().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_alone_reassigns_the_task() {
    // Every timer that could also move the task is far beyond the test's waits, so
    // only the disconnect can be the cause.
    let c = Coordinator::start(&[
        "--accept-timeout-ms",
        "600000",
        "--ping-interval-ms",
        "600000",
        "--sweep-interval-ms",
        "600000",
    ]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("first");
    let mut first = open(&c.ws_url()).await;
    raw(
        &first,
        json!({"type": "identify", "agent_id": "first", "token": token}),
    )
    .await;
    next_of(&mut first, "identified").await;
    let id = submit(&mut admin, json!({"description": "move me"})).await;
    let first_assign = next_of(&mut first, "task_assign").await;
    let token2 = c.agent_token("second");
    let mut second = open(&c.ws_url()).await;
    raw(
        &second,
        json!({"type": "identify", "agent_id": "second", "token": token2}),
    )
    .await;
    next_of(&mut second, "identified").await;
    drop(first);
    let assign = next_of(&mut second, "task_assign").await;
    assert_eq!(assign["task_id"], id.as_str());
    assert!(assign["generation"].as_u64() > first_assign["generation"].as_u64());
    let t = crate::agents::task(&mut admin, &id).await;
    assert_eq!(t["assigned_to"], "second");
    let reclaimed = t["history"].as_array().unwrap().iter().any(|h| {
        h["event"] == "reclaimed" && h["details"].as_str().unwrap_or("").contains("disconnected")
    });
    assert!(reclaimed, "reclaimed because of the disconnect: {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_answering_pings_is_dropped_and_its_task_moves_on() {
    let c = Coordinator::start(&["--ping-interval-ms", "200", "--pong-timeout-ms", "300"]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("mute");
    // A hand-made client that identifies and then never answers anything.
    let mut mute = RawSocket::connect(&c.addr).await;
    let identify = json!({"type": "identify", "agent_id": "mute", "token": token}).to_string();
    mute.send_frame(1, identify.as_bytes()).await;
    let id = submit(&mut admin, json!({"description": "for the mute one"})).await;
    let t = wait_status(&mut admin, &id, "assigned", Duration::from_secs(5)).await;
    assert_eq!(t["assigned_to"], "mute");
    let _other =
        crate::sim::SimAgent::start(&c, "talker", &[], crate::sim::Behaviour::Complete).await;
    let t = wait_status(&mut admin, &id, "completed", Duration::from_secs(10)).await;
    assert_eq!(t["assigned_to"], "talker");
    let reclaimed = t["history"].as_array().unwrap().iter().any(|h| {
        h["event"] == "reclaimed" && h["details"].as_str().unwrap_or("").contains("disconnected")
    });
    assert!(reclaimed, "{t}");
}

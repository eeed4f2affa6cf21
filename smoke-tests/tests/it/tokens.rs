//! Tokens against hostile use: revocation bites at once and names a kind, the
//! last admin token stays, and a socket that never identifies is closed.

use std::time::Duration;

use serde_json::json;
use smoke_tests::harness::{Backend, Coordinator, RawSocket};
use smoke_tests::http::Client;

on_both_backends!(
    revoking_an_agent_token_closes_its_socket_and_gives_its_task_to_another,
    revocation_names_a_kind_and_spares_the_last_admin_token
);

const WAIT: Duration = Duration::from_secs(10);

/// A raw socket identified as `agent_id`, having received `identified`.
async fn identified(c: &Coordinator, agent_id: &str, token: &str) -> RawSocket {
    let mut socket = RawSocket::connect(&c.addr).await;
    let identify = json!({"type": "identify", "agent_id": agent_id, "token": token});
    socket.send_frame(1, identify.to_string().as_bytes()).await;
    assert!(
        socket
            .read_until(WAIT, |b| b.windows(10).any(|w| w == b"identified"))
            .await,
        "no identified frame: {:?}",
        String::from_utf8_lossy(socket.received())
    );
    socket
}

async fn revoking_an_agent_token_closes_its_socket_and_gives_its_task_to_another(backend: Backend) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let token = c.agent_token("doomed");
    let mut doomed = identified(&c, "doomed", &token).await;
    let task = admin
        .post("/api/tasks", &json!({"description": "held when revoked"}))
        .await
        .unwrap();
    assert_eq!(task.status, 201, "{:?}", task.body);
    let task_id = task.body["task_id"].as_str().unwrap().to_owned();
    assert!(
        doomed
            .read_until(WAIT, |b| b.windows(11).any(|w| w == b"task_assign"))
            .await
    );

    let revoked = admin
        .send("DELETE", "/api/admin/tokens/doomed", None)
        .await
        .unwrap();
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(revoked.body["revoked"], 1);
    assert!(
        doomed.read_until_close(1008, WAIT).await,
        "the revoked agent's socket is closed with 1008: {:?}",
        String::from_utf8_lossy(doomed.received())
    );

    // Its task goes to another agent; the revoked token identifies no more.
    let other_token = c.agent_token("other");
    let mut other = identified(&c, "other", &other_token).await;
    let got = other
        .read_until(WAIT, |b| {
            String::from_utf8_lossy(b).contains(task_id.as_str())
        })
        .await;
    let task = admin.get(&format!("/api/tasks/{task_id}")).await.unwrap();
    assert!(
        got,
        "the task is assigned to the other agent: {:?}; log: {}",
        task.body,
        c.log()
    );
    let mut again = RawSocket::connect(&c.addr).await;
    let identify = json!({"type": "identify", "agent_id": "doomed", "token": token});
    again.send_frame(1, identify.to_string().as_bytes()).await;
    assert!(
        again
            .read_until(WAIT, |b| b.windows(13).any(|w| w == b"invalid_token"))
            .await
    );
}

async fn revocation_names_a_kind_and_spares_the_last_admin_token(backend: Backend) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    // An agent named like the bootstrap admin: revoking it leaves the admin token.
    let created = admin
        .post("/api/admin/tokens", &json!({"agent_id": "admin"}))
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{:?}", created.body);
    let revoked = admin
        .send("DELETE", "/api/admin/tokens/admin", None)
        .await
        .unwrap();
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(revoked.body["revoked"], 1, "only the agent token");
    let still = admin.get("/api/admin/tokens").await.unwrap();
    assert_eq!(still.status, 200, "the admin token still works");

    // The last admin token is not revoked over HTTP.
    let last = admin
        .send("DELETE", "/api/admin/tokens/admin?kind=admin", None)
        .await
        .unwrap();
    assert_eq!(last.status, 409, "{:?}", last.body);
    assert_eq!(admin.get("/api/admin/tokens").await.unwrap().status, 200);

    // With a second admin, the first can go.
    let second = admin
        .post("/api/admin/tokens", &json!({"admin": "ops"}))
        .await
        .unwrap();
    assert_eq!(second.status, 201);
    let gone = admin
        .send("DELETE", "/api/admin/tokens/admin?kind=admin", None)
        .await
        .unwrap();
    assert_eq!(gone.status, 200, "{:?}", gone.body);
    let mut ops = Client::new(&c.addr, second.body["token"].as_str());
    assert_eq!(ops.get("/api/admin/tokens").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_identifies_is_closed() {
    let c = Coordinator::start(&["--identify-timeout-ms", "300"]);
    let mut silent = RawSocket::connect(&c.addr).await;
    assert!(
        silent.read_until_close(1008, WAIT).await,
        "a silent socket is closed with 1008 (it answers pings, but never identifies)"
    );
}

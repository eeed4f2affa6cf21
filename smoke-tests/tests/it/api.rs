//! Every HTTP route's success and main error answers.

use serde_json::json;
use smoke_tests::harness::{Backend, Coordinator};
use smoke_tests::http::Client;

use crate::agents::task_action;

on_both_backends!(http_routes_answer_as_specified);

async fn http_routes_answer_as_specified(backend: Backend) {
    let c = Coordinator::start_on(backend, &[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let mut anon = Client::new(&c.addr, None);

    assert_eq!(anon.get("/health").await.unwrap().status, 200);
    assert_eq!(anon.get("/api/tasks").await.unwrap().status, 401);
    assert_eq!(
        Client::new(&c.addr, Some("cdt_nope"))
            .get("/api/tasks")
            .await
            .unwrap()
            .status,
        401
    );

    let r = admin
        .post("/api/tasks", &json!({"description": "first", "priority": "high", "metadata": {"k": 1}, "max_retries": 0}))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["status"], "queued");
    assert_eq!(r.body["priority"], "high");
    let id = r.body["task_id"].as_str().unwrap().to_owned();

    let r = admin
        .post(
            "/api/tasks/batch",
            &json!({"tasks": [{"description": "b1"}, {"description": "b2", "priority": "low"}]}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.body["task_ids"].as_array().unwrap().len(), 2);

    // Bad input: nothing changes and the service keeps serving.
    assert_eq!(
        admin
            .raw("POST", "/api/tasks", b"{not json".to_vec())
            .await
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        admin
            .post("/api/tasks", &json!({"description": ""}))
            .await
            .unwrap()
            .status,
        422
    );
    assert_eq!(
        admin
            .post(
                "/api/tasks",
                &json!({"description": "x", "priority": "whenever"})
            )
            .await
            .unwrap()
            .status,
        422
    );
    assert_eq!(
        admin
            .post(
                "/api/tasks/batch",
                &json!({"tasks": [{"description": "ok"}, {"nope": 1}]})
            )
            .await
            .unwrap()
            .status,
        422
    );
    assert_eq!(
        admin
            .raw("POST", "/api/tasks", vec![b' '; 2 * 1024 * 1024])
            .await
            .unwrap()
            .status,
        413
    );

    let r = admin.get(&format!("/api/tasks/{id}")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["metadata"], json!({"k": 1}));
    assert_eq!(r.body["history"][0]["event"], "submitted");
    assert_eq!(
        admin.get("/api/tasks/does-not-exist").await.unwrap().status,
        404
    );

    let r = admin.get("/api/tasks?priority=low").await.unwrap();
    assert_eq!(r.body["count"], 1);
    let r = admin.get("/api/tasks?limit=2").await.unwrap();
    assert_eq!(r.body["count"], 2);
    let next = r.body["next_after"].as_str().unwrap().to_owned();
    let r = admin
        .get(&format!("/api/tasks?limit=10&after={next}"))
        .await
        .unwrap();
    assert_eq!(r.body["count"], 1);
    assert_eq!(
        admin.get("/api/tasks?status=bogus").await.unwrap().status,
        422
    );

    let r = admin.get("/api/tasks/stats").await.unwrap();
    assert_eq!(r.body["total"], 3);
    assert_eq!(r.body["by_status"]["queued"], 3);

    // Cancel, then cancel again: 409; unknown: 404.
    assert_eq!(task_action(&mut admin, &id, "cancel").await, 200);
    assert_eq!(task_action(&mut admin, &id, "cancel").await, 409);
    assert_eq!(
        admin
            .post("/api/tasks/nope/cancel", &json!({}))
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        admin.get(&format!("/api/tasks/{id}")).await.unwrap().body["status"],
        "cancelled"
    );
    // A cancelled task is not in the dead letter.
    assert_eq!(task_action(&mut admin, &id, "retry").await, 409);

    // Roles: an agent token may use task routes but not admin ones.
    let agent_token = c.agent_token("a1");
    let mut agent = Client::new(&c.addr, Some(&agent_token));
    assert_eq!(agent.get("/api/tasks").await.unwrap().status, 200);
    assert_eq!(agent.get("/api/admin/tokens").await.unwrap().status, 403);
    let r = admin.get("/api/admin/tokens").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        !r.body.to_string().contains(&agent_token),
        "secrets are never listed"
    );
    let r = admin
        .post("/api/admin/tokens", &json!({"agent_id": "a2"}))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let a2 = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        Client::new(&c.addr, Some(&a2))
            .get("/api/tasks")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        admin
            .send("DELETE", "/api/admin/tokens/a2", None)
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        Client::new(&c.addr, Some(&a2))
            .get("/api/tasks")
            .await
            .unwrap()
            .status,
        401
    );
    assert_eq!(admin.get("/api/agents").await.unwrap().status, 200);
    assert_eq!(admin.get("/api/agents/nobody").await.unwrap().status, 404);

    let metrics = anon.get("/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .body
        .as_str()
        .unwrap()
        .contains("coordinator_tasks_submitted_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_not_ours_is_refused() {
    let dir = smoke_tests::harness::TempDir::new("not-ours");
    let db = dir.path().join("other.db");
    std::fs::write(&db, b"this is not a database at all, just text that is long enough to be a header ........................").unwrap();
    let out = std::process::Command::new(smoke_tests::harness::coordinator_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("coordinator:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn serve_once(db: &std::path::Path) -> std::process::Output {
    std::process::Command::new(smoke_tests::harness::coordinator_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_and_a_foreign_sqlite_file_are_refused_untouched() {
    let dir = smoke_tests::harness::TempDir::new("schema");
    let newer = dir.path().join("newer.db");
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.execute_batch(
            "PRAGMA application_id = 1129271122; PRAGMA user_version = 99; CREATE TABLE t (x);",
        )
        .unwrap();
    }
    let out = serve_once(&newer);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("schema version 99"), "{stderr}");

    let foreign = dir.path().join("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY); INSERT INTO accounts VALUES (7);",
        )
        .unwrap();
    }
    let out = serve_once(&foreign);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a coordinator database"));
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "the foreign database was not touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_on_the_same_database_is_refused() {
    let c = Coordinator::start(&[]);
    let out = serve_once(&c.db);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another coordinator"), "{stderr}");
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    assert_eq!(
        admin.get("/api/tasks/stats").await.unwrap().status,
        200,
        "the first one still serves"
    );
}

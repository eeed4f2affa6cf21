//! Tests of the HTTP shell's pure parts: error answers, the 404/405 of unknown
//! routes, and the JSON views.

use http_body_util::BodyExt;
use hyper::header::{CONNECTION, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::json::{agent_json, dashboard_json, stats_json, task_page_json};
use super::no_route;
use super::response::{error_response, Resp};
use super::routes::NoRoute;
use crate::server::api_error::ApiError;
use crate::server::db::{DamagedRow, Table, TaskPage};
use crate::session::{AgentInfo, AgentTally, DashboardSnapshot, MinuteSample, RecentCompletion};
use coordinator_scheduler::{Capabilities, Unroutable};

async fn body_json(response: Resp) -> Value {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a full body cannot fail")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("the body is JSON")
}

#[tokio::test]
async fn an_error_is_a_json_answer_with_its_status() {
    let response = error_response(&ApiError::not_found("no task with this id"));
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(response.headers().get(CONNECTION), None);
    assert_eq!(
        body_json(response).await,
        json!({"error": "not_found", "detail": "no task with this id"})
    );
}

#[tokio::test]
async fn a_413_closes_the_connection() {
    let err = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the body exceeds 5 bytes",
    );
    let response = error_response(&err);
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()[CONNECTION], "close");
    assert_eq!(
        body_json(response).await,
        json!({"error": "body_too_large", "detail": "the body exceeds 5 bytes"})
    );
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after_and_keeps_the_connection() {
    let response = error_response(&ApiError::queue_full("no room", 7));
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[hyper::header::RETRY_AFTER], "7");
    assert_eq!(response.headers().get(CONNECTION), None);
    assert_eq!(
        body_json(response).await,
        json!({"error": "queue_full", "detail": "no room"})
    );
}

#[tokio::test]
async fn metadata_too_large_is_413_on_a_body_read_whole_and_keeps_the_connection() {
    let response = error_response(&ApiError::metadata_too_large("task 0: too big"));
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers().get(CONNECTION), None);
    assert_eq!(
        body_json(response).await,
        json!({"error": "metadata_too_large", "detail": "task 0: too big"})
    );
}

#[tokio::test]
async fn a_408_closes_the_connection() {
    let err = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the body did not arrive within 5 ms",
    );
    let response = error_response(&err);
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.headers()[CONNECTION], "close");
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    assert_eq!(
        no_route(NoRoute::NotFound, &Method::GET, "/nothing"),
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route for GET /nothing"
        )
    );
    assert_eq!(
        no_route(NoRoute::MethodNotAllowed, &Method::PUT, "/api/tasks"),
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "/api/tasks does not take PUT"
        )
    );
}

#[test]
fn stats_list_every_status_and_lane_and_add_up_the_rows() {
    let rows = vec![
        ("queued".to_owned(), "high".to_owned(), 3),
        ("queued".to_owned(), "low".to_owned(), 2),
        ("dead_letter".to_owned(), "high".to_owned(), 1),
    ];
    assert_eq!(
        stats_json(&rows),
        json!({
            "total": 6,
            "by_status": {"scheduled": 0, "waiting": 0, "queued": 5, "assigned": 0, "working": 0, "completed": 0, "dead_letter": 1, "cancelled": 0},
            "by_priority": {"urgent": 0, "high": 4, "normal": 0, "low": 2},
            "dead_letter": 1,
        })
    );
}

#[test]
fn stats_of_no_rows_are_zeros() {
    assert_eq!(
        stats_json(&[]),
        json!({
            "total": 0,
            "by_status": {"scheduled": 0, "waiting": 0, "queued": 0, "assigned": 0, "working": 0, "completed": 0, "dead_letter": 0, "cancelled": 0},
            "by_priority": {"urgent": 0, "high": 0, "normal": 0, "low": 0},
            "dead_letter": 0,
        })
    );
}

#[test]
fn an_empty_page_has_no_next() {
    let page = TaskPage {
        tasks: vec![],
        damaged: vec![],
        next_after: None,
    };
    assert_eq!(
        task_page_json(&page),
        json!({"tasks": [], "count": 0, "next_after": null, "damaged": []})
    );
}

#[test]
fn a_page_names_its_damaged_rows_and_goes_on_after_the_last_row() {
    let page = TaskPage {
        tasks: vec![],
        damaged: vec![
            DamagedRow {
                table: Table::Tasks,
                id: Some("t7".into()),
                rowid: Some(7),
                reason: "column `history`: not a JSON list of {event, timestamp, details}".into(),
            },
            DamagedRow {
                table: Table::Tasks,
                id: None,
                rowid: Some(8),
                reason: "column `id`: expected text, found a blob".into(),
            },
        ],
        next_after: Some("t7".into()),
    };
    assert_eq!(
        task_page_json(&page),
        json!({
            "tasks": [],
            "count": 0,
            "next_after": "t7",
            "damaged": [
                {"id": "t7", "rowid": 7, "detail": "column `history`: not a JSON list of {event, timestamp, details}"},
                {"id": null, "rowid": 8, "detail": "column `id`: expected text, found a blob"},
            ],
        })
    );
}

#[tokio::test]
async fn a_damaged_task_row_is_answered_500_damaged_row_with_the_task_id() {
    let row = DamagedRow {
        table: Table::Tasks,
        id: Some("t7".into()),
        rowid: Some(7),
        reason: "column `status`: unknown status `queud`".into(),
    };
    let err = ApiError::from(crate::server::db::DbError::Damaged(row));
    assert_eq!(
        (err.status, err.code),
        (StatusCode::INTERNAL_SERVER_ERROR, "damaged_row")
    );
    let body = body_json(error_response(&err)).await;
    assert_eq!(body["error"], "damaged_row");
    assert_eq!(body["task_id"], "t7");
    assert_eq!(
        body["detail"],
        "the stored row of task \"t7\" (row 7): column `status`: unknown status `queud`; it is left as it is (`coordinator check` lists every damaged row)"
    );
}

fn agent() -> AgentInfo {
    AgentInfo {
        agent_id: "a1".to_owned(),
        name: Some("first".to_owned()),
        state: "working",
        connected: true,
        current_task: Some("t1".to_owned()),
        generation: Some(2),
        capabilities: vec!["gpu".to_owned()],
        flags: vec!["unresponsive"],
        state_since_ms: 1_000,
        awaiting_recovery: 0,
        drained: true,
        tally: AgentTally {
            completed: 3,
            failed: 1,
            busy_ms: 900,
        },
    }
}

#[test]
fn an_agent_shows_every_field() {
    assert_eq!(
        agent_json(&agent()),
        json!({
            "agent_id": "a1",
            "name": "first",
            "state": "working",
            "connected": true,
            "current_task": "t1",
            "generation": 2,
            "capabilities": ["gpu"],
            "flags": ["unresponsive"],
            "state_since": 1_000,
            "awaiting_recovery": 0,
            "drained": true,
            "completed": 3,
            "failed": 1,
            "mean_duration_ms": 300,
        })
    );
}

#[test]
fn the_dashboard_names_lanes_and_derives_throughput() {
    let snapshot = DashboardSnapshot {
        now_ms: 90_000,
        uptime_ms: 60_000,
        queue_depth: [1, 2, 3, 4],
        queued: 10,
        assigned: 1,
        working: 1,
        agents: vec![agent()],
        recent_completions: vec![RecentCompletion {
            task_id: "t0".to_owned(),
            description: Some("done".to_owned()),
            agent_id: Some("a1".to_owned()),
            duration_ms: 500,
            tokens_used: None,
            completed_at_ms: 89_000,
        }],
        completed_last_minute: 30,
        unroutable: vec![Unroutable {
            needed: Capabilities::new(["arm", "gpu"]),
            missing: Capabilities::new(["arm"]),
            n_tasks: 2,
        }],
        chart: vec![MinuteSample {
            minute_ms: 60_000,
            completed: 4,
            failed: 1,
            queue_depth: [0, 1, 2, 3],
        }],
    };
    assert_eq!(
        dashboard_json(&snapshot),
        json!({
            "uptime_ms": 60_000,
            "now": 90_000,
            "queue_depth": {"urgent": 1, "high": 2, "normal": 3, "low": 4},
            "live": {"queued": 10, "assigned": 1, "working": 1},
            "agents": [agent_json(&agent())],
            "recent_completions": [{
                "task_id": "t0",
                "description": "done",
                "agent_id": "a1",
                "duration_ms": 500,
                "tokens_used": null,
                "completed_at": 89_000,
            }],
            "throughput": {"completed_last_minute": 30, "per_second": 0.5},
            "unroutable": {"tasks": 2, "by_capabilities": [
                {"needed_capabilities": ["arm", "gpu"], "missing": ["arm"], "tasks": 2}
            ]},
            "chart": [{"minute": 60_000, "completed": 4, "failed": 1,
                "queue_depth": {"urgent": 0, "high": 1, "normal": 2, "low": 3}}],
        })
    );
}

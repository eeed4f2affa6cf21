//! Tests of the handlers' decoding and encoding: batch bodies, list queries,
//! token bodies, metric gauges.

use coordinator_queue::{Priority, Status};
use hyper::StatusCode;
use serde_json::{json, Value};

use super::ops::{health_json, metrics_gauges, role_gauges};
use super::tasks::{batch_answer, decode_batch, decode_list_query, submit_answer, MAX_BATCH};
use super::tokens::decode_identity;
use crate::server::api_error::ApiError;
use crate::server::auth::Identity;
use crate::session::{AgentInfo, NotLeader, Receipt, Role};

fn descriptions(body: &Value) -> Result<Vec<String>, ApiError> {
    Ok(decode_batch(body, "ops")?
        .into_iter()
        .map(|t| t.description)
        .collect())
}

#[test]
fn a_batch_is_an_array_or_an_object_with_tasks_kept_in_order() {
    let items = json!([{"description": "a"}, {"description": "b"}]);
    assert_eq!(
        descriptions(&items),
        Ok(vec!["a".to_owned(), "b".to_owned()])
    );
    let wrapped = json!({"tasks": items});
    assert_eq!(
        descriptions(&wrapped),
        Ok(vec!["a".to_owned(), "b".to_owned()])
    );
    let tasks = decode_batch(&wrapped, "ops").unwrap();
    assert!(tasks
        .iter()
        .all(|t| t.submitted_by.as_deref() == Some("ops")));
    assert_ne!(tasks[0].id, tasks[1].id);
}

#[test]
fn a_batch_of_another_shape_is_400() {
    let shape = ApiError::bad_body("expected {\"tasks\": [...]} or a JSON array");
    assert_eq!(descriptions(&json!("tasks")), Err(shape.clone()));
    assert_eq!(descriptions(&json!({"items": []})), Err(shape.clone()));
    assert_eq!(descriptions(&json!({"tasks": {}})), Err(shape));
}

#[test]
fn a_batch_holds_1_to_max_batch_tasks() {
    let size = ApiError::invalid_field(format!("a batch holds 1 to {MAX_BATCH} tasks"));
    assert_eq!(descriptions(&json!([])), Err(size.clone()));
    let too_many: Vec<Value> = (0..=MAX_BATCH)
        .map(|_| json!({"description": "x"}))
        .collect();
    assert_eq!(descriptions(&Value::Array(too_many)), Err(size));
    let full: Vec<Value> = (0..MAX_BATCH)
        .map(|_| json!({"description": "x"}))
        .collect();
    assert_eq!(
        descriptions(&Value::Array(full)).map(|d| d.len()),
        Ok(MAX_BATCH)
    );
}

#[test]
fn a_bad_task_in_a_batch_is_named_by_its_index() {
    let body = json!([{"description": "a"}, {"description": ""}]);
    assert_eq!(
        descriptions(&body),
        Err(ApiError::invalid_field(
            "task 1: description must not be empty"
        ))
    );
    let body = json!([{"description": "a"}, 7]);
    assert_eq!(
        descriptions(&body),
        Err(ApiError::bad_body("task 1: a task must be a JSON object"))
    );
}

#[test]
fn an_empty_list_query_asks_for_the_first_hundred() {
    let (filter, after) = decode_list_query("", None).unwrap();
    assert_eq!(
        (
            filter.status,
            filter.priority,
            filter.assigned_to,
            filter.after_seq,
            filter.limit
        ),
        (None, None, None, None, 100)
    );
    assert_eq!(after, None);
}

#[test]
fn a_list_query_sets_every_filter() {
    let (filter, after) = decode_list_query(
        "status=dead_letter&priority=high&assigned_to=agent%201&limit=1000&after=t9&other=x",
        None,
    )
    .unwrap();
    assert_eq!(
        (
            filter.status,
            filter.priority,
            filter.assigned_to.as_deref(),
            filter.limit
        ),
        (
            Some(Status::DeadLetter),
            Some(Priority::High),
            Some("agent 1"),
            1000
        )
    );
    assert_eq!(after.as_deref(), Some("t9"));
}

#[test]
fn empty_values_are_ignored_and_a_forced_status_wins() {
    let (filter, after) = decode_list_query("status=&limit=&after=", None).unwrap();
    assert_eq!((filter.status, filter.limit, after), (None, 100, None));
    let (filter, _) = decode_list_query("status=queued", Some(Status::DeadLetter)).unwrap();
    assert_eq!(filter.status, Some(Status::DeadLetter));
    let (filter, _) = decode_list_query("status=nonsense", Some(Status::DeadLetter)).unwrap();
    assert_eq!(filter.status, Some(Status::DeadLetter));
}

#[test]
fn bad_list_values_are_422() {
    let status = decode_list_query("status=nonsense", None).unwrap_err();
    assert_eq!(
        (status.status, status.code, status.detail.as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "unknown status `nonsense`"
        )
    );
    let priority = decode_list_query("priority=top", None).unwrap_err();
    assert_eq!(
        (priority.status, priority.detail.as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown priority `top` (expected urgent, high, normal or low)"
        )
    );
    let limit = ApiError::invalid_field("limit must be from 1 to 1000");
    for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten"] {
        assert_eq!(decode_list_query(bad, None).unwrap_err(), limit, "{bad}");
    }
}

#[test]
fn a_token_is_for_exactly_one_agent_or_admin() {
    assert_eq!(
        decode_identity(&json!({"agent_id": "a1"})),
        Ok(Identity::Agent("a1".to_owned()))
    );
    assert_eq!(
        decode_identity(&json!({"admin": "ops"})),
        Ok(Identity::Admin("ops".to_owned()))
    );
    let refused = ApiError::invalid_field("give exactly one of agent_id or admin, non-empty");
    for body in [
        json!({}),
        json!({"agent_id": "a1", "admin": "ops"}),
        json!({"agent_id": ""}),
        json!({"admin": ""}),
        json!({"agent_id": 7}),
        json!([]),
    ] {
        assert_eq!(decode_identity(&body), Err(refused.clone()), "{body}");
    }
}

fn agent_in(state: &'static str) -> AgentInfo {
    AgentInfo {
        agent_id: format!("{state}-agent"),
        name: None,
        state,
        connected: state != "offline",
        current_task: None,
        generation: None,
        capabilities: Vec::new(),
        flags: Vec::new(),
        state_since_ms: 0,
        awaiting_recovery: 0,
        drained: false,
        tally: Default::default(),
    }
}

#[test]
fn metric_gauges_list_task_rows_and_every_agent_state() {
    let rows = vec![("queued".to_owned(), "high".to_owned(), 3)];
    let agents = vec![agent_in("idle"), agent_in("idle"), agent_in("working")];
    assert_eq!(
        metrics_gauges(&rows, &agents),
        "# HELP coordinator_tasks Tasks in storage by status and lane.\n\
         # TYPE coordinator_tasks gauge\n\
         coordinator_tasks{status=\"queued\",priority=\"high\"} 3\n\
         # HELP coordinator_agents Known agents by state.\n\
         # TYPE coordinator_agents gauge\n\
         coordinator_agents{state=\"offline\"} 0\n\
         coordinator_agents{state=\"idle\"} 2\n\
         coordinator_agents{state=\"assigned\"} 0\n\
         coordinator_agents{state=\"working\"} 1\n\
         coordinator_agents{state=\"blocked\"} 0\n"
    );
}

#[test]
fn health_names_the_role_with_the_epoch_or_the_leader() {
    assert_eq!(
        health_json(&Role::Leader { epoch: 3 }, 7),
        json!({"status": "ok", "uptime_ms": 7, "role": "leader", "epoch": 3})
    );
    assert_eq!(
        health_json(
            &Role::Standby {
                leader_url: Some("http://10.0.0.2:4000".into())
            },
            7
        ),
        json!({"status": "ok", "uptime_ms": 7, "role": "standby", "leader": "http://10.0.0.2:4000"})
    );
    assert_eq!(
        health_json(&Role::Standby { leader_url: None }, 7)["leader"],
        Value::Null
    );
}

#[test]
fn metrics_carry_the_role_and_the_epoch() {
    let leader = role_gauges(&Role::Leader { epoch: 4 });
    assert!(leader.contains("\ncoordinator_leader 1\n"), "{leader}");
    assert!(leader.contains("\ncoordinator_epoch 4\n"), "{leader}");
    let standby = role_gauges(&Role::Standby { leader_url: None });
    assert!(standby.contains("\ncoordinator_leader 0\n"), "{standby}");
    assert!(standby.contains("\ncoordinator_epoch 0\n"), "{standby}");
}

#[test]
fn not_leader_is_503_with_the_leader_and_retry_after() {
    let err = ApiError::not_leader(NotLeader {
        leader_url: Some("http://10.0.0.2:4000".into()),
        retry_after_s: 1,
    });
    assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.retry_after_s, Some(1));
    assert_eq!(err.body()["error"], "not_leader");
    assert_eq!(err.body()["leader"], "http://10.0.0.2:4000");
    let unknown = ApiError::not_leader(NotLeader {
        leader_url: None,
        retry_after_s: 1,
    });
    assert_eq!(unknown.body()["leader"], Value::Null);
    // Other errors carry no `leader` field.
    assert_eq!(ApiError::not_found("x").body().get("leader"), None);
}

fn receipt(task_id: &str, duplicate: bool) -> Receipt {
    Receipt {
        task_id: task_id.to_owned(),
        priority: "high",
        created_at_ms: 1_700_000_000_123,
        status: "queued",
        duplicate,
    }
}

#[test]
fn a_submit_answer_is_the_receipt_with_duplicate_only_when_true() {
    let text = |r: &Receipt| String::from_utf8(submit_answer(r)).unwrap();
    assert_eq!(
        text(&receipt("t\"1", false)),
        json!({"status": "queued", "task_id": "t\"1", "priority": "high", "created_at": 1_700_000_000_123_u64})
            .to_string()
    );
    assert_eq!(
        text(&receipt("t1", true)),
        json!({"status": "queued", "task_id": "t1", "priority": "high", "created_at": 1_700_000_000_123_u64, "duplicate": true})
            .to_string()
    );
}

#[test]
fn a_batch_answer_lists_the_ids_and_each_task_in_order() {
    let receipts = [receipt("b", false), receipt("a", true)];
    assert_eq!(
        String::from_utf8(batch_answer(&receipts)).unwrap(),
        json!({
            "status": "queued",
            "count": 2,
            "task_ids": ["b", "a"],
            "tasks": [
                {"task_id": "b", "status": "queued", "duplicate": false},
                {"task_id": "a", "status": "queued", "duplicate": true},
            ],
        })
        .to_string()
    );
}

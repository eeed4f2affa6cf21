//! The task routes: submit one or a batch, list, dead letter, stats, get,
//! cancel, retry.

use coordinator_queue::{NewTask, Status};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::server::api_error::ApiError;
use crate::server::damage;
use crate::server::db::{TaskFilter, TaskPage};
use crate::server::http::ask::{ask, unexpected};
use crate::server::http::body::{query_pairs, read_json};
use crate::server::http::json::{stats_json, task_page_json};
use crate::server::http::response::{json_response, json_text_response, Resp};
use crate::server::http::AppState;
use crate::server::task_json::{parse_submission, task_json};
use crate::session::{Answer, Receipt, Request as CoreRequest};

/// Most tasks one batch submission may carry.
pub const MAX_BATCH: usize = 1_000;

/// Tasks one list answer holds unless the query says otherwise.
const DEFAULT_LIMIT: u32 = 100;

/// `POST /api/tasks`: 201 with the receipt; 200 with the first task's receipt
/// and `"duplicate": true` for a repeat of an idempotency key.
pub async fn submit(
    req: Request<Incoming>,
    state: &AppState,
    submitter: &str,
) -> Result<Resp, ApiError> {
    let body = read_json(req.into_body(), state.body_limits).await?;
    let task = parse_submission(&body, submitter)?;
    let receipts = submit_tasks(state, vec![task]).await?;
    let r = receipts
        .first()
        .ok_or_else(|| ApiError::internal("a submission of one task gave no receipt"))?;
    let code = if r.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_text_response(code, submit_answer(r)))
}

/// The body of `POST /api/tasks`'s answer: the receipt, with `"duplicate":
/// true` for a repeat of an idempotency key.
pub fn submit_answer(r: &Receipt) -> Vec<u8> {
    let body = SubmitAnswer {
        created_at: r.created_at_ms,
        duplicate: r.duplicate.then_some(true),
        priority: r.priority,
        status: r.status,
        task_id: &r.task_id,
    };
    serde_json::to_vec(&body).expect("receipts always serialize")
}

/// The body of `POST /api/tasks/batch`'s answer: the ids in order, and each
/// task's status and whether it is a repeat.
pub fn batch_answer(receipts: &[Receipt]) -> Vec<u8> {
    let body = BatchAnswer {
        count: receipts.len(),
        status: "queued",
        task_ids: receipts.iter().map(|r| r.task_id.as_str()).collect(),
        tasks: receipts
            .iter()
            .map(|r| BatchItem {
                duplicate: r.duplicate,
                status: r.status,
                task_id: &r.task_id,
            })
            .collect(),
    };
    serde_json::to_vec(&body).expect("receipts always serialize")
}

/// The answer of `POST /api/tasks`, written without building a JSON value
/// (fields in the order they always had: by name).
#[derive(Serialize)]
struct SubmitAnswer<'a> {
    created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    priority: &'static str,
    status: &'static str,
    task_id: &'a str,
}

/// The answer of `POST /api/tasks/batch` (fields by name, as above).
#[derive(Serialize)]
struct BatchAnswer<'a> {
    count: usize,
    status: &'static str,
    task_ids: Vec<&'a str>,
    tasks: Vec<BatchItem<'a>>,
}

/// One task of a [`BatchAnswer`].
#[derive(Serialize)]
struct BatchItem<'a> {
    duplicate: bool,
    status: &'static str,
    task_id: &'a str,
}

/// `POST /api/tasks/batch`: 201 with the ids, in order; all tasks or none.
/// `tasks` gives each one's status and whether it is a repeat of an
/// idempotency key (then the id is the first task's); 200 when every one is.
pub async fn submit_batch(
    req: Request<Incoming>,
    state: &AppState,
    submitter: &str,
) -> Result<Resp, ApiError> {
    let body = read_json(req.into_body(), state.body_limits).await?;
    let tasks = decode_batch(&body, submitter)?;
    let receipts = submit_tasks(state, tasks).await?;
    let code = if receipts.iter().all(|r| r.duplicate) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_text_response(code, batch_answer(&receipts)))
}

/// `GET /api/tasks`: one page of tasks (rows that cannot be decoded are left
/// out and named in `damaged`).
pub async fn list(state: &AppState, query: &str) -> Result<Resp, ApiError> {
    let (filter, after) = decode_list_query(query, None)?;
    let page = read_page(state, filter, after).await?;
    Ok(json_response(StatusCode::OK, &task_page_json(&page)))
}

/// `GET /api/tasks/dead-letter`: one page of dead-letter tasks.
pub async fn dead_letter(state: &AppState, query: &str) -> Result<Resp, ApiError> {
    let (filter, after) = decode_list_query(query, Some(Status::DeadLetter))?;
    let page = read_page(state, filter, after).await?;
    Ok(json_response(StatusCode::OK, &task_page_json(&page)))
}

/// `GET /api/tasks/stats`: counts by status and lane (count rows that cannot
/// be decoded are left out and reported).
pub async fn stats(state: &AppState) -> Result<Resp, ApiError> {
    let (counts, damaged) = state.store.count_by_status_priority().await?;
    damaged.iter().for_each(damage::report);
    Ok(json_response(StatusCode::OK, &stats_json(&counts)))
}

/// `GET /api/tasks/{id}`: the task with its history and `dependents` (the
/// tasks that depend on it), 404, or 500 `damaged_row` if its stored row
/// cannot be decoded.
pub async fn get(state: &AppState, id: String) -> Result<Resp, ApiError> {
    let task = state.store.get_task(id.clone()).await?;
    let task = task.ok_or_else(|| ApiError::not_found("no task with this id"))?;
    let dependents = state.store.dependents(id).await?;
    let mut body = task_json(&task);
    body["dependents"] = json!(dependents);
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /api/tasks/{id}/cancel`: the session decides, knowing the stored
/// status.
pub async fn cancel(state: &AppState, id: String) -> Result<Resp, ApiError> {
    let stored = state
        .store
        .get_task(id.clone())
        .await?
        .map(|task| task.status());
    let request = CoreRequest::Cancel {
        task_id: id.clone(),
        stored,
    };
    match ask(state, request).await? {
        Answer::Cancelled => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "cancelled", "task_id": id}),
        )),
        other => Err(unexpected(other)),
    }
}

/// `POST /api/tasks/{id}/retry`: the session decides (it has the stored record
/// read once every commit before the request has landed).
pub async fn retry(state: &AppState, id: String) -> Result<Resp, ApiError> {
    let request = CoreRequest::Retry {
        task_id: id.clone(),
    };
    match ask(state, request).await? {
        Answer::Retried => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "queued", "task_id": id}),
        )),
        other => Err(unexpected(other)),
    }
}

/// The tasks of a batch body: `{"tasks": [...]}` or a bare array of 1 to
/// [`MAX_BATCH`] submissions. A bad task's error names its index.
pub fn decode_batch(body: &Value, submitter: &str) -> Result<Vec<NewTask>, ApiError> {
    let items = match body {
        Value::Array(items) => items,
        Value::Object(o) => o
            .get("tasks")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::bad_body("expected {\"tasks\": [...]} or a JSON array"))?,
        _ => {
            return Err(ApiError::bad_body(
                "expected {\"tasks\": [...]} or a JSON array",
            ))
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(format!(
            "a batch holds 1 to {MAX_BATCH} tasks"
        )));
    }
    let mut tasks = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let task = parse_submission(item, submitter).map_err(|mut e| {
            e.detail = format!("task {i}: {}", e.detail);
            e
        })?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// The filter of a list query and the id named by `after`, if any. `forced`
/// fixes the status (a `status` key is then ignored); keys with empty values and
/// unknown keys are ignored.
pub fn decode_list_query(
    query: &str,
    forced: Option<Status>,
) -> Result<(TaskFilter, Option<String>), ApiError> {
    let mut filter = TaskFilter {
        status: forced,
        limit: DEFAULT_LIMIT,
        ..TaskFilter::default()
    };
    let mut after = None;
    for (key, value) in query_pairs(query) {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "status" if forced.is_none() => {
                filter.status = Some(value.parse().map_err(
                    |e: coordinator_queue::UnknownStatus| ApiError::invalid_field(e.to_string()),
                )?)
            }
            "priority" => {
                filter.priority = Some(value.parse().map_err(
                    |e: coordinator_queue::UnknownPriority| ApiError::invalid_field(e.to_string()),
                )?)
            }
            "assigned_to" => filter.assigned_to = Some(value),
            "capability" => filter.capability = Some(value),
            "q" => filter.search = Some(value),
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| ApiError::invalid_field("limit must be from 1 to 1000"))?
            }
            "after" => after = Some(value),
            _ => {}
        }
    }
    Ok((filter, after))
}

/// One page of tasks, its damaged rows reported; 422 when `after` names no
/// task.
async fn read_page(
    state: &AppState,
    filter: TaskFilter,
    after: Option<String>,
) -> Result<TaskPage, ApiError> {
    let page = state
        .store
        .list_tasks(filter, after)
        .await?
        .ok_or_else(|| ApiError::invalid_field("`after` names no task"))?;
    page.damaged.iter().for_each(damage::report);
    Ok(page)
}

async fn submit_tasks(state: &AppState, tasks: Vec<NewTask>) -> Result<Vec<Receipt>, ApiError> {
    match ask(state, CoreRequest::Submit { tasks }).await? {
        Answer::Submitted(receipts) => Ok(receipts),
        other => Err(unexpected(other)),
    }
}

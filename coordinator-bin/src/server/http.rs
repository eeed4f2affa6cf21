//! The HTTP API on hyper: routing, auth, and handlers that decode, call, encode.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use queue_core::{Priority, Status};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use transport_ws::server::{spawn_socket, SocketConfig, SocketEvent};

use crate::server::api_error::ApiError;
use crate::server::auth::{self, Authenticator, Identity};
use crate::server::db::{self, ReadPool, TaskFilter};
use crate::server::driver::Command;
use crate::server::routes::{self, Access, NoRoute, Route};
use crate::server::task_json::{parse_submission, task_json};
use crate::session::{
    AgentInfo, Answer, DashboardSnapshot, Receipt, Refusal, RefusalKind, Request as CoreRequest,
};

/// Most tasks one batch submission may carry.
pub const MAX_BATCH: usize = 1_000;

/// Everything the handlers share.
pub struct AppState {
    /// The engine's inbox.
    pub commands: mpsc::Sender<Command>,
    /// The engine's socket inbox.
    pub sockets: mpsc::Sender<SocketEvent>,
    /// Read-only database connections.
    pub reads: ReadPool,
    /// Token checks.
    pub auth: Authenticator,
    /// Limits of agent sockets.
    pub socket_config: SocketConfig,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// When the service started.
    pub started: Instant,
    /// Connection ids for sockets.
    pub next_connection: AtomicU64,
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, value: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts are valid")
}

fn error_response(err: &ApiError) -> Resp {
    let mut response = json_response(err.status, &err.body());
    if err.status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is not read: the connection cannot be reused.
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Serves one request; never fails (errors become JSON answers).
pub async fn handle(req: Request<Incoming>, state: Arc<AppState>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let result = route(req, &state, &method, &path).await;
    Ok(result.unwrap_or_else(|err| error_response(&err)))
}

async fn route(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
) -> Result<Resp, ApiError> {
    let (spec, params) = routes::resolve(method, path).map_err(|no| match no {
        NoRoute::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {method} {path}"),
        ),
        NoRoute::MethodNotAllowed => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} does not take {method}"),
        ),
    })?;
    let identity = match spec.access {
        Access::Public => None,
        Access::Token => Some(authenticate(&req, state).await?),
        Access::Admin => {
            let identity = authenticate(&req, state).await?;
            if !matches!(identity, Identity::Admin(_)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this route needs an admin token",
                ));
            }
            Some(identity)
        }
    };
    let submitter = identity
        .as_ref()
        .map(|i| i.name().to_owned())
        .unwrap_or_default();
    let param = params.first().cloned().unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_owned();
    match spec.route {
        Route::Health => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ok", "uptime_ms": state.started.elapsed().as_millis() as u64}),
        )),
        Route::Metrics => metrics(state).await,
        Route::OpenApi => Ok(Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(routes::OPENAPI.as_bytes())))
            .expect("static response parts are valid")),
        Route::Dashboard => Ok(Response::builder()
            .header(CONTENT_TYPE, "text/html; charset=utf-8")
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from_static(
                crate::server::dashboard::PAGE.as_bytes(),
            )))
            .expect("static response parts are valid")),
        Route::Ws => upgrade(req, state),
        Route::SubmitTask => {
            let body = read_json(req, state.max_body_bytes).await?;
            let task = parse_submission(&body, &submitter)?;
            let receipts = submit(state, vec![task]).await?;
            let r = receipts
                .first()
                .ok_or_else(|| ApiError::internal("a submission of one task gave no receipt"))?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"status": "queued", "task_id": r.task_id, "priority": r.priority, "created_at": r.created_at_ms}),
            ))
        }
        Route::SubmitBatch => {
            let body = read_json(req, state.max_body_bytes).await?;
            let items = match &body {
                Value::Array(items) => items,
                Value::Object(o) => o.get("tasks").and_then(Value::as_array).ok_or_else(|| {
                    ApiError::bad_body("expected {\"tasks\": [...]} or a JSON array")
                })?,
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
                let task = parse_submission(item, &submitter).map_err(|mut e| {
                    e.detail = format!("task {i}: {}", e.detail);
                    e
                })?;
                tasks.push(task);
            }
            let receipts = submit(state, tasks).await?;
            let ids: Vec<&str> = receipts.iter().map(|r| r.task_id.as_str()).collect();
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"status": "queued", "count": ids.len(), "task_ids": ids}),
            ))
        }
        Route::ListTasks => list(state, &query, None).await,
        Route::DeadLetter => list(state, &query, Some(Status::DeadLetter)).await,
        Route::TaskStats => stats(state).await,
        Route::GetTask => {
            let task = state.reads.run(move |c| db::get_task(c, &param)).await?;
            let task = task.ok_or_else(|| ApiError::not_found("no task with this id"))?;
            Ok(json_response(StatusCode::OK, &task_json(&task)))
        }
        Route::CancelTask => cancel(state, &param).await,
        Route::RetryTask => retry(state, &param).await,
        Route::ListAgents => {
            let agents: Vec<Value> = agents(state).await?.iter().map(agent_json).collect();
            Ok(json_response(StatusCode::OK, &json!({"agents": agents})))
        }
        Route::GetAgent => {
            let agents = agents(state).await?;
            let agent = agents
                .iter()
                .find(|a| a.agent_id == param)
                .ok_or_else(|| ApiError::not_found("no agent with this id has connected"))?;
            Ok(json_response(StatusCode::OK, &agent_json(agent)))
        }
        Route::DashboardState => match ask(state, CoreRequest::Dashboard).await? {
            Answer::Dashboard(snapshot) => {
                Ok(json_response(StatusCode::OK, &dashboard_json(&snapshot)))
            }
            other => Err(unexpected(other)),
        },
        Route::CreateToken => {
            let body = read_json(req, state.max_body_bytes).await?;
            let who = match (
                body.get("agent_id").and_then(Value::as_str),
                body.get("admin").and_then(Value::as_str),
            ) {
                (Some(agent), None) if !agent.is_empty() => Identity::Agent(agent.to_owned()),
                (None, Some(admin)) if !admin.is_empty() => Identity::Admin(admin.to_owned()),
                _ => {
                    return Err(ApiError::invalid_field(
                        "give exactly one of agent_id or admin, non-empty",
                    ))
                }
            };
            let token = auth::generate_token();
            let hash = auth::hash(&token);
            let (kind, name) = (who.kind(), who.name().to_owned());
            let request = CoreRequest::CreateToken {
                identity: who,
                hash,
            };
            match ask(state, request).await? {
                Answer::TokenCreated => Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"token": token, "kind": kind, "name": name}),
                )),
                other => Err(unexpected(other)),
            }
        }
        Route::ListTokens => {
            let tokens = state.reads.run(auth::list_tokens).await?;
            Ok(json_response(StatusCode::OK, &json!({"tokens": tokens})))
        }
        Route::RevokeToken => {
            let name = param.clone();
            let live_ids = state
                .reads
                .run(move |c| auth::live_token_ids(c, &name))
                .await?;
            let request = CoreRequest::RevokeTokens {
                name: param,
                live_ids,
            };
            match ask(state, request).await? {
                Answer::TokensRevoked(revoked) => {
                    state.auth.invalidate();
                    Ok(json_response(StatusCode::OK, &json!({"revoked": revoked})))
                }
                other => Err(unexpected(other)),
            }
        }
    }
}

async fn authenticate(req: &Request<Incoming>, state: &AppState) -> Result<Identity, ApiError> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization: Bearer <token>",
            )
        })?;
    state.auth.check(token).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown or revoked token",
        )
    })
}

async fn read_json(req: Request<Incoming>, limit: usize) -> Result<Value, ApiError> {
    let body = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body exceeds {limit} bytes"),
                )
            } else {
                ApiError::bad_body(format!("cannot read the body: {e}"))
            }
        })?;
    serde_json::from_slice(&body.to_bytes())
        .map_err(|e| ApiError::bad_body(format!("the body is not valid JSON: {e}")))
}

/// Asks the session; a refusal becomes the matching HTTP error.
async fn ask(state: &AppState, body: CoreRequest) -> Result<Answer, ApiError> {
    let (reply, answer) = oneshot::channel();
    state
        .commands
        .send(Command::Request { body, reply })
        .await
        .map_err(|_| ApiError::unavailable())?;
    match answer.await.map_err(|_| ApiError::unavailable())? {
        Answer::Refused(refusal) => Err(refusal_error(refusal)),
        answer => Ok(answer),
    }
}

fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal.kind {
        RefusalKind::NotFound => ApiError::not_found(refusal.detail),
        RefusalKind::Conflict => ApiError::conflict(refusal.detail),
        RefusalKind::Invalid => ApiError::invalid_field(refusal.detail),
    }
}

/// An answer of another kind than the request's: a bug, reported as such.
fn unexpected(answer: Answer) -> ApiError {
    ApiError::internal(format!("unexpected answer from the session: {answer:?}"))
}

async fn submit(
    state: &AppState,
    tasks: Vec<queue_core::NewTask>,
) -> Result<Vec<Receipt>, ApiError> {
    match ask(state, CoreRequest::Submit { tasks }).await? {
        Answer::Submitted(receipts) => Ok(receipts),
        other => Err(unexpected(other)),
    }
}

async fn agents(state: &AppState) -> Result<Vec<AgentInfo>, ApiError> {
    match ask(state, CoreRequest::Agents).await? {
        Answer::Agents(agents) => Ok(agents),
        other => Err(unexpected(other)),
    }
}

async fn cancel(state: &AppState, id: &str) -> Result<Resp, ApiError> {
    let id2 = id.to_owned();
    let stored = state
        .reads
        .run(move |c| db::get_task(c, &id2))
        .await?
        .map(|task| task.status);
    let request = CoreRequest::Cancel {
        task_id: id.to_owned(),
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

async fn retry(state: &AppState, id: &str) -> Result<Resp, ApiError> {
    let id2 = id.to_owned();
    let stored = state.reads.run(move |c| db::get_task(c, &id2)).await?;
    let request = CoreRequest::Retry {
        task_id: id.to_owned(),
        stored,
    };
    match ask(state, request).await? {
        Answer::Retried => Ok(json_response(
            StatusCode::OK,
            &json!({"status": "queued", "task_id": id}),
        )),
        other => Err(unexpected(other)),
    }
}

fn agent_json(agent: &AgentInfo) -> Value {
    json!({
        "agent_id": agent.agent_id,
        "name": agent.name,
        "state": agent.state,
        "connected": agent.connected,
        "current_task": agent.current_task,
        "generation": agent.generation,
        "capabilities": agent.capabilities,
        "flags": agent.flags,
        "state_since": agent.state_since_ms,
        "awaiting_recovery": agent.awaiting_recovery,
    })
}

fn dashboard_json(snapshot: &DashboardSnapshot) -> Value {
    let lanes: serde_json::Map<String, Value> = Priority::ALL
        .iter()
        .zip(snapshot.queue_depth)
        .map(|(p, depth)| (p.as_str().to_owned(), json!(depth)))
        .collect();
    let recent: Vec<Value> = snapshot
        .recent_completions
        .iter()
        .map(|c| {
            json!({
                "task_id": c.task_id,
                "description": c.description,
                "agent_id": c.agent_id,
                "duration_ms": c.duration_ms,
                "tokens_used": c.tokens_used,
                "completed_at": c.completed_at_ms,
            })
        })
        .collect();
    let agents: Vec<Value> = snapshot.agents.iter().map(agent_json).collect();
    let per_minute = snapshot.completed_last_minute;
    json!({
        "uptime_ms": snapshot.uptime_ms,
        "now": snapshot.now_ms,
        "queue_depth": lanes,
        "live": {
            "queued": snapshot.queued,
            "assigned": snapshot.assigned,
            "working": snapshot.working,
        },
        "agents": agents,
        "recent_completions": recent,
        "throughput": {"completed_last_minute": per_minute, "per_second": per_minute as f64 / 60.0},
    })
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn list(state: &AppState, query: &str, forced: Option<Status>) -> Result<Resp, ApiError> {
    let mut filter = TaskFilter {
        status: forced,
        limit: 100,
        ..TaskFilter::default()
    };
    let mut after = None;
    for (key, value) in query_pairs(query) {
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "status" if forced.is_none() => {
                filter.status = Some(value.parse().map_err(|e: queue_core::UnknownStatus| {
                    ApiError::invalid_field(e.to_string())
                })?)
            }
            "priority" => {
                filter.priority =
                    Some(value.parse().map_err(|e: queue_core::UnknownPriority| {
                        ApiError::invalid_field(e.to_string())
                    })?)
            }
            "assigned_to" => filter.assigned_to = Some(value),
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
    let tasks = state
        .reads
        .run(move |c| {
            if let Some(after) = after {
                match db::task_seq(c, &after)? {
                    Some(seq) => filter.after_seq = Some(seq),
                    None => return Ok(Err(ApiError::invalid_field("`after` names no task"))),
                }
            }
            Ok(Ok(db::list_tasks(c, &filter)?))
        })
        .await??;
    let next = tasks.last().map(|t| t.id.to_string());
    let items: Vec<Value> = tasks.iter().map(task_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"tasks": items, "count": items.len(), "next_after": next}),
    ))
}

async fn stats(state: &AppState) -> Result<Resp, ApiError> {
    let counts = state.reads.run(db::count_by_status_priority).await?;
    let mut by_status = serde_json::Map::new();
    let mut by_priority = serde_json::Map::new();
    for s in Status::ALL {
        by_status.insert(s.as_str().into(), json!(0));
    }
    for p in Priority::ALL {
        by_priority.insert(p.as_str().into(), json!(0));
    }
    let mut total = 0;
    let mut dead = 0;
    for (status, priority, n) in counts {
        total += n;
        if status == "dead_letter" {
            dead += n;
        }
        let s = by_status.entry(status).or_insert(json!(0));
        *s = json!(s.as_u64().unwrap_or(0) + n);
        let p = by_priority.entry(priority).or_insert(json!(0));
        *p = json!(p.as_u64().unwrap_or(0) + n);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"total": total, "by_status": by_status, "by_priority": by_priority, "dead_letter": dead}),
    ))
}

async fn metrics(state: &AppState) -> Result<Resp, ApiError> {
    let counts = state.reads.run(db::count_by_status_priority).await?;
    let mut extra = String::from("# HELP coordinator_tasks Tasks in storage by status and lane.\n# TYPE coordinator_tasks gauge\n");
    for (status, priority, n) in counts {
        extra += &format!("coordinator_tasks{{status=\"{status}\",priority=\"{priority}\"}} {n}\n");
    }
    let agents = agents(state).await?;
    extra += "# HELP coordinator_agents Known agents by state.\n# TYPE coordinator_agents gauge\n";
    for state_name in ["offline", "idle", "assigned", "working", "blocked"] {
        let n = agents.iter().filter(|a| a.state == state_name).count();
        extra += &format!("coordinator_agents{{state=\"{state_name}\"}} {n}\n");
    }
    let text = crate::server::metrics::render(&extra);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Full::new(Bytes::from(text)))
        .expect("static response parts are valid"))
}

fn upgrade(mut req: Request<Incoming>, state: &Arc<AppState>) -> Result<Resp, ApiError> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /ws needs a WebSocket upgrade",
        ));
    }
    let (response, fut) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| ApiError::bad_body(format!("bad WebSocket upgrade: {e}")))?;
    let connection = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let config = state.socket_config.clone();
    let events = state.sockets.clone();
    tokio::spawn(async move {
        match fut.await {
            Ok(ws) => {
                spawn_socket(ws, config, connection, events);
            }
            Err(e) => tracing::warn!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Full::new(Bytes::new())))
}

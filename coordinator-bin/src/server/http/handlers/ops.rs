//! The operations routes: health, metrics, the OpenAPI document, the dashboard
//! page and its state.

use bytes::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::server::api_error::ApiError;
use crate::server::damage;
use crate::server::http::ask::{agents, ask, unexpected};
use crate::server::http::json::dashboard_json;
use crate::server::http::response::{full, json_response, Resp};
use crate::server::http::{routes, AppState};
use crate::session::{AgentInfo, Answer, DashboardSnapshot, Request as CoreRequest, Role};

/// Characters of a description the dashboard shows.
const DESCRIPTION_HEAD_CHARS: u32 = 120;

/// The agent states `/metrics` counts, each reported even at zero.
const AGENT_STATES: [&str; 5] = ["offline", "idle", "assigned", "working", "blocked"];

/// `GET /health`: up, since how long, and the role: `leader` with its epoch,
/// or `standby` with the leader's URL (`null` if unknown).
pub fn health(state: &AppState) -> Resp {
    let role = state.role.borrow().clone();
    json_response(
        StatusCode::OK,
        &health_json(&role, state.started.elapsed().as_millis() as u64),
    )
}

/// The body of `/health`.
pub fn health_json(role: &Role, uptime_ms: u64) -> serde_json::Value {
    let mut body = json!({"status": "ok", "uptime_ms": uptime_ms, "role": role.as_str()});
    match role {
        Role::Leader { epoch } => body["epoch"] = json!(epoch),
        Role::Standby { leader_url } => body["leader"] = json!(leader_url),
    }
    body
}

/// The `coordinator_leader` and `coordinator_epoch` gauges, in OpenMetrics text.
pub fn role_gauges(role: &Role) -> String {
    format!(
        "# HELP coordinator_leader 1 while this coordinator is the leader, 0 while it is a standby.\n# TYPE coordinator_leader gauge\ncoordinator_leader {}\n# HELP coordinator_epoch The lease epoch led (0 while a standby).\n# TYPE coordinator_epoch gauge\ncoordinator_epoch {}\n",
        u8::from(role.is_leader()),
        role.epoch().unwrap_or(0)
    )
}

/// `GET /metrics`: the process's metrics, the role and epoch, and (on the
/// leader) task and agent gauges, as OpenMetrics text.
pub async fn metrics(state: &AppState) -> Result<Resp, ApiError> {
    let role = state.role.borrow().clone();
    let mut gauges = role_gauges(&role);
    // Tasks and agents are the leader's to count.
    if role.is_leader() {
        let (counts, damaged) = state.store.count_by_status_priority().await?;
        damaged.iter().for_each(damage::report);
        let agents = agents(state).await?;
        gauges += &metrics_gauges(&counts, &agents);
    }
    let text = crate::server::metrics::render(&gauges);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(full(text))
        .expect("static response parts are valid"))
}

/// `GET /openapi.json`: the OpenAPI document.
pub fn openapi() -> Resp {
    Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .body(full(Bytes::from_static(routes::OPENAPI.as_bytes())))
        .expect("static response parts are valid")
}

/// `GET /dashboard`: the operator page, never cached.
pub fn dashboard_page() -> Resp {
    Response::builder()
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(full(Bytes::from_static(
            crate::server::dashboard::PAGE.as_bytes(),
        )))
        .expect("static response parts are valid")
}

/// `GET /api/dashboard/state`: the session's dashboard snapshot.
pub async fn dashboard_state(state: &AppState) -> Result<Resp, ApiError> {
    match ask(state, CoreRequest::Dashboard).await? {
        Answer::Dashboard(mut snapshot) => {
            read_long_descriptions(state, &mut snapshot).await?;
            Ok(json_response(StatusCode::OK, &dashboard_json(&snapshot)))
        }
        other => Err(unexpected(other)),
    }
}

/// Recent completions whose description is long (the session keeps only its
/// length) get its first characters from storage.
async fn read_long_descriptions(
    state: &AppState,
    snapshot: &mut DashboardSnapshot,
) -> Result<(), ApiError> {
    let ids: Vec<String> = snapshot
        .recent_completions
        .iter()
        .filter(|c| c.description.is_none())
        .map(|c| c.task_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let heads = state
        .store
        .description_heads(ids, DESCRIPTION_HEAD_CHARS)
        .await?;
    for completion in &mut snapshot.recent_completions {
        if completion.description.is_none() {
            completion.description = heads
                .iter()
                .find(|(id, _)| *id == completion.task_id)
                .map(|(_, head)| head.clone());
        }
    }
    Ok(())
}

/// The `coordinator_tasks` and `coordinator_agents` gauge families, in
/// OpenMetrics text, from `(status, lane, n)` rows and the known agents.
pub fn metrics_gauges(counts: &[(String, String, u64)], agents: &[AgentInfo]) -> String {
    let mut out = String::from("# HELP coordinator_tasks Tasks in storage by status and lane.\n# TYPE coordinator_tasks gauge\n");
    for (status, priority, n) in counts {
        out += &format!("coordinator_tasks{{status=\"{status}\",priority=\"{priority}\"}} {n}\n");
    }
    out += "# HELP coordinator_agents Known agents by state.\n# TYPE coordinator_agents gauge\n";
    for state_name in AGENT_STATES {
        let n = agents.iter().filter(|a| a.state == state_name).count();
        out += &format!("coordinator_agents{{state=\"{state_name}\"}} {n}\n");
    }
    out
}

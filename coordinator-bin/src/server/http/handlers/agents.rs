//! The agent routes: list and get, from the session's view; drain and undrain.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::server::api_error::ApiError;
use crate::server::http::ask::{agents, ask, unexpected};
use crate::server::http::json::agent_json;
use crate::server::http::response::{json_response, Resp};
use crate::server::http::AppState;
use crate::session::{Answer, Request as CoreRequest};

/// `GET /api/agents`: every known agent.
pub async fn list(state: &AppState) -> Result<Resp, ApiError> {
    let agents: Vec<Value> = agents(state).await?.iter().map(agent_json).collect();
    Ok(json_response(StatusCode::OK, &json!({"agents": agents})))
}

/// `GET /api/agents/{id}`: one agent, or 404 if it never connected.
pub async fn get(state: &AppState, id: &str) -> Result<Resp, ApiError> {
    let agents = agents(state).await?;
    let agent = agents
        .iter()
        .find(|a| a.agent_id == id)
        .ok_or_else(|| ApiError::not_found("no agent with this id has connected"))?;
    Ok(json_response(StatusCode::OK, &agent_json(agent)))
}

/// `POST /api/agents/{id}/drain` (`drained`) and `/undrain`: 200 with the
/// agent's drain now, 404 if it never connected since the start.
pub async fn drain(state: &AppState, id: &str, drained: bool) -> Result<Resp, ApiError> {
    let request = CoreRequest::Drain {
        agent_id: id.to_owned(),
        drained,
    };
    match ask(state, request).await? {
        Answer::Drained { drained, changed } => Ok(json_response(
            StatusCode::OK,
            &json!({"agent_id": id, "drained": drained, "changed": changed}),
        )),
        other => Err(unexpected(other)),
    }
}

//! The admin token routes: create, list, revoke.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use crate::server::api_error::ApiError;
use crate::server::auth::{self, Identity};
use crate::server::damage;
use crate::server::http::ask::{ask, unexpected};
use crate::server::http::body::{query_pairs, read_json};
use crate::server::http::json::damaged_json;
use crate::server::http::response::{json_response, Resp};
use crate::server::http::AppState;
use crate::session::{Answer, Request as CoreRequest};

/// `POST /api/admin/tokens`: 201 with the new secret, shown this once.
pub async fn create(req: Request<Incoming>, state: &AppState) -> Result<Resp, ApiError> {
    let body = read_json(req.into_body(), state.body_limits).await?;
    let who = decode_identity(&body)?;
    let token = auth::generate_token();
    let hash = auth::hash(&token);
    let (kind, name) = (who.kind(), who.name().to_owned());
    let request = CoreRequest::CreateToken {
        identity: who.clone(),
        hash,
    };
    match ask(state, request).await? {
        Answer::TokenCreated => {
            // Known from now on (even if it was presented, and remembered as
            // unknown, already).
            state.auth.created(hash, who);
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"token": token, "kind": kind, "name": name}),
            ))
        }
        other => Err(unexpected(other)),
    }
}

/// `GET /api/admin/tokens`: every token, without secrets (rows that cannot be
/// decoded are left out and named in `damaged`).
pub async fn list(state: &AppState) -> Result<Resp, ApiError> {
    let list = state.store.list_tokens().await?;
    list.damaged.iter().for_each(damage::report);
    let damaged: Vec<Value> = list.damaged.iter().map(damaged_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"tokens": list.tokens, "damaged": damaged}),
    ))
}

/// `DELETE /api/admin/tokens/{agent_id}[?kind=admin]`: revokes the live agent
/// tokens of that agent id (or, with `kind=admin`, the admin tokens of that name,
/// never the last one), closes the sockets they authenticated, and drops the
/// cached token table.
pub async fn revoke(state: &AppState, name: String, query: &str) -> Result<Resp, ApiError> {
    let identity = match query_pairs(query).find(|(k, _)| k == "kind") {
        None => Identity::Agent(name),
        Some((_, kind)) if kind == "agent" => Identity::Agent(name),
        Some((_, kind)) if kind == "admin" => Identity::Admin(name),
        Some((_, kind)) => {
            return Err(ApiError::invalid_field(format!(
                "kind must be agent or admin, not `{kind}`"
            )))
        }
    };
    let (live_ids, live_admins) = state.store.revocation_facts(identity.clone()).await?;
    let request = CoreRequest::RevokeTokens {
        identity,
        live_ids,
        live_admins,
    };
    match ask(state, request).await? {
        Answer::TokensRevoked(revoked) => {
            state.auth.invalidate();
            Ok(json_response(StatusCode::OK, &json!({"revoked": revoked})))
        }
        other => Err(unexpected(other)),
    }
}

/// Whom a token creation body names: exactly one of a non-empty `agent_id` or
/// `admin`.
pub fn decode_identity(body: &Value) -> Result<Identity, ApiError> {
    match (
        body.get("agent_id").and_then(Value::as_str),
        body.get("admin").and_then(Value::as_str),
    ) {
        (Some(agent), None) if !agent.is_empty() => Ok(Identity::Agent(agent.to_owned())),
        (None, Some(admin)) if !admin.is_empty() => Ok(Identity::Admin(admin.to_owned())),
        _ => Err(ApiError::invalid_field(
            "give exactly one of agent_id or admin, non-empty",
        )),
    }
}

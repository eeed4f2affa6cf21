//! The admin token routes: create, list, revoke.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use crate::server::api_error::ApiError;
use crate::server::auth::{self, Identity};
use crate::server::http::ask::{ask, unexpected};
use crate::server::http::body::read_json;
use crate::server::http::response::{json_response, Resp};
use crate::server::http::AppState;
use crate::session::{Answer, Request as CoreRequest};

/// `POST /api/admin/tokens`: 201 with the new secret, shown this once.
pub async fn create(req: Request<Incoming>, state: &AppState) -> Result<Resp, ApiError> {
    let body = read_json(req.into_body(), state.max_body_bytes).await?;
    let who = decode_identity(&body)?;
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

/// `GET /api/admin/tokens`: every token, without secrets.
pub async fn list(state: &AppState) -> Result<Resp, ApiError> {
    let tokens = state.reads.run(auth::list_tokens).await?;
    Ok(json_response(StatusCode::OK, &json!({"tokens": tokens})))
}

/// `DELETE /api/admin/tokens/{agent_id}`: revokes the name's live tokens and
/// drops the cached token table.
pub async fn revoke(state: &AppState, name: String) -> Result<Resp, ApiError> {
    let read_name = name.clone();
    let live_ids = state
        .reads
        .run(move |c| auth::live_token_ids(c, &read_name))
        .await?;
    let request = CoreRequest::RevokeTokens { name, live_ids };
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

//! Asking the session from a handler: one request in, one answer out; a
//! refusal becomes the matching HTTP error.

use tokio::sync::oneshot;

use crate::server::api_error::ApiError;
use crate::server::driver::Command;
use crate::server::http::AppState;
use crate::session::{AgentInfo, Answer, Refusal, RefusalKind, Request};

/// Asks the session; a refusal becomes the matching HTTP error, a session that
/// is gone a 503.
pub async fn ask(state: &AppState, body: Request) -> Result<Answer, ApiError> {
    let (reply, answer) = oneshot::channel();
    state
        .commands
        .send(Command::Request { body, reply })
        .await
        .map_err(|_| ApiError::unavailable())?;
    match answer.await.map_err(|_| ApiError::unavailable())? {
        Answer::Refused(refusal) => Err(refusal_error(refusal)),
        Answer::NotLeader(refusal) => Err(ApiError::not_leader(refusal)),
        answer => Ok(answer),
    }
}

/// Every known agent, from the session.
pub async fn agents(state: &AppState) -> Result<Vec<AgentInfo>, ApiError> {
    match ask(state, Request::Agents).await? {
        Answer::Agents(agents) => Ok(agents),
        other => Err(unexpected(other)),
    }
}

/// An answer of another kind than the request's: a bug, reported as such.
pub fn unexpected(answer: Answer) -> ApiError {
    ApiError::internal(format!("unexpected answer from the session: {answer:?}"))
}

fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal.kind {
        RefusalKind::NotFound => ApiError::not_found(refusal.detail),
        RefusalKind::Conflict => ApiError::conflict(refusal.detail),
        RefusalKind::Invalid => ApiError::invalid_field(refusal.detail),
        RefusalKind::MetadataTooLarge => ApiError::metadata_too_large(refusal.detail),
        RefusalKind::QueueFull { retry_after_s } => {
            ApiError::queue_full(refusal.detail, retry_after_s)
        }
        RefusalKind::Internal => ApiError::internal(refusal.detail),
    }
}

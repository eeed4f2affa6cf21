//! HTTP error answers: `{"error": "<code>", "detail": "..."}` with the right status.

use hyper::StatusCode;
use serde_json::json;

/// The code of a request answered by a standby.
pub const NOT_LEADER: &str = "not_leader";

/// An error answer of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable snake_case code.
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// The task the error is about, when it is about one task's stored record.
    pub task_id: Option<String>,
    /// Seconds for the `Retry-After` header, when the client should come back later.
    pub retry_after_s: Option<u64>,
    /// For `not_leader`: how clients reach the leader (`leader` in the body,
    /// `null` when it is not known).
    pub leader: Option<String>,
}

impl ApiError {
    /// An error with the given status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            task_id: None,
            retry_after_s: None,
            leader: None,
        }
    }

    /// 413 `metadata_too_large`: a task's metadata is over the limit (the
    /// body was read whole).
    pub fn metadata_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "metadata_too_large", detail)
    }

    /// 429 `queue_full` with `Retry-After`: the queue has no room now.
    pub fn queue_full(detail: impl Into<String>, retry_after_s: u64) -> Self {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", detail)
        }
    }

    /// 503 `not_leader` with `Retry-After`: this coordinator is a standby; the
    /// body's `leader` says where the leader is (`null` if unknown).
    pub fn not_leader(refusal: crate::session::NotLeader) -> Self {
        let detail = match &refusal.leader_url {
            Some(url) => format!("this coordinator is a standby; the leader is at {url}"),
            None => {
                "this coordinator is a standby and knows no leader yet; try again later".to_owned()
            }
        };
        ApiError {
            retry_after_s: Some(refusal.retry_after_s),
            leader: refusal.leader_url,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, NOT_LEADER, detail)
        }
    }

    /// 400: the body is not what the route takes.
    pub fn bad_body(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_body", detail)
    }

    /// 422: a field has an invalid value.
    pub fn invalid_field(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail)
    }

    /// 404: no such thing.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 409: the state does not allow this.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_state", detail)
    }

    /// 500: our fault.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    /// 500 `damaged_row`: the stored record asked for cannot be decoded. It is
    /// the server's fault, not the request's, and retrying will not help until
    /// the row is repaired.
    pub fn damaged(row: &crate::server::db::DamagedRow) -> Self {
        let mut err = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "damaged_row",
            format!(
                "the stored row of {row}; it is left as it is (`coordinator check` lists every damaged row)"
            ),
        );
        err.task_id = match row.table {
            crate::server::db::Table::Tasks => row.id.clone(),
            _ => None,
        };
        err
    }

    /// 503: shutting down.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the coordinator is shutting down",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "error": self.code, "detail": self.detail });
        if let Some(task_id) = &self.task_id {
            body["task_id"] = json!(task_id);
        }
        if self.code == NOT_LEADER {
            body["leader"] = json!(self.leader);
        }
        body
    }
}

impl From<crate::server::db::DbError> for ApiError {
    fn from(err: crate::server::db::DbError) -> Self {
        match err {
            crate::server::db::DbError::Damaged(row) => {
                crate::server::damage::report(&row);
                ApiError::damaged(&row)
            }
            err => {
                tracing::error!(error = %err, "database read failed");
                ApiError::internal(err.to_string())
            }
        }
    }
}

//! Building answers: JSON, fixed documents, and errors.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::server::api_error::ApiError;

/// An answer of the API.
pub type Resp = Response<Full<Bytes>>;

/// `value` as an `application/json` answer with `status`.
pub fn json_response(status: StatusCode, value: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("static response parts are valid")
}

/// The JSON answer of an error, with `Retry-After` when the error says when to
/// come back. A body refused for its size (413 `body_too_large`) or its
/// slowness (408) also closes the connection: the rest of the body was not
/// read, so the connection cannot be reused.
pub fn error_response(err: &ApiError) -> Resp {
    let mut response = json_response(err.status, &err.body());
    let body_unread = (err.status == StatusCode::PAYLOAD_TOO_LARGE && err.code == "body_too_large")
        || err.status == StatusCode::REQUEST_TIMEOUT;
    if body_unread {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(seconds) = err.retry_after_s {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

//! Building answers: JSON, fixed documents, event streams, and errors.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body as HttpBody, Frame};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::server::api_error::ApiError;

/// The body of an answer: whole, or streamed (server-sent events).
pub type Body = Either<Full<Bytes>, StreamedBody>;

/// An answer of the API.
pub type Resp = Response<Body>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(bytes.into()))
}

/// A body whose chunks arrive on a channel; it ends when the sender is dropped.
#[derive(Debug)]
pub struct StreamedBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl StreamedBody {
    /// A body of what `chunks` delivers.
    pub fn new(chunks: mpsc::Receiver<Bytes>) -> Body {
        Either::Right(StreamedBody { chunks })
    }
}

impl HttpBody for StreamedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// JSON text already written, as an `application/json` answer with `status`.
pub fn json_text_response(status: StatusCode, body: Vec<u8>) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("static response parts are valid")
}

/// `value` as an `application/json` answer with `status`.
pub fn json_response(status: StatusCode, value: &Value) -> Resp {
    json_text_response(status, value.to_string().into_bytes())
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

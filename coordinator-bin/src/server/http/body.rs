//! Reading requests: JSON bodies under a size limit, and query strings.

use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::StatusCode;
use serde_json::Value;

use crate::server::api_error::ApiError;

/// How much of a body may arrive, and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Longest time the whole body may take to arrive.
    pub timeout: Duration,
}

/// How long a refused body is still read and dropped before the 413 leaves.
const LINGER: Duration = Duration::from_millis(500);

/// How much of a refused body is read and dropped at most (nothing of it is
/// kept): enough that a client sending a body a few times over the limit has
/// written it all and reads the 413, rather than a broken pipe.
const LINGER_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The body as JSON.
///
/// - 413 when its declared length (`Content-Length`) exceeds `limits.max_bytes`,
///   without keeping any of it (what arrives within `LINGER`, up to
///   `LINGER_MAX_BYTES`, is dropped, so the client can read the answer), or when
///   more than that arrives (the rest is not read);
/// - 408 when it has not arrived whole within `limits.timeout` (a client
///   dribbling a body cannot hold a connection; both answers close it, see
///   [`super::response::error_response`]);
/// - 400 when it cannot be read or is not JSON.
pub async fn read_json<B>(body: B, limits: BodyLimits) -> Result<Value, ApiError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds {} bytes", limits.max_bytes),
        )
    };
    let declared = body.size_hint().lower();
    if usize::try_from(declared).map_or(true, |n| n > limits.max_bytes) {
        // Refused on the declared length, nothing kept. What the client is
        // already sending is read and dropped for a moment (at most
        // `LINGER_MAX_BYTES`, at most `LINGER`), so that it gets to read the 413
        // instead of a reset.
        let _ = tokio::time::timeout(
            LINGER.min(limits.timeout),
            Limited::new(body, limits.max_bytes.max(LINGER_MAX_BYTES))
                .map_frame(|frame| frame.map_data(|_| bytes::Bytes::new()))
                .collect(),
        )
        .await;
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        limits.timeout,
        Limited::new(body, limits.max_bytes).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body did not arrive within {} ms",
                limits.timeout.as_millis()
            ),
        )
    })?;
    let body = collected.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            too_large()
        } else {
            ApiError::bad_body(format!("cannot read the body: {e}"))
        }
    })?;
    json_body(&body.to_bytes())
}

/// The bytes of a whole body as JSON; 400 when they are not JSON.
pub fn json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_body(format!("the body is not valid JSON: {e}")))
}

/// The `key=value` pairs of a query string, percent-decoded, in order. Empty
/// pairs are skipped; a pair without `=` has an empty value; the first `=`
/// splits.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (a space). A `%` not followed by two hex
/// digits stays as it is; bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
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

#[cfg(test)]
mod tests;

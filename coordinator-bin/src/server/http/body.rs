//! Reading requests: JSON bodies under a size limit, and query strings.

use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::StatusCode;
use serde_json::Value;

use crate::server::api_error::ApiError;

/// The body as JSON. 413 when it exceeds `limit_bytes` (the rest is not read),
/// 400 when it cannot be read or is not JSON.
pub async fn read_json<B>(body: B, limit_bytes: usize) -> Result<Value, ApiError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = Limited::new(body, limit_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body exceeds {limit_bytes} bytes"),
                )
            } else {
                ApiError::bad_body(format!("cannot read the body: {e}"))
            }
        })?;
    serde_json::from_slice(&body.to_bytes())
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

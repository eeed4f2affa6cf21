//! Tests of body reading and query-string decoding.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use hyper::StatusCode;
use serde_json::json;

use super::{percent_decode, query_pairs, read_json, BodyLimits};

/// Limits of `max_bytes` and a long timeout.
fn limits(max_bytes: usize) -> BodyLimits {
    BodyLimits {
        max_bytes,
        timeout: Duration::from_secs(60),
    }
}

/// A body whose bytes never come, declaring `declared` bytes if given.
struct Stalled {
    declared: Option<u64>,
    polled: bool,
}

impl Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().polled = true;
        Poll::Pending
    }

    fn size_hint(&self) -> SizeHint {
        self.declared
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

fn pairs(query: &str) -> Vec<(String, String)> {
    query_pairs(query).collect()
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

#[test]
fn percent_escapes_and_plus_are_decoded() {
    assert_eq!(percent_decode("a%20b+c"), "a b c");
    assert_eq!(percent_decode("%2B%26%3d"), "+&=");
    assert_eq!(percent_decode("%41%62"), "Ab");
    assert_eq!(percent_decode("%e2%82%AC"), "€");
    assert_eq!(percent_decode(""), "");
    assert_eq!(percent_decode("plain"), "plain");
}

#[test]
fn a_percent_without_two_hex_digits_stays_literal() {
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%4"), "%4");
    assert_eq!(percent_decode("a%4"), "a%4");
    assert_eq!(percent_decode("%zz"), "%zz");
    assert_eq!(percent_decode("%4g"), "%4g");
    assert_eq!(percent_decode("%%41"), "%A");
    assert_eq!(percent_decode("%41%"), "A%");
}

#[test]
fn bytes_that_are_not_utf8_become_replacement_characters() {
    assert_eq!(percent_decode("a%ffb"), "a\u{FFFD}b");
    assert_eq!(percent_decode("%e2%82"), "\u{FFFD}");
}

#[test]
fn query_pairs_split_on_ampersand_and_the_first_equals() {
    assert_eq!(
        pairs("status=queued&limit=5"),
        vec![pair("status", "queued"), pair("limit", "5")]
    );
    assert_eq!(pairs("a=b=c"), vec![pair("a", "b=c")]);
    assert_eq!(pairs("flag"), vec![pair("flag", "")]);
    assert_eq!(pairs("=x"), vec![pair("", "x")]);
    assert_eq!(pairs("a="), vec![pair("a", "")]);
}

#[test]
fn query_pairs_skip_empty_pairs() {
    assert_eq!(pairs(""), vec![]);
    assert_eq!(pairs("&&"), vec![]);
    assert_eq!(pairs("&a=1&&b=2&"), vec![pair("a", "1"), pair("b", "2")]);
}

#[test]
fn query_pairs_decode_keys_and_values_after_splitting() {
    assert_eq!(
        pairs("assigned%5Fto=agent%201&x%3Dy=a%26b"),
        vec![pair("assigned_to", "agent 1"), pair("x=y", "a&b")]
    );
    assert_eq!(pairs("q=a+b"), vec![pair("q", "a b")]);
}

#[tokio::test]
async fn a_json_body_within_the_limit_is_read() {
    let text = r#"{"description":"x"}"#;
    let body = Full::new(Bytes::from(text));
    assert_eq!(
        read_json(body, limits(text.len())).await,
        Ok(json!({"description": "x"}))
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let body = Full::new(Bytes::from(r#"{"description":"x"}"#));
    let err = read_json(body, limits(5)).await.unwrap_err();
    assert_eq!(
        (err.status, err.code, err.detail.as_str()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the body exceeds 5 bytes"
        )
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400() {
    let body = Full::new(Bytes::from("not json"));
    let err = read_json(body, limits(1_000)).await.unwrap_err();
    assert_eq!(
        (err.status, err.code),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );
    assert!(err.detail.starts_with("the body is not valid JSON"));
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_and_nothing_is_kept() {
    let mut body = Stalled {
        declared: Some(1_000_001),
        polled: false,
    };
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        read_json(&mut body, limits(1_000_000)),
    )
    .await
    .expect("answered without waiting for the body")
    .unwrap_err();
    assert_eq!(
        (err.status, err.code),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    // What arrives meanwhile is only dropped (so the client can read the 413);
    // a body that never comes does not hold the answer back.
    let _ = body.polled;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let body = Stalled {
        declared: Some(10),
        polled: false,
    };
    let timeout = Duration::from_millis(50);
    let limits = BodyLimits {
        max_bytes: 1_000,
        timeout,
    };
    // The outer bound only catches a read that ignores the body timeout.
    let err = tokio::time::timeout(Duration::from_secs(10), read_json(body, limits))
        .await
        .expect("the read ends")
        .unwrap_err();
    assert_eq!(
        (err.status, err.code, err.detail.as_str()),
        (
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the body did not arrive within 50 ms"
        )
    );
}

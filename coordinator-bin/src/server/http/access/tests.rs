//! Tests of bearer-token extraction.

use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::HeaderMap;

use super::bearer_token;

fn with_authorization(value: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_bytes(value).expect("a valid header value"),
    );
    headers
}

#[test]
fn the_token_after_bearer_is_taken_trimmed() {
    assert_eq!(
        bearer_token(&with_authorization(b"Bearer abc")),
        Some("abc")
    );
    assert_eq!(
        bearer_token(&with_authorization(b"Bearer   abc  ")),
        Some("abc")
    );
}

#[test]
fn no_token_without_a_bearer_header_with_text() {
    assert_eq!(bearer_token(&HeaderMap::new()), None);
    assert_eq!(bearer_token(&with_authorization(b"Basic abc")), None);
    assert_eq!(bearer_token(&with_authorization(b"bearer abc")), None);
    assert_eq!(bearer_token(&with_authorization(b"Bearer")), None);
    assert_eq!(bearer_token(&with_authorization(b"Bearer    ")), None);
    assert_eq!(bearer_token(&with_authorization(b"Bearer \xffabc")), None);
}

//! Tests of connection admission and of the answer to a connection over the limit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{answer_and_close, open_files_wanted, Limiter, OVER_CAPACITY, SPARE_OPEN_FILES};

/// How long a test waits for something it expects.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn the_open_files_limit_is_raised_to_what_the_connection_cap_needs_within_the_hard_limit() {
    let need = 10_000 + SPARE_OPEN_FILES;
    assert_eq!(open_files_wanted(1_024, 1_048_576, 10_000), Some(need));
    assert_eq!(open_files_wanted(1_024, 4_096, 10_000), Some(4_096));
    assert_eq!(open_files_wanted(1_024, u64::MAX, 10_000), Some(need));
    // Enough already, or nothing more allowed: left alone.
    assert_eq!(open_files_wanted(need, 1_048_576, 10_000), None);
    assert_eq!(open_files_wanted(65_536, 65_536, 10_000), None);
    assert_eq!(open_files_wanted(4_096, 4_096, 10_000), None);
}

#[test]
fn the_over_capacity_answer_is_a_503_whose_length_matches_its_body() {
    let text = std::str::from_utf8(OVER_CAPACITY).expect("ASCII");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some("HTTP/1.1 503 Service Unavailable"));
    let headers: Vec<(&str, &str)> = lines
        .map(|l| l.split_once(": ").expect("name: value"))
        .collect();
    assert!(headers.contains(&("retry-after", "1")));
    assert!(headers.contains(&("connection", "close")));
    assert!(headers.contains(&("content-length", body.len().to_string().as_str())));
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(json["error"], "too_many_connections");
}

#[test]
fn slots_are_taken_until_the_limit_and_given_back_on_drop() {
    let limiter = Limiter::new(2);
    let first = limiter.admit(1).expect("first slot");
    let second = limiter.admit(2).expect("second slot");
    assert_eq!(limiter.admit(3).unwrap_err(), 3);
    drop(first);
    let third = limiter.admit(4).expect("a slot given back");
    assert_eq!(limiter.admit(5).unwrap_err(), 5);
    drop((second, third));
}

#[test]
fn a_limit_of_zero_admits_one() {
    let limiter = Limiter::new(0);
    let only = limiter.admit(()).expect("one slot");
    assert!(limiter.admit(()).is_err());
    drop(only);
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (client, server)
}

#[tokio::test]
async fn a_refused_client_reads_the_whole_answer_then_the_end() {
    let (mut client, server) = pair().await;
    client
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");
    let refusal = tokio::spawn(answer_and_close(server, WAIT));
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut got))
        .await
        .expect("the answer ends in time")
        .expect("no reset");
    assert_eq!(got, OVER_CAPACITY);
    drop(client);
    tokio::time::timeout(WAIT, refusal)
        .await
        .expect("the refusal ends once the client has closed")
        .expect("no panic");
}

#[tokio::test]
async fn a_refused_client_that_never_closes_is_dropped_after_the_bound() {
    let (mut client, server) = pair().await;
    // The outer bound only catches a refusal that ignores its own.
    tokio::time::timeout(WAIT, answer_and_close(server, Duration::from_millis(200)))
        .await
        .expect("the refusal gives up after its bound");
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got).await;
    assert_eq!(got, OVER_CAPACITY);
}

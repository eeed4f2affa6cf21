//! Hostile HTTP clients (SPEC §12, "HTTP"): headers or a body sent slowly are cut
//! after `--request-timeout-ms`, a declared body over the limit is refused before
//! it is sent, a connection over `--max-connections` is answered rather than
//! dropped, and `HEAD` is answered wherever `GET` is. Raw TCP, so that the test
//! sees exactly what the server writes and when it closes.

use std::time::Duration;

use smoke_tests::harness::{wait_for, Coordinator, RawSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for an answer or for the server to close; far above the
/// short timeouts the tests configure, far below the defaults they replace.
const WAIT: Duration = Duration::from_secs(10);

/// How a read of everything the server sends ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The server closed (end of stream or reset).
    Closed,
    /// [`WAIT`] passed with the connection still open.
    StillOpen,
}

/// Reads until the server closes the connection or [`WAIT`] passes.
async fn read_to_close(stream: &mut (impl AsyncReadExt + Unpin)) -> (Vec<u8>, End) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, End::Closed),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, End::StillOpen),
        }
    }
}

/// The head (status line and headers, lower-cased) and the body of an answer.
fn split_answer(bytes: &[u8]) -> (String, Vec<u8>) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(bytes)));
    (
        String::from_utf8_lossy(&bytes[..end]).to_lowercase(),
        bytes[end + 4..].to_vec(),
    )
}

/// Writes `bytes` one at a time, `every` apart, until the connection refuses them
/// or they run out.
async fn dribble(mut write: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    for b in bytes {
        if write.write_all(&[b]).await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_slowly_is_answered_408_and_closed_after_the_request_timeout() {
    let c = Coordinator::start(&["--request-timeout-ms", "300"]);
    let stream = TcpStream::connect(&c.addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let body = format!(r#"{{"description": "slow{}"}}"#, " ".repeat(900));
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        c.admin_token,
        body.len()
    );
    write.write_all(head.as_bytes()).await.expect("head");
    // The whole body would take about a minute at this pace.
    let dribbler = tokio::spawn(dribble(write, body.into_bytes(), Duration::from_millis(60)));
    let (got, end) = read_to_close(&mut read).await;
    dribbler.abort();
    assert_eq!(end, End::Closed, "the connection is cut");
    let (head, body) = split_answer(&got);
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("request_timeout"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_slowly_are_cut_after_the_request_timeout() {
    let c = Coordinator::start(&["--request-timeout-ms", "300"]);
    let stream = TcpStream::connect(&c.addr).await.expect("connect");
    let (mut read, write) = stream.into_split();
    let mut head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1_000));
    let dribbler = tokio::spawn(dribble(write, head, Duration::from_millis(60)));
    let (got, end) = read_to_close(&mut read).await;
    dribbler.abort();
    assert_eq!(end, End::Closed, "the connection is cut");
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let c = Coordinator::start(&["--max-body-bytes", "1000"]);
    let mut stream = TcpStream::connect(&c.addr).await.expect("connect");
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 1000001\r\n\r\n",
        c.admin_token
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    // Not a byte of the body is sent: the answer must come anyway.
    let (got, end) = read_to_close(&mut stream).await;
    assert_eq!(
        end,
        End::Closed,
        "the connection is closed after the answer"
    );
    let (head, body) = split_answer(&got);
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("body_too_large"),
        "{head}"
    );
}

/// Sends `GET /health` on `stream` (kept open) and reads its whole answer.
async fn health_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"}") {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// One `GET /health` on a fresh connection: the whole answer until the server
/// closes, or what came within [`WAIT`].
async fn health_once(addr: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return String::new();
    }
    let (got, _) = read_to_close(&mut stream).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_answered_503_and_slots_come_back() {
    let c = Coordinator::start(&["--max-connections", "2"]);
    // One keep-alive HTTP connection and one WebSocket take both slots.
    let mut held = TcpStream::connect(&c.addr).await.expect("connect");
    let answer = health_on(&mut held).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let socket = RawSocket::connect(&c.addr).await;

    let answer = health_once(&c.addr).await;
    let (head, body) = split_answer(answer.as_bytes());
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("too_many_connections"),
        "{head}"
    );

    // The held connection still works.
    let answer = health_on(&mut held).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Closing the WebSocket gives its slot back.
    drop(socket);
    wait_for(WAIT, "a slot freed by the closed WebSocket", || async {
        health_once(&c.addr)
            .await
            .starts_with("HTTP/1.1 200")
            .then_some(())
    })
    .await;
    drop(held);
}

/// `HEAD path` (with `token` if given) on a fresh connection: the head and the
/// body of its answer, read until the server closes.
async fn head_request(addr: &str, path: &str, token: Option<&str>) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let auth = token.map_or_else(String::new, |t| format!("authorization: Bearer {t}\r\n"));
    let request = format!("HEAD {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let (got, end) = read_to_close(&mut stream).await;
    assert_eq!(end, End::Closed, "HEAD {path}: the server closes as asked");
    split_answer(&got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_like_get_without_a_body() {
    let c = Coordinator::start(&[]);
    for (path, token) in [
        ("/health", None),
        ("/api/tasks/stats", Some(c.admin_token.as_str())),
    ] {
        let (head, body) = head_request(&c.addr, path, token).await;
        assert!(head.starts_with("http/1.1 200"), "HEAD {path}: {head}");
        assert!(
            head.contains("content-type: application/json"),
            "HEAD {path}: {head}"
        );
        assert!(
            body.is_empty(),
            "HEAD {path}: {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    let (head, _) = head_request(&c.addr, "/api/tasks/stats", None).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
}

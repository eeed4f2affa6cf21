//! Hostile WebSocket peers (SPEC §12, "Sockets"): a peer that floods bad frames
//! and never reads costs bounded memory and is closed with 1008, error replies
//! quote at most 256 bytes of the input, invalid UTF-8 closes with 1007 and an
//! unmasked frame with 1002.

use std::time::Duration;

use smoke_tests::harness::{client_frame, Coordinator, RawSocket};

/// How long a test waits for the answer it expects.
const REPLY: Duration = Duration::from_secs(30);

/// The largest message the coordinator takes by default.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// A `/proc/PID/status` field in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading the coordinator's status: {e}"));
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {line}"));
    kb * 1024
}

/// A text frame of exactly `len` bytes whose `type` is `len - 11` x's: answered
/// with `unknown_type`, which quotes the type.
fn unknown_type_frame(len: usize) -> Vec<u8> {
    let frame = format!(r#"{{"type":"{}"}}"#, "x".repeat(len - 11));
    assert_eq!(frame.len(), len);
    frame.into_bytes()
}

/// The payloads of the whole unmasked server frames at the start of `bytes`, with
/// their opcodes.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let (len, head) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if bytes.len() < head + len {
            break;
        }
        frames.push((bytes[0] & 0x0f, &bytes[head..head + len]));
        bytes = &bytes[head + len..];
    }
    frames
}

/// Reads unmasked server frames (after the `received` bytes) until a close and
/// returns its code; `None` if the stream ends, [`REPLY`] passes without a byte,
/// or `max_bytes` arrive first.
async fn read_to_close(
    mut tcp: tokio::net::TcpStream,
    mut received: Vec<u8>,
    max_bytes: usize,
) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let mut total = received.len();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Whole frames at the front are consumed; a close ends the search.
        let mut at = 0;
        for (opcode, payload) in server_frames(&received) {
            if opcode == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
            at += frame_len(payload.len());
        }
        received.drain(..at);
        if total > max_bytes {
            return None;
        }
        match tokio::time::timeout(REPLY, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                total += n;
                received.extend_from_slice(&buf[..n]);
            }
            _ => return None,
        }
    }
}

/// The size of an unmasked server frame with a payload of `len` bytes.
fn frame_len(len: usize) -> usize {
    len + match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_large_bad_frames_without_reading_costs_bounded_memory_and_is_closed() {
    // A long pong timeout: the coordinator's writer waits that long for a peer
    // that does not read before it drops it, and the test reads only at the end.
    let c = Coordinator::start(&["--pong-timeout-ms", "120000"]);
    let pid = c.pid().expect("a running coordinator");
    let mut peer = RawSocket::connect(&c.addr).await;
    let before = status_bytes(pid, "VmRSS:");

    // 300 MiB of unidentified bad frames, each answered with an error frame the
    // peer never reads. Quoting the input whole, this kept 300 MiB of replies.
    let big = client_frame(1, &unknown_type_frame(MAX_FRAME_BYTES - 64));
    for i in 0..300 {
        tokio::time::timeout(REPLY, peer.send_bytes(&big))
            .await
            .unwrap_or_else(|_| panic!("frame {i} not taken within {REPLY:?}"));
    }

    // Then small bad frames, still without reading: 60,000 replies of about 340
    // bytes are more than the kernel's socket buffers (a few MiB) and 1,024 queued
    // frames hold, so the queue overflows and the coordinator closes the socket.
    let small = client_frame(1, &unknown_type_frame(300));
    let batch: Vec<u8> = small
        .iter()
        .copied()
        .cycle()
        .take(small.len() * 100)
        .collect();
    for i in 0..600 {
        tokio::time::timeout(REPLY, peer.send_bytes(&batch))
            .await
            .unwrap_or_else(|_| panic!("batch {i} not taken within {REPLY:?}"));
    }

    // Reading now: the replies that were queued, then the close.
    let (tcp, received) = peer.into_parts();
    let close = read_to_close(tcp, received, 64 << 20).await;
    // Every large frame was handled before that close; the peak covers them all.
    let peak = status_bytes(pid, "VmHWM:");
    let grown_mib = peak.saturating_sub(before) / (1 << 20);
    assert!(
        grown_mib < 100,
        "the coordinator's peak RSS grew by {grown_mib} MiB for one unidentified peer"
    );
    // Only small replies were queued: the 1008 came after a few MiB at most.
    assert_eq!(
        close,
        Some(1008),
        "no close 1008 within 64 MiB of replies after the outbound queue filled"
    );
    let log = c.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_quotes_at_most_256_bytes_of_the_input() {
    let c = Coordinator::start(&[]);
    let mut peer = RawSocket::connect(&c.addr).await;
    peer.send_frame(1, &unknown_type_frame(100_000)).await;
    let replied = peer
        .read_until(REPLY, |b| {
            server_frames(b).iter().any(|(opcode, _)| *opcode == 1)
        })
        .await;
    assert!(
        replied,
        "no reply: {:?}",
        String::from_utf8_lossy(peer.received())
    );
    let frames = server_frames(peer.received());
    let (_, reply) = frames
        .iter()
        .find(|(opcode, _)| *opcode == 1)
        .expect("a text frame");
    let reply: serde_json::Value = serde_json::from_slice(reply).expect("a JSON reply");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["error"], "unknown_type");
    let detail = reply["detail"].as_str().expect("a detail");
    let head: String = detail.chars().take(400).collect();
    assert!(detail.contains(&"x".repeat(256)), "{head}");
    assert!(
        !detail.contains(&"x".repeat(257)),
        "a detail of {} bytes: {head}",
        detail.len()
    );
    assert!(detail.contains("cut"), "{head}");
    // The socket is still served.
    peer.send_frame(1, br#"{"type":"ping"}"#).await;
    let pong = peer
        .read_until(REPLY, |b| b.windows(6).any(|w| w == b"\"pong\""))
        .await;
    assert!(pong, "no pong after the error reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let c = Coordinator::start(&[]);
    let mut peer = RawSocket::connect(&c.addr).await;
    peer.send_frame(1, b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}")
        .await;
    assert!(
        peer.read_until_close(1007, REPLY).await,
        "no close 1007: {:?}",
        peer.received()
    );

    // Split over two fragments, the second one breaking the character.
    let mut peer = RawSocket::connect(&c.addr).await;
    let mut first = client_frame(1, b"{\"type\":\"ping\",\"x\":\"");
    first[0] &= 0x7f; // not FIN
    peer.send_bytes(&first).await;
    peer.send_bytes(&client_frame(0, b"\xc3\"}")).await;
    assert!(
        peer.read_until_close(1007, REPLY).await,
        "no close 1007 for fragments: {:?}",
        peer.received()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let c = Coordinator::start(&[]);
    let mut peer = RawSocket::connect(&c.addr).await;
    let ping = br#"{"type":"ping"}"#;
    let mut frame = vec![0x81, ping.len() as u8];
    frame.extend_from_slice(ping);
    peer.send_bytes(&frame).await;
    assert!(
        peer.read_until_close(1002, REPLY).await,
        "no close 1002: {:?}",
        String::from_utf8_lossy(peer.received())
    );
    assert!(
        !peer.received().windows(4).any(|w| w == b"pong"),
        "an unmasked ping was answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_close_frame_is_refused_with_1002_not_echoed() {
    let c = Coordinator::start(&[]);
    let mut peer = RawSocket::connect(&c.addr).await;
    // Close 1000, unmasked: an echo would carry 1000 back.
    peer.send_bytes(&[0x88, 0x02, 0x03, 0xe8]).await;
    assert!(
        peer.read_until_close(1002, REPLY).await,
        "no close 1002: {:?}",
        peer.received()
    );
}

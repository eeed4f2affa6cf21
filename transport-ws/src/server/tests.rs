//! Tests of the socket shell over an in-memory stream: what an agent sees on the
//! wire for fragmented, oversize, binary and malformed input.

use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::protocol::decode_coordinator_message;

const WAIT: Duration = Duration::from_secs(10);
const LIMIT: usize = 64;

/// A socket served by `spawn_socket` and the agent's end of it.
async fn connect() -> (WebSocket<DuplexStream>, mpsc::Receiver<SocketEvent>) {
    connect_with(SocketConfig {
        max_frame_bytes: LIMIT,
        ..SocketConfig::default()
    })
    .await
}

/// A socket served with `config`, opened; the agent's end and the events.
async fn connect_with(
    config: SocketConfig,
) -> (WebSocket<DuplexStream>, mpsc::Receiver<SocketEvent>) {
    let (server, client) = tokio::io::duplex(1 << 16);
    let (events_tx, mut events) = mpsc::channel(16);
    let _handle = spawn_socket(
        WebSocket::after_handshake(server, Role::Server),
        config,
        7,
        events_tx,
    );
    let opened = next_event(&mut events).await;
    assert!(matches!(opened, SocketEventKind::Opened(_)), "{opened:?}");
    (WebSocket::after_handshake(client, Role::Client), events)
}

async fn next_event(events: &mut mpsc::Receiver<SocketEvent>) -> SocketEventKind {
    let event = timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the socket reports until it closes");
    assert_eq!(event.connection, 7);
    event.kind
}

async fn send(agent: &mut WebSocket<DuplexStream>, fin: bool, opcode: OpCode, payload: &[u8]) {
    let frame = Frame::new(fin, opcode, None, Payload::Owned(payload.to_vec()));
    timeout(WAIT, agent.write_frame(frame))
        .await
        .expect("written in time")
        .expect("written");
}

/// The next frame the agent receives: its opcode and payload.
async fn receive(agent: &mut WebSocket<DuplexStream>) -> (OpCode, Vec<u8>) {
    let frame = timeout(WAIT, agent.read_frame())
        .await
        .expect("a frame in time")
        .expect("a frame");
    (frame.opcode, frame.payload.to_vec())
}

fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

#[tokio::test]
async fn a_fragmented_message_with_a_pong_between_arrives_whole() {
    let (mut agent, mut events) = connect().await;
    send(&mut agent, false, OpCode::Text, br#"{"type""#).await;
    send(&mut agent, true, OpCode::Pong, b"").await;
    send(&mut agent, true, OpCode::Continuation, br#":"ping"}"#).await;
    let event = next_event(&mut events).await;
    assert!(
        matches!(event, SocketEventKind::Message(AgentMessage::Ping {})),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_fragmented_message_over_the_limit_is_closed_with_1009() {
    let (mut agent, mut events) = connect().await;
    send(&mut agent, false, OpCode::Text, &[b' '; LIMIT]).await;
    send(&mut agent, true, OpCode::Continuation, b" ").await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(close_code(&payload), CLOSE_TOO_BIG);
    // The agent's library echoes the close; the socket ends as too large.
    let event = next_event(&mut events).await;
    assert!(
        matches!(event, SocketEventKind::Closed(CloseCause::TooLarge)),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_message_of_exactly_the_limit_in_fragments_passes() {
    let (mut agent, mut events) = connect().await;
    let text = format!("{:<width$}", r#"{"type":"ping"}"#, width = LIMIT);
    let (head, tail) = text.as_bytes().split_at(10);
    send(&mut agent, false, OpCode::Text, head).await;
    send(&mut agent, true, OpCode::Continuation, tail).await;
    let event = next_event(&mut events).await;
    assert!(
        matches!(event, SocketEventKind::Message(AgentMessage::Ping {})),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_binary_frame_gets_unsupported_frame_and_the_socket_stays_open() {
    let (mut agent, mut events) = connect().await;
    send(&mut agent, true, OpCode::Binary, b"\x00\x01").await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Text);
    let reply = decode_coordinator_message(&payload).expect("an error frame");
    assert!(
        matches!(
            reply,
            CoordinatorMessage::Error {
                error: ErrorCode::UnsupportedFrame,
                ..
            }
        ),
        "{reply:?}"
    );
    send(&mut agent, true, OpCode::Text, br#"{"type":"ping"}"#).await;
    let event = next_event(&mut events).await;
    assert!(
        matches!(event, SocketEventKind::Message(AgentMessage::Ping {})),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_continuation_with_nothing_started_ends_the_socket_with_an_error() {
    let (mut agent, mut events) = connect().await;
    send(&mut agent, true, OpCode::Continuation, b"x").await;
    let event = next_event(&mut events).await;
    let SocketEventKind::Closed(CloseCause::Error(text)) = event else {
        panic!("expected an error close, got {event:?}");
    };
    assert_eq!(text, "continuation frame without a message");
}

/// A socket served with `config` over a duplex of `buffer` bytes: the agent's end
/// (raw, unsplit), the events and the server's handle.
async fn connect_raw(
    config: SocketConfig,
    buffer: usize,
) -> (DuplexStream, mpsc::Receiver<SocketEvent>, SocketHandle) {
    let (server, client) = tokio::io::duplex(buffer);
    let (events_tx, mut events) = mpsc::channel(16);
    let handle = spawn_socket(
        WebSocket::after_handshake(server, Role::Server),
        config,
        7,
        events_tx,
    );
    let opened = next_event(&mut events).await;
    assert!(matches!(opened, SocketEventKind::Opened(_)), "{opened:?}");
    (client, events, handle)
}

/// One masked client frame, as a client library writes it.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65_536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads unmasked server frames until a close and returns its code and the number
/// of frames before it.
async fn read_until_close<R: tokio::io::AsyncRead + Unpin>(read: &mut R) -> (u16, usize) {
    use tokio::io::AsyncReadExt;
    let mut frames = 0;
    loop {
        let mut head = [0u8; 2];
        timeout(WAIT, read.read_exact(&mut head))
            .await
            .expect("a frame in time")
            .expect("a frame header");
        let len = match head[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                read.read_exact(&mut ext).await.expect("length");
                u64::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                read.read_exact(&mut ext).await.expect("length");
                u64::from_be_bytes(ext)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("a small frame")];
        timeout(WAIT, read.read_exact(&mut payload))
            .await
            .expect("a payload in time")
            .expect("a payload");
        if head[0] & 0x0f == 0x8 {
            return (close_code(&payload), frames);
        }
        frames += 1;
    }
}

#[tokio::test]
async fn queued_bytes_are_counted_until_written_and_over_the_budget_is_full() {
    let config = SocketConfig {
        max_outbound_bytes: 1000,
        ..SocketConfig::default()
    };
    let (client, _events, handle) = connect_raw(config, 1 << 16).await;
    // The writer task does not run between these calls (one-thread runtime).
    assert_eq!(handle.send_encoded(vec![b' '; 400]), Ok(()));
    assert_eq!(handle.send_encoded(vec![b' '; 400]), Ok(()));
    assert_eq!(handle.queued_bytes(), 800);
    assert_eq!(handle.send_encoded(vec![b' '; 201]), Err(SendError::Full));
    assert_eq!(handle.queued_bytes(), 800, "a refused frame takes nothing");
    assert_eq!(handle.send_encoded(vec![b' '; 200]), Ok(()));
    assert_eq!(handle.queued_bytes(), 1000);
    let mut agent = WebSocket::after_handshake(client, Role::Client);
    for _ in 0..3 {
        assert_eq!(receive(&mut agent).await.0, OpCode::Text);
    }
    assert_eq!(
        handle.queued_bytes(),
        0,
        "written frames give their bytes back"
    );
    // A frame bigger than the whole budget still goes into an empty queue.
    assert_eq!(handle.send_encoded(vec![b' '; 5000]), Ok(()));
    assert_eq!(handle.send_encoded(vec![b' '; 1]), Err(SendError::Full));
    assert_eq!(receive(&mut agent).await.1.len(), 5000);
    assert_eq!(handle.queued_bytes(), 0);
}

#[tokio::test]
async fn the_frame_count_still_bounds_the_queue() {
    let config = SocketConfig {
        outbound_capacity: 2,
        ..SocketConfig::default()
    };
    let (_client, _events, handle) = connect_raw(config, 1 << 16).await;
    assert_eq!(handle.send_encoded(b"{}".to_vec()), Ok(()));
    assert_eq!(handle.send_encoded(b"{}".to_vec()), Ok(()));
    assert_eq!(handle.send_encoded(b"{}".to_vec()), Err(SendError::Full));
    assert_eq!(handle.queued_bytes(), 4);
}

#[tokio::test]
async fn a_peer_that_sends_bad_frames_and_never_reads_is_closed_with_1008() {
    let config = SocketConfig {
        max_outbound_bytes: 2048,
        ..SocketConfig::default()
    };
    // A tiny pipe: the writer blocks at once on a peer that does not read.
    let (client, mut events, _handle) = connect_raw(config, 256).await;
    let (mut read, mut write) = tokio::io::split(client);
    let bad = masked_frame(0x1, br#"{"type":"dance"}"#);
    let flood = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // Ends when the server stops reading (the test drops this task then).
        for _ in 0..100_000 {
            if write.write_all(&bad).await.is_err() {
                break;
            }
        }
    });
    let event = next_event(&mut events).await;
    assert!(
        matches!(event, SocketEventKind::Closed(CloseCause::Overflow)),
        "{event:?}"
    );
    // Reading now: the error replies that were queued, then the close.
    let (code, replies) = read_until_close(&mut read).await;
    assert_eq!(code, CLOSE_POLICY);
    assert!(replies > 0);
    flood.abort();
}

#[tokio::test]
async fn a_ping_is_answered_with_its_payload() {
    let (mut agent, _events) = connect().await;
    agent.set_auto_close(false);
    send(&mut agent, true, OpCode::Ping, b"hello").await;
    assert_eq!(receive(&mut agent).await, (OpCode::Pong, b"hello".to_vec()));
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let (mut agent, mut events) = connect().await;
    // The server is gone once its close is out: no echo.
    agent.set_auto_close(false);
    send(&mut agent, true, OpCode::Text, b"{\"type\":\"\xff\"}").await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(close_code(&payload), CLOSE_INVALID_DATA);
    let event = next_event(&mut events).await;
    assert!(
        matches!(event, SocketEventKind::Closed(CloseCause::Error(_))),
        "{event:?}"
    );
}

#[tokio::test]
async fn invalid_utf8_across_fragments_closes_with_1007() {
    let (mut agent, _events) = connect().await;
    agent.set_auto_close(false);
    send(&mut agent, false, OpCode::Text, b"{\"type\":\"").await;
    send(&mut agent, true, OpCode::Continuation, b"\xc3\"}").await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(close_code(&payload), CLOSE_INVALID_DATA);
}

#[tokio::test]
async fn a_character_split_between_fragments_is_valid() {
    let (mut agent, mut events) = connect().await;
    // The server is gone once its close is out: no echo.
    agent.set_auto_close(false);
    let text = "{\"type\":\"ping\",\"x\":\"é\"}".as_bytes();
    let split = text.iter().position(|&b| b == 0xc3).expect("é") + 1;
    send(&mut agent, false, OpCode::Text, &text[..split]).await;
    send(&mut agent, true, OpCode::Continuation, &text[split..]).await;
    let event = next_event(&mut events).await;
    assert!(
        matches!(event, SocketEventKind::Message(AgentMessage::Ping {})),
        "{event:?}"
    );
}

#[tokio::test]
async fn an_unmasked_frame_closes_with_1002() {
    let (mut agent, mut events) = connect().await;
    // The server is gone once its close is out: no echo.
    agent.set_auto_close(false);
    agent.set_auto_apply_mask(false);
    send(&mut agent, true, OpCode::Text, br#"{"type":"ping"}"#).await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(close_code(&payload), CLOSE_PROTOCOL);
    let event = next_event(&mut events).await;
    let SocketEventKind::Closed(CloseCause::Error(text)) = event else {
        panic!("expected an error close, got {event:?}");
    };
    assert_eq!(text, "unmasked client frame");
}

#[tokio::test]
async fn an_unmasked_ping_closes_with_1002_and_gets_no_pong() {
    let (mut agent, _events) = connect().await;
    agent.set_auto_close(false);
    agent.set_auto_apply_mask(false);
    send(&mut agent, true, OpCode::Ping, b"x").await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(close_code(&payload), CLOSE_PROTOCOL);
}

#[tokio::test]
async fn an_unmasked_close_is_refused_with_1002_not_echoed() {
    let (mut agent, mut events) = connect().await;
    agent.set_auto_close(false);
    agent.set_auto_apply_mask(false);
    send(&mut agent, true, OpCode::Close, b"\x03\xe8bye").await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(close_code(&payload), CLOSE_PROTOCOL);
    let event = next_event(&mut events).await;
    assert!(
        matches!(&event, SocketEventKind::Closed(CloseCause::Error(text)) if text == "unmasked client frame"),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_close_is_echoed_with_its_payload() {
    let (mut agent, mut events) = connect().await;
    agent.set_auto_close(false);
    send(&mut agent, true, OpCode::Close, b"\x0f\xa0done").await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(payload, b"\x0f\xa0done");
    let event = next_event(&mut events).await;
    assert!(
        matches!(event, SocketEventKind::Closed(CloseCause::Peer)),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_close_with_a_reserved_code_or_a_bad_reason_is_refused() {
    for (payload, code) in [
        (&b"\x03\xed"[..], CLOSE_PROTOCOL),
        (&b"\x03"[..], CLOSE_PROTOCOL),
        (&b"\x03\xe8\xc3"[..], CLOSE_INVALID_DATA),
    ] {
        let (mut agent, _events) = connect().await;
        agent.set_auto_close(false);
        send(&mut agent, true, OpCode::Close, payload).await;
        let (opcode, reply) = receive(&mut agent).await;
        assert_eq!(opcode, OpCode::Close);
        assert_eq!(close_code(&reply), code, "for {payload:?}");
    }
}

#[tokio::test]
async fn a_broken_fragment_sequence_closes_with_1002() {
    let (mut agent, _events) = connect().await;
    agent.set_auto_close(false);
    send(&mut agent, true, OpCode::Continuation, b"x").await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(close_code(&payload), CLOSE_PROTOCOL);
}

#[tokio::test]
async fn an_error_reply_quotes_at_most_256_bytes_of_a_large_frame() {
    let config = SocketConfig {
        max_frame_bytes: 1 << 20,
        ..SocketConfig::default()
    };
    let (client, _events, _handle) = connect_raw(config, 1 << 16).await;
    let mut agent = WebSocket::after_handshake(client, Role::Client);
    let frame = format!(r#"{{"type":"{}"}}"#, "x".repeat(500_000));
    send(&mut agent, true, OpCode::Text, frame.as_bytes()).await;
    let (opcode, payload) = receive(&mut agent).await;
    assert_eq!(opcode, OpCode::Text);
    assert!(payload.len() < 512, "a reply of {} bytes", payload.len());
    let reply = decode_coordinator_message(&payload).expect("an error frame");
    let CoordinatorMessage::Error {
        error: ErrorCode::UnknownType,
        detail: Some(detail),
        ..
    } = reply
    else {
        panic!("expected unknown_type, got {reply:?}");
    };
    let head: String = detail.chars().take(400).collect();
    assert!(detail.contains(&"x".repeat(256)), "{head}");
    assert!(!detail.contains(&"x".repeat(257)), "{} bytes", detail.len());
    assert!(detail.contains("cut"), "{head}");
}

#[tokio::test(start_paused = true)]
async fn a_peer_is_dropped_a_whole_silence_after_its_last_frame_not_its_first() {
    let (mut agent, mut events) = connect_with(SocketConfig {
        ping_interval: Duration::from_secs(1),
        pong_timeout: Duration::from_secs(1),
        ..SocketConfig::default()
    })
    .await;
    // Frames every 1.5 s (virtual time) for 7.5 s, well past the first
    // 2-second silence: each one moves the deadline on.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        send(&mut agent, true, OpCode::Ping, b"here").await;
    }
    assert!(
        events.try_recv().is_err(),
        "the socket is still open and reported nothing"
    );
    // Just short of a whole silence after the last frame it is still open.
    tokio::time::sleep(Duration::from_millis(1_900)).await;
    assert!(
        events.try_recv().is_err(),
        "the socket stays open until a whole silence has passed since its last frame"
    );
    let closed = next_event(&mut events).await;
    assert!(
        matches!(closed, SocketEventKind::Closed(CloseCause::Timeout)),
        "{closed:?}"
    );
}

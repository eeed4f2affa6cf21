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
    let (server, client) = tokio::io::duplex(1 << 16);
    let config = SocketConfig {
        max_frame_bytes: LIMIT,
        ..SocketConfig::default()
    };
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

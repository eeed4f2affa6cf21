//! The coordinator side of one agent's WebSocket: a reader task that decodes
//! frames into [`SocketEvent`]s and a writer task fed by a bounded queue.

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::assembler::{Assembled, FrameAssembler, FrameKind};
use crate::protocol::{decode_agent_message, AgentMessage, CoordinatorMessage, ErrorCode};

/// WebSocket close code: the server is going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code: policy violation (bad token, replaced connection, slow consumer).
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code: the message is too big.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// How long a closing connection may take to answer our close frame.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// Limits and heartbeats of one agent socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// Largest accepted message; bigger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// How often a WebSocket ping is sent.
    pub ping_interval: Duration,
    /// A connection silent for `ping_interval + pong_timeout` is dropped.
    pub pong_timeout: Duration,
    /// Outbound frames queued per connection before it counts as a slow consumer.
    pub outbound_capacity: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            max_frame_bytes: 1 << 20,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            outbound_capacity: 1024,
        }
    }
}

/// Why a socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// The peer closed it (close frame or end of stream).
    Peer,
    /// Nothing arrived within `ping_interval + pong_timeout`.
    Timeout,
    /// A message over `max_frame_bytes` arrived.
    TooLarge,
    /// We closed it (through [`SocketHandle::close`]).
    Local,
    /// A protocol or I/O error.
    Error(String),
}

/// What a socket reports to its owner.
#[derive(Debug)]
pub enum SocketEventKind {
    /// The socket is open; always the first event. Send to it with this handle.
    Opened(SocketHandle),
    /// A well-formed message from the agent.
    Message(AgentMessage),
    /// The socket ended; nothing more will come from it.
    Closed(CloseCause),
}

/// An event from connection `connection`.
#[derive(Debug)]
pub struct SocketEvent {
    /// The id the owner gave the connection in [`spawn_socket`].
    pub connection: u64,
    /// What happened.
    pub kind: SocketEventKind,
}

/// The outbound queue of the connection is full or the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The agent does not read fast enough; the owner should close the connection.
    #[error("the connection's outbound queue is full")]
    Full,
    /// The connection has ended.
    #[error("the connection is closed")]
    Closed,
}

enum Outgoing {
    Text(Vec<u8>),
    Pong(Vec<u8>),
    CloseEcho(Vec<u8>),
}

/// Sends frames to one agent socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SocketHandle {
    connection: u64,
    outbound: mpsc::Sender<Outgoing>,
    close: Arc<watch::Sender<Option<(u16, String)>>>,
    writer_done: watch::Receiver<bool>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Outgoing::Pong(_) => f.write_str("Pong"),
            Outgoing::CloseEcho(_) => f.write_str("CloseEcho"),
        }
    }
}

impl SocketHandle {
    /// The connection's id.
    pub fn connection(&self) -> u64 {
        self.connection
    }

    /// Queues a message without waiting.
    pub fn send(&self, message: &CoordinatorMessage) -> Result<(), SendError> {
        self.send_encoded(message.encode())
    }

    /// Queues an already encoded JSON text frame without waiting.
    pub fn send_encoded(&self, text: Vec<u8>) -> Result<(), SendError> {
        self.outbound
            .try_send(Outgoing::Text(text))
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })
    }

    /// Waits until the writer has stopped (after a close, everything queued and the
    /// close frame have been written).
    pub async fn closed(&self) {
        let mut done = self.writer_done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Sends a close frame with `code` after the frames already queued and ends the
    /// connection. Works even when the outbound queue is full.
    pub fn close(&self, code: u16, reason: &str) {
        self.close.send_replace(Some((code, reason.to_owned())));
    }
}

/// Starts the reader and writer tasks of an upgraded agent socket.
///
/// Decoded messages and the final close are sent to `events`; malformed frames
/// are answered with an `error` frame right here and never reach the owner.
pub fn spawn_socket<S>(
    mut ws: WebSocket<S>,
    config: SocketConfig,
    connection: u64,
    events: mpsc::Sender<SocketEvent>,
) -> SocketHandle
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Frames a little over the limit are read whole and refused with 1009; only
    // absurd ones hit the library's hard cap, which cannot answer politely.
    ws.set_max_message_size(config.max_frame_bytes.saturating_mul(4).max(64 * 1024));
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    // Writes go through a buffer flushed once the outbound queue is drained, so a
    // burst of frames costs one system call.
    let (read, write) = ws.split(|stream| {
        let (r, w) = tokio::io::split(stream);
        (r, tokio::io::BufWriter::with_capacity(32 * 1024, w))
    });
    let (tx, rx) = mpsc::channel(config.outbound_capacity.max(1));
    let (close_tx, close_rx) = watch::channel(None);
    let (done_tx, done_rx) = watch::channel(false);
    let handle = SocketHandle {
        connection,
        outbound: tx,
        close: Arc::new(close_tx),
        writer_done: done_rx,
    };
    tokio::spawn(async move {
        write_loop(write, rx, close_rx, config.ping_interval).await;
        let _ = done_tx.send(true);
    });
    tokio::spawn(read_loop(read, handle.clone(), config.clone(), events));
    handle
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: fastwebsockets::WebSocketWrite<W>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut close_rx: watch::Receiver<Option<(u16, String)>>,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    loop {
        let result = tokio::select! {
            biased;
            changed = close_rx.changed() => {
                let request = if changed.is_ok() { close_rx.borrow().clone() } else { None };
                // Flush what is queued, then say goodbye.
                while let Ok(item) = rx.try_recv() {
                    if write_one(&mut write, item).await.is_err() {
                        return;
                    }
                }
                if let Some((code, reason)) = request {
                    let _ = write.write_frame(Frame::close(code, reason.as_bytes())).await;
                }
                let _ = write.flush().await;
                return;
            }
            item = rx.recv() => match item {
                Some(mut item) => {
                    let mut result = Ok(());
                    // Write everything already queued, then flush once.
                    loop {
                        let echo = matches!(item, Outgoing::CloseEcho(_));
                        result = result.and(write_one(&mut write, item).await);
                        if echo || result.is_err() {
                            let _ = write.flush().await;
                            return;
                        }
                        match rx.try_recv() {
                            Ok(next) => item = next,
                            Err(_) => break,
                        }
                    }
                    result
                }
                None => {
                    let _ = write.flush().await;
                    return;
                }
            },
            _ = ping.tick() => {
                write.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]))).await
            }
        };
        if result.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}

async fn write_one<W: AsyncWrite + Unpin>(
    write: &mut fastwebsockets::WebSocketWrite<W>,
    item: Outgoing,
) -> Result<(), WebSocketError> {
    match item {
        Outgoing::Text(text) => write.write_frame(Frame::text(Payload::Owned(text))).await,
        Outgoing::Pong(payload) => {
            write
                .write_frame(Frame::pong(Payload::Owned(payload)))
                .await
        }
        Outgoing::CloseEcho(payload) => {
            write
                .write_frame(Frame::close_raw(Payload::Owned(payload)))
                .await
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: fastwebsockets::WebSocketRead<R>,
    handle: SocketHandle,
    config: SocketConfig,
    events: mpsc::Sender<SocketEvent>,
) {
    let silence = config.ping_interval + config.pong_timeout;
    let mut deadline = Instant::now() + silence;
    let mut assembler = FrameAssembler::new(config.max_frame_bytes);
    let mut closing: Option<Instant> = None;
    let opened = SocketEvent {
        connection: handle.connection,
        kind: SocketEventKind::Opened(handle.clone()),
    };
    if events.send(opened).await.is_err() {
        handle.close(CLOSE_GOING_AWAY, "shutting down");
        return;
    }
    let outbound = handle.outbound.clone();
    let mut obligated = move |frame: Frame<'_>| {
        let item = match frame.opcode {
            OpCode::Close => Outgoing::CloseEcho(frame.payload.to_vec()),
            _ => Outgoing::Pong(frame.payload.to_vec()),
        };
        let outbound = outbound.clone();
        async move {
            // A full queue means a slow consumer; the owner closes it anyway.
            let _ = outbound.try_send(item);
            Ok::<(), std::convert::Infallible>(())
        }
    };
    let cause = loop {
        let wait_until = closing.unwrap_or(deadline);
        let frame = tokio::select! {
            frame = read.read_frame(&mut obligated) => frame,
            _ = sleep_until(wait_until) => {
                if closing.is_some() {
                    break CloseCause::TooLarge;
                }
                handle.close(CLOSE_GOING_AWAY, "no ping answered in time");
                break CloseCause::Timeout;
            }
        };
        deadline = Instant::now() + silence;
        let frame = match frame {
            Ok(frame) => frame,
            Err(WebSocketError::FrameTooLarge) => {
                handle.close(CLOSE_TOO_BIG, "message too big");
                break CloseCause::TooLarge;
            }
            Err(WebSocketError::UnexpectedEOF) | Err(WebSocketError::ConnectionClosed) => {
                break if closing.is_some() {
                    CloseCause::TooLarge
                } else {
                    CloseCause::Peer
                };
            }
            Err(err) => {
                break if closing.is_some() {
                    CloseCause::TooLarge
                } else {
                    CloseCause::Error(err.to_string())
                }
            }
        };
        let assembled = assembler.handle_frame(frame_kind(frame.opcode), frame.fin, &frame.payload);
        let message = match assembled {
            Ok(Assembled::Message(message)) => message,
            Ok(Assembled::Incomplete | Assembled::Ignored) => continue,
            Ok(Assembled::Close) => {
                break if closing.is_some() {
                    CloseCause::TooLarge
                } else {
                    CloseCause::Peer
                };
            }
            Ok(Assembled::Binary) => {
                let reply = CoordinatorMessage::error(
                    ErrorCode::UnsupportedFrame,
                    None,
                    "binary frames are not supported; send JSON text",
                );
                let _ = handle.send(&reply);
                continue;
            }
            Ok(Assembled::TooLarge) => {
                // Wait (bounded) for the peer's close; the assembler ignores the rest.
                handle.close(CLOSE_TOO_BIG, "message too big");
                closing = Some(Instant::now() + CLOSE_DRAIN);
                continue;
            }
            Err(err) => break CloseCause::Error(err.to_string()),
        };
        match decode_agent_message(&message) {
            Ok(message) => {
                let event = SocketEvent {
                    connection: handle.connection,
                    kind: SocketEventKind::Message(message),
                };
                if events.send(event).await.is_err() {
                    break CloseCause::Local;
                }
            }
            Err(err) => {
                let _ = handle.send(&err.to_message());
            }
        }
    };
    let _ = events
        .send(SocketEvent {
            connection: handle.connection,
            kind: SocketEventKind::Closed(cause),
        })
        .await;
}

fn frame_kind(opcode: OpCode) -> FrameKind {
    match opcode {
        OpCode::Text => FrameKind::Text,
        OpCode::Binary => FrameKind::Binary,
        OpCode::Continuation => FrameKind::Continuation,
        OpCode::Ping => FrameKind::Ping,
        OpCode::Pong => FrameKind::Pong,
        OpCode::Close => FrameKind::Close,
    }
}

#[cfg(test)]
mod tests;

//! The coordinator side of one agent's WebSocket: a reader task that decodes
//! frames into [`SocketEvent`]s and a writer task fed by a bounded queue.

use std::sync::atomic::{AtomicUsize, Ordering};
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
/// WebSocket close code: the peer broke the protocol (for example an unmasked frame).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// WebSocket close code: a text message is not valid UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;

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
    /// Outbound payload bytes queued per connection before it counts as a slow
    /// consumer. A single frame bigger than this is still taken into an empty queue.
    pub max_outbound_bytes: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            max_frame_bytes: 1 << 20,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            outbound_capacity: 1024,
            max_outbound_bytes: 8 << 20,
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
    /// We closed it with 1008 because a reply to the peer's own frames (an error
    /// frame, a pong) did not fit in the outbound queue: the peer does not read.
    Overflow,
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

/// The outbound queue of the connection is full (in frames or in bytes) or the
/// connection is gone.
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

impl Outgoing {
    /// The payload bytes the frame holds, as counted against the byte budget.
    fn payload_len(&self) -> usize {
        match self {
            Outgoing::Text(p) | Outgoing::Pong(p) | Outgoing::CloseEcho(p) => p.len(),
        }
    }
}

/// The payload bytes queued on one connection and their limit. Bytes are taken
/// when a frame is queued and given back when the writer has written it.
#[derive(Debug)]
struct ByteBudget {
    queued: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    /// Takes `n` bytes if they fit; a queue holding nothing takes any one frame.
    fn take(&self, n: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued == 0 || queued.saturating_add(n) <= self.max)
                    .then(|| queued.saturating_add(n))
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Sends frames to one agent socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SocketHandle {
    connection: u64,
    outbound: mpsc::Sender<Outgoing>,
    budget: Arc<ByteBudget>,
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

    /// Queues an already encoded JSON text frame without waiting. [`SendError::Full`]
    /// if the queue holds `outbound_capacity` frames, or if the frame's bytes do not
    /// fit in what is left of `max_outbound_bytes` (a frame bigger than the whole
    /// budget is taken only into an empty queue).
    pub fn send_encoded(&self, text: Vec<u8>) -> Result<(), SendError> {
        self.push(Outgoing::Text(text))
    }

    /// Payload bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.budget.queued.load(Ordering::Acquire)
    }

    fn push(&self, item: Outgoing) -> Result<(), SendError> {
        if self.outbound.is_closed() {
            return Err(SendError::Closed);
        }
        let n = item.payload_len();
        if !self.budget.take(n) {
            return Err(SendError::Full);
        }
        self.outbound.try_send(item).map_err(|err| {
            self.budget.release(n);
            match err {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            }
        })
    }

    /// Waits until the writer has stopped (after a close, everything queued and the
    /// close frame have been written, or the peer did not take them in time).
    pub async fn closed(&self) {
        let mut done = self.writer_done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Sends a close frame with `code` after the frames already queued and ends the
    /// connection. Works even when the outbound queue is full. A peer that does not
    /// read them within `pong_timeout` (at least two seconds) is dropped without
    /// them.
    pub fn close(&self, code: u16, reason: &str) {
        self.close.send_replace(Some((code, reason.to_owned())));
    }
}

/// Starts the reader and writer tasks of an upgraded agent socket.
///
/// Decoded messages and the final close are sent to `events`; malformed frames
/// are answered with an `error` frame right here and never reach the owner. Those
/// answers and pongs count against the outbound limits like every frame; when
/// one does not fit the socket is closed with 1008 ([`CloseCause::Overflow`]).
/// Broken framing (an unmasked frame, a bad continuation, reserved bits) closes
/// with 1002 and invalid UTF-8 in a text message with 1007.
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
    // Pings are answered by the reader, so that the mask is checked and the pong
    // counts against the outbound limits.
    ws.set_auto_pong(false);
    // Closes too, so that an unmasked close is refused like any unmasked frame
    // instead of being echoed before the mask is seen.
    ws.set_auto_close(false);
    // Writes go through a buffer flushed once the outbound queue is drained, so a
    // burst of frames costs one system call.
    let (read, write) = ws.split(|stream| {
        let (r, w) = tokio::io::split(stream);
        (r, tokio::io::BufWriter::with_capacity(32 * 1024, w))
    });
    let (tx, rx) = mpsc::channel(config.outbound_capacity.max(1));
    let (close_tx, close_rx) = watch::channel(None);
    let (done_tx, done_rx) = watch::channel(false);
    let budget = Arc::new(ByteBudget {
        queued: AtomicUsize::new(0),
        max: config.max_outbound_bytes,
    });
    let handle = SocketHandle {
        connection,
        outbound: tx,
        budget: budget.clone(),
        close: Arc::new(close_tx),
        writer_done: done_rx,
    };
    let mut stop = close_rx.clone();
    let grace = config.pong_timeout.max(CLOSE_DRAIN);
    let ping_interval = config.ping_interval;
    tokio::spawn(async move {
        // Once a close is asked for (or every handle is gone), a peer that does not
        // read gets `grace` to take what is queued; then the writer is dropped.
        let give_up = async move {
            let _ = stop.wait_for(Option::is_some).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            () = write_loop(write, rx, close_rx, ping_interval, budget) => {}
            () = give_up => {}
        }
        let _ = done_tx.send(true);
    });
    tokio::spawn(read_loop(read, handle.clone(), config, events));
    handle
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: fastwebsockets::WebSocketWrite<W>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut close_rx: watch::Receiver<Option<(u16, String)>>,
    ping_interval: Duration,
    budget: Arc<ByteBudget>,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    loop {
        let result = tokio::select! {
            biased;
            changed = close_rx.changed() => {
                let request = if changed.is_ok() { close_rx.borrow().clone() } else { None };
                // Flush what is queued, then say goodbye (unless the peer's close
                // was already echoed).
                while let Ok(item) = rx.try_recv() {
                    let echo = matches!(item, Outgoing::CloseEcho(_));
                    if write_one(&mut write, item, &budget).await.is_err() {
                        return;
                    }
                    if echo {
                        let _ = write.flush().await;
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
                        result = result.and(write_one(&mut write, item, &budget).await);
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

/// Writes one queued frame and gives its bytes back to the budget.
async fn write_one<W: AsyncWrite + Unpin>(
    write: &mut fastwebsockets::WebSocketWrite<W>,
    item: Outgoing,
    budget: &ByteBudget,
) -> Result<(), WebSocketError> {
    let n = item.payload_len();
    let result = match item {
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
    };
    budget.release(n);
    result
}

/// True if the frame came masked, as every client frame must (RFC 6455 §5.1).
fn is_masked(frame: &mut Frame<'_>) -> bool {
    // The library keeps the mask private; the header it would write shows it.
    let mut head = [0u8; 16];
    frame.fmt_head(&mut head);
    head[1] & 0x80 != 0
}

/// Asks for a close with `code` and says why the socket ended.
fn fail(handle: &SocketHandle, code: u16, reason: &str, cause: CloseCause) -> CloseCause {
    handle.close(code, reason);
    cause
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
    // Nothing is answered by the library (no automatic pong or close echo).
    let mut obligated = |_: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
    let overflow = |handle: &SocketHandle| {
        fail(
            handle,
            CLOSE_POLICY,
            "outbound queue full",
            CloseCause::Overflow,
        )
    };
    // One timer for the socket's life, moved on as frames arrive: a later
    // deadline only updates the registered timer, where a new timer per frame
    // was registered with the runtime's timer wheel and taken out again.
    let timer = sleep_until(deadline);
    tokio::pin!(timer);
    let cause = loop {
        let wait_until = closing.unwrap_or(deadline);
        if timer.deadline() != wait_until {
            timer.as_mut().reset(wait_until);
        }
        let frame = tokio::select! {
            frame = read.read_frame(&mut obligated) => frame,
            () = &mut timer => {
                if closing.is_some() {
                    break CloseCause::TooLarge;
                }
                handle.close(CLOSE_GOING_AWAY, "no ping answered in time");
                break CloseCause::Timeout;
            }
        };
        deadline = Instant::now() + silence;
        let mut frame = match frame {
            Ok(frame) => frame,
            Err(_) if closing.is_some() => break CloseCause::TooLarge,
            Err(WebSocketError::FrameTooLarge) => {
                handle.close(CLOSE_TOO_BIG, "message too big");
                break CloseCause::TooLarge;
            }
            Err(WebSocketError::UnexpectedEOF) | Err(WebSocketError::ConnectionClosed) => {
                break CloseCause::Peer;
            }
            Err(err @ WebSocketError::InvalidUTF8) => {
                break fail(
                    &handle,
                    CLOSE_INVALID_DATA,
                    "invalid UTF-8",
                    CloseCause::Error(err.to_string()),
                );
            }
            Err(
                err @ (WebSocketError::ReservedBitsNotZero
                | WebSocketError::ControlFrameFragmented
                | WebSocketError::PingFrameTooLarge
                | WebSocketError::InvalidCloseFrame
                | WebSocketError::InvalidCloseCode
                | WebSocketError::InvalidValue),
            ) => {
                break fail(
                    &handle,
                    CLOSE_PROTOCOL,
                    "protocol error",
                    CloseCause::Error(err.to_string()),
                );
            }
            Err(err) => break CloseCause::Error(err.to_string()),
        };
        if closing.is_none() && !is_masked(&mut frame) {
            break fail(
                &handle,
                CLOSE_PROTOCOL,
                "client frames must be masked",
                CloseCause::Error("unmasked client frame".to_owned()),
            );
        }
        if frame.opcode == OpCode::Ping {
            if closing.is_none()
                && handle.push(Outgoing::Pong(frame.payload.to_vec())) == Err(SendError::Full)
            {
                break overflow(&handle);
            }
            continue;
        }
        let assembled = assembler.handle_frame(frame_kind(frame.opcode), frame.fin, &frame.payload);
        let message = match assembled {
            Ok(Assembled::Message(message)) => message,
            Ok(Assembled::Incomplete | Assembled::Ignored) => continue,
            Ok(Assembled::Close) | Err(_) if closing.is_some() => break CloseCause::TooLarge,
            Ok(Assembled::Close) => {
                // The echo of the peer's close: the connection ends either way, so
                // a full queue changes nothing.
                let _ = handle.push(Outgoing::CloseEcho(frame.payload.to_vec()));
                break CloseCause::Peer;
            }
            Ok(Assembled::Binary) => {
                let reply = CoordinatorMessage::error(
                    ErrorCode::UnsupportedFrame,
                    None,
                    "binary frames are not supported; send JSON text",
                );
                if handle.send(&reply) == Err(SendError::Full) {
                    break overflow(&handle);
                }
                continue;
            }
            Ok(Assembled::TooLarge) => {
                // Wait (bounded) for the peer's close; the assembler ignores the rest.
                handle.close(CLOSE_TOO_BIG, "message too big");
                closing = Some(Instant::now() + CLOSE_DRAIN);
                continue;
            }
            Err(err) => {
                let reason = if err.close_code() == CLOSE_INVALID_DATA {
                    "invalid UTF-8"
                } else {
                    "protocol error"
                };
                break fail(
                    &handle,
                    err.close_code(),
                    reason,
                    CloseCause::Error(err.to_string()),
                );
            }
        };
        // A fragmented message is checked here; a single frame, by the library.
        if std::str::from_utf8(&message).is_err() {
            break fail(
                &handle,
                CLOSE_INVALID_DATA,
                "invalid UTF-8",
                CloseCause::Error(WebSocketError::InvalidUTF8.to_string()),
            );
        }
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
                if handle.send(&err.to_message()) == Err(SendError::Full) {
                    break overflow(&handle);
                }
            }
        }
    };
    // Closed by us for the peer's fault: once the owner knows, go on reading (and
    // dropping) for a while, so that the socket is not reset under the close
    // frame while the peer is still sending.
    let drain = matches!(cause, CloseCause::Overflow | CloseCause::Error(_));
    let _ = events
        .send(SocketEvent {
            connection: handle.connection,
            kind: SocketEventKind::Closed(cause),
        })
        .await;
    if drain {
        drop(handle);
        let until = Instant::now() + CLOSE_DRAIN;
        loop {
            tokio::select! {
                frame = read.read_frame(&mut obligated) => match frame {
                    Ok(frame) if frame.opcode != OpCode::Close => continue,
                    _ => break,
                },
                _ = sleep_until(until) => break,
            }
        }
    }
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

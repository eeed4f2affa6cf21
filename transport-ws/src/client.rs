//! The agent side: connect, identify, send and receive, reconnect with backoff;
//! and, on top of that, the agent SDK.
//!
//! - [`agent`]: **the agent SDK**. [`agent::AgentClient`] owns reconnection and
//!   outlives connections: jobs arrive as a stream, reports go through a handle
//!   that works whatever connection is current, and outcomes are kept until the
//!   coordinator acknowledges them. Start here to write an agent.
//! - [`session`]: the pure agent-side protocol rules the SDK drives (no I/O).
//! - [`Connection`]: one identified connection, for tests and tools that speak
//!   the protocol by hand. It lives and dies with its socket.
//! - [`HubUrl`]: `ws://`, `wss://` (with the `rustls` feature), `http(s)://`;
//!   default ports 80 and 443.
//!
//! # Holding a task across reconnects (by hand)
//!
//! The SDK does this for you. An agent written on [`Connection`] that still holds
//! a task when its connection drops (its work runs on, or its outcome is not
//! acknowledged yet) says so on every reconnect, so that the coordinator
//! re-attaches the task to it instead of running it a second time:
//!
//! 1. set [`ClientConfig::current_task`] to the task and the generation of the
//!    agent's assignment of it before connecting (every `identify` made with the
//!    config names it as `current_task`); set it back to `None` once the task is
//!    finished with (its outcome acknowledged, or the task cancelled or reassigned);
//! 2. after connecting, send `task_recovering {task_id}` and hold its outcome back
//!    until the answer: `task_continue {task_id, generation}` (go on, and report
//!    with that generation from now on) or `task_reassign {task_id}` (the task went
//!    elsewhere: drop it).
//!
//! A coordinator that does not know `current_task` ignores it; `task_recovering`
//! works with every v1 coordinator.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::Request;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::protocol::{
    decode_coordinator_message, AgentMessage, CapabilityEntry, CoordinatorMessage, CurrentTask,
    ErrorCode,
};

pub mod agent;
pub mod session;
#[cfg(feature = "rustls")]
mod tls;
mod url;

pub use url::{HubUrl, HubUrlError};

#[cfg(test)]
mod tests;

/// How long a connection attempt may take, from the TCP connect to `identified`,
/// unless configured otherwise: the coordinator's own identify timeout.
pub const DEFAULT_IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Who the agent is and where the coordinator listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The coordinator's WebSocket URL; see [`HubUrl`] for the forms accepted.
    pub url: String,
    /// The agent id the token was created for.
    pub agent_id: String,
    /// The agent's token.
    pub token: String,
    /// What the agent can do.
    pub capabilities: Vec<String>,
    /// A display name.
    pub name: Option<String>,
    /// Sent as `client_type` in `identify`.
    pub client_type: String,
    /// How often a JSON `ping` is sent while connected (None: never).
    pub ping_interval: Option<Duration>,
    /// The task the agent holds, named as `current_task` in every `identify` made
    /// with this config (None: the field is left out). See the module doc for the
    /// whole re-attach exchange.
    pub current_task: Option<CurrentTask>,
    /// The most a connection attempt may take, from the TCP connect through the
    /// TLS and WebSocket handshakes to `identified`.
    pub identify_timeout: Duration,
    /// DER-encoded root certificates trusted for `wss://` besides the Mozilla
    /// roots (a private CA, a self-signed coordinator). Needs the `rustls` feature.
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl ClientConfig {
    /// A configuration with no capabilities, a 30 s JSON heartbeat and a 10 s
    /// identify timeout.
    pub fn new(
        url: impl Into<String>,
        agent_id: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        ClientConfig {
            url: url.into(),
            agent_id: agent_id.into(),
            token: token.into(),
            capabilities: Vec::new(),
            name: None,
            client_type: "transport-ws".to_owned(),
            ping_interval: Some(Duration::from_secs(30)),
            current_task: None,
            identify_timeout: DEFAULT_IDENTIFY_TIMEOUT,
            extra_root_certificates: Vec::new(),
        }
    }

    /// The `identify` message a connection made with this config sends first.
    pub fn identify(&self) -> AgentMessage {
        AgentMessage::Identify {
            agent_id: self.agent_id.clone(),
            token: self.token.clone(),
            name: self.name.clone(),
            capabilities: self
                .capabilities
                .iter()
                .cloned()
                .map(CapabilityEntry::Name)
                .collect(),
            status: Some("idle".to_owned()),
            client_type: Some(self.client_type.clone()),
            current_task: self.current_task.clone(),
        }
    }
}

/// The step of a connection attempt that took too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake of `wss://`.
    Tls,
    /// The WebSocket upgrade.
    Handshake,
    /// Waiting for `identified` after `identify`.
    Identify,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "TCP connect",
            Stage::Tls => "TLS handshake",
            Stage::Handshake => "WebSocket handshake",
            Stage::Identify => "waiting for `identified`",
        })
    }
}

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not one of the forms [`HubUrl`] accepts.
    #[error(transparent)]
    InvalidUrl(#[from] HubUrlError),
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A `wss://` URL, but this build has no TLS (the `rustls` feature is off).
    #[error("wss:// needs transport-ws built with its `rustls` feature")]
    TlsUnavailable,
    /// The TLS settings cannot be used (a root certificate that does not parse, a
    /// host that is no valid server name).
    #[error("TLS settings: {0}")]
    TlsConfig(String),
    /// The TLS handshake failed (for example: the certificate is not trusted).
    #[error("TLS handshake with {host} failed: {detail}")]
    Tls {
        /// The server name.
        host: String,
        /// Why.
        detail: String,
    },
    /// The WebSocket handshake failed.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[from] WebSocketError),
    /// The coordinator did not get through a step in time.
    #[error("no answer from the coordinator within {after_ms} ms ({stage})")]
    Timeout {
        /// The step that took too long.
        stage: Stage,
        /// The time allowed for the whole attempt.
        after_ms: u64,
    },
    /// The coordinator refused the identify.
    #[error("the coordinator refused identify: {} {detail}", code.as_str())]
    Refused {
        /// `invalid_token` or `token_agent_mismatch`.
        code: ErrorCode,
        /// Its explanation.
        detail: String,
    },
    /// The connection closed.
    #[error("the connection closed")]
    Closed,
    /// The coordinator is a standby: it closed the connection with 1013 ("try
    /// again later"), naming the leader when it knows it.
    #[error("the coordinator is not the leader{}", leader.as_deref().map(|l| format!("; the leader is at {l}")).unwrap_or_default())]
    NotLeader {
        /// The leader's URL (the close reason), if given.
        leader: Option<String>,
    },
}

/// WebSocket close code "try again later": a standby closes with it, the
/// leader's URL as the reason.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// A close frame as received: its code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code (1005 when the frame carried none).
    pub code: u16,
    /// The reason text (lossy UTF-8).
    pub reason: String,
}

impl CloseFrame {
    /// Parses a close frame's payload: two bytes of code, then the reason.
    pub fn parse(payload: &[u8]) -> CloseFrame {
        match payload {
            [hi, lo, reason @ ..] => CloseFrame {
                code: u16::from_be_bytes([*hi, *lo]),
                reason: String::from_utf8_lossy(reason).into_owned(),
            },
            _ => CloseFrame {
                code: 1005,
                reason: String::new(),
            },
        }
    }

    /// For a standby's close (1013): the leader it names, if the reason is a
    /// URL (`not_leader` or any other text names nobody).
    pub fn leader(&self) -> Option<Option<String>> {
        (self.code == CLOSE_TRY_AGAIN_LATER)
            .then(|| Some(self.reason.clone()).filter(|r| r.contains("://")))
    }

    /// The error of a connection that ended with this frame.
    pub fn error(&self) -> ClientError {
        match self.leader() {
            Some(leader) => ClientError::NotLeader { leader },
            None => ClientError::Closed,
        }
    }
}

impl ClientError {
    /// True if trying again cannot help: a refused identify (the token), a bad
    /// URL, or TLS that cannot be set up as configured.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ClientError::Refused { .. }
                | ClientError::InvalidUrl(_)
                | ClientError::TlsUnavailable
                | ClientError::TlsConfig(_)
        )
    }
}

/// Sends messages on a connection; cheap to clone and usable from any task.
#[derive(Debug, Clone)]
pub struct Sender {
    outgoing: mpsc::Sender<Vec<u8>>,
}

impl Sender {
    /// Sends one message; fails once the connection is closed.
    pub async fn send(&self, message: &AgentMessage) -> Result<(), ClientError> {
        let text = serde_json::to_vec(message).expect("agent messages always serialize");
        self.send_raw(text).await
    }

    /// Sends raw text as one frame (for tests that speak the protocol by hand).
    pub async fn send_raw(&self, text: Vec<u8>) -> Result<(), ClientError> {
        self.outgoing
            .send(text)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

/// One identified connection to the coordinator.
///
/// A background task reads frames (answering WebSocket pings) and another writes
/// them, so the connection stays alive while the agent is busy.
#[derive(Debug)]
pub struct Connection {
    sender: Sender,
    incoming: mpsc::Receiver<CoordinatorMessage>,
    /// The close frame the coordinator sent, once it did.
    close_frame: tokio::sync::oneshot::Receiver<CloseFrame>,
    /// Dropping the connection drops this, which makes the writer say goodbye.
    _closer: tokio::sync::oneshot::Sender<()>,
}

impl Connection {
    /// Connects, identifies (with [`ClientConfig::identify`]) and waits for
    /// `identified`, all within [`ClientConfig::identify_timeout`].
    pub async fn connect(config: &ClientConfig) -> Result<Connection, ClientError> {
        let hub = HubUrl::parse(&config.url)?;
        Connection::connect_to(&hub, config).await
    }

    /// [`Connection::connect`] to `hub` instead of [`ClientConfig::url`].
    pub async fn connect_to(
        hub: &HubUrl,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let allowed = config.identify_timeout;
        let deadline = Instant::now() + allowed;
        let mut connection =
            Connection::open_hub(hub, deadline, allowed, &config.extra_root_certificates).await?;
        connection.sender.send(&config.identify()).await?;
        loop {
            let message = tokio::time::timeout_at(deadline, connection.recv())
                .await
                .map_err(|_| timeout(Stage::Identify, allowed))?;
            match message {
                Some(CoordinatorMessage::Identified { .. }) => break,
                Some(CoordinatorMessage::Error { error, detail, .. }) => {
                    return Err(ClientError::Refused {
                        code: error,
                        detail: detail.unwrap_or_default(),
                    })
                }
                Some(_) => continue,
                None => return Err(connection.closed_error()),
            }
        }
        if let Some(every) = config.ping_interval {
            let sender = connection.sender.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    if sender.send(&AgentMessage::Ping {}).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(connection)
    }

    /// Opens the WebSocket without identifying (for tests of the protocol
    /// itself), within [`DEFAULT_IDENTIFY_TIMEOUT`].
    pub async fn open(url: &str) -> Result<Connection, ClientError> {
        let hub = HubUrl::parse(url)?;
        let allowed = DEFAULT_IDENTIFY_TIMEOUT;
        Connection::open_hub(&hub, Instant::now() + allowed, allowed, &[]).await
    }

    /// TCP, TLS for `wss://`, and the WebSocket upgrade, each by `deadline`.
    async fn open_hub(
        hub: &HubUrl,
        deadline: Instant,
        allowed: Duration,
        extra_roots: &[Vec<u8>],
    ) -> Result<Connection, ClientError> {
        #[cfg(not(feature = "rustls"))]
        if hub.is_tls() {
            let _ = extra_roots;
            return Err(ClientError::TlsUnavailable);
        }
        let addr = hub.socket_address();
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect((hub.host(), hub.port())))
            .await
            .map_err(|_| timeout(Stage::Connect, allowed))?
            .map_err(|source| ClientError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        #[cfg(feature = "rustls")]
        if hub.is_tls() {
            let tls = tokio::time::timeout_at(deadline, tls::wrap(hub, tcp, extra_roots))
                .await
                .map_err(|_| timeout(Stage::Tls, allowed))??;
            return Connection::upgrade(hub, tls, deadline, allowed).await;
        }
        Connection::upgrade(hub, tcp, deadline, allowed).await
    }

    /// The WebSocket upgrade on `stream`, then the reader and writer tasks.
    async fn upgrade<S>(
        hub: &HubUrl,
        stream: S,
        deadline: Instant,
        allowed: Duration,
    ) -> Result<Connection, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let request = Request::builder()
            .method("GET")
            .uri(hub.path())
            .header(HOST, hub.host_header())
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header(
                "Sec-WebSocket-Key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("Sec-WebSocket-Version", "13")
            .body(Empty::<Bytes>::new())
            .map_err(|_| {
                ClientError::InvalidUrl(HubUrlError {
                    url: hub.to_string(),
                    reason: "not a valid request target",
                })
            })?;
        let (ws, _) = tokio::time::timeout_at(
            deadline,
            fastwebsockets::handshake::client(&TokioExecutor::new(), request, stream),
        )
        .await
        .map_err(|_| timeout(Stage::Handshake, allowed))??;
        let (mut read, mut write) = ws.split(|stream| {
            let (r, w) = tokio::io::split(stream);
            (r, tokio::io::BufWriter::with_capacity(16 * 1024, w))
        });
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
        let (control_tx, mut control_rx) = mpsc::channel::<Frame<'static>>(16);
        let (in_tx, in_rx) = mpsc::channel(256);
        let (closer, mut closed) = tokio::sync::oneshot::channel::<()>();
        let (close_tx, close_frame) = tokio::sync::oneshot::channel::<CloseFrame>();
        tokio::spawn(async move {
            loop {
                let result = tokio::select! {
                    _ = &mut closed => {
                        let _ = write.write_frame(Frame::close(1000, b"bye")).await;
                        let _ = write.flush().await;
                        return;
                    }
                    text = out_rx.recv() => match text {
                        Some(text) => {
                            let mut result = write.write_frame(Frame::text(Payload::Owned(text))).await;
                            // Write everything already queued, then flush once.
                            while let (true, Ok(more)) = (result.is_ok(), out_rx.try_recv()) {
                                result = write.write_frame(Frame::text(Payload::Owned(more))).await;
                            }
                            result
                        }
                        None => {
                            let _ = write.write_frame(Frame::close(1000, b"bye")).await;
                            let _ = write.flush().await;
                            return;
                        }
                    },
                    frame = control_rx.recv() => match frame {
                        Some(frame) => {
                            let close = frame.opcode == OpCode::Close;
                            let result = write.write_frame(frame).await;
                            if close {
                                let _ = write.flush().await;
                                return;
                            }
                            result
                        }
                        None => return,
                    },
                };
                if result.is_err() || write.flush().await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut obligated = |frame: Frame<'_>| {
                let owned = Frame::new(
                    true,
                    frame.opcode,
                    None,
                    Payload::Owned(frame.payload.to_vec()),
                );
                let control_tx = control_tx.clone();
                async move {
                    let _ = control_tx.send(owned).await;
                    Ok::<(), std::convert::Infallible>(())
                }
            };
            while let Ok(frame) = read.read_frame(&mut obligated).await {
                match frame.opcode {
                    OpCode::Text => {
                        if let Ok(message) = decode_coordinator_message(&frame.payload) {
                            if in_tx.send(message).await.is_err() {
                                return;
                            }
                        }
                    }
                    OpCode::Close => {
                        // Known before the end of `incoming` is seen.
                        let _ = close_tx.send(CloseFrame::parse(&frame.payload));
                        return;
                    }
                    _ => {}
                }
            }
        });
        Ok(Connection {
            sender: Sender { outgoing: out_tx },
            incoming: in_rx,
            close_frame,
            _closer: closer,
        })
    }

    /// A handle to send with from other tasks.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Sends one message.
    pub async fn send(&self, message: &AgentMessage) -> Result<(), ClientError> {
        self.sender.send(message).await
    }

    /// The next message from the coordinator; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<CoordinatorMessage> {
        self.incoming.recv().await
    }

    /// The close frame the coordinator sent, once [`Connection::recv`] has
    /// returned `None` (`None` if it sent none: the connection just broke).
    pub fn close_frame(&mut self) -> Option<CloseFrame> {
        self.close_frame.try_recv().ok()
    }

    /// Why the connection ended: [`ClientError::NotLeader`] for a standby's
    /// close, else [`ClientError::Closed`].
    fn closed_error(&mut self) -> ClientError {
        self.close_frame()
            .map_or(ClientError::Closed, |frame| frame.error())
    }
}

fn timeout(stage: Stage, allowed: Duration) -> ClientError {
    ClientError::Timeout {
        stage,
        after_ms: u64::try_from(allowed.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Exponential backoff with jitter: `initial`, doubling up to `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    /// Starts at `initial`, doubles after every failure, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt: the current step, randomly shortened by
    /// up to 20 % so that many agents do not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(1.0 - rand::random::<f64>() * 0.2)
    }

    /// The current step, without jitter.
    pub fn current_step(&self) -> Duration {
        self.next
    }

    /// Back to `initial` (call once a connection has been stable for a while).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Connects, retrying with `backoff` until it works or fails for good (see
/// [`ClientError::is_final`]: a refused token, a bad URL or TLS settings).
pub async fn connect_with_retry(
    config: &ClientConfig,
    backoff: &mut Backoff,
) -> Result<Connection, ClientError> {
    loop {
        match Connection::connect(config).await {
            Ok(connection) => return Ok(connection),
            Err(err) if err.is_final() => return Err(err),
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "cannot reach the coordinator");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

//! Coordinator's WebSocket transport: the v1 wire protocol, the coordinator side of
//! an agent socket on hyper + fastwebsockets, and the agent SDK.
//!
//! - [`protocol`]: the messages in both directions, with exactly the field names
//!   of the protocol, and a decoder that never panics.
//! - [`assembler`]: [`assembler::FrameAssembler`] turns frames into whole text
//!   messages (fragments, the size limit across fragments, control frames, refused
//!   binary frames); it performs no I/O.
//! - [`server`]: [`server::spawn_socket`] turns an upgraded connection into a stream
//!   of [`server::SocketEvent`]s and a [`server::SocketHandle`] to send with, with
//!   heartbeats, a frame size limit and a bounded outbound queue.
//! - [`client`]: the agent side. [`client::agent::AgentClient`] is the agent SDK:
//!   it owns reconnection (several hub URLs, backoff, identify timeout, `wss://`
//!   with the `rustls` feature), hands out jobs, and keeps each outcome until the
//!   coordinator acknowledges it, across reconnects and, with a state hook,
//!   restarts. Its rules are the pure [`client::session::AgentSession`].
//!   [`client::Connection`] is one bare connection, for protocol tests.
//!
//! Cargo feature `rustls` (off by default): `wss://` hub URLs, by rustls with the
//! ring provider, trusting the Mozilla roots (webpki-roots) and any root a
//! program adds.
//!
//! # Example
//!
//! ```
//! use coordinator_transport::protocol::{decode_agent_message, AgentMessage};
//!
//! let frame = br#"{"type":"task_failed","task_id":"t1","generation":2,"reason":"disk full","protocol_version":1}"#;
//! let message = decode_agent_message(frame).unwrap();
//! assert_eq!(message.failure_text(), Some("disk full"));
//! assert!(matches!(message, AgentMessage::TaskFailed { generation: 2, .. }));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod assembler;
pub mod client;
pub mod protocol;
pub mod server;

#[cfg(test)]
mod tests;

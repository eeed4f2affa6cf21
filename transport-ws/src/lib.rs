//! Coordinator's WebSocket transport: the v1 wire protocol, the coordinator side of
//! an agent socket on hyper + fastwebsockets, and a client for agents.
//!
//! - [`protocol`]: the messages in both directions, with exactly the field names
//!   of the protocol, and a decoder that never panics.
//! - [`assembler`]: [`assembler::FrameAssembler`] turns frames into whole text
//!   messages (fragments, the size limit across fragments, control frames, refused
//!   binary frames); it performs no I/O.
//! - [`server`]: [`server::spawn_socket`] turns an upgraded connection into a stream
//!   of [`server::SocketEvent`]s and a [`server::SocketHandle`] to send with, with
//!   heartbeats, a frame size limit and a bounded outbound queue.
//! - [`client`]: connect, identify, send and receive, reconnect with backoff.
//!
//! # Example
//!
//! ```
//! use transport_ws::protocol::{decode_agent_message, AgentMessage};
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

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

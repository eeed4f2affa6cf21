//! Coordinator's WebSocket transport: the v1 wire protocol, the coordinator side of
//! an agent socket on fastwebsockets, and the agent SDK.
//!
//! - `protocol` (feature `protocol`, on by default): the messages in both
//!   directions, with exactly the field names
//!   of the protocol, and a decoder that never panics.
//! - [`assembler`]: [`assembler::FrameAssembler`] turns frames into whole text
//!   messages (fragments, the size limit across fragments, control frames, refused
//!   binary frames); it performs no I/O.
//! - [`failover`]: which coordinator a client tries next when several share a
//!   database (follow the leader a standby names, else the next one; bounded);
//!   pure, always built.
//! - `server` (feature `server`): `server::spawn_socket` turns an upgraded connection into a stream
//!   of `SocketEvent`s and a `SocketHandle` to send with, with
//!   heartbeats, a frame size limit and a bounded outbound queue.
//! - `client` (feature `client`): the agent side. `client::agent::AgentClient` is the agent SDK:
//!   it owns reconnection (several hub URLs, backoff, identify timeout, `wss://`
//!   with the `rustls` feature), hands out jobs, and keeps each outcome until the
//!   coordinator acknowledges it, across reconnects and, with a state hook,
//!   restarts. Its rules are the pure `client::session::AgentSession`.
//!   `client::Connection` is one bare connection, for protocol tests.
//!
//! # Features
//!
//! | feature | adds | pulls in |
//! |---|---|---|
//! | `protocol` (default) | `protocol` | serde, serde_json |
//! | `client` | `client` and `protocol` | tokio (rt, net, sync, time, macros, io-util), fastwebsockets with its hyper handshake, hyper-util, rand, tracing |
//! | `server` | `server` and `protocol` | tokio (rt, sync, time, macros, io-util), fastwebsockets |
//! | `rustls` | `wss://` hub URLs for `client` | rustls (ring), tokio-rustls, webpki-roots |
//!
//! With only `protocol`, nothing async or networked is built. The server side
//! takes an already upgraded connection; the HTTP upgrade is the caller's (the
//! `coordinator` program does it with hyper and fastwebsockets' `upgrade`).
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
#[cfg(feature = "client")]
pub mod client;
pub mod failover;
#[cfg(feature = "protocol")]
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;

#[cfg(all(test, feature = "protocol"))]
mod tests;

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "protocol"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

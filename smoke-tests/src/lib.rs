//! Helpers to drive the real `coordinator` binary from tests and the load
//! generator: start it on a free port with a temporary database, talk HTTP to it,
//! and stop or kill it; and a raw protocol-v1 agent sidecar for edge scenarios.
#![warn(missing_docs)]

pub mod harness;
pub mod postgres;
pub mod sidecar;

/// The HTTP client of the coordinator API.
pub use coordinator_bin::client::api_client as http;

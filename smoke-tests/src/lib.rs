//! Helpers to drive the real `coordinator` binary from tests and the load
//! generator: start it on a free port with a temporary database, talk HTTP to it,
//! and stop or kill it.
#![warn(missing_docs)]

pub mod harness;

/// The HTTP client of the coordinator API.
pub use coordinator_bin::client::api_client as http;

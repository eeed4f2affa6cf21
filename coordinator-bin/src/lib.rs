//! The parts of the coordinator binary that other programs reuse: a small HTTP
//! JSON client of the coordinator's API (used by the `coordinator` CLI client
//! commands, the end-to-end tests and the load generator).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use coordinator_bin::api_client::Client;
//!
//! let mut client = Client::new("127.0.0.1:4000", Some("cdt_..."));
//! let reply = client.get("/api/tasks/stats").await?;
//! println!("{} {}", reply.status, reply.body);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api_client;

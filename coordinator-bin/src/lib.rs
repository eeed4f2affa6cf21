//! The `coordinator` program and the parts of it that other programs reuse.
//!
//! Three programs live here, one folder each:
//! - [`server`](crate) (`coordinator serve`): the HTTP API, agent WebSockets and
//!   SQLite storage, driving the pure [`session`] core;
//! - `agent` (`coordinator agent`): the bundled agent runner;
//! - [`client`] (`coordinator submit`, `tasks`, ...): a command-line client of the
//!   HTTP API, and the small HTTP [`client::api_client`] used by it, the end-to-end
//!   tests and the load generator.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use coordinator_bin::client::api_client::Client;
//!
//! let mut client = Client::new("127.0.0.1:4000", Some("cdt_..."));
//! let reply = client.get("/api/tasks/stats").await?;
//! println!("{} {}", reply.status, reply.body);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
pub mod cli;
pub mod client;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod logging;
mod server;
pub mod session;

use cli::{Cli, Commands};

/// An error that ends the program with its own exit status (any other error
/// ends it with 1).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The exit status.
    pub status: u8,
    /// What went wrong.
    pub message: String,
}

/// The exit status for an error [`run`] returned.
pub fn exit_status(err: &(dyn std::error::Error + 'static)) -> u8 {
    err.downcast_ref::<Failure>().map_or(1, |f| f.status)
}

/// Runs one invocation of the `coordinator` program.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Commands::Serve(args) => server::serve::run(args),
        Commands::Check(args) => server::check_command::run(args),
        Commands::Token { command } => server::token_command::run(command),
        Commands::Agent(args) => args.resolve().and_then(agent::run).map_err(Into::into),
        Commands::Client(command) => client::commands::run(command),
    }
}

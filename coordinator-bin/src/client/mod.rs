//! The command-line client of a running coordinator (`coordinator submit`,
//! `tasks`, `task`, `agents`, `cancel`, `retry`) and the HTTP client under it.

pub mod api_client;
pub(crate) mod commands;

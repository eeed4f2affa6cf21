//! The command-line client of a running coordinator (`coordinator submit`,
//! `tasks`, `task`, `agents`, `cancel`, `retry`, `watch`, `drain`, `undrain`),
//! the HTTP client under it and the client of the event stream.

pub mod api_client;
pub(crate) mod commands;
pub mod event_stream;
pub(crate) mod watch;

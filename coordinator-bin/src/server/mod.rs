//! `coordinator serve`: the I/O around the pure [`crate::session`] core: hyper
//! HTTP, agent WebSockets, the store (SQLite or PostgreSQL) with its writer and reads, tokens, metrics and the
//! dashboard page.

pub(crate) mod api_error;
pub(crate) mod auth;
pub(crate) mod check_command;
pub(crate) mod clock;
pub(crate) mod connections;
pub(crate) mod damage;
pub(crate) mod dashboard;
pub(crate) mod db;
pub(crate) mod driver;
pub(crate) mod events;
pub(crate) mod http;
pub(crate) mod ids;
pub(crate) mod lease;
pub(crate) mod metrics;
pub(crate) mod observe;
pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod task_json;
pub(crate) mod token_command;
pub(crate) mod writer;

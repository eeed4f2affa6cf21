//! Log output of the service and the agent runner (tracing to stderr).
//!
//! Strings that come from peers (agent ids, task ids, error texts) are logged as
//! `&str` field values, never with `%` (Display): the text format then writes them
//! quoted with control characters escaped (`"a\u{1b}[31m\n"`), so a peer cannot
//! forge log lines or send terminal escape codes, and the JSON format escapes them
//! as JSON strings.

use std::io::IsTerminal;

use crate::cli::LogFormat;

/// Sends `tracing` output to stderr in `format`; `RUST_LOG` filters (default `info`).
/// Colours only when stderr is a terminal (and `NO_COLOR` is not set).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colours = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

//! One function per route, grouped by resource. Each decodes the request,
//! calls the session (through [`super::ask`]) or reads the database, and
//! encodes the answer; the decoding and encoding that is more than a line is a
//! plain function beside it.

pub mod agents;
pub mod events;
pub mod ops;
pub mod tasks;
pub mod tokens;
pub mod ws;

#[cfg(test)]
mod tests;

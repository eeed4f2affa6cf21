//! Checks that look at the workspace as a whole rather than at one crate: the
//! three cores stay pure (no I/O dependency, no clock, files, sockets, threads or
//! randomness in their sources), and every package meant for crates.io carries
//! its metadata, its README and both licence files, with a version on every
//! dependency inside the family.
//!
//! They live here, in a package that is never published, because they read the
//! folders of other crates: inside a packaged crate those folders do not exist.
//! The library is empty; the checks are its tests (`cargo test -p workspace-checks`).

#[cfg(test)]
mod tests;

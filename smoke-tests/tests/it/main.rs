//! End-to-end tests against the real `coordinator` binary.

mod admission;
mod agents;
mod api;
mod browser;
mod crash;
mod damaged;
mod dashboard;
mod edges;
mod events;
mod failover;
mod files_logs;
mod harness;
mod hostile;
mod http_limits;
mod operator;
mod options;
mod poison;
mod protocol;
mod runner;
mod scenarios;
mod sdk;
mod sim;
mod tokens;

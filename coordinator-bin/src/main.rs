//! The `coordinator` binary: the service, token management, the agent runner and
//! a command-line client (all in the library; this only maps the outcome to an
//! exit code).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use coordinator_bin::cli::Cli;

fn main() -> ExitCode {
    match coordinator_bin::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coordinator: {err}");
            ExitCode::from(coordinator_bin::exit_status(&*err))
        }
    }
}

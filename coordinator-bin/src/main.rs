//! The `coordinator` binary: the service, token management, the agent runner and
//! a command-line client.
#![forbid(unsafe_code)]

mod api_error;
mod auth;
mod cli;
mod client_cli;
mod clock;
mod dashboard;
mod db;
mod engine;
mod http;
mod metrics;
mod routes;
mod runner;
mod serve;
mod task_json;
mod writer;

use std::process::ExitCode;

use clap::Parser;

use crate::auth::Identity;
use crate::cli::{Cli, Commands, TokenCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Serve(args) => serve::run(args),
        Commands::Token { command } => token(command),
        Commands::Agent(args) => args.resolve().and_then(runner::run).map_err(Into::into),
        Commands::Client(command) => client_cli::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coordinator: {err}");
            ExitCode::FAILURE
        }
    }
}

fn token(command: TokenCommand) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        TokenCommand::Create { name, admin, db } => {
            let conn = db::open(&db)?;
            let identity = if admin {
                Identity::Admin(name)
            } else {
                Identity::Agent(name)
            };
            println!("{}", auth::create_token(&conn, &identity, clock::now_ms())?);
        }
        TokenCommand::List { db } => {
            let conn = db::open(&db)?;
            println!(
                "{:<6} {:<32} {:<15} REVOKED_AT",
                "KIND", "NAME", "CREATED_AT"
            );
            for t in auth::list_tokens(&conn)? {
                let revoked = t
                    .revoked_at
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<6} {:<32} {:<15} {}",
                    t.kind, t.name, t.created_at, revoked
                );
            }
        }
        TokenCommand::Revoke { name, db } => {
            let conn = db::open(&db)?;
            let n = auth::revoke_tokens(&conn, &name, clock::now_ms())?;
            if n == 0 {
                return Err(format!("no live token for `{name}`").into());
            }
            eprintln!("revoked {n} token(s) of `{name}`");
        }
    }
    Ok(())
}

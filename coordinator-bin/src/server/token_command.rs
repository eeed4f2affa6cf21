//! `coordinator token create|list|revoke`: tokens managed directly in the
//! database file (works while the service runs).

use super::auth::{self, Identity};
use super::{clock, db};
use crate::cli::TokenCommand;

/// Carries out one `coordinator token` command.
pub fn run(command: TokenCommand) -> Result<(), Box<dyn std::error::Error>> {
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
            let list = auth::list_tokens(&conn)?;
            println!(
                "{:<6} {:<32} {:<15} REVOKED_AT",
                "KIND", "NAME", "CREATED_AT"
            );
            for t in list.tokens {
                let revoked = t
                    .revoked_at
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<6} {:<32} {:<15} {}",
                    t.kind, t.name, t.created_at, revoked
                );
            }
            for row in &list.damaged {
                eprintln!("left out, damaged: the stored row of {row}");
            }
        }
        TokenCommand::Revoke {
            name,
            admin,
            force,
            db,
        } => {
            let conn = db::open(&db)?;
            let identity = if admin {
                Identity::Admin(name.clone())
            } else {
                Identity::Agent(name.clone())
            };
            let live = auth::live_token_ids(&conn, &identity)?.len();
            if live == 0 {
                return Err(format!("no live {} token for `{name}`", identity.kind()).into());
            }
            if admin && !force && auth::live_admin_count(&conn)? <= live {
                return Err(format!(
                    "revoking the admin tokens of `{name}` would leave no admin token; add --force to do it anyway"
                )
                .into());
            }
            let n = auth::revoke_tokens(&conn, &identity, clock::now_ms())?;
            eprintln!("revoked {n} {} token(s) of `{name}`", identity.kind());
        }
    }
    Ok(())
}

//! `coordinator token create|list|revoke`: tokens managed directly in the
//! database (works while the service runs).

use super::auth::{self, Identity};
use super::{clock, store};
use crate::cli::TokenCommand;

/// Carries out one `coordinator token` command.
pub fn run(command: TokenCommand) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(command))
}

async fn run_async(command: TokenCommand) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        TokenCommand::Create { name, admin, db } => {
            let store = store::open_for_tool(&db).await?;
            let identity = if admin {
                Identity::Admin(name)
            } else {
                Identity::Agent(name)
            };
            let token = auth::generate_token();
            store
                .insert_token(&identity, &auth::hash(&token), clock::now_ms())
                .await?;
            println!("{token}");
        }
        TokenCommand::List { db } => {
            let store = store::open_for_tool(&db).await?;
            let list = store.list_tokens().await?;
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
            let store = store::open_for_tool(&db).await?;
            let identity = if admin {
                Identity::Admin(name.clone())
            } else {
                Identity::Agent(name.clone())
            };
            let (live_ids, live_admins) = store.revocation_facts(identity.clone()).await?;
            let live = live_ids.len();
            if live == 0 {
                return Err(format!("no live {} token for `{name}`", identity.kind()).into());
            }
            if admin && !force && live_admins <= live {
                return Err(format!(
                    "revoking the admin tokens of `{name}` would leave no admin token; add --force to do it anyway"
                )
                .into());
            }
            let n = store.revoke_tokens(&identity, clock::now_ms()).await?;
            eprintln!("revoked {n} {} token(s) of `{name}`", identity.kind());
        }
    }
    Ok(())
}

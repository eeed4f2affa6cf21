//! Tests of tokens: their form, and lookup by digest against the token table.

use std::path::Path;

use rusqlite::Connection;

use super::*;
use crate::server::db::{self, insert_token, list_tokens, load_live, revoke_tokens};
use crate::server::store::sqlite::SqliteStore;

/// Creates a token for `identity` directly in the database; its secret.
fn create_token(conn: &Connection, identity: &Identity, now_ms: u64) -> Result<String, DbError> {
    let token = generate_token();
    insert_token(conn, identity, &hash(&token), now_ms)?;
    Ok(token)
}

/// An authenticator over the database at `path`.
async fn authenticator(path: &Path) -> Authenticator {
    Authenticator::new(Arc::new(SqliteStore::open(path).unwrap()))
        .await
        .unwrap()
}

fn memory_db() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    db::migrate(&conn, Path::new(":memory:")).unwrap();
    conn
}

#[test]
fn a_token_is_192_random_bits_in_hex() {
    let token = generate_token();
    let hex = token.strip_prefix("cdt_").unwrap();
    assert_eq!(hex.len(), 48);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_ne!(generate_token(), token);
}

#[test]
fn a_live_token_is_found_by_its_digest_and_nothing_else_is() {
    let conn = memory_db();
    let agent = create_token(&conn, &Identity::Agent("a1".into()), 1).unwrap();
    let admin = create_token(&conn, &Identity::Admin("ops".into()), 2).unwrap();
    let (tokens, damaged) = load_live(&conn).unwrap();
    assert_eq!(damaged, []);
    assert_eq!(
        find(&tokens, &hash(&agent)),
        Some(Identity::Agent("a1".into()))
    );
    assert_eq!(
        find(&tokens, &hash(&admin)),
        Some(Identity::Admin("ops".into()))
    );
    assert_eq!(find(&tokens, &hash(&generate_token())), None);
    // The digest is not the token: presenting a stored digest as text is refused.
    let digest_hex: String = hash(&agent).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(find(&tokens, &hash(&digest_hex)), None);
}

#[test]
fn a_revoked_token_is_not_found() {
    let conn = memory_db();
    let token = create_token(&conn, &Identity::Agent("a1".into()), 1).unwrap();
    assert_eq!(
        revoke_tokens(&conn, &Identity::Agent("a1".into()), 5).unwrap(),
        1
    );
    assert_eq!(find(&load_live(&conn).unwrap().0, &hash(&token)), None);
    let listed = list_tokens(&conn).unwrap().tokens;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_at, Some(5));
}

#[test]
fn a_token_row_that_cannot_be_decoded_is_left_out_and_named() {
    let conn = memory_db();
    let good = create_token(&conn, &Identity::Agent("a1".into()), 1).unwrap();
    let bad = create_token(&conn, &Identity::Agent("a2".into()), 2).unwrap();
    create_token(&conn, &Identity::Agent("a3".into()), 3).unwrap();
    conn.execute_batch(
        "UPDATE tokens SET hash = x'0102' WHERE name = 'a2'; \
         UPDATE tokens SET created_at = 'yesterday' WHERE name = 'a3';",
    )
    .unwrap();

    let (tokens, damaged) = load_live(&conn).unwrap();
    assert_eq!(
        find(&tokens, &hash(&good)),
        Some(Identity::Agent("a1".into()))
    );
    assert_eq!(find(&tokens, &hash(&bad)), None);
    assert_eq!(tokens.len(), 1);
    let named: Vec<_> = damaged.iter().map(|d| (d.id.as_deref(), d.rowid)).collect();
    assert_eq!(named, [(Some("a2"), Some(2)), (Some("a3"), Some(3))]);
    assert_eq!(
        damaged[0].reason,
        "column `hash`: 2 bytes where a SHA-256 digest has 32"
    );
    assert_eq!(
        damaged[1].reason,
        "column `created_at`: expected an integer, found text"
    );

    let listed = list_tokens(&conn).unwrap();
    let names: Vec<_> = listed.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a1"]);
    assert_eq!(listed.damaged, damaged);
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("coordinator-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("c.db")
}

#[tokio::test]
async fn a_flood_of_unknown_tokens_reads_the_table_a_bounded_number_of_times() {
    let path = temp_db("flood");
    let conn = db::open(&path).unwrap();
    let known = create_token(&conn, &Identity::Agent("a1".into()), 1).unwrap();
    let auth = authenticator(&path).await;
    assert_eq!(auth.n_loads(), 1);
    let started = Instant::now();
    for _ in 0..2_000 {
        assert_eq!(auth.check(&generate_token()).await, None);
    }
    let same = generate_token();
    for _ in 0..2_000 {
        assert_eq!(auth.check(&same).await, None);
    }
    // The burst, then one read per interval of the time the flood took.
    let bound = 1
        + u64::from(cache::RELOAD_BURST)
        + started.elapsed().as_secs() / cache::RELOAD_INTERVAL.as_secs()
        + 1;
    assert!(
        auth.n_loads() <= bound,
        "{} table reads for 4,000 unknown tokens (bound {bound})",
        auth.n_loads()
    );
    // Known tokens are still answered.
    assert_eq!(auth.check(&known).await, Some(Identity::Agent("a1".into())));
}

#[tokio::test]
async fn a_token_created_by_another_connection_works_at_once() {
    let path = temp_db("created");
    let conn = db::open(&path).unwrap();
    let auth = authenticator(&path).await;
    let token = create_token(&conn, &Identity::Agent("late".into()), 1).unwrap();
    assert_eq!(
        auth.check(&token).await,
        Some(Identity::Agent("late".into()))
    );
    assert_eq!(auth.n_loads(), 2);
}

#[tokio::test]
async fn an_unknown_token_created_afterwards_works_once_the_cache_is_invalidated() {
    let path = temp_db("invalidated");
    let conn = db::open(&path).unwrap();
    let auth = authenticator(&path).await;
    let token = generate_token();
    assert_eq!(auth.check(&token).await, None);
    let loads = auth.n_loads();
    // Remembered as unknown: asking again reads nothing.
    assert_eq!(auth.check(&token).await, None);
    assert_eq!(auth.n_loads(), loads);
    insert_token(&conn, &Identity::Agent("a1".into()), &hash(&token), 1).unwrap();
    auth.invalidate();
    assert_eq!(auth.check(&token).await, Some(Identity::Agent("a1".into())));
    assert_eq!(auth.n_loads(), loads + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_identifying_while_more_tokens_are_created_are_all_let_in() {
    // The load generator's pattern: create a token, start its agent, create the
    // next one while the earlier agents identify.
    let path = temp_db("burst");
    let conn = db::open(&path).unwrap();
    let auth = authenticator(&path).await;
    let mut checks = Vec::new();
    for i in 0..64 {
        let token = create_token(&conn, &Identity::Agent(format!("a{i}")), 1).unwrap();
        auth.invalidate();
        let auth = auth.clone();
        checks.push(tokio::spawn(async move { auth.check(&token).await }));
    }
    for (i, check) in checks.into_iter().enumerate() {
        let identity = check.await.unwrap();
        assert_eq!(
            identity,
            Some(Identity::Agent(format!("a{i}"))),
            "agent {i}"
        );
    }
}

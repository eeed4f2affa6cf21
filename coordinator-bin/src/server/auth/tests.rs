//! Tests of tokens: their form, and lookup by digest against the token table.

use std::path::Path;

use super::*;

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
    let tokens = load_live(&conn).unwrap();
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
    assert_eq!(find(&load_live(&conn).unwrap(), &hash(&token)), None);
    let listed = list_tokens(&conn).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_at, Some(5));
}

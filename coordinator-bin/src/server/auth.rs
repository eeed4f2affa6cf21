//! Tokens: generation, hashing, lookup by digest through a short-lived cache.

mod cache;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use self::cache::{Lookup, TokenCache};
use crate::server::db::{DamagedRow, DbError};
use crate::server::store::Store;
use crate::server::{damage, metrics};

pub use crate::session::Identity;

/// A token as listed (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    /// `agent` or `admin`.
    pub kind: String,
    /// The agent id or admin name.
    pub name: String,
    /// Creation time.
    pub created_at: u64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<u64>,
}

/// A new random token: 192 bits from the operating system, hex-encoded.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the operating system provides randomness");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("cdt_{hex}")
}

/// The SHA-256 digest of a token: what is stored, and the key a token is looked up by.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Every token that decodes, oldest first, and the token rows that do not.
#[derive(Debug, Clone, Default)]
pub struct TokenList {
    /// The tokens.
    pub tokens: Vec<TokenInfo>,
    /// Rows left out because they cannot be decoded.
    pub damaged: Vec<DamagedRow>,
}

/// Reads the live tokens and reports the rows that cannot be decoded.
async fn load_live_reported(store: &dyn Store) -> Result<HashMap<[u8; 32], Identity>, DbError> {
    let (tokens, damaged) = store.live_tokens().await?;
    for row in &damaged {
        damage::report(row);
    }
    Ok(tokens)
}

/// Checks tokens against the database through a [`TokenCache`]: a known token is
/// answered from a copy of the table at most [`cache::KNOWN_TTL`] old, so tokens
/// revoked with the CLI stop working by then; an unknown token causes a reload
/// only within a small rate budget and is then remembered as unknown for a
/// while, so tokens created with the CLI work at once in the usual case (within
/// about a second under a flood of unknown tokens) and made-up tokens cost no
/// database reads.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Arc<Mutex<TokenCache>>,
    /// Held while the table is read, so that concurrent lookups share one read.
    reload_gate: Arc<tokio::sync::Mutex<()>>,
    loads: Arc<AtomicU64>,
}

impl Authenticator {
    /// Loads the token table once.
    pub async fn new(store: Arc<dyn Store>) -> Result<Authenticator, DbError> {
        let read_at = Instant::now();
        let tokens = load_live_reported(&*store).await?;
        metrics::record_token_table_load();
        Ok(Authenticator {
            store,
            cache: Arc::new(Mutex::new(TokenCache::new(tokens, read_at))),
            reload_gate: Arc::new(tokio::sync::Mutex::new(())),
            loads: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The identity of `token`, or `None` if it is unknown or revoked.
    pub async fn check(&self, token: &str) -> Option<Identity> {
        let digest = hash(token);
        // A read in flight that covers every token created here so far answers
        // a token just created before any reload budget is spent on it.
        let covering = self.cache().covering_reload(&digest);
        if let Some(generation) = covering {
            let _gate = self.reload_gate.lock().await;
            if let Some(found) = self.cache().answer_covered(&digest, generation) {
                return Some(found);
            }
        }
        let asked_at = Instant::now();
        if let Lookup::Answer(found) = self.cache().lookup(&digest, asked_at) {
            return found;
        }
        let _gate = self.reload_gate.lock().await;
        // Another lookup may have read the table while this one waited.
        if let Some(found) = self.cache().answer_after(&digest, asked_at, Instant::now()) {
            return found;
        }
        let read_at = Instant::now();
        self.cache().handle_reload_started();
        let tokens = load_live_reported(&*self.store).await;
        let n_loads = self.loads.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::record_token_table_load();
        tracing::debug!(n_loads, "token table read");
        let tokens = match tokens {
            Ok(tokens) => tokens,
            Err(e) => {
                self.cache().handle_reload_failed();
                tracing::warn!(error = %e, "cannot read the token table; refusing the token");
                return None;
            }
        };
        let mut cache = self.cache();
        cache.handle_reloaded(tokens, read_at);
        cache
            .answer_after(&digest, asked_at, Instant::now())
            .flatten()
    }

    /// Forgets the cached token table (after tokens are revoked through the
    /// API): the next lookup reads it again.
    pub fn invalidate(&self) {
        self.cache().invalidate();
    }

    /// Adds a token just created (and committed) through the API to the cached
    /// table, so that presenting it reads nothing: with one read per created
    /// token, setting up n agents in a row read n tables of up to n tokens.
    pub fn created(&self, digest: [u8; 32], identity: Identity) {
        self.cache().handle_created(digest, identity);
    }

    /// How many times the token table was read (the first load included).
    #[cfg(test)]
    pub fn n_loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The identity whose stored digest is `digest`.
///
/// No secret is compared here, so no byte-wise constant-time check is needed.
/// The presented token is hashed first; the map then hashes the digest again
/// with a random SipHash key and compares it with the stored digests of one
/// bucket using ordinary, early-exit `==`. The time taken depends on the
/// presented token (the caller's own) and on stored digests, never on a stored
/// token except through its digest. The most a timing attacker can learn is how
/// many leading bytes of some stored digest match the digest of a string of
/// their choice, and even the whole digest would only let them test guesses
/// offline: to authenticate they still need a string whose SHA-256 is that
/// digest, which for a token of 192 random bits means searching 2^192
/// possibilities or breaking SHA-256's preimage resistance. This reasoning
/// holds because every token comes from [`generate_token`]; a token a person
/// chose (low entropy) would be open to offline guessing once its digest leaked.
/// This is how SPEC §9's "compared in constant time" is met: the timing of the
/// comparison reveals nothing about any secret token.
fn find(tokens: &HashMap<[u8; 32], Identity>, digest: &[u8; 32]) -> Option<Identity> {
    tokens.get(digest).cloned()
}

#[cfg(test)]
mod tests;

//! The in-memory copy of the token table and when to read it again: known
//! tokens are trusted for a second, unknown ones are remembered for a while in a
//! bounded set, and reloads caused by unknown tokens are rate-limited, so a flood
//! of made-up tokens costs no database reads. Time is a parameter; no I/O here.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Identity;

/// How long the table copy answers for a known token before it is read again
/// (so a token revoked with the CLI in another process stops working by then).
pub const KNOWN_TTL: Duration = Duration::from_secs(1);
/// How long a token found unknown by a reload stays unknown without another read.
pub const UNKNOWN_TTL: Duration = Duration::from_secs(2);
/// How many unknown token digests are remembered at most.
pub const UNKNOWN_CAPACITY: usize = 4096;
/// Unknown tokens may cause one reload per this interval, sustained...
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// ...and this many in a burst after a quiet time, so that a token just created
/// with the CLI works at once in the usual case.
pub const RELOAD_BURST: u32 = 4;

/// What to do about a presented token's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The table copy answers: this identity, or `None` for a refusal.
    Answer(Option<Identity>),
    /// Read the table again, then answer with [`TokenCache::handle_reloaded`].
    Reload,
}

/// The token table copy and the rules for refreshing it.
///
/// Call [`TokenCache::lookup`] for every presented digest; on
/// [`Lookup::Reload`], read the table (the read starting at some `read_at`) and
/// hand it to [`TokenCache::handle_reloaded`], then answer with
/// [`TokenCache::answer_after`]. A token created in this process is added with
/// [`TokenCache::handle_created`]; [`TokenCache::invalidate`] forces the next
/// lookup to read (after tokens are revoked in this process).
pub struct TokenCache {
    tokens: HashMap<[u8; 32], Identity>,
    /// When the read that produced `tokens` started.
    read_at: Instant,
    invalidated: bool,
    unknown: UnknownDigests,
    budget: ReloadBudget,
    /// How many invalidations so far.
    generation: u64,
    /// The `generation` when the read that produced `tokens` started.
    covers: u64,
    /// The `generation` when the read in flight started, if one is.
    in_flight: Option<u64>,
    /// Tokens created in this process, each with the `stamp` of its creation,
    /// until a read that started after it replaces the copy.
    created: Vec<([u8; 32], Identity, u64)>,
    /// Counts creations and read starts, to tell which came first.
    stamp: u64,
    /// The `stamp` when the read in flight started, if one is.
    read_stamp: Option<u64>,
}

impl TokenCache {
    /// A cache holding `tokens`, read at `read_at`.
    pub fn new(tokens: HashMap<[u8; 32], Identity>, read_at: Instant) -> TokenCache {
        TokenCache {
            tokens,
            read_at,
            invalidated: false,
            unknown: UnknownDigests::new(UNKNOWN_CAPACITY),
            budget: ReloadBudget::new(read_at),
            generation: 0,
            covers: 0,
            in_flight: None,
            created: Vec::new(),
            stamp: 0,
            read_stamp: None,
        }
    }

    /// Whether `digest` can be answered from memory at `now`. A reload for an
    /// unknown digest uses up reload budget; when none is left the token is
    /// refused without a read (it may be retried a moment later).
    pub fn lookup(&mut self, digest: &[u8; 32], now: Instant) -> Lookup {
        if self.invalidated {
            return Lookup::Reload;
        }
        if let Some(identity) = super::find(&self.tokens, digest) {
            return if now.saturating_duration_since(self.read_at) <= KNOWN_TTL {
                Lookup::Answer(Some(identity))
            } else {
                Lookup::Reload
            };
        }
        if self.unknown.contains(digest, now) {
            return Lookup::Answer(None);
        }
        if self.budget.try_take(now) {
            Lookup::Reload
        } else {
            Lookup::Answer(None)
        }
    }

    /// The answer for `digest` from a table read that started at or after
    /// `asked_at`, if the copy held is one; remembers an unknown digest.
    pub fn answer_after(
        &mut self,
        digest: &[u8; 32],
        asked_at: Instant,
        now: Instant,
    ) -> Option<Option<Identity>> {
        if self.read_at < asked_at {
            return None;
        }
        let found = super::find(&self.tokens, digest);
        if found.is_none() {
            self.unknown.insert(*digest, now);
        }
        Some(found)
    }

    /// A reload is about to read the table: invalidations until now are covered.
    pub fn handle_reload_started(&mut self) {
        self.invalidated = false;
        self.in_flight = Some(self.generation);
        self.stamp += 1;
        self.read_stamp = Some(self.stamp);
    }

    /// The table as read by a read that started at `read_at`.
    pub fn handle_reloaded(&mut self, tokens: HashMap<[u8; 32], Identity>, read_at: Instant) {
        let started = self.in_flight.take();
        let started_stamp = self.read_stamp.take();
        if read_at >= self.read_at {
            self.tokens = tokens;
            self.read_at = read_at;
            self.covers = started.unwrap_or(self.covers);
            // A token created before the read started is in it; one created
            // since may not be, and stays.
            if let Some(started_stamp) = started_stamp {
                self.created.retain(|(_, _, at)| *at > started_stamp);
            }
            for (digest, identity, _) in &self.created {
                self.tokens.insert(*digest, identity.clone());
            }
        }
    }

    /// The read in flight failed.
    pub fn handle_reload_failed(&mut self) {
        self.in_flight = None;
        self.read_stamp = None;
    }

    /// A token was created in this process (and committed): it is answered
    /// from memory at once and kept across a read that may have started before
    /// its commit. Tokens created one after another, each presented at once
    /// (agents set up in a loop), so cost no read each; the table is read no
    /// more often than for known tokens ([`KNOWN_TTL`]).
    pub fn handle_created(&mut self, digest: [u8; 32], identity: Identity) {
        self.stamp += 1;
        self.tokens.insert(digest, identity.clone());
        self.created.push((digest, identity, self.stamp));
    }

    /// Forgets which tokens were unknown and makes the next lookup read the table.
    pub fn invalidate(&mut self) {
        self.invalidated = true;
        self.unknown.clear();
        self.generation += 1;
        // The read this forces starts after every creation so far.
        self.created.clear();
    }

    /// If `digest` is not in the copy held and a read is in flight that
    /// started after the last invalidation, that read's generation: a token
    /// created in this process before `digest` was presented (its
    /// invalidation came first) will be in it, so the lookup should wait for
    /// it before spending reload budget.
    pub fn covering_reload(&self, digest: &[u8; 32]) -> Option<u64> {
        match self.in_flight {
            Some(generation)
                if !self.invalidated
                    && generation == self.generation
                    && super::find(&self.tokens, digest).is_none() =>
            {
                Some(generation)
            }
            _ => None,
        }
    }

    /// The identity of `digest` if the copy held was read after invalidation
    /// `generation` and names it.
    pub fn answer_covered(&self, digest: &[u8; 32], generation: u64) -> Option<Identity> {
        if self.covers >= generation {
            super::find(&self.tokens, digest)
        } else {
            None
        }
    }

    /// How many unknown digests are remembered.
    #[cfg(test)]
    pub fn n_unknown(&self) -> usize {
        self.unknown.n_remembered()
    }
}

/// A bounded set of digests found unknown, each for [`UNKNOWN_TTL`]; when full,
/// the one remembered first is forgotten first.
pub struct UnknownDigests {
    capacity: usize,
    seen_at: HashMap<[u8; 32], Instant>,
    order: VecDeque<[u8; 32]>,
}

impl UnknownDigests {
    /// An empty set of at most `capacity` digests.
    pub fn new(capacity: usize) -> UnknownDigests {
        UnknownDigests {
            capacity: capacity.max(1),
            seen_at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `digest` was found unknown less than [`UNKNOWN_TTL`] before `now`.
    pub fn contains(&self, digest: &[u8; 32], now: Instant) -> bool {
        self.seen_at
            .get(digest)
            .is_some_and(|at| now.saturating_duration_since(*at) < UNKNOWN_TTL)
    }

    /// Remembers `digest` as unknown at `now`, forgetting expired digests and,
    /// past the capacity, the oldest.
    pub fn insert(&mut self, digest: [u8; 32], now: Instant) {
        while let Some(front) = self.order.front() {
            let expired = self
                .seen_at
                .get(front)
                .is_none_or(|at| now.saturating_duration_since(*at) >= UNKNOWN_TTL);
            if !expired {
                break;
            }
            if let Some(front) = self.order.pop_front() {
                self.seen_at.remove(&front);
            }
        }
        if self.seen_at.insert(digest, now).is_none() {
            self.order.push_back(digest);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen_at.remove(&oldest);
            }
        }
    }

    /// Forgets every digest.
    pub fn clear(&mut self) {
        self.seen_at.clear();
        self.order.clear();
    }

    /// How many digests are remembered (expired ones included until pushed out).
    #[cfg(test)]
    pub fn n_remembered(&self) -> usize {
        self.order.len()
    }
}

/// A token bucket for reloads: [`RELOAD_BURST`] at once, refilled at one per
/// [`RELOAD_INTERVAL`] (kept as the time the bucket would be full again).
pub struct ReloadBudget {
    full_at: Instant,
}

impl ReloadBudget {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> ReloadBudget {
        ReloadBudget { full_at: now }
    }

    /// Takes one reload if the bucket has one at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let full_at = self.full_at.max(now);
        if full_at.duration_since(now) > RELOAD_INTERVAL * (RELOAD_BURST - 1) {
            return false;
        }
        self.full_at = full_at + RELOAD_INTERVAL;
        true
    }
}

#[cfg(test)]
mod tests;

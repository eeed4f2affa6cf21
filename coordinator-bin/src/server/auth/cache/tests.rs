//! Tests of the token table copy: when it answers, when it reads again, and the
//! bounds on unknown tokens.

use super::*;

fn digest(n: u32) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..4].copy_from_slice(&n.to_be_bytes());
    d
}

fn agent(name: &str) -> Identity {
    Identity::Agent(name.into())
}

fn cache_with(known: &[(u32, &str)], t0: Instant) -> TokenCache {
    let tokens = known.iter().map(|(n, a)| (digest(*n), agent(a))).collect();
    TokenCache::new(tokens, t0)
}

/// Runs a reload the way the authenticator does: the table read at `read_at`.
fn reload(cache: &mut TokenCache, table: &[(u32, &str)], read_at: Instant) {
    cache.handle_reload_started();
    let tokens = table.iter().map(|(n, a)| (digest(*n), agent(a))).collect();
    cache.handle_reloaded(tokens, read_at);
}

#[test]
fn a_known_token_is_answered_from_memory_until_the_copy_is_a_second_old() {
    let t0 = Instant::now();
    let mut cache = cache_with(&[(1, "a1")], t0);
    assert_eq!(
        cache.lookup(&digest(1), t0 + KNOWN_TTL),
        Lookup::Answer(Some(agent("a1")))
    );
    assert_eq!(
        cache.lookup(&digest(1), t0 + KNOWN_TTL + Duration::from_millis(1)),
        Lookup::Reload
    );
}

#[test]
fn an_unknown_token_reloads_once_then_is_refused_from_memory() {
    let t0 = Instant::now();
    let mut cache = cache_with(&[(1, "a1")], t0);
    assert_eq!(cache.lookup(&digest(9), t0), Lookup::Reload);
    reload(&mut cache, &[(1, "a1")], t0);
    assert_eq!(cache.answer_after(&digest(9), t0, t0), Some(None));
    // Remembered: no read for it again while it is fresh, whatever the budget.
    for ms in 0..1_000 {
        let now = t0 + Duration::from_millis(ms);
        assert_eq!(cache.lookup(&digest(9), now), Lookup::Answer(None));
    }
    // Expired: it may cause a read again.
    assert_eq!(cache.lookup(&digest(9), t0 + UNKNOWN_TTL), Lookup::Reload);
}

#[test]
fn a_flood_of_unknown_tokens_reloads_at_most_the_burst_then_one_per_interval() {
    let t0 = Instant::now();
    let mut cache = cache_with(&[], t0);
    let mut reloads = 0;
    for n in 0..10_000u32 {
        if cache.lookup(&digest(n), t0) == Lookup::Reload {
            reloads += 1;
        }
    }
    assert_eq!(reloads, RELOAD_BURST);
    // Ten seconds of a flood (1,000 new tokens every 10 ms): one read per interval.
    let mut reloads = 0;
    for step in 1..=1_000u32 {
        let now = t0 + Duration::from_millis(10 * u64::from(step));
        for n in 0..1_000u32 {
            if cache.lookup(&digest(step * 1_000_000 + n), now) == Lookup::Reload {
                reloads += 1;
            }
        }
    }
    assert_eq!(reloads, 10);
}

#[test]
fn a_token_created_elsewhere_is_found_within_an_interval_even_under_a_flood() {
    let t0 = Instant::now();
    let mut cache = cache_with(&[], t0);
    for n in 0..RELOAD_BURST {
        assert_eq!(cache.lookup(&digest(100 + n), t0), Lookup::Reload);
    }
    // The budget is spent: the new token (created by the CLI) is refused for now...
    assert_eq!(cache.lookup(&digest(1), t0), Lookup::Answer(None));
    // ...and is looked up in a fresh read one interval later.
    let later = t0 + RELOAD_INTERVAL;
    assert_eq!(cache.lookup(&digest(1), later), Lookup::Reload);
    reload(&mut cache, &[(1, "a1")], later);
    assert_eq!(
        cache.answer_after(&digest(1), later, later),
        Some(Some(agent("a1")))
    );
    assert_eq!(
        cache.lookup(&digest(1), later),
        Lookup::Answer(Some(agent("a1")))
    );
}

#[test]
fn a_token_created_here_is_answered_without_a_read_and_survives_a_read_that_missed_it() {
    let t0 = Instant::now();
    let mut cache = cache_with(&[(1, "a1")], t0);
    // Presented before its creation: remembered as unknown.
    assert_eq!(cache.lookup(&digest(2), t0), Lookup::Reload);
    reload(&mut cache, &[(1, "a1")], t0);
    assert_eq!(cache.answer_after(&digest(2), t0, t0), Some(None));
    cache.handle_created(digest(2), agent("a2"));
    assert_eq!(
        cache.lookup(&digest(2), t0),
        Lookup::Answer(Some(agent("a2")))
    );
    // A read starts, token 3 is created and committed, the read (which did not
    // see it) lands: 2 and 3 are both still known.
    cache.handle_reload_started();
    cache.handle_created(digest(3), agent("a3"));
    let read = [(1, "a1"), (2, "a2")];
    cache.handle_reloaded(
        read.iter().map(|(n, a)| (digest(*n), agent(a))).collect(),
        t0,
    );
    for (n, name) in [(2, "a2"), (3, "a3")] {
        assert_eq!(
            cache.lookup(&digest(n), t0),
            Lookup::Answer(Some(agent(name)))
        );
    }
    // A read that started after it is trusted alone: a token revoked in another
    // process (gone from the table) is no longer answered from memory.
    reload(&mut cache, &[(1, "a1"), (2, "a2")], t0);
    assert_eq!(cache.lookup(&digest(3), t0), Lookup::Reload);
}

#[test]
fn invalidating_forgets_unknown_tokens_and_forces_a_read() {
    let t0 = Instant::now();
    let mut cache = cache_with(&[(1, "a1")], t0);
    assert_eq!(cache.lookup(&digest(2), t0), Lookup::Reload);
    reload(&mut cache, &[(1, "a1")], t0);
    assert_eq!(cache.answer_after(&digest(2), t0, t0), Some(None));
    assert_eq!(cache.n_unknown(), 1);
    cache.invalidate();
    assert_eq!(cache.n_unknown(), 0);
    // Even a known, fresh token reads again, and the budget plays no part.
    for _ in 0..10 {
        assert_eq!(cache.lookup(&digest(1), t0), Lookup::Reload);
    }
    reload(&mut cache, &[(1, "a1"), (2, "a2")], t0);
    assert_eq!(
        cache.lookup(&digest(2), t0),
        Lookup::Answer(Some(agent("a2")))
    );
}

#[test]
fn only_a_read_started_after_the_question_answers_it() {
    let t0 = Instant::now();
    let mut cache = cache_with(&[], t0);
    let asked_at = t0 + Duration::from_millis(5);
    assert_eq!(cache.answer_after(&digest(1), asked_at, asked_at), None);
    reload(&mut cache, &[(1, "a1")], asked_at);
    assert_eq!(
        cache.answer_after(&digest(1), asked_at, asked_at),
        Some(Some(agent("a1")))
    );
    // An older read arriving late does not replace a newer one.
    cache.handle_reloaded(HashMap::new(), t0);
    assert_eq!(
        cache.lookup(&digest(1), asked_at),
        Lookup::Answer(Some(agent("a1")))
    );
}

#[test]
fn the_unknown_set_is_bounded_and_forgets_the_oldest_first() {
    let t0 = Instant::now();
    let mut unknown = UnknownDigests::new(3);
    for n in 0..5 {
        unknown.insert(digest(n), t0);
    }
    assert_eq!(unknown.n_remembered(), 3);
    assert!(!unknown.contains(&digest(0), t0));
    assert!(!unknown.contains(&digest(1), t0));
    assert!((2..5).all(|n| unknown.contains(&digest(n), t0)));
    // Expired entries are dropped when a new one comes in.
    unknown.insert(digest(9), t0 + UNKNOWN_TTL);
    assert_eq!(unknown.n_remembered(), 1);
    assert!(unknown.contains(&digest(9), t0 + UNKNOWN_TTL));
}

#[test]
fn the_cache_never_remembers_more_than_its_capacity() {
    let t0 = Instant::now();
    let mut cache = cache_with(&[], t0);
    for n in 0..(UNKNOWN_CAPACITY as u32 * 3) {
        cache.handle_reload_started();
        let _ = cache.answer_after(&digest(n), t0, t0);
    }
    assert_eq!(cache.n_unknown(), UNKNOWN_CAPACITY);
}

#[test]
fn the_reload_budget_refills_one_per_interval_up_to_the_burst() {
    let t0 = Instant::now();
    let mut budget = ReloadBudget::new(t0);
    assert_eq!(
        (0..100).filter(|_| budget.try_take(t0)).count() as u32,
        RELOAD_BURST
    );
    let t1 = t0 + RELOAD_INTERVAL;
    assert_eq!((0..100).filter(|_| budget.try_take(t1)).count(), 1);
    // A long quiet time refills the whole burst, no more.
    let t2 = t1 + RELOAD_INTERVAL * 100;
    assert_eq!(
        (0..100).filter(|_| budget.try_take(t2)).count() as u32,
        RELOAD_BURST
    );
}

#[test]
fn a_token_created_here_waits_for_the_read_in_flight_rather_than_spend_budget() {
    let t0 = Instant::now();
    let mut cache = TokenCache::new(HashMap::new(), t0);
    // Created through the API: the cache is invalidated, a read starts.
    cache.invalidate();
    assert_eq!(cache.lookup(&digest(1), t0), Lookup::Reload);
    cache.handle_reload_started();
    // Presented while that read is in flight: it will cover the token.
    let generation = cache.covering_reload(&digest(1)).expect("a covering read");
    let later = t0 + Duration::from_millis(1);
    cache.handle_reloaded([(digest(1), agent("a1"))].into(), later);
    assert_eq!(
        cache.answer_covered(&digest(1), generation),
        Some(agent("a1"))
    );
    // A token invalidated after the read started is not covered by it.
    cache.invalidate();
    assert_eq!(cache.covering_reload(&digest(2)), None);
    cache.handle_reload_started();
    let generation = cache.covering_reload(&digest(2)).expect("a covering read");
    cache.handle_reload_failed();
    assert_eq!(cache.covering_reload(&digest(2)), None);
    assert_eq!(cache.answer_covered(&digest(2), generation), None);
}

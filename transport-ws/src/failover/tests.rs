//! Tests of the next-coordinator decision.

use super::*;

fn given(n: usize) -> Failover<String> {
    Failover::new((0..n).map(|i| format!("c{i}")).collect()).unwrap()
}

fn not_leader(leader: Option<&str>) -> Refused<String> {
    Refused::NotLeader {
        leader: leader.map(str::to_owned),
    }
}

#[test]
fn an_empty_list_is_refused() {
    assert_eq!(Failover::<String>::new(Vec::new()), None);
}

#[test]
fn unreachable_and_unknown_leaders_move_to_the_next_until_a_round_is_done() {
    let mut to = given(3);
    let mut seen = vec![to.current().clone()];
    for refused in [Refused::Unreachable, not_leader(None)] {
        assert_eq!(to.handle_refused(refused), Next::Try);
        seen.push(to.current().clone());
    }
    assert_eq!(seen, ["c0", "c1", "c2"]);
    // Every one refused in a row without naming a leader: a round is over.
    assert_eq!(to.handle_refused(Refused::Unreachable), Next::GiveUp);
    // The next round starts with the one after.
    assert_eq!(to.current(), "c0");
    assert_eq!(to.handle_refused(Refused::Unreachable), Next::Try);
}

#[test]
fn a_named_leader_is_tried_next_whether_given_or_learnt() {
    let mut to = given(3);
    assert_eq!(to.handle_refused(not_leader(Some("c2"))), Next::Try);
    assert_eq!(to.current(), "c2");
    assert_eq!(to.handle_refused(not_leader(Some("x"))), Next::Try);
    assert_eq!(to.current(), "x");
    assert_eq!(to.targets(), ["c0", "c1", "c2", "x"]);
    // The learnt one refuses too: on round the list, the learnt one included.
    for expected in ["c0", "c1", "c2"] {
        assert_eq!(to.handle_refused(Refused::Unreachable), Next::Try);
        assert_eq!(to.current(), expected);
    }
    assert_eq!(to.handle_refused(Refused::Unreachable), Next::GiveUp);
}

#[test]
fn a_standby_naming_itself_counts_as_naming_nobody() {
    let mut to = given(2);
    assert_eq!(to.handle_refused(not_leader(Some("c0"))), Next::Try);
    assert_eq!(to.current(), "c1");
}

#[test]
fn learnt_leaders_are_bounded_and_the_oldest_goes_first() {
    let mut to = given(1);
    for i in 0..MAX_LEARNED + 2 {
        to.handle_success();
        assert_eq!(
            to.handle_refused(not_leader(Some(&format!("l{i}")))),
            Next::Try
        );
        assert_eq!(*to.current(), format!("l{i}"));
    }
    assert_eq!(to.targets().len(), 1 + MAX_LEARNED);
    assert_eq!(to.targets()[0], "c0");
    assert_eq!(to.targets()[1], "l2");
}

#[test]
fn moves_without_a_success_are_bounded_then_start_afresh() {
    let mut to = given(2);
    // Two standbys sending the client to each other for ever.
    let mut moves = 0;
    loop {
        let other = if to.current() == "c0" { "c1" } else { "c0" };
        match to.handle_refused(not_leader(Some(other))) {
            Next::Try => moves += 1,
            Next::GiveUp => break,
        }
        assert!(moves <= to.max_moves(), "unbounded");
    }
    assert_eq!(moves, to.max_moves());
    // A fresh budget after giving up.
    assert_eq!(to.handle_refused(not_leader(Some("c1"))), Next::Try);
}

#[test]
fn a_success_refills_the_budget() {
    let mut to = given(2);
    assert_eq!(to.handle_refused(Refused::Unreachable), Next::Try);
    to.handle_success();
    assert_eq!(to.handle_refused(Refused::Unreachable), Next::Try);
    assert_eq!(to.handle_refused(Refused::Unreachable), Next::GiveUp);
}

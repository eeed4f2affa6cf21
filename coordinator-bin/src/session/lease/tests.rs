//! Tests of the lease state machine: each decision, then a simulation of two or
//! three coordinators over one modelled database (the row and the advisory lock
//! as the arbiter) with arbitrary delays, freezes and crashes.

use std::collections::{BTreeMap, BinaryHeap, HashMap};

use proptest::prelude::*;

use super::*;

const RENEW: u64 = DEFAULT_RENEW_MS;
const TIMEOUT: u64 = DEFAULT_TIMEOUT_MS;

fn config(node: &str) -> LeaseConfig {
    LeaseConfig::new(node, format!("http://{node}:4000"), RENEW, TIMEOUT).unwrap()
}

fn row(leader: &str, pid: i32, epoch: u64, renewed_at_ms: u64) -> LeaseRow {
    LeaseRow {
        leader_id: leader.into(),
        advertise_url: format!("http://{leader}:4000"),
        backend_pid: pid,
        epoch,
        renewed_at_ms,
    }
}

fn seen(db_now_ms: u64, row: Option<LeaseRow>, lock_held: bool) -> Observation {
    Observation {
        db_now_ms,
        row,
        lock_held,
    }
}

/// Starts the look due at `now_ms`; its number.
fn tick(lease: &mut Lease, now_ms: u64) -> Tick {
    match lease.handle_timeout(now_ms) {
        Some(Decision::Observe { tick }) => tick,
        other => panic!("expected a look at {now_ms}, got {other:?}"),
    }
}

/// The look due at `now_ms` finds `observation`: the decision.
fn look(lease: &mut Lease, now_ms: u64, observation: Observation) -> (Tick, Decision) {
    let t = tick(lease, now_ms);
    let decision = lease.handle_observation(t, &observation).unwrap();
    (t, decision)
}

/// A lease that led `epoch` from a takeover that started at `at`.
fn leader(epoch: u64, at: u64) -> Lease {
    let mut lease = Lease::new(config("a"), at);
    let previous = (epoch > 1).then(|| row("a", 1, epoch - 1, 0));
    let (t, _) = look(&mut lease, at, seen(at, previous, true));
    assert_eq!(
        lease.handle_takeover(at + 1, t, true),
        Some(Decision::Lead { epoch })
    );
    lease
}

#[test]
fn the_timing_is_checked_and_the_defaults_pass() {
    assert_eq!(check_timing(DEFAULT_RENEW_MS, DEFAULT_TIMEOUT_MS), Ok(()));
    assert_eq!(check_timing(0, 5_000), Err(LeaseConfigError::ZeroRenew));
    assert_eq!(
        check_timing(1_000, 1_999),
        Err(LeaseConfigError::TimeoutTooShort {
            timeout_ms: 1_999,
            renew_ms: 1_000
        })
    );
    assert_eq!(config("a").fence_after_ms(), 4_500);
}

#[test]
fn the_first_coordinator_on_an_empty_database_takes_epoch_1() {
    let mut lease = Lease::new(config("a"), 0);
    assert_eq!(lease.poll_timeout(), Some(0));
    let t = tick(&mut lease, 0);
    // Nothing more until the look comes back.
    assert_eq!(lease.poll_timeout(), None);
    assert_eq!(
        lease.handle_observation(t, &seen(10, None, true)),
        Some(Decision::TakeOver {
            tick: t,
            terminate_backend: None,
            expected: None,
            epoch: 1
        })
    );
    assert_eq!(
        lease.handle_takeover(5, t, true),
        Some(Decision::Lead { epoch: 1 })
    );
    assert_eq!(
        lease.state(),
        &LeaseState::Leader {
            epoch: 1,
            fence_at_ms: 4_500
        }
    );
    // Renewals every RENEW, before the fence.
    assert_eq!(lease.poll_timeout(), Some(RENEW));
}

#[test]
fn a_standby_follows_a_live_leader() {
    let mut lease = Lease::new(config("b"), 0);
    assert_eq!(
        look(
            &mut lease,
            0,
            seen(10_000, Some(row("a", 7, 3, 9_000)), false)
        )
        .1,
        Decision::Follow {
            leader_url: Some("http://a:4000".into())
        }
    );
    assert_eq!(lease.state(), &LeaseState::Standby);
    // A standby looks four times per renewal period, so that a leader whose
    // process died (its lock free at once) is replaced within about RENEW / 4.
    assert_eq!(lease.poll_timeout(), Some(RENEW / 4));
    // Nobody has ever led and someone else holds the lock: nobody to point at.
    assert_eq!(
        look(&mut lease, RENEW / 4, seen(10_000, None, false)).1,
        Decision::Follow { leader_url: None }
    );
}

#[test]
fn a_lease_older_than_the_timeout_by_the_database_clock_is_taken_over() {
    let mut lease = Lease::new(config("b"), 0);
    // Exactly at the timeout it is still the leader's.
    assert_eq!(
        look(
            &mut lease,
            0,
            seen(14_000, Some(row("a", 7, 3, 9_000)), false)
        )
        .1,
        Decision::Follow {
            leader_url: Some("http://a:4000".into())
        }
    );
    let (t, decision) = look(
        &mut lease,
        RENEW,
        seen(14_001, Some(row("a", 7, 3, 9_000)), false),
    );
    assert_eq!(
        decision,
        Decision::TakeOver {
            tick: t,
            terminate_backend: Some(7),
            expected: Some((3, 9_000)),
            epoch: 4
        }
    );
    // The lock went to someone else meanwhile: still a standby.
    assert_eq!(
        lease.handle_takeover(RENEW + 5, t, false),
        Some(Decision::Follow { leader_url: None })
    );
    assert_eq!(lease.state(), &LeaseState::Standby);
}

#[test]
fn a_free_lock_is_taken_at_once_whatever_the_age_of_the_row() {
    // The leader's process is gone: its session and its lock with it.
    let mut lease = Lease::new(config("b"), 0);
    let (t, decision) = look(
        &mut lease,
        0,
        seen(9_001, Some(row("a", 7, 3, 9_000)), true),
    );
    assert_eq!(
        decision,
        Decision::TakeOver {
            tick: t,
            terminate_backend: None,
            expected: Some((3, 9_000)),
            epoch: 4
        }
    );
}

#[test]
fn a_leader_renews_while_the_row_and_the_lock_are_its_own() {
    let mut lease = leader(2, 0);
    let (t, decision) = look(
        &mut lease,
        RENEW,
        seen(5_000, Some(row("a", 1, 2, 4_000)), true),
    );
    assert_eq!(decision, Decision::Renew { tick: t, epoch: 2 });
    assert_eq!(lease.handle_renewed(RENEW + 3, t, true), None);
    assert_eq!(
        lease.state(),
        &LeaseState::Leader {
            epoch: 2,
            fence_at_ms: RENEW + 4_500
        }
    );
}

#[test]
fn a_leader_that_finds_its_lease_taken_or_its_lock_lost_steps_down() {
    let mut lease = leader(2, 0);
    assert_eq!(
        look(
            &mut lease,
            RENEW,
            seen(5_000, Some(row("b", 9, 3, 4_900)), false)
        )
        .1,
        Decision::StepDown {
            leader_url: Some("http://b:4000".into())
        }
    );
    assert_eq!(lease.state(), &LeaseState::Standby);

    let mut lease = leader(2, 0);
    assert_eq!(
        look(
            &mut lease,
            RENEW,
            seen(5_000, Some(row("a", 1, 2, 4_000)), false)
        )
        .1,
        Decision::StepDown { leader_url: None }
    );
}

#[test]
fn a_failed_or_late_renewal_steps_down() {
    let mut lease = leader(1, 0);
    let (t, _) = look(&mut lease, RENEW, seen(1, Some(row("a", 1, 1, 0)), true));
    assert_eq!(
        lease.handle_renewed(RENEW + 1, t, false),
        Some(Decision::StepDown { leader_url: None })
    );

    let mut lease = leader(1, 0);
    let (t, _) = look(&mut lease, RENEW, seen(1, Some(row("a", 1, 1, 0)), true));
    // Committed, but reported after the fence it would have moved.
    assert_eq!(
        lease.handle_renewed(RENEW + 4_500, t, true),
        Some(Decision::StepDown { leader_url: None })
    );
}

#[test]
fn a_leader_whose_renewal_hangs_steps_down_at_its_fence() {
    let mut lease = leader(1, 0);
    let t = tick(&mut lease, RENEW);
    // The look never comes back; the fence still runs.
    assert_eq!(lease.poll_timeout(), Some(4_500));
    assert_eq!(lease.handle_timeout(4_499), None);
    assert_eq!(
        lease.handle_timeout(4_500),
        Some(Decision::StepDown { leader_url: None })
    );
    assert_eq!(lease.state(), &LeaseState::Standby);
    // Its late answer is not taken for a later look.
    assert_eq!(
        lease.handle_observation(t, &seen(1, Some(row("a", 1, 1, 0)), true)),
        None
    );
    // A lost connection steps a leader down too.
    let mut lease = leader(1, 0);
    assert_eq!(
        lease.handle_connection_lost(10),
        Some(Decision::StepDown { leader_url: None })
    );
}

#[test]
fn a_late_report_of_an_earlier_look_is_ignored() {
    // The renewal of look t1 hangs past the fence; look t2 starts a takeover.
    let mut lease = leader(1, 0);
    let (t1, _) = look(
        &mut lease,
        RENEW,
        seen(1_000, Some(row("a", 1, 1, 0)), true),
    );
    let _ = lease.handle_timeout(4_500);
    let (t2, decision) = look(
        &mut lease,
        5_000,
        seen(9_000, Some(row("a", 1, 1, 1_000)), true),
    );
    assert!(matches!(decision, Decision::TakeOver { epoch: 2, .. }));
    assert_eq!(lease.handle_renewed(5_001, t1, true), None);
    assert_eq!(lease.handle_takeover(5_002, t1, true), None);
    assert_eq!(lease.state(), &LeaseState::TakingOver { epoch: 2 });
    assert_eq!(
        lease.handle_takeover(5_003, t2, true),
        Some(Decision::Lead { epoch: 2 })
    );
}

#[test]
fn a_standby_that_loses_its_connection_reconnects_with_a_bounded_back_off() {
    let mut lease = Lease::new(config("b"), 0);
    let _ = look(
        &mut lease,
        0,
        seen(10_000, Some(row("a", 7, 3, 9_500)), false),
    );
    let t = tick(&mut lease, RENEW);
    // The look fails: no more looks, a reconnection after the first wait.
    assert_eq!(lease.handle_connection_lost(RENEW + 2), None);
    assert_eq!(
        lease.state(),
        &LeaseState::Disconnected {
            failures: 0,
            reconnect_at_ms: Some(RENEW + 2 + RECONNECT_FIRST_MS)
        }
    );
    assert_eq!(lease.handle_observation(t, &seen(1, None, true)), None);
    // A late error of the same connection changes nothing.
    assert_eq!(lease.handle_connection_lost(RENEW + 3), None);
    assert_eq!(lease.poll_timeout(), Some(RENEW + 2 + RECONNECT_FIRST_MS));
    assert_eq!(lease.handle_timeout(RENEW + 1 + RECONNECT_FIRST_MS), None);
    let mut now = RENEW + 2 + RECONNECT_FIRST_MS;
    let mut waits = Vec::new();
    for failures in 0..8 {
        assert_eq!(
            lease.handle_timeout(now),
            Some(Decision::Reconnect { failures })
        );
        // Nothing else is due while the attempt runs.
        assert_eq!(lease.poll_timeout(), None);
        assert_eq!(lease.handle_reconnected(now + 1, false), None);
        let next = lease.poll_timeout().unwrap();
        waits.push(next - (now + 1));
        now = next;
    }
    // Doubling from the first wait, never past the lease timeout.
    assert_eq!(
        waits,
        vec![200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000]
    );
    assert_eq!(lease.reconnect_delay_ms(u32::MAX), TIMEOUT);
    // Connected: it looks at once, and stands by as before.
    assert_eq!(
        lease.handle_timeout(now),
        Some(Decision::Reconnect { failures: 8 })
    );
    let Some(Decision::Observe { tick: t }) = lease.handle_reconnected(now + 1, true) else {
        panic!("no look after reconnecting: {:?}", lease.state());
    };
    assert_eq!(
        lease.handle_observation(t, &seen(20_000, Some(row("a", 7, 3, 19_500)), false)),
        Some(Decision::Follow {
            leader_url: Some("http://a:4000".into())
        })
    );
    assert_eq!(lease.state(), &LeaseState::Standby);
    // A report nobody asked for is ignored.
    assert_eq!(lease.handle_reconnected(now + 2, true), None);
}

#[test]
fn a_leader_that_loses_its_connection_steps_down_at_once_and_never_leads_on_it_again() {
    let mut lease = leader(3, 0);
    let t = tick(&mut lease, RENEW);
    assert_eq!(
        lease.handle_connection_lost(RENEW + 5),
        Some(Decision::StepDown { leader_url: None })
    );
    assert!(matches!(
        lease.state(),
        LeaseState::Disconnected { failures: 0, .. }
    ));
    // The renewal that was under way is not counted.
    assert_eq!(lease.handle_renewed(RENEW + 6, t, true), None);
    assert!(matches!(lease.state(), LeaseState::Disconnected { .. }));
    // A standby taking over loses the takeover with the connection.
    let mut lease = Lease::new(config("b"), 0);
    let (t, _) = look(&mut lease, 0, seen(10, None, true));
    assert_eq!(lease.handle_connection_lost(3), None);
    assert_eq!(lease.handle_takeover(4, t, true), None);
    assert!(matches!(lease.state(), LeaseState::Disconnected { .. }));
}

// ---- Simulation -------------------------------------------------------------

/// One step of the scenario, applied at increasing times.
#[derive(Debug, Clone)]
enum Fault {
    /// Nothing for this long.
    Wait(u64),
    /// The node stops (SIGSTOP) for this long; its timers and reports wait.
    Freeze(usize, u64),
    /// The node's process dies (its connection and lock with it) and starts again.
    Crash(usize),
    /// The node's database connection breaks.
    Disconnect(usize),
    /// The database restarts: every backend dies, and no connection is
    /// accepted for this long.
    Restart(u64),
}

fn fault(nodes: usize) -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => (0..3 * TIMEOUT).prop_map(Fault::Wait),
        2 => (0..nodes, 0..3 * TIMEOUT).prop_map(|(n, d)| Fault::Freeze(n, d)),
        1 => (0..nodes).prop_map(Fault::Crash),
        1 => (0..nodes).prop_map(Fault::Disconnect),
        1 => (0..2 * TIMEOUT).prop_map(Fault::Restart),
    ]
}

/// What the database does or reports, at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Happening {
    /// The node's timer.
    Timer,
    /// The node's look reaches the database.
    Read(Tick),
    /// The look's result reaches the node.
    Observed(Tick, Observation),
    /// The node's write reaches the database.
    Write(Decision, Observation),
    /// The write's result reaches the node.
    Wrote(Decision, bool),
    /// The node's connection (this backend) broke; it learns it now.
    ConnectionLost(i32),
    /// The node's attempt to open a connection reaches the database.
    Connect,
    /// The attempt's result reaches the node.
    Connected(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Scheduled {
    at: u64,
    seq: u64,
    node: usize,
    /// The node's life it belongs to (a crash forgets the rest).
    life: u32,
    what: Happening,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

struct Node {
    lease: Lease,
    life: u32,
    /// Its database backend.
    pid: i32,
    frozen_until: u64,
    /// The time of the timer scheduled last.
    armed: Option<u64>,
}

/// The database: the lease row, who holds the lock, which backends live.
#[derive(Default)]
struct Db {
    row: Option<LeaseRow>,
    lock: Option<i32>,
    dead: Vec<i32>,
    /// No connection is accepted before this time (a restart).
    down_until: u64,
}

struct World {
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    db: Db,
    next_pid: i32,
    /// Every epoch led, by whom (node, life).
    led: BTreeMap<u64, (usize, u32)>,
    /// Pseudo-random delays, from the seed.
    rng: u64,
    /// The largest delay of a message, now.
    max_delay: u64,
}

impl World {
    fn new(n: usize, seed: u64) -> World {
        let mut world = World {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            db: Db::default(),
            next_pid: 100,
            led: BTreeMap::new(),
            rng: seed | 1,
            max_delay: TIMEOUT,
        };
        for i in 0..n {
            let pid = world.pid();
            world.nodes.push(Node {
                lease: Lease::new(config(&format!("n{i}")), 0),
                life: 0,
                pid,
                frozen_until: 0,
                armed: None,
            });
            world.arm(i);
        }
        world
    }

    fn pid(&mut self) -> i32 {
        self.next_pid += 1;
        self.next_pid
    }

    fn delay(&mut self) -> u64 {
        // xorshift: reproducible from the case.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // Mostly short, now and then up to max_delay.
        if self.rng.is_multiple_of(8) {
            self.rng % (self.max_delay + 1)
        } else {
            self.rng % 50
        }
    }

    fn schedule(&mut self, node: usize, after: u64, what: Happening) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + after,
            seq: self.seq,
            node,
            life: self.nodes[node].life,
            what,
        });
    }

    fn arm(&mut self, node: usize) {
        let at = self.nodes[node].lease.poll_timeout();
        if at.is_some() && at != self.nodes[node].armed {
            self.nodes[node].armed = at;
            let after = at.unwrap_or(0).saturating_sub(self.now);
            self.schedule(node, after, Happening::Timer);
        }
    }

    fn alive(&self, pid: i32) -> bool {
        !self.db.dead.contains(&pid)
    }

    fn kill_backend(&mut self, pid: i32) {
        if !self.alive(pid) {
            return;
        }
        self.db.dead.push(pid);
        if self.db.lock == Some(pid) {
            self.db.lock = None;
        }
    }

    /// Runs every happening up to `until`, checking after each.
    fn run_until(&mut self, until: u64) -> Result<(), String> {
        while let Some(next) = self.queue.peek() {
            if next.at > until {
                break;
            }
            let Some(event) = self.queue.pop() else {
                break;
            };
            self.now = event.at;
            self.happen(event)?;
        }
        self.now = until;
        Ok(())
    }

    fn happen(&mut self, event: Scheduled) -> Result<(), String> {
        let i = event.node;
        if event.life != self.nodes[i].life {
            return Ok(());
        }
        let in_db = matches!(
            event.what,
            Happening::Read(_) | Happening::Write(..) | Happening::Connect
        );
        if !in_db && self.nodes[i].frozen_until > self.now {
            // A frozen process notices nothing until it runs again.
            let after = self.nodes[i].frozen_until - self.now;
            self.seq += 1;
            self.queue.push(Scheduled {
                at: self.now + after,
                seq: self.seq,
                ..event
            });
            return Ok(());
        }
        let pid = self.nodes[i].pid;
        match event.what {
            Happening::Timer => {
                self.nodes[i].armed = None;
                // A timer that fired early (re-armed since) is harmless.
                if let Some(decision) = self.nodes[i].lease.handle_timeout(self.now) {
                    self.decide(i, decision, None)?;
                }
            }
            Happening::Read(tick) => {
                if !self.alive(pid) {
                    let d = self.delay();
                    self.schedule(i, d, Happening::ConnectionLost(pid));
                    return Ok(());
                }
                if self.db.lock.is_none() {
                    self.db.lock = Some(pid);
                }
                let observation = Observation {
                    db_now_ms: self.now,
                    row: self.db.row.clone(),
                    lock_held: self.db.lock == Some(pid),
                };
                let d = self.delay();
                self.schedule(i, d, Happening::Observed(tick, observation));
            }
            Happening::Observed(tick, observation) => {
                if let Some(decision) = self.nodes[i].lease.handle_observation(tick, &observation) {
                    self.decide(i, decision, Some(observation))?;
                }
            }
            Happening::Write(decision, observed) => {
                let committed = self.write(pid, &decision, &observed, i)?;
                let d = self.delay();
                self.schedule(i, d, Happening::Wrote(decision, committed));
            }
            Happening::Wrote(decision, committed) => {
                let next = match decision {
                    Decision::Renew { tick, .. } => self.nodes[i]
                        .lease
                        .handle_renewed(self.now, tick, committed),
                    Decision::TakeOver { tick, .. } => self.nodes[i]
                        .lease
                        .handle_takeover(self.now, tick, committed),
                    other => return Err(format!("wrote {other:?}")),
                };
                if let Some(next) = next {
                    self.decide(i, next, None)?;
                }
            }
            // Learnt about an earlier connection: the current one is another.
            Happening::ConnectionLost(lost) if lost != pid => {}
            Happening::ConnectionLost(_) => {
                if let Some(decision) = self.nodes[i].lease.handle_connection_lost(self.now) {
                    self.decide(i, decision, None)?;
                }
                if !matches!(self.nodes[i].lease.state(), LeaseState::Disconnected { .. }) {
                    return Err(format!(
                        "n{i} lost its connection but is {}",
                        self.nodes[i].lease.state()
                    ));
                }
            }
            Happening::Connect => {
                let up = self.now >= self.db.down_until;
                if up {
                    self.nodes[i].pid = self.pid();
                }
                let d = self.delay();
                self.schedule(i, d, Happening::Connected(up));
            }
            Happening::Connected(up) => {
                if let Some(decision) = self.nodes[i].lease.handle_reconnected(self.now, up) {
                    self.decide(i, decision, None)?;
                }
            }
        }
        self.arm(i);
        self.check()
    }

    /// The database's side of a write: only on a live backend holding the lock.
    fn write(
        &mut self,
        pid: i32,
        decision: &Decision,
        observed: &Observation,
        i: usize,
    ) -> Result<bool, String> {
        if !self.alive(pid) {
            return Ok(false);
        }
        let node_id = self.nodes[i].lease.config().node_id.clone();
        match decision {
            Decision::Renew { epoch, .. } => {
                let ours = self.db.lock == Some(pid)
                    && self
                        .db
                        .row
                        .as_ref()
                        .is_some_and(|r| r.leader_id == node_id && r.epoch == *epoch);
                if ours {
                    if let Some(row) = &mut self.db.row {
                        // now() is the transaction's start: the look's time.
                        row.renewed_at_ms = observed.db_now_ms;
                    }
                }
                Ok(ours)
            }
            Decision::TakeOver {
                terminate_backend,
                expected,
                epoch,
                ..
            } => {
                let unchanged =
                    self.db.row.as_ref().map(|r| (r.epoch, r.renewed_at_ms)) == *expected;
                if !unchanged {
                    return Ok(false);
                }
                if let Some(old) = terminate_backend {
                    // Re-checked by the database's clock at the write.
                    let expired = self
                        .db
                        .row
                        .as_ref()
                        .is_some_and(|r| self.now > r.renewed_at_ms + TIMEOUT);
                    if !expired {
                        return Ok(false);
                    }
                    self.kill_backend(*old);
                }
                if self.db.lock.is_none() {
                    self.db.lock = Some(pid);
                }
                if self.db.lock != Some(pid) {
                    return Ok(false);
                }
                self.db.row = Some(LeaseRow {
                    leader_id: node_id.clone(),
                    advertise_url: format!("http://{node_id}:4000"),
                    backend_pid: pid,
                    epoch: *epoch,
                    renewed_at_ms: observed.db_now_ms,
                });
                // The moment of takeover: every other running leader has stopped.
                for (j, other) in self.nodes.iter().enumerate() {
                    let running = other.frozen_until < self.now;
                    if j != i && running && matches!(other.lease.state(), LeaseState::Leader { .. })
                    {
                        // A leader whose connection is dead cannot commit; one
                        // whose fence is not past would still be serving.
                        if self.alive(other.pid) {
                            return Err(format!(
                                "n{i} took epoch {epoch} at {} while n{j} still leads ({})",
                                self.now,
                                other.lease.state()
                            ));
                        }
                    }
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn decide(
        &mut self,
        i: usize,
        decision: Decision,
        observed: Option<Observation>,
    ) -> Result<(), String> {
        match decision {
            Decision::Observe { tick } => {
                let d = self.delay();
                self.schedule(i, d, Happening::Read(tick));
            }
            Decision::Renew { .. } | Decision::TakeOver { .. } => {
                let observed = observed.ok_or("a write without a look")?;
                let d = self.delay();
                self.schedule(i, d, Happening::Write(decision, observed));
            }
            Decision::Lead { epoch } => {
                let me = (i, self.nodes[i].life);
                if let Some(before) = self.led.insert(epoch, me) {
                    return Err(format!("epoch {epoch} led twice: {before:?} and {me:?}"));
                }
                // Led after a newer epoch only with a dead connection (see check).
            }
            Decision::Reconnect { failures } => {
                let wait = self.nodes[i].lease.reconnect_delay_ms(failures);
                if failures > 0 && wait > TIMEOUT {
                    return Err(format!("n{i} waits {wait} ms to reconnect"));
                }
                let d = self.delay();
                self.schedule(i, d, Happening::Connect);
            }
            Decision::Follow { .. } | Decision::StepDown { .. } => {}
        }
        Ok(())
    }

    /// After every happening: no two running leaders that could both commit,
    /// and a running leader is always within its fence.
    fn check(&self) -> Result<(), String> {
        let mut leading: HashMap<u64, usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            // Frozen, or woken at this instant with its waiting events not run yet.
            if node.frozen_until >= self.now && node.frozen_until > 0 {
                continue;
            }
            if let LeaseState::Leader { epoch, fence_at_ms } = *node.lease.state() {
                if fence_at_ms < self.now {
                    return Err(format!("n{i} leads past its fence"));
                }
                if let Some(j) = leading.insert(epoch, i) {
                    return Err(format!("n{i} and n{j} both lead epoch {epoch}"));
                }
                // Newer epochs exist only once this one has stopped (or its
                // connection is dead and nothing of it commits).
                let newer = self.led.range(epoch + 1..).next().is_some();
                if newer && self.alive(node.pid) && self.db.lock == Some(node.pid) {
                    return Err(format!("n{i} leads epoch {epoch} after a newer one"));
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, fault: &Fault) -> Result<(), String> {
        match *fault {
            Fault::Wait(ms) => self.run_until(self.now + ms),
            Fault::Freeze(i, ms) => {
                self.nodes[i].frozen_until = self.nodes[i].frozen_until.max(self.now + ms);
                Ok(())
            }
            Fault::Crash(i) => {
                let old = self.nodes[i].pid;
                self.kill_backend(old);
                let pid = self.pid();
                let node = &mut self.nodes[i];
                node.life += 1;
                node.pid = pid;
                node.frozen_until = 0;
                node.armed = None;
                node.lease = Lease::new(config(&format!("n{i}")), self.now);
                self.arm(i);
                Ok(())
            }
            Fault::Disconnect(i) => {
                let old = self.nodes[i].pid;
                self.kill_backend(old);
                // The driver watches its connection: it learns soon.
                let d = self.delay();
                self.schedule(i, d, Happening::ConnectionLost(old));
                Ok(())
            }
            Fault::Restart(ms) => {
                self.db.down_until = self.now + ms;
                for i in 0..self.nodes.len() {
                    let old = self.nodes[i].pid;
                    self.kill_backend(old);
                    let d = self.delay();
                    self.schedule(i, d, Happening::ConnectionLost(old));
                }
                Ok(())
            }
        }
    }

    /// The leaders running now.
    fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| matches!(self.nodes[*i].lease.state(), LeaseState::Leader { .. }))
            .collect()
    }
}

fn simulate(n: usize, seed: u64, faults: &[Fault]) -> Result<(), String> {
    let mut world = World::new(n, seed);
    for fault in faults {
        world.apply(fault)?;
    }
    // Faults stop: short delays, nobody frozen; within a few timeouts exactly
    // one coordinator leads, the one the row names, holding the lock.
    world.max_delay = 50;
    let calm = world
        .nodes
        .iter()
        .map(|n| n.frozen_until)
        .max()
        .unwrap_or(0)
        .max(world.db.down_until);
    world.run_until(calm.max(world.now) + 4 * TIMEOUT)?;
    let leaders = world.leaders();
    let [only] = leaders[..] else {
        return Err(format!("after the faults, leaders {leaders:?}"));
    };
    let row = world.db.row.as_ref().ok_or("no lease row")?;
    if row.leader_id != format!("n{only}") || world.db.lock != Some(world.nodes[only].pid) {
        return Err(format!("n{only} leads but the row says {row:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn never_two_leaders_and_a_stopped_leader_stops_before_a_takeover(
        n in 2usize..=3,
        seed in any::<u64>(),
        faults in proptest::collection::vec(fault(3), 0..40),
    ) {
        let faults: Vec<Fault> = faults
            .into_iter()
            .map(|f| match f {
                Fault::Freeze(i, d) => Fault::Freeze(i % n, d),
                Fault::Crash(i) => Fault::Crash(i % n),
                Fault::Disconnect(i) => Fault::Disconnect(i % n),
                other => other,
            })
            .collect();
        prop_assert_eq!(simulate(n, seed, &faults), Ok(()));
    }
}

#[test]
fn a_frozen_leader_is_fenced_by_the_takeover_and_steps_down_when_it_runs() {
    let mut world = World::new(2, 7);
    world.max_delay = 20;
    world.run_until(3 * RENEW).unwrap();
    let [first] = world.leaders()[..] else {
        panic!("one leader after start: {:?}", world.leaders())
    };
    let other = 1 - first;
    world.apply(&Fault::Freeze(first, 3 * TIMEOUT)).unwrap();
    world.run_until(world.now + 2 * TIMEOUT).unwrap();
    // Taken over while it was frozen: its backend is dead.
    assert!(matches!(
        world.nodes[other].lease.state(),
        LeaseState::Leader { epoch: 2, .. }
    ));
    assert!(!world.alive(world.nodes[first].pid));
    world.run_until(world.now + 2 * TIMEOUT).unwrap();
    assert_eq!(world.leaders(), vec![other]);
}
